"""Search spaces in YAML: which config keys a search varies, and over which values.

A space file maps config keys (dotted keys such as ``neg_sampling.uniform`` reach into mappings)
to a parameter spec::

    learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}
    n_layers: {type: int, low: 1, high: 4}
    kg_view: {type: categorical, choices: [fused, pure]}
    embedding_size: [32, 64, 128]          # a bare list is shorthand for categorical

``float`` and ``int`` take ``low``, ``high`` (inclusive), optional ``log`` and ``step``.
Categorical choices may be any YAML value (lists and mappings too: they are stored in the study
as their JSON text). Every key is checked against the base config before any training starts, so
a typo fails at once with the closest valid key, and both ends of each range are validated.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simkgcl.config import Config, available_keys
from simkgcl.errors import ConfigError
from simkgcl.yaml_input import read_yaml_file

PARAM_TYPES = ("float", "int", "categorical")
# Keys that say where and how a run executes, not what it learns: not part of best.yaml and not
# compared when a stored study is resumed.
RUN_SPECIFIC_KEYS = ("checkpoint_dir", "show_progress", "device")
# Keys a search must not vary: what is compared (objective), what is searched on, and where the
# trials write. One study = one model on one dataset with one objective.
FORBIDDEN_KEYS = frozenset({"model", "dataset", "valid_metric", "valid_metric_bigger",
                            *RUN_SPECIFIC_KEYS})
_SPEC_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Param:
    """One searched key: its optuna distribution settings."""

    key: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def encoded(self) -> bool:
        """Whether choices are stored as JSON text (optuna only stores scalars)."""
        return any(isinstance(c, (list, dict)) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        """Ask an ``optuna.Trial`` for a value of this key (the config value, decoded)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log,
                                     step=self.step or 1)
        if self.encoded:
            labels = [json.dumps(c, sort_keys=True) for c in self.choices]
            return json.loads(trial.suggest_categorical(self.key, labels))
        return trial.suggest_categorical(self.key, list(self.choices))

    def edge_values(self) -> list[Any]:
        """Values at the ends of the range (every choice): what validation tries."""
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a search, in file order."""

    params: tuple[Param, ...]
    source: str = "space"

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Config overrides for one trial."""
        return {p.key: p.suggest(trial) for p in self.params}

    def describe(self) -> dict[str, Any]:
        """The space as plain data (stored with the study to detect a changed space on resume)."""
        return {p.key: p.describe() for p in self.params}

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def validate(self, base: Config) -> None:
        """Fail early: unknown keys (with the closest valid key) and values the config refuses."""
        valid = available_keys(base["model"])
        for p in self.params:
            head = p.key.split(".", 1)[0]
            if head in FORBIDDEN_KEYS:
                raise ConfigError(f"{self.source}: key {p.key!r} cannot be searched (one study "
                                  "compares one model on one dataset by one valid_metric; run "
                                  "another study instead)")
            if head not in valid:
                close = difflib.get_close_matches(head, list(valid), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{self.source}: unknown config key {p.key!r} for model "
                                  f"{base['model']!r}{hint}")
        base_values = base.to_dict()
        for p in self.params:
            for value in p.edge_values():
                try:
                    Config(base_values, overrides={p.key: value})
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: {p.key} = {value!r} is not a valid "
                                      f"value: {exc}") from exc


def _number(source: str, key: str, field: str, value: Any, integer: bool) -> float | int:
    # YAML 1.1 reads 1e-4 (no dot) as a string, so numeric strings are accepted.
    what = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise ConfigError(f"{source}: {key}.{field} must be {what}, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key}.{field} must be {what}, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: {key}.{field} must be {what}, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{source}: {key}.{field} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def parse_param(key: str, spec: Any, source: str = "space") -> Param:
    """One ``key: spec`` entry of a space file as a :class:`Param`."""
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{source}: {key}: expected {{type: float|int|categorical, ...}} or a "
                          f"list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{source}: {key}.type must be one of {', '.join(PARAM_TYPES)}, got "
                          f"{kind!r}")
    extra = set(spec) - _SPEC_FIELDS[kind]
    if extra:
        raise ConfigError(f"{source}: {key}: unknown field(s) {', '.join(sorted(map(str, extra)))}"
                          f" for type {kind}; allowed: {', '.join(sorted(_SPEC_FIELDS[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{source}: {key}.choices must be a non-empty list")
        labels = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{source}: {key}.choices has duplicates: {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    integer = kind == "int"
    for field in ("low", "high"):
        if field not in spec:
            raise ConfigError(f"{source}: {key}.{field} is missing (type {kind} needs low and "
                              "high)")
    low = _number(source, key, "low", spec["low"], integer)
    high = _number(source, key, "high", spec["high"], integer)
    if low > high:
        raise ConfigError(f"{source}: {key}: low ({low}) is above high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {key}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{source}: {key}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        step = _number(source, key, "step", step, integer)
        if step <= 0:
            raise ConfigError(f"{source}: {key}.step must be > 0, got {step}")
        if log:
            raise ConfigError(f"{source}: {key}: step and log cannot be combined")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def parse_space(data: Mapping[str, Any], source: str = "space") -> SearchSpace:
    """A space from its YAML mapping."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{source}: expected a non-empty mapping of config key -> parameter "
                          "spec")
    return SearchSpace(tuple(parse_param(str(k), v, source) for k, v in data.items()), source)


def load_space(path: str | Path) -> SearchSpace:
    """Read a space YAML file."""
    return parse_space(read_yaml_file(path, what="search space file"), str(path))
