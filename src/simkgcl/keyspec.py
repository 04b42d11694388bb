"""Typed configuration keys: a default, a validator that normalises a value or raises, a help text.

The config layer (:mod:`simkgcl.config`) and every model (its ``keys``) declare their settings
with :class:`KeySpec` s built from the validators here, so each rule has one definition and is
checked before any data is read. A validator takes ``(key, value)`` and returns the normalised
value or raises :class:`~simkgcl.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from simkgcl.errors import ConfigError

Validator = Callable[[str, Any], Any]


@dataclass(frozen=True)
class KeySpec:
    """One configuration key: its default, a validator that normalises or raises, and help."""

    default: Any
    check: Validator
    help: str
    merge: bool = False  # dict value whose sub-keys are merged layer by layer (eval_args)

    @property
    def allowed(self) -> str:
        """What the validator accepts, in words ("" when it does not say)."""
        return str(getattr(self.check, "allowed", ""))


def allows(text: str) -> Callable[[Validator], Validator]:
    """Decorator: record what a validator accepts, for help texts (``KeySpec.allowed``)."""

    def mark(check: Validator) -> Validator:
        check.allowed = text  # type: ignore[attr-defined]
        return check

    return mark


# ---------------------------------------------------------------------------------------------
# validators: each takes (key, value) and returns the normalised value or raises ConfigError


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key {key!r}: got {value!r}; allowed: {allowed}")


def as_int(key: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool):
        raise fail(key, value, allowed)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise fail(key, value, allowed)


def as_float(key: str, value: Any, allowed: str) -> float:
    # YAML 1.1 reads "1e-3" (no dot) as a string, so numeric strings are accepted here.
    if isinstance(value, bool):
        raise fail(key, value, allowed)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise fail(key, value, allowed)


def int_in(lo: int | None = None, hi: int | None = None) -> Validator:
    allowed = "an integer" + _range_text(lo, hi)

    @allows(allowed)
    def check(key: str, value: Any) -> int:
        v = as_int(key, value, allowed)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise fail(key, value, allowed)
        return v

    return check


def float_in(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             hi_open: bool = False) -> Validator:
    allowed = "a number" + _range_text(lo, hi, lo_open, hi_open)

    @allows(allowed)
    def check(key: str, value: Any) -> float:
        v = as_float(key, value, allowed)
        if math.isnan(v):
            raise fail(key, value, allowed)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise fail(key, value, allowed)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise fail(key, value, allowed)
        return v

    return check


def int_list(lo: int | None = None, *, min_length: int = 1) -> Validator:
    """A list of integers (each ``>= lo``), at least ``min_length`` long (e.g. layer widths)."""
    allowed = f"a list of at least {min_length} integer(s)" + _range_text(lo, None)

    @allows(allowed)
    def check(key: str, value: Any) -> list[int]:
        if not isinstance(value, (list, tuple)) or len(value) < min_length:
            raise fail(key, value, allowed)
        out = [as_int(key, v, allowed) for v in value]
        if lo is not None and any(v < lo for v in out):
            raise fail(key, value, allowed)
        return out

    return check


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False,
                hi_open: bool = False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


_BOOLEAN = "true or false"
_STRING = "a non-empty string"


@allows(_BOOLEAN)
def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise fail(key, value, _BOOLEAN)


@allows(_STRING)
def string(key: str, value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise fail(key, value, _STRING)


def choice(options: Sequence[str], *, optional: bool = False) -> Validator:
    allowed = " | ".join(options) + (" | null" if optional else "")

    @allows(allowed)
    def check(key: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        raise fail(key, value, allowed)

    return check


def optional(inner: Validator) -> Validator:
    inner_allowed = getattr(inner, "allowed", "")

    @allows(f"{inner_allowed} | null" if inner_allowed else "")
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


@allows("any value")
def anything(key: str, value: Any) -> Any:
    return value


def unknown_key_message(key: str, valid: Iterable[str], hint: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    msg = f"unknown config key {key!r}"
    if hint:
        msg += f" ({hint})"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg
