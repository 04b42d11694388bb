"""Time `simkgcl export` at amazon-book size (70,679 users x 24,915 items, d=64).

The artifact uses RANDOM embeddings (seeded): export time and memory do not depend on what the
embeddings mean, so no trained model is needed. Seen items come from the real
amazon-book ``train.txt`` (so exclusion does real work). Each export runs as its own
``simkgcl export`` process; its peak RSS is read from the kernel (``wait4``).

    python bench/bench_export.py                       # build the artifact in --work, then time
    python bench/bench_export.py --artifact RUN_DIR    # time an existing artifact instead
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simkgcl.artifact import load_artifact, save_artifact

TRAIN = Path("/work/shared/datasets/amazon-book/train.txt")


def read_kgat_train(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`user item item ...` per line -> (users, items) internal ids (ids are already 0-based)."""
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ids = np.asarray(line.split(), dtype=np.int64)
            if ids.size > 1:
                users.append(np.full(ids.size - 1, ids[0]))
                items.append(ids[1:])
    return np.concatenate(users), np.concatenate(items)


def build_artifact(run_dir: Path, train: Path, dim: int, seed: int) -> None:
    train_users, train_items = read_kgat_train(train)
    n_users, n_items = int(train_users.max()) + 1, int(train_items.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    save_artifact(
        run_dir, model="random-embeddings (timing only)", dataset="amazon-book",
        config={"note": "random embeddings for export/serving benchmarks", "seed": seed,
                "embedding_size": dim},
        metrics={},
        user_tokens=[str(u) for u in range(n_users)], item_tokens=[str(i) for i in range(n_items)],
        user_embeddings=torch.randn(n_users, dim, generator=gen) * 0.1,
        item_embeddings=torch.randn(n_items, dim, generator=gen) * 0.1,
        train_users=train_users, train_items=train_items,
    )


def timed_process(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024.0, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="existing run folder (skips building)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/simkgcl-bench-export"))
    parser.add_argument("--train", type=Path, default=TRAIN)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    args = parser.parse_args()

    run_dir = args.artifact
    if run_dir is None:
        run_dir = args.work / "run"
        if not (run_dir / "artifact" / "meta.json").exists():
            t0 = time.perf_counter()
            build_artifact(run_dir, args.train, args.dim, args.seed)
            print(f"built artifact in {time.perf_counter() - t0:.1f} s: {run_dir}")
    art = load_artifact(run_dir)
    dense_gib = art.n_users * art.n_items * 4 / 2**30
    print(f"artifact: {art.model} / {art.dataset}: {art.n_users} users x {art.n_items} items, "
          f"d={art.embedding_dim}, {art.seen_indices.numel()} seen pairs "
          f"(a dense float32 users x items matrix would be {dense_gib:.1f} GiB)")
    print(f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}")
    simkgcl = [sys.executable, "-m", "simkgcl"]

    secs, rss, rc = timed_process([*simkgcl, "recommend", str(run_dir), "--user", "0", "--k",
                                   str(args.k)])
    print(f"baseline (load artifact + one user): {secs:.1f} s, peak RSS {rss:.0f} MiB, rc={rc}")
    failed = rc != 0
    out_dir = args.work
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in args.formats:
        out = out_dir / f"recs.{fmt}"
        cmd = [*simkgcl, "export", str(run_dir), "--out", str(out), "--k", str(args.k),
               "--batch-size", str(args.batch_size)]
        secs, rss, rc = timed_process(cmd)
        size = out.stat().st_size / 2**20 if out.exists() else float("nan")
        print(f"export {fmt}: {secs:.1f} s, peak RSS {rss:.0f} MiB, file {size:.0f} MiB, "
              f"rc={rc}  [{' '.join(cmd[2:])}]")
        failed |= rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
