"""``simkgcl data stats`` and ``simkgcl data convert``."""

from __future__ import annotations

import argparse
import json

from simkgcl.cli.options import add_json_option
from simkgcl.data.options import (
    DEFAULT_EVAL_ARGS,
    DEFAULT_SEED,
    DEFAULT_VALID_RATIO,
    KG_ID_SPACES,
    LAYOUTS,
    SPLIT_ORDERS,
)
from simkgcl.errors import ConfigError


def _threshold(text: str | None) -> dict | None:
    if not text:
        return None
    column, sep, value = text.partition("=")
    try:
        return {column.strip(): float(value)} if sep else {"rating": float(text)}
    except ValueError:
        raise ConfigError(
            f"--threshold expects COLUMN=VALUE or VALUE (e.g. rating=4), got {text!r}"
        ) from None


def _add_reading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=LAYOUTS,
        help="force a reader instead of detecting the layout from the file names",
    )
    parser.add_argument(
        "--kg-id-space",
        choices=KG_ID_SPACES,
        default=KG_ID_SPACES[0],
        help="integer KG files: 'shared' (item i is entity i, kg_final.txt) or 'separate' "
        "(heads are items, tails have their own ids, KGCL kg.txt); default shared",
    )
    parser.add_argument(
        "--threshold",
        metavar="COLUMN=VALUE",
        help="keep only interactions with COLUMN >= VALUE, e.g. rating=4 (RecBole's threshold)",
    )
    parser.add_argument(
        "--benchmark",
        nargs="+",
        metavar="PART",
        help="benchmark split files to use, e.g. train valid test (RecBole benchmark_filename)",
    )


def _load(args: argparse.Namespace):
    from simkgcl.data import load_dataset

    return load_dataset(
        args.path,
        format=args.format,
        kg_id_space=args.kg_id_space,
        threshold=_threshold(args.threshold),
        benchmark_filename=args.benchmark,
    )


def _stats(args: argparse.Namespace) -> int:
    from simkgcl.data import dataset_stats, split_dataset
    from simkgcl.data.stats import format_stats

    dataset = _load(args)
    eval_args = {"split": {"RS": list(args.split)}, "order": args.order}
    split = split_dataset(
        dataset,
        eval_args=eval_args,
        seed=args.seed,
        valid_ratio=args.valid_ratio,
        valid_on_test=args.valid_on_test,
    )
    stats = dataset_stats(dataset, split)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from simkgcl.data import write_atomic

    dataset = _load(args)
    for path in write_atomic(dataset, args.out):
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect and convert datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    stats = data_sub.add_parser(
        "stats",
        help="users, items, interactions, KG size, dropped rows and split sizes",
        description="Describe a dataset folder (default: the bundled lastfm-kg).",
    )
    stats.add_argument("path", nargs="?", default=None, help="dataset folder or bundled name")
    _add_reading_options(stats)
    stats.add_argument(
        "--split",
        nargs="+",
        type=float,
        default=DEFAULT_EVAL_ARGS["split"]["RS"],
        metavar="RATIO",
        help="RS ratios per user when the files define no split (default %(default)s)",
    )
    stats.add_argument("--order", choices=SPLIT_ORDERS, default=DEFAULT_EVAL_ARGS["order"],
                       help="random or time order (default %(default)s)")
    stats.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="split seed (default %(default)s)")
    stats.add_argument(
        "--valid-ratio",
        type=float,
        default=DEFAULT_VALID_RATIO,
        help="share of each user's training items used for validation when the files give "
        "only train and test (default %(default)s; 0: no validation part)",
    )
    stats.add_argument(
        "--valid-on-test",
        action="store_true",
        help="validate on the test set when there is no validation part (as the seed did)",
    )
    add_json_option(stats, "the statistics")
    stats.set_defaults(func=_stats)

    convert = data_sub.add_parser(
        "convert",
        help="write a dataset as RecBole atomic files",
        description="Read PATH in any supported layout and write RecBole atomic files to OUT "
        "(.inter, .kg, .link, plus .train/.valid/.test.inter when the files define a split).",
    )
    convert.add_argument("path", help="dataset folder or bundled name")
    convert.add_argument("out", help="output folder (created if missing)")
    _add_reading_options(convert)
    convert.set_defaults(func=_convert)
