"""Run configuration: built-in defaults <- model defaults <- YAML files <- explicit values.

Key names follow RecBole where the seed uses them (``epochs``, ``learner``, ``eval_args`` ...), so
a RecBole user's YAML mostly works unchanged. Every key is validated: an unknown key names the
closest valid one, a bad value says what is allowed. A :class:`Config` is a plain mapping that a
library user builds in Python (``Config(model="bpr", epochs=5)``); the CLI merely feeds it the
``--config`` files and ``key=value`` strings it was given.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from simkgcl.errors import ConfigError
from simkgcl.keyspec import (
    KeySpec,
    as_float,
    as_int,
    boolean,
    choice,
    fail,
    float_in,
    int_in,
    optional,
    string,
    unknown_key_message,
)

DEFAULT_MODEL = "simkgcl"
DEFAULT_DATASET = "lastfm-kg"
ALLOWED_METRICS = ("Recall", "NDCG", "MRR", "Hit", "Precision", "MAP", "ItemCoverage")
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop")
DATA_FORMATS = ("atomic", "kgat", "kgcn")
KG_ID_SPACES = ("shared", "separate")

def _device(key: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value.strip().lower()):
        return value.strip().lower()
    raise fail(key, value, "auto | cpu | cuda | cuda:N")


def _metric_name(key: str, value: Any) -> str:
    lookup = {m.lower(): m for m in ALLOWED_METRICS}
    if isinstance(value, str) and value.lower() in lookup:
        return lookup[value.lower()]
    raise fail(key, value, ", ".join(ALLOWED_METRICS))


def _metrics(key: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise fail(key, value, "a non-empty list of " + ", ".join(ALLOWED_METRICS))
    out: list[str] = []
    for item in items:
        name = _metric_name(key, item)
        if name not in out:
            out.append(name)
    return out


def _topk(key: str, value: Any) -> list[int]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    allowed = "a positive integer or a non-empty list of positive integers"
    if not isinstance(items, list) or not items:
        raise fail(key, value, allowed)
    ks = sorted({as_int(key, k, allowed) for k in items})
    if ks[0] < 1:
        raise fail(key, value, allowed)
    return ks


def _valid_metric(key: str, value: Any) -> str:
    allowed = "METRIC@K, e.g. NDCG@20, with METRIC one of " + ", ".join(ALLOWED_METRICS)
    if not isinstance(value, str) or value.count("@") != 1:
        raise fail(key, value, allowed)
    name, k = value.split("@")
    if not k.strip().isdigit() or int(k) < 1:
        raise fail(key, value, allowed)
    return f"{_metric_name(key, name.strip())}@{int(k)}"


def _neg_sampling(key: str, value: Any) -> dict[str, int]:
    allowed = "{uniform: N} with N a positive integer (negatives per positive)"
    if not isinstance(value, dict) or len(value) != 1:
        raise fail(key, value, allowed)
    (dist, n), = value.items()
    if str(dist).lower() != "uniform":
        raise fail(key, value, allowed + "; only uniform sampling is implemented")
    n_int = as_int(key, n, allowed)
    if n_int < 1:
        raise fail(key, value, allowed)
    return {"uniform": n_int}


def _clip_grad_norm(key: str, value: Any) -> dict[str, float] | None:
    allowed = "null, or {max_norm: X} with X > 0 (optionally norm_type: P)"
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"max_norm": value}
    if not isinstance(value, dict) or "max_norm" not in value or set(value) - {"max_norm",
                                                                                "norm_type"}:
        raise fail(key, value, allowed)
    out = {"max_norm": float_in(0, lo_open=True)(f"{key}.max_norm", value["max_norm"])}
    if "norm_type" in value:
        out["norm_type"] = float_in(0, lo_open=True)(f"{key}.norm_type", value["norm_type"])
    return out


_EVAL_ARGS_KEYS = ("split", "order", "group_by", "mode")


def _eval_args(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(key, value, "a mapping with keys " + ", ".join(_EVAL_ARGS_KEYS))
    for sub in value:
        if sub not in _EVAL_ARGS_KEYS:
            raise ConfigError(unknown_key_message(f"{key}.{sub}",
                                               [f"{key}.{k}" for k in _EVAL_ARGS_KEYS]))
    out = dict(value)
    split = value.get("split")
    allowed_split = ("{RS: [train, valid, test]} (or {RS: [train, test]}, validation then carved "
                     "with valid_ratio) with ratios >= 0 summing to 1 and train > 0")
    if not isinstance(split, dict) or list(split) != ["RS"]:
        raise fail(f"{key}.split", split, allowed_split)
    ratios = split["RS"]
    if not isinstance(ratios, list) or len(ratios) not in (2, 3):
        raise fail(f"{key}.split", split, allowed_split)
    parts = [float_in(0.0)(f"{key}.split.RS", r) for r in ratios]
    if abs(sum(parts) - 1.0) > 1e-6 or parts[0] <= 0:
        raise fail(f"{key}.split", split, allowed_split)
    out["split"] = {"RS": parts}
    order = value.get("order")
    if not isinstance(order, str) or order.upper() not in ("RO", "TO"):
        raise fail(f"{key}.order", order, "RO (random order) | TO (time order)")
    out["order"] = order.upper()
    group_by = value.get("group_by")
    if group_by not in ("user", None, "none"):
        raise fail(f"{key}.group_by", group_by, "user | none")
    out["group_by"] = None if group_by in (None, "none") else "user"
    mode = value.get("mode")
    if mode != "full":
        raise fail(f"{key}.mode", mode, "full (every item is ranked; sampled modes are not "
                                         "implemented)")
    return out


def _threshold(key: str, value: Any) -> dict[str, float] | None:
    allowed = "null or {column: minimum value}, e.g. {rating: 4}"
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise fail(key, value, allowed)
    return {str(col): as_float(key, v, allowed) for col, v in value.items()}


def _benchmark_filename(key: str, value: Any) -> list[str] | None:
    allowed = "null or a list of 2 or 3 file suffixes, e.g. [train, valid, test]"
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) not in (2, 3)
            or not all(isinstance(v, str) and v for v in value)):
        raise fail(key, value, allowed)
    return list(value)


def _dataset(key: str, value: Any) -> str:
    if value is None:
        return DEFAULT_DATASET
    if isinstance(value, Path):
        return str(value)
    return string(key, value)


def _model(key: str, value: Any) -> str:
    from simkgcl.models import available_models

    names = available_models()
    if isinstance(value, str) and value.lower() in names:
        return value.lower()
    raise fail(key, value, " | ".join(names))


# ---------------------------------------------------------------------------------------------
# the built-in keys

BASE_SPECS: dict[str, KeySpec] = {
    # what to run
    "model": KeySpec(DEFAULT_MODEL, _model, "model name"),
    "dataset": KeySpec(DEFAULT_DATASET, _dataset, "dataset folder or bundled dataset name"),
    # data reading and splitting (see simkgcl.data)
    "data_format": KeySpec(None, choice(DATA_FORMATS, optional=True),
                           "file layout; null = detect"),
    "kg_id_space": KeySpec("shared", choice(KG_ID_SPACES),
                           "shared: item i is entity i; separate: KG tails have their own ids"),
    "threshold": KeySpec(None, _threshold, "keep interactions with column >= value"),
    "kg_reverse_r": KeySpec(False, boolean, "add inverse relations to the KG"),
    "benchmark_filename": KeySpec(None, _benchmark_filename, "suffixes of fixed split files"),
    "valid_ratio": KeySpec(0.1, float_in(0.0, 1.0, lo_open=True, hi_open=True),
                           "share of training data held out for validation (fixed splits)"),
    "valid_on_test": KeySpec(False, boolean, "validate on the test file (seed's KGAT habit)"),
    "eval_args": KeySpec({"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
                          "mode": "full"}, _eval_args, "how to split and evaluate", merge=True),
    # training
    "epochs": KeySpec(300, int_in(0), "maximum number of training epochs"),
    "train_batch_size": KeySpec(2048, int_in(1), "training triples per batch"),
    "learner": KeySpec("adam", choice(LEARNERS), "optimiser"),
    "learning_rate": KeySpec(1e-3, float_in(0.0, lo_open=True), "optimiser step size"),
    "fused_optimizer": KeySpec(True, boolean,
                               "Adam's fused single-kernel step where the device supports it "
                               "(same updates up to float rounding, ~4x faster step on CPU)"),
    "weight_decay": KeySpec(0.0, float_in(0.0), "optimiser weight decay"),
    "neg_sampling": KeySpec({"uniform": 1}, _neg_sampling, "negative sampling"),
    "clip_grad_norm": KeySpec(None, _clip_grad_norm, "gradient clipping"),
    # validation and early stopping
    "eval_step": KeySpec(1, int_in(0), "validate every N epochs (0: never, keep last model)"),
    "stopping_step": KeySpec(10, int_in(0), "stop after N validations without improvement"),
    # 25 was chosen from measurements (BENCHMARKS.md): with RecBole's rule (0) LightGCN stops on
    # its initial plateau in 2 of 3 seeds on lastfm-kg; 25 and 50 give identical results there.
    "stopping_warmup": KeySpec(25, int_in(0),
                               "epochs before patience starts counting: validations in epochs "
                               "< N can set a new best but never count towards stopping_step "
                               "(0 = RecBole's rule, patience from the first validation)"),
    "time_budget": KeySpec(None, optional(float_in(0.0, lo_open=True)),
                           "seconds of training + validation (summed over resumed sessions); "
                           "training ends after the epoch that crosses it and the best model is "
                           "tested (null = no limit)"),
    "metrics": KeySpec(["Recall", "NDCG"], _metrics, "metrics to report"),
    "topk": KeySpec([10, 20, 50], _topk, "cut-offs K"),
    "valid_metric": KeySpec("NDCG@20", _valid_metric, "metric for early stopping"),
    "valid_metric_bigger": KeySpec(True, boolean, "whether a bigger valid_metric is better"),
    "eval_batch_size": KeySpec(4_096_000, int_in(1),
                               "score cells (users x items) per evaluation batch: the memory "
                               "budget; users per batch = eval_batch_size // n_items"),
    # environment and output
    "seed": KeySpec(2020, int_in(0, 2**32 - 1), "random seed for everything"),
    "reproducibility": KeySpec(True, boolean, "deterministic kernels where they are cheap"),
    "device": KeySpec("auto", _device, "auto | cpu | cuda | cuda:N (under torchrun, auto and "
                      "cuda mean each process's cuda:LOCAL_RANK)"),
    "mixed_precision": KeySpec("none", choice(("none", "bf16")),
                               "bf16 autocast of the training forward pass on CUDA (sparse "
                               "products, softmax and normalisation stay float32); none = fp32"),
    "threads": KeySpec(None, optional(int_in(1)),
                       "CPU threads torch may use (torch.set_num_threads); null = torch's "
                       "default (all cores)"),
    "checkpoint_dir": KeySpec("runs", string, "folder that receives run folders"),
    "show_progress": KeySpec(True, boolean, "progress bar per epoch"),
}


# ---------------------------------------------------------------------------------------------
# parsing helpers


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value read as a YAML scalar/collection, never evaluated) -> (key, value)."""
    if "=" not in text:
        raise ConfigError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"expected key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read the value of {key!r} ({raw!r}) as YAML: {exc}") from exc
    return key, value


def read_yaml_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML ``what`` (config file, search space file ...) as a dict (empty file -> {})."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value at the top level")
    return {str(k): v for k, v in data.items()}


def _set_dotted(target: dict[str, Any], key: str, value: Any, specs: Mapping[str, KeySpec]) -> None:
    """Apply one layer entry; ``a.b`` writes into the mapping held by key ``a``."""
    if "." not in key:
        target[key] = copy.deepcopy(value)
        return
    head, rest = key.split(".", 1)
    spec = specs.get(head)
    if spec is None or not isinstance(spec.default, dict):
        if spec is None:
            raise ConfigError(unknown_key_message(head, specs))
        raise ConfigError(f"config key {head!r} is not a mapping, so {key!r} is not valid")
    node = target.get(head)
    node = copy.deepcopy(node if isinstance(node, dict) else spec.default)
    cursor = node
    parts = rest.split(".")
    for part in parts[:-1]:
        nxt = cursor.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
        cursor[part] = nxt
        cursor = nxt
    cursor[parts[-1]] = copy.deepcopy(value)
    target[head] = node


def _model_specs(model_name: str) -> dict[str, KeySpec]:
    """The keys ``model_name`` declares (its ``keys``), each with its own range."""
    from simkgcl.models import get_model_class

    try:
        cls = get_model_class(model_name)
    except ImportError as exc:
        raise ConfigError(f"model {model_name!r} is not available in this installation ({exc})"
                          ) from exc
    return dict(cls.keys)


def _other_models_owning(key: str, model_name: str) -> list[str]:
    """Names of the other models that define ``key`` (to explain a key in the wrong place)."""
    from simkgcl.models import available_models, get_model_class

    owners = []
    for name in available_models():
        if name == model_name:
            continue
        try:
            if key in get_model_class(name).keys:
                owners.append(name)
        except (ImportError, AttributeError):
            continue
    return owners


# ---------------------------------------------------------------------------------------------


class Config(Mapping[str, Any]):
    """Resolved, validated settings of one run.

    Precedence, lowest first: built-in defaults, the model's ``keys``, each YAML file in
    ``files`` (in order), ``values`` and keyword arguments, then ``overrides`` (``key=value``
    strings or a mapping; dotted keys such as ``eval_args.order=TO`` reach into mappings).
    """

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        files: Sequence[str | Path] = (),
        overrides: Sequence[str] | Mapping[str, Any] = (),
        **kwargs: Any,
    ) -> None:
        layers: list[tuple[str, dict[str, Any]]] = []
        for f in files:
            layers.append((str(f), read_yaml_file(f)))
        explicit = dict(values or {})
        explicit.update(kwargs)
        if explicit:
            layers.append(("values", explicit))
        if isinstance(overrides, Mapping):
            layers.append(("overrides", dict(overrides)))
        else:
            parsed: dict[str, Any] = {}
            for text in overrides:
                k, v = parse_override(text)
                parsed[k] = v
            layers.append(("overrides", parsed))
        self._values = self._resolve(layers)

    # -- resolution ---------------------------------------------------------------------------

    @staticmethod
    def _resolve(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        model_name = DEFAULT_MODEL
        for _, layer in layers:
            if "model" in layer:
                model_name = layer["model"]
        model_name = _model("model", model_name)
        specs = dict(BASE_SPECS)
        specs.update(_model_specs(model_name))

        resolved: dict[str, Any] = {k: copy.deepcopy(s.default) for k, s in specs.items()}
        for source, layer in layers:
            for key, value in layer.items():
                head = key.split(".", 1)[0]
                if head not in specs:
                    owners = _other_models_owning(head, model_name)
                    hint = (f"it belongs to model{'s' if len(owners) > 1 else ''} "
                            f"{', '.join(map(repr, owners))}, this run uses {model_name!r}"
                            if owners else f"from {source}")
                    raise ConfigError(unknown_key_message(head, specs, hint))
                spec = specs[head]
                if "." in key:
                    _set_dotted(resolved, key, value, specs)
                elif spec.merge and isinstance(value, dict) and isinstance(resolved[head], dict):
                    merged = dict(resolved[head])
                    merged.update(copy.deepcopy(value))
                    resolved[head] = merged
                else:
                    resolved[key] = copy.deepcopy(value)
        resolved["model"] = model_name
        out = {key: specs[key].check(key, resolved[key]) for key in specs}
        _check_cross_keys(out)
        return out

    # -- mapping interface --------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(unknown_key_message(key, self._values)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config(model={self['model']!r}, dataset={self['dataset']!r}, ...)"

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self._values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._values = state["values"]

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of every resolved key (what ``config.yaml`` holds)."""
        return copy.deepcopy(self._values)

    def replace(self, **changes: Any) -> Config:
        """A new, re-validated config with some keys changed."""
        return Config(self._values, overrides=changes)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._values, sort_keys=True, default_flow_style=None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
        """Read a saved ``config.yaml`` back (re-validated)."""
        return cls(files=[path], overrides=overrides)

    def describe(self) -> list[str]:
        """Lines ``key = value`` for the log, sorted by key."""
        return [f"{k} = {self._values[k]!r}" for k in sorted(self._values)]


def _check_cross_keys(cfg: dict[str, Any]) -> None:
    """Constraints that involve several keys."""
    k = cfg["valid_metric"].split("@")[1]
    if int(k) not in cfg["topk"]:
        raise ConfigError(f"config key 'valid_metric': {cfg['valid_metric']!r} uses K={k}, which "
                          f"is not in topk {cfg['topk']}; add {k} to topk or choose another K")


def available_keys(model: str = DEFAULT_MODEL) -> dict[str, KeySpec]:
    """Every key valid for ``model`` with its spec (for help texts and documentation)."""
    specs = dict(BASE_SPECS)
    specs.update(_model_specs(model))
    return specs
