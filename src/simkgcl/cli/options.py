"""Options shared by several sub-commands, declared once; and the ``key=value`` rule.

``key=value`` config overrides may appear anywhere on the command line
(``simkgcl train show_progress=false --model lightgcn epochs=1``): argparse hands a
``nargs="*"`` positional only its first run of words, so :func:`take_overrides` collects the
later runs from the words argparse did not recognise, in command-line order (later wins).
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simkgcl.config import Config

# a config key (dotted keys reach into mappings: eval_args.order=TO) followed by "="
OVERRIDE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def add_config_options(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--config``, ``--dataset``, ``--model``, ``--list-keys`` and ``key=value`` overrides.

    ``what`` qualifies the config in the help ("base" for a search), or is empty.
    """
    prefix = f"{what} " if what else ""
    parser.add_argument("--config", action="append", metavar="FILE",
                        help=f"{prefix}YAML config file (repeatable; later files win)")
    parser.add_argument("--dataset", metavar="PATH_OR_NAME",
                        help="dataset folder or bundled dataset name (default lastfm-kg)")
    parser.add_argument("--model", metavar="NAME", help="model (default simkgcl)")
    parser.add_argument("--list-keys", action="store_true",
                        help="print every config key of the model (after --model/--config) "
                        "with its value, allowed values and meaning, then exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"{prefix}config overrides, anywhere on the line (values are read "
                        "as YAML; dotted keys such as eval_args.order=TO reach into mappings)")
    parser.set_defaults(takes_overrides=True)


def add_json_option(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def take_overrides(args: argparse.Namespace, unrecognised: list[str]) -> list[str]:
    """Move ``key=value`` words argparse left over into ``args.overrides``; return the rest."""
    if not getattr(args, "takes_overrides", False):
        return unrecognised
    rest = []
    for word in unrecognised:
        if OVERRIDE.match(word):
            args.overrides.append(word)
        else:
            rest.append(word)
    return rest


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config a command line asks for: --config files, --dataset/--model, key=value."""
    from simkgcl.config import Config

    values = {}
    if args.dataset:
        values["dataset"] = args.dataset
    if args.model:
        values["model"] = args.model
    return Config(values, files=args.config or (), overrides=args.overrides)


def print_keys(config: Config) -> None:
    """The ``--list-keys`` table: the model's own keys first, then the run's."""
    from simkgcl.config import model_keys, run_keys

    model = config["model"]
    for title, specs in ((f"keys of model {model!r}", model_keys(model)),
                         ("keys of every run", run_keys())):
        print(f"{title}:")
        for key, spec in specs.items():
            print(f"  {key} = {config[key]!r}")
            details = "; ".join(t for t in (spec.help, spec.allowed and
                                            f"allowed: {spec.allowed}") if t)
            print(f"      {details}")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
