"""``simkgcl compare``: every (dataset, model, seed) of an experiment file, then one summary."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def _compare(args: argparse.Namespace) -> int:
    from simkgcl.cli.tune import _QuietTraining
    from simkgcl.experiments.runner import run_experiment
    from simkgcl.experiments.spec import load_experiment
    from simkgcl.experiments.stats import require_scipy
    from simkgcl.experiments.summary import SUMMARY_MD, write_summary

    experiment = load_experiment(args.experiment)
    if experiment.baseline:
        require_scipy()  # fail before hours of training, not after
    out = Path(args.out) if args.out else Path("runs") / experiment.name

    quiet = _QuietTraining()
    handlers = [] if args.verbose else list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        session = run_experiment(experiment, out, jobs=args.jobs,
                                 progress=False if args.no_progress else None)
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
    summary = write_summary(out)

    failed = [o for o in session.outcomes if o.status == "failed"]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print((out / SUMMARY_MD).read_text())
    counts = {s: session.count(s) for s in ("skipped", "trained", "resumed", "failed")}
    print(f"{len(session.jobs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
          + f"; results in {out}", flush=True)
    for outcome in failed:
        print(f"failed: {outcome.job.name}: {outcome.message}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train every (dataset, model, seed) of an experiment file and compare them",
        description="Run every (dataset, model, seed) of EXPERIMENT.yaml as an ordinary run "
        "folder under one experiment folder, then write results.csv/json (one row per run), "
        "summary.md and summary.json: mean ± std of every test metric per model, paired "
        "per-user significance tests against the baseline (Wilcoxon and t-test, Holm-"
        "corrected) and the test metrics by user group. Re-running the same command skips "
        "finished runs and resumes interrupted ones.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT.yaml",
                   help="datasets, models (config files, settings), seeds, shared settings, "
                   "baseline, significance_metric")
    p.add_argument("--out", metavar="DIR", help="experiment folder (default runs/<name>)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs trained at once, each in its own process with threads set so "
                   "that N × threads ≤ CPU cores (default 1)")
    p.add_argument("--no-progress", action="store_true",
                   help="one line per finished run instead of a progress bar")
    p.add_argument("--verbose", action="store_true", help="show each run's training log lines")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the tables")
    p.set_defaults(func=_compare)
