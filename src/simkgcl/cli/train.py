"""``simkgcl train`` and ``simkgcl evaluate``: thin wrappers over :mod:`simkgcl.training.run`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from simkgcl.cli.options import add_config_options, add_json_option, config_from_args, print_keys
from simkgcl.errors import ConfigError


def metrics_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table: one row per metric, one column per named metric dict."""
    names: list[str] = []
    for values in columns.values():
        for name in values:
            if name not in names:
                names.append(name)
    width = max([len("metric")] + [len(n) for n in names])
    head = f"{'metric':<{width}}  " + "  ".join(f"{c:>12}" for c in columns)
    lines = [head, "-" * len(head)]
    for name in names:
        cells = []
        for values in columns.values():
            v = values.get(name)
            cells.append(f"{v:>12.4f}" if v is not None else f"{'-':>12}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from simkgcl.training.distributed import is_main_process
    from simkgcl.training.run import resume_run, train

    if args.resume:
        if args.config or args.dataset or args.model or args.seeds or args.list_keys:
            raise ConfigError("--resume takes the run's saved config; --config, --dataset, "
                              "--model, --seeds and --list-keys cannot be combined with it "
                              "(key=value for epochs etc. can)")
        result = resume_run(args.resume, overrides=args.overrides)
    else:
        config = config_from_args(args)
        if args.list_keys:
            print_keys(config)
            return 0
        if args.seeds:
            return _train_seeds(config, args)
        result = train(config)
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps({"run_dir": str(result.run_dir), "best_epoch": result.best_epoch,
                          "epochs_run": result.epochs_run, "best_valid": result.best_valid,
                          "test": result.test}, indent=2))
        return 0
    columns = {"valid (best)": result.best_valid, "test": result.test}
    from simkgcl.training.run_folder import RunFolder

    results = RunFolder(result.run_dir).read_results() if result.test else {}
    if results.get("test_unblended"):  # the popularity blend was kept: show the model alone too
        columns = {"valid (best)": result.best_valid, "test (model)": results["test_unblended"],
                   "test (blended)": result.test}
    print(metrics_table(columns))
    stop = "early stop" if result.stopped_early else "all epochs"
    print(f"best epoch {result.best_epoch} ({result.valid_metric}); {result.epochs_run} epochs "
          f"run ({stop})")
    print(f"run folder: {result.run_dir}")
    return 0


def _train_seeds(config, args: argparse.Namespace) -> int:
    """One run per seed; mean ± sample std of every metric (``summary.json`` beside the runs)."""
    from simkgcl.training import multiseed
    from simkgcl.training.distributed import is_main_process

    result = multiseed.train_seeds(config, args.seeds)
    if not is_main_process():
        return 0
    if args.json:
        print(json.dumps(multiseed.read_summary(result.summary_dir), indent=2))
        return 0
    print(multiseed.format_summary(result, include_valid=True))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from simkgcl.errors import ArtifactError
    from simkgcl.training.run import evaluate_run
    from simkgcl.training.run_folder import RESULTS_FILE, RunFolder

    metrics = evaluate_run(args.run_dir, split=args.split, device=args.device)
    saved: dict = {}
    try:
        results = RunFolder(args.run_dir).read_results()
        saved = results.get("test" if args.split == "test" else "best_valid", {})
        if args.split == "valid" and results.get("popularity_blend", {}).get("kept"):
            saved = {}  # best_valid is the model alone; the served blend was fitted on valid
    except ArtifactError:  # an unfinished run has no results.json: just print the metrics
        pass
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        columns = {args.split: metrics}
        if saved:
            columns[f"{RESULTS_FILE}"] = saved
        print(metrics_table(columns))
    if saved and not args.json:
        common = [k for k in metrics if k in saved]
        diff = max((abs(metrics[k] - saved[k]) for k in common), default=0.0)
        if diff == 0.0:
            print(f"reproduces the {args.split} metrics in {RESULTS_FILE} exactly")
        else:
            print(f"differs from {RESULTS_FILE}: largest absolute difference {diff:.3g}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from simkgcl.training.calibrate import calibrate_run

    results = calibrate_run(args.run_dir,
                            overrides={"popularity_blend": "off"} if args.off else None)
    if args.json:
        print(json.dumps(results["test"], indent=2))
        return 0
    blend = results.get("popularity_blend", {})
    columns = {"test": results["test"]}
    if results.get("test_unblended"):
        columns = {"test (model)": results["test_unblended"], "test (blended)": results["test"]}
    print(metrics_table(columns))
    print(f"popularity blend: {'kept' if blend.get('kept') else 'not kept'} "
          f"({blend.get('reason', '')})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and test it (no arguments: the default model on the bundled data)",
        description="Train a model with early stopping on validation, test the best model, and "
        "write a run folder. Settings: built-in defaults <- model defaults <- --config files "
        "(in order) <- --dataset/--model <- key=value overrides. --list-keys shows every key "
        "the model takes, with its allowed values.",
    )
    add_config_options(p)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run exactly where its last checkpoint left it")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="train once per seed (e.g. 2020,2021,2022) and print the mean ± sample "
                   "std of every metric; the runs and summary.json go into one folder")
    add_json_option(p)
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate",
        help="recompute a finished run's metrics from its best checkpoint",
        description="Reload the best checkpoint with the run's saved config and the same split, "
        "and compute the metrics of the chosen split (test by default).",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--split", choices=("valid", "test"), default="test")
    e.add_argument("--device", help="override the saved device (auto | cpu | cuda | cuda:N)")
    add_json_option(e, "the metrics")
    e.set_defaults(func=_evaluate)
    c = sub.add_parser(
        "calibrate",
        help="fit the popularity blend afresh on a finished run (no retraining)",
        description="Fit the sparse-user popularity blend on the run's validation split with "
        "its best checkpoint, test with and without it, and rewrite results.json, the per-user "
        "file and the artifact.",
    )
    c.add_argument("run_dir", metavar="RUN_DIR")
    c.add_argument("--off", action="store_true", help="remove the blend (popularity_blend=off)")
    add_json_option(c, "the new test metrics")
    c.set_defaults(func=_calibrate)
