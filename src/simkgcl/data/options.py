"""The data layer's settings and their rules, stated once.

Each setting that decides what is read and how it is split (layout, KG id space, threshold,
benchmark file names, ``eval_args``, ``valid_ratio``) has its allowed values and its validator
here. The readers, :func:`~simkgcl.data.load_dataset` and :func:`~simkgcl.data.split_dataset`
call these validators on their arguments, so the data layer checks its own input when used from
Python without a :class:`~simkgcl.config.Config`; the config layer builds its ``KeySpec`` s from
the same validators, so a bad value is refused with the same message before any file is read.
The rule therefore lives in the layer that owns the meaning, and the layer above only wires it.

Validators follow :mod:`simkgcl.keyspec`: ``check(key, value)`` returns the normalised value or
raises :class:`~simkgcl.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from simkgcl.errors import ConfigError
from simkgcl.keyspec import allows, as_float, choice, fail, float_in, unknown_key_message

DEFAULT_DATASET = "lastfm-kg"
DEFAULT_SEED = 2020  # RecBole's default, and the config's ``seed`` default
LAYOUTS = ("atomic", "kgat", "kgcn")
KG_ID_SPACES = ("shared", "separate")
THRESHOLD_COLUMNS = ("rating", "timestamp")
SPLIT_ORDERS = ("RO", "TO")

DEFAULT_EVAL_ARGS: dict[str, Any] = {
    "split": {"RS": [0.8, 0.1, 0.1]},
    "order": "RO",
    "group_by": "user",
    "mode": "full",
}
EVAL_ARGS_KEYS = tuple(DEFAULT_EVAL_ARGS)
DEFAULT_VALID_RATIO = 0.1

check_layout = choice(LAYOUTS, optional=True)
check_kg_id_space = choice(KG_ID_SPACES)
# 0 carves no validation part: training then keeps its last model (with a warning).
check_valid_ratio = float_in(0.0, 1.0, hi_open=True)


_THRESHOLD = ("null or {column: minimum value} with one column of "
              f"{', '.join(THRESHOLD_COLUMNS)}, e.g. {{rating: 4}}")
_BENCHMARK = ("null or a list of 2 (train, test) or 3 (train, valid, test) file suffixes, "
              "e.g. [train, valid, test], the training part not reused")


@allows(_THRESHOLD)
def check_threshold(key: str, value: Any) -> dict[str, float] | None:
    """RecBole's ``threshold``: null, or one ``{column: minimum}`` on rating or timestamp."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise fail(key, value, _THRESHOLD)
    ((column, minimum),) = value.items()
    if column not in THRESHOLD_COLUMNS:
        raise fail(key, value, _THRESHOLD)
    bound = as_float(key, minimum, _THRESHOLD)
    if bound != bound:  # NaN keeps nothing and says nothing
        raise fail(key, value, _THRESHOLD)
    return {str(column): bound}


@allows(_BENCHMARK)
def check_benchmark_filename(key: str, value: Any) -> list[str] | None:
    """Suffixes of fixed split files: null, [train, test] or [train, valid, test].

    The validation part may name the test file ([train, test, test], validating on test); the
    training part may not be reused.
    """
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) not in (2, 3)
            or not all(isinstance(v, str) and v for v in value) or value[0] in value[1:]):
        raise fail(key, value, _BENCHMARK)
    return list(value)


@allows("{split: {RS: [train, valid, test]}, order: RO | TO, group_by: user | none, "
        "mode: full}; sub-keys not given keep their defaults")
def check_eval_args(key: str, value: Any) -> dict[str, Any]:
    """RecBole's ``eval_args``; sub-keys not given take :data:`DEFAULT_EVAL_ARGS`' values.

    ``split: {RS: [train, valid, test]}`` (or two ratios: validation is then carved from
    training with ``valid_ratio``), ratios >= 0 summing to 1 with a positive training ratio;
    ``order: RO | TO``; ``group_by: user | none``; ``mode: full`` (sampled modes are not
    implemented).
    """
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise fail(key, value, "a mapping with keys " + ", ".join(EVAL_ARGS_KEYS))
    for sub in value:
        if sub not in EVAL_ARGS_KEYS:
            raise ConfigError(unknown_key_message(f"{key}.{sub}",
                                                  [f"{key}.{k}" for k in EVAL_ARGS_KEYS]))
    merged = {**copy.deepcopy(DEFAULT_EVAL_ARGS), **value}
    order = merged["order"]
    if not isinstance(order, str) or order.upper() not in SPLIT_ORDERS:
        raise fail(f"{key}.order", order, "RO (random order) | TO (time order)")
    group_by = merged["group_by"]
    if isinstance(group_by, str):
        group_by = group_by.lower()
    if group_by not in ("user", "none", None):
        raise fail(f"{key}.group_by", group_by, "user | none")
    if merged["mode"] != "full":
        raise fail(f"{key}.mode", merged["mode"],
                   "full (every item is ranked; sampled modes are not implemented)")
    return {
        "split": {"RS": _split_ratios(f"{key}.split", merged["split"])},
        "order": order.upper(),
        "group_by": None if group_by in ("none", None) else "user",
        "mode": "full",
    }


def _split_ratios(key: str, split: Any) -> list[float]:
    shape = "{RS: [train, valid, test]} or {RS: [train, test]}"
    if not isinstance(split, Mapping) or list(split) != ["RS"]:
        raise fail(key, split, shape + " (ratio split)")
    ratios = split["RS"]
    if not isinstance(ratios, (list, tuple)) or len(ratios) not in (2, 3):
        raise fail(key, split, shape + ": 2 or 3 ratios")
    parts = [float_in(0.0)(f"{key}.RS", r) for r in ratios]  # refuses NaN and negatives
    if parts[0] <= 0:
        raise fail(key, split, "ratios >= 0 with a positive training ratio")
    total = sum(parts)
    if abs(total - 1.0) > 1e-6:
        raise fail(key, split, f"ratios that sum to 1 (these sum to {total:.6g})")
    return parts
