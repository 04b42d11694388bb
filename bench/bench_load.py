"""Time ``simkgcl.data.load_dataset`` (and a default split) on the shared datasets.

Each dataset is loaded in a fresh subprocess so that its peak RSS is its own. Prints one line
per dataset: best and median wall-clock seconds over ``--repeat`` loads, split seconds, and the
peak resident memory of that process (baseline after imports shown separately).

    python bench/bench_load.py                       # ../shared/datasets/* + bundled lastfm-kg
    python bench/bench_load.py --synthetic-kg        # also amazon-book + a synthetic KG (686,516 triples)
    python bench/bench_load.py PATH [PATH ...] --repeat 5

The first load of each process includes importing the readers; best-of figures skip it when
``--repeat`` > 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simkgcl.memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SIMKGCL_SHARED", REPO / ".." / "shared")).resolve()


def measure_one(path: str, repeat: int, kg_id_space: str) -> dict:
    """Runs inside the child process."""
    import logging

    logging.disable(logging.WARNING)
    from simkgcl.data import load_dataset, split_dataset

    baseline = peak_rss_mb()
    times, cpu_times = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        ds = load_dataset(None if path == "bundled" else path, kg_id_space=kg_id_space)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    start = time.perf_counter()
    split = split_dataset(ds, eval_args=None, seed=2020)
    split_s = time.perf_counter() - start
    return {
        "dataset": path,
        "layout": ds.layout,
        "interactions": len(ds.interactions),
        "triples": ds.n_triples,
        "load_best_s": min(times),
        "load_median_s": statistics.median(times),
        # CPU seconds: steadier than wall time on a machine shared with other jobs
        "load_best_cpu_s": min(cpu_times),
        "split_s": split_s,
        "train": len(split.train),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mb(),
    }


def make_synthetic(out: Path) -> Path:
    """amazon-book train/test + a seeded synthetic KG of the published shape (bench only)."""
    sys.path.insert(0, str(REPO / "bench"))
    import numpy as np
    from make_synthetic_kg import count_items, make_kg

    data = SHARED / "datasets" / "amazon-book"
    out.mkdir(parents=True, exist_ok=True)
    n_items = count_items(data / "train.txt", data / "test.txt")
    kg = make_kg(n_items, 686_516, 30_000, 39, 2020)
    np.savetxt(out / "kg_final.txt", kg, fmt="%d", delimiter=" ")
    for name in ("train.txt", "test.txt"):
        (out / name).symlink_to(data / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("paths", nargs="*", help="dataset folders (default: shared datasets)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--synthetic-kg",
        action="store_true",
        help="also time amazon-book with a synthetic 686,516-triple KG",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--kg-id-space", default="shared", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(measure_one(args.one, args.repeat, args.kg_id_space)))
        return

    paths = list(args.paths)
    if not paths:
        paths = ["bundled"] + sorted(str(p) for p in (SHARED / "datasets").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic_kg:
            paths.append(str(make_synthetic(Path(tmp) / "amazon-book-synthetic-kg")))
        for path in paths:
            result = subprocess.run(
                [sys.executable, __file__, "--one", path, "--repeat", str(args.repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            if args.json:
                print(json.dumps(row))
            else:
                print(
                    f"{Path(row['dataset']).name:28s} {row['layout']:6s} "
                    f"{row['interactions']:>9,d} inter {row['triples']:>9,d} triples  "
                    f"load {row['load_best_s']:.2f}s (median {row['load_median_s']:.2f}s, "
                    f"CPU {row['load_best_cpu_s']:.3f}s)  "
                    f"split {row['split_s']:.2f}s  peak RSS {row['peak_rss_mib']:.0f} MiB "
                    f"(after imports {row['baseline_rss_mib']:.0f} MiB)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
