"""``simkgcl tune``: hyper-parameter search on validation (thin wrapper over simkgcl.tuning)."""

from __future__ import annotations

import argparse
import json
import logging

from simkgcl.cli.options import (
    add_config_options,
    add_json_option,
    config_from_args,
    positive_int,
    print_keys,
)

_TRAINING_LOGGERS = ("simkgcl.training", "simkgcl.data", "simkgcl.models", "simkgcl.evaluation")


class _QuietTraining(logging.Filter):
    """Keep per-epoch training lines off the console (each trial's train.log has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(_TRAINING_LOGGERS)


def _tune(args: argparse.Namespace) -> int:
    from simkgcl.tuning.report import format_trials_table
    from simkgcl.tuning.search import require_optuna, tune
    from simkgcl.tuning.space import load_space

    base = config_from_args(args)
    if args.list_keys:
        print_keys(base)
        return 0
    require_optuna()  # fail before any data is read
    space = load_space(args.space)

    quiet = _QuietTraining()
    handlers = [] if args.verbose else list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        result = tune(base, space, n_trials=args.trials, timeout=args.timeout,
                      study_name=args.study, storage=args.storage, out_dir=args.out,
                      sampler_seed=args.sampler_seed, prune=not args.no_prune,
                      prune_warmup=args.prune_warmup)
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)

    if args.json:
        print(json.dumps({"study": result.study_name, "out_dir": str(result.out_dir),
                          "best_trial": result.best_trial, "best_valid_score": result.best_value,
                          "best_params": result.best_params,
                          "best_run_dir": str(result.best_run_dir),
                          "test_of_best_trial": result.test, "trials": result.counts,
                          "trials_this_session": result.trials_this_session}, indent=2))
        return 0
    print(format_trials_table(result.rows, space.keys, result.valid_metric, limit=args.top))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    print(f"\nstudy {result.study_name!r}: {counts} ({result.trials_this_session} this session)")
    print(f"best trial {result.best_trial}: valid {result.valid_metric} = "
          f"{result.best_value:.4f} with "
          + ", ".join(f"{k}={v!r}" for k, v in result.best_params.items()))
    print("test metrics of the best trial (never used to choose): "
          + " ".join(f"{k}={v:.4f}" for k, v in result.test.items()))
    print(f"best config: {result.out_dir / 'best.yaml'}  (simkgcl train --config it)")
    print(f"all trials: {result.out_dir / 'trials.csv'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyper-parameters on the validation split (needs optuna)",
        description="Search the keys of a YAML search space around a base config with Optuna. "
        "Every trial is a full training run with early stopping, judged by valid_metric on the "
        "validation split; trials behind the others at the same epoch are pruned. The study is "
        "stored (SQLite in the output folder by default): the same command resumes an "
        "interrupted search, and several processes can share one study. Writes a ranked "
        "trials.csv, best.yaml (for simkgcl train --config) and summary.json with the test "
        "metrics of the best trial only.",
    )
    add_config_options(p, "base")
    p.add_argument("--space", required=True, metavar="FILE",
                   help="search space YAML: key: {type: float|int|categorical, low, high, log, "
                   "step, choices}")
    p.add_argument("--trials", type=positive_int, default=20, metavar="N",
                   help="finished (completed or pruned) trials the study should hold, counting "
                   "earlier sessions and other workers (default 20)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="start no new trial after this many seconds")
    p.add_argument("--study", metavar="NAME",
                   help="study name (default <model>-<dataset>-<space file name>)")
    p.add_argument("--storage", metavar="URL",
                   help="optuna storage URL, e.g. postgresql://user@host/db for several machines "
                   "(default sqlite:///<out>/study.db)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default <checkpoint_dir>/tune-<study>)")
    p.add_argument("--sampler-seed", type=int, metavar="N",
                   help="TPE sampler seed (default: the config's seed; give each parallel worker "
                   "its own)")
    p.add_argument("--no-prune", action="store_true", help="never prune: train every trial out")
    p.add_argument("--prune-warmup", type=int, default=10, metavar="EPOCHS",
                   help="epochs before a trial may be pruned (default 10; slow starters need it)")
    p.add_argument("--top", type=positive_int, default=20, metavar="N",
                   help="rows of the ranked table to print (default 20; all in trials.csv)")
    p.add_argument("--verbose", action="store_true", help="show each trial's training log lines")
    add_json_option(p, "the outcome")
    p.set_defaults(func=_tune)
