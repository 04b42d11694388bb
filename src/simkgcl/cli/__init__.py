"""`simkgcl` command line: it only parses arguments and wires library calls together."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from simkgcl import __version__
from simkgcl.cli.options import take_overrides
from simkgcl.errors import SimKGCLError

# Each module exposes ``register(subparsers)`` and sets ``func`` on its sub-parsers.
_COMMAND_MODULES = (
    "simkgcl.cli.data",
    "simkgcl.cli.train",
    "simkgcl.cli.tune",
    "simkgcl.cli.serve",
    "simkgcl.cli.compare",
    "simkgcl.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simkgcl", description="Knowledge-aware recommendation with SimKGCL."
    )
    parser.add_argument("--version", action="version", version=f"simkgcl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` None means this is the program (``simkgcl`` / ``-m simkgcl``)."""
    code = _command(list(sys.argv[1:] if argv is None else argv))
    if argv is None and _torchrun_worker():
        # a torchrun worker leaves without interpreter finalisation, which races gloo's threads
        from simkgcl.training.distributed import end_worker_process

        end_worker_process(code)
    return code


def _torchrun_worker() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; ``--debug`` and ``key=value`` overrides may stand anywhere.

    Exits with argparse's usage message and code 2 on words no command takes.
    """
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, unrecognised = parser.parse_known_args(argv)
    rest = take_overrides(args, unrecognised)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.debug = debug
    return args


def _command(argv: list[str]) -> int:
    args = parse_command_line(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        result = args.func(args)
    except SimKGCLError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
