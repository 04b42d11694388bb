"""The same config trained once per seed, reported as mean ± standard deviation.

One seed proves little: differences of a few thousandths between two models are often noise.
:func:`train_seeds` trains one full run per seed (each in its own run folder, all inside one
summary folder) and summarises every test and best-validation metric as the mean and the
*sample* standard deviation (ddof=1, the estimate of the spread across seeds; undefined, so
``null``, for a single seed). The seed drives everything, including a random split, so with a
random split each seed also sees a different train/valid/test partition; fixed split files are
the same for every seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simkgcl.config import Config
from simkgcl.errors import ArtifactError, ConfigError
from simkgcl.training.checkpoint import atomic_write_bytes
from simkgcl.training.distributed import broadcast_from_main, process_group, resolve_device
from simkgcl.training.run import RunResult, train
from simkgcl.training.run_folder import create_fresh_dir, timestamped_name
from simkgcl.training.trainer import EpochCallback

SUMMARY_FILE = "summary.json"
STD_KIND = "sample (ddof=1)"


@dataclass
class MetricStats:
    """Mean and sample standard deviation of one metric over the runs."""

    mean: float
    std: float | None  # None with a single run
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass
class MultiSeedResult:
    """Runs of one config under several seeds and their summary."""

    seeds: list[int]
    runs: list[RunResult]
    test: dict[str, MetricStats]
    best_valid: dict[str, MetricStats]
    summary_dir: Path

    @property
    def summary_path(self) -> Path:
        return self.summary_dir / SUMMARY_FILE


def parse_seeds(text: str | Iterable[int]) -> list[int]:
    """``"2020,2021,2022"`` (or a list of ints) -> distinct seeds in the given order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    seeds: list[int] = []
    for item in items:
        try:
            seed = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"seeds: {item!r} is not an integer (expected e.g. "
                              "2020,2021,2022)") from None
        if not 0 <= seed <= 2**32 - 1:
            raise ConfigError(f"seeds: {seed} is outside [0, 2**32-1]")
        if seed in seeds:
            raise ConfigError(f"seeds: {seed} is given twice")
        seeds.append(seed)
    if not seeds:
        raise ConfigError("seeds: give at least one seed, e.g. 2020,2021,2022")
    return seeds


def mean_std(values: Sequence[float]) -> MetricStats:
    """Mean and sample standard deviation (ddof=1; None for fewer than two values)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return MetricStats(mean, std, n)


def summarize(per_run: Sequence[Mapping[str, float]]) -> dict[str, MetricStats]:
    """Per-metric stats over runs; a metric missing from any run is left out (never imputed)."""
    names = [m for m in per_run[0] if all(m in r for r in per_run)] if per_run else []
    return {m: mean_std([float(r[m]) for r in per_run]) for m in names}


def new_summary_dir(config: Mapping[str, Any]) -> Path:
    """``<checkpoint_dir>/<model>-<dataset>-seeds-<timestamp>`` (suffixed if taken), created."""
    name = timestamped_name(config["model"], Path(str(config["dataset"])).name, "seeds")
    return create_fresh_dir(config["checkpoint_dir"], name)


def summary_dict(result: MultiSeedResult, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "valid_metric": config["valid_metric"],
        "seeds": result.seeds,
        "std": STD_KIND,
        "runs": [{"seed": seed, "run_dir": str(run.run_dir), "best_epoch": run.best_epoch,
                  "epochs_run": run.epochs_run, "stopped_early": run.stopped_early,
                  "best_valid": run.best_valid, "test": run.test}
                 for seed, run in zip(result.seeds, result.runs, strict=True)],
        "test": {m: s.to_dict() for m, s in result.test.items()},
        "best_valid": {m: s.to_dict() for m, s in result.best_valid.items()},
    }


def train_seeds(
    config: Config | Mapping[str, Any],
    seeds: Sequence[int] | str,
    *,
    summary_dir: str | Path | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> MultiSeedResult:
    """Train ``config`` once per seed and write ``summary.json`` (per-run results, mean, std).

    The run folders go inside ``summary_dir`` (default
    ``<checkpoint_dir>/<model>-<dataset>-seeds-<timestamp>/``); the summary is rewritten after
    every run, so an interrupted series keeps what it finished.
    """
    cfg = config if isinstance(config, Config) else Config(config)
    seed_list = parse_seeds(seeds)
    # one process group for the whole series (under torchrun); rank 0 names the folder and
    # writes the summary
    with process_group(resolve_device(cfg["device"])) as group:
        if summary_dir is not None:
            folder = Path(summary_dir)
            if group.main:
                folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(broadcast_from_main(str(new_summary_dir(cfg)) if group.main else None,
                                              group))
        runs: list[RunResult] = []
        result = MultiSeedResult([], runs, {}, {}, folder)
        for seed in seed_list:
            run = train(cfg.replace(seed=seed, checkpoint_dir=str(folder)), callbacks=callbacks)
            runs.append(run)
            result.seeds.append(seed)
            result.test = summarize([r.test for r in runs])
            result.best_valid = summarize([r.best_valid for r in runs])
            if group.main:
                atomic_write_bytes(result.summary_path, (json.dumps(
                    summary_dict(result, cfg), indent=2) + "\n").encode())
    return result


def _pm(stats: MetricStats) -> str:
    std = "n/a" if stats.std is None else f"{stats.std:.4f}"
    return f"{stats.mean:.4f} ± {std}"


def format_summary(result: MultiSeedResult, *, include_valid: bool = False) -> str:
    """Table: one row per test metric, ``mean ± std`` then each seed's value."""
    sections = [("test", result.test, [r.test for r in result.runs])]
    if include_valid:
        sections.insert(0, ("valid (best)", result.best_valid,
                            [r.best_valid for r in result.runs]))
    n = len(result.runs)
    seed_cols = [f"seed {s}" for s in result.seeds]
    lines: list[str] = []
    for title, stats, per_run in sections:
        names = list(stats)
        width = max([len(title)] + [len(m) for m in names])
        head_pm = f"mean ± std (n={n})"
        cells = {m: _pm(stats[m]) for m in names}
        pm_w = max([len(head_pm)] + [len(c) for c in cells.values()])
        head = f"{title:<{width}}  {head_pm:>{pm_w}}  " + "  ".join(f"{c:>10}" for c in seed_cols)
        lines += [head, "-" * len(head)]
        for m in names:
            vals = "  ".join(f"{run[m]:>10.4f}" for run in per_run)
            lines.append(f"{m:<{width}}  {cells[m]:>{pm_w}}  {vals}")
        lines.append("")
    lines.append(f"std: {STD_KIND} over {n} seed(s); runs and {SUMMARY_FILE} in "
                 f"{result.summary_dir}")
    return "\n".join(lines)


def read_summary(path: str | Path) -> dict[str, Any]:
    """A written ``summary.json`` (the file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_FILE
    if not p.is_file():
        raise ArtifactError(f"{p}: no multi-seed summary")
    return json.loads(p.read_text())


__all__ = ["MetricStats", "MultiSeedResult", "format_summary", "mean_std", "new_summary_dir",
           "parse_seeds", "read_summary", "summarize", "train_seeds"]
