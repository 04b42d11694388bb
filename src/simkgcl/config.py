"""Run configuration: built-in defaults <- model defaults <- YAML files <- explicit values.

Key names follow RecBole where the seed uses them (``epochs``, ``learner``, ``eval_args`` ...), so
a RecBole user's YAML mostly works unchanged. Every key is validated: an unknown key names the
closest valid one, a bad value says what is allowed. A :class:`Config` is a plain mapping that a
library user builds in Python (``Config(model="bpr", epochs=5)``); the CLI merely feeds it the
``--config`` files and ``key=value`` strings it was given.

The data settings' rules live in :mod:`simkgcl.data.options` (the data layer checks its own
arguments without a Config), each model's in its ``keys``, YAML reading in
:mod:`simkgcl.yaml_input`; this module holds the run keys' table and the layering (under
500 lines, kept together so that every run key and its rule can be read in one place).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from simkgcl.data.options import (
    DEFAULT_DATASET,
    DEFAULT_EVAL_ARGS,
    DEFAULT_SEED,
    DEFAULT_VALID_RATIO,
    check_benchmark_filename,
    check_eval_args,
    check_kg_id_space,
    check_layout,
    check_threshold,
    check_valid_ratio,
)
from simkgcl.errors import ConfigError
from simkgcl.keyspec import (
    KeySpec,
    allows,
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
from simkgcl.yaml_input import parse_override, read_yaml_file

DEFAULT_MODEL = "simkgcl"
ALLOWED_METRICS = ("Recall", "NDCG", "MRR", "Hit", "Precision", "MAP", "ItemCoverage")
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop")

_DEVICES = "auto | cpu | cuda | cuda:N"
_METRICS = "a non-empty list of " + ", ".join(ALLOWED_METRICS)
_TOPK = "a positive integer or a non-empty list of positive integers"
_VALID_METRIC = "METRIC@K, e.g. NDCG@20, with METRIC one of " + ", ".join(ALLOWED_METRICS)
_NEG_SAMPLING = ("{uniform: N} or {popularity: N} with N a positive integer (negatives per "
                 "positive; popularity: see neg_popularity_alpha)")
_CLIP = "null, or {max_norm: X} with X > 0 (optionally norm_type: P)"


@allows(_DEVICES)
def _device(key: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value.strip().lower()):
        return value.strip().lower()
    raise fail(key, value, _DEVICES)


def _metric_name(key: str, value: Any) -> str:
    lookup = {m.lower(): m for m in ALLOWED_METRICS}
    if isinstance(value, str) and value.lower() in lookup:
        return lookup[value.lower()]
    raise fail(key, value, ", ".join(ALLOWED_METRICS))


@allows(_METRICS)
def _metrics(key: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise fail(key, value, _METRICS)
    out: list[str] = []
    for item in items:
        name = _metric_name(key, item)
        if name not in out:
            out.append(name)
    return out


@allows(_TOPK)
def _topk(key: str, value: Any) -> list[int]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list) or not items:
        raise fail(key, value, _TOPK)
    ks = sorted({as_int(key, k, _TOPK) for k in items})
    if ks[0] < 1:
        raise fail(key, value, _TOPK)
    return ks


@allows(_VALID_METRIC)
def _valid_metric(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.count("@") != 1:
        raise fail(key, value, _VALID_METRIC)
    name, k = value.split("@")
    if not k.strip().isdigit() or int(k) < 1:
        raise fail(key, value, _VALID_METRIC)
    return f"{_metric_name(key, name.strip())}@{int(k)}"


@allows(_NEG_SAMPLING)
def _neg_sampling(key: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) != 1:
        raise fail(key, value, _NEG_SAMPLING)
    (dist, n), = value.items()
    if str(dist).lower() not in ("uniform", "popularity"):
        raise fail(key, value, _NEG_SAMPLING)
    n_int = as_int(key, n, _NEG_SAMPLING)
    if n_int < 1:
        raise fail(key, value, _NEG_SAMPLING)
    return {str(dist).lower(): n_int}


@allows(_CLIP)
def _clip_grad_norm(key: str, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"max_norm": value}
    if not isinstance(value, dict) or "max_norm" not in value or set(value) - {"max_norm",
                                                                                "norm_type"}:
        raise fail(key, value, _CLIP)
    out = {"max_norm": float_in(0, lo_open=True)(f"{key}.max_norm", value["max_norm"])}
    if "norm_type" in value:
        out["norm_type"] = float_in(0, lo_open=True)(f"{key}.norm_type", value["norm_type"])
    return out


_GROUP_EDGES = ("a list of increasing non-negative integers (inclusive upper bounds of the user "
                "groups by training interactions), e.g. [1, 3, 5, 10, 20, 50]; [] for none")


@allows(_GROUP_EDGES)
def _group_edges(key: str, value: Any) -> list[int]:
    allowed = _GROUP_EDGES
    if not isinstance(value, list):
        raise fail(key, value, allowed)
    edges = [as_int(key, v, allowed) for v in value]
    if any(e < 0 for e in edges) or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise fail(key, value, allowed)
    return edges


@allows("auto | off")
def _blend_mode(key: str, value: Any) -> str:
    """auto | off; YAML reads a bare ``off`` as false (and ``on`` as true), so those count."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    return choice(("auto", "off"))(key, value)


@allows("a folder of data files or a bundled dataset name")
def _dataset(key: str, value: Any) -> str:
    if value is None:
        return DEFAULT_DATASET
    if isinstance(value, Path):
        return str(value)
    return string(key, value)


@allows("the name of a model in the registry (simkgcl.models)")
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
    "data_format": KeySpec(None, check_layout, "file layout; null = detect"),
    "kg_id_space": KeySpec("shared", check_kg_id_space,
                           "shared: item i is entity i; separate: KG tails have their own ids"),
    "threshold": KeySpec(None, check_threshold, "keep interactions with column >= value"),
    "kg_reverse_r": KeySpec(False, boolean, "add inverse relations to the KG"),
    "benchmark_filename": KeySpec(None, check_benchmark_filename,
                                  "suffixes of fixed split files"),
    "valid_ratio": KeySpec(DEFAULT_VALID_RATIO, check_valid_ratio,
                           "share of each user's training data held out for validation when the "
                           "split has no validation part (0: none, the last model is kept)"),
    "valid_on_test": KeySpec(False, boolean, "validate on the test file (seed's KGAT habit)"),
    "eval_args": KeySpec(DEFAULT_EVAL_ARGS, check_eval_args, "how to split and evaluate",
                         merge=True),
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
    "neg_popularity_alpha": KeySpec(1.0, float_in(-2.0, 2.0),
                                    "with neg_sampling {popularity: N}: negatives drawn with "
                                    "probability ∝ (training count + 1)^alpha (1 ≈ RecBole's "
                                    "popularity sampling; < 0 favours rare items)"),
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
    # user groups (simkgcl.evaluation.groups): reported for the test split only
    "test_per_user": KeySpec(True, boolean,
                             "keep every test user's metrics (test_per_user.npz, paired by user "
                             "token) and report them by user group in results.json and the log"),
    "user_groups": KeySpec([1, 3, 5, 10, 20, 50], _group_edges,
                           "inclusive upper bounds of the user groups by training interactions "
                           "(default: ≤1, 2–3, 4–5, 6–10, 11–20, 21–50, >50)"),
    "user_group_quantiles": KeySpec(5, int_in(0),
                                    "also group the test users by quantiles of their training "
                                    "interactions (5 = quintiles; 0 or 1 = off)"),
    "popularity_blend": KeySpec("auto", _blend_mode,
                                "after training, fit β per user group on validation for "
                                "score = z(model) + β·z(log(1+popularity)) and keep it where "
                                "validation improves (auto; simkgcl.calibration), or never (off)"),
    "eval_batch_size": KeySpec(4_096_000, int_in(1),
                               "score cells (users x items) per evaluation batch: the memory "
                               "budget; users per batch = eval_batch_size // n_items"),
    # environment and output
    "seed": KeySpec(DEFAULT_SEED, int_in(0, 2**32 - 1), "random seed for everything"),
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
# resolution helpers


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


def model_keys(model_name: str) -> dict[str, KeySpec]:
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


def _unknown_key_error(key: str, specs: Mapping[str, KeySpec], model_name: str,
                       source: str) -> ConfigError:
    owners = _other_models_owning(key, model_name)
    if not owners:
        return ConfigError(unknown_key_message(key, specs, f"from {source}"))
    names = [repr(o) for o in owners]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    plural = "s" if len(owners) > 1 else ""
    return ConfigError(f"config key {key!r} (from {source}) belongs to model{plural} {listed}; "
                       f"this run uses model {model_name!r}, which does not take it")


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
            layers.append(("the values given", explicit))
        if isinstance(overrides, Mapping):
            layers.append(("key=value overrides", dict(overrides)))
        else:
            parsed: dict[str, Any] = {}
            for text in overrides:
                k, v = parse_override(text)
                parsed[k] = v
            layers.append(("key=value overrides", parsed))
        self._values = self._resolve(layers)

    # -- resolution ---------------------------------------------------------------------------

    @staticmethod
    def _resolve(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        model_name = DEFAULT_MODEL
        for _, layer in layers:
            if "model" in layer:
                model_name = layer["model"]
        model_name = _model("model", model_name)
        specs = available_keys(model_name)

        resolved: dict[str, Any] = {k: copy.deepcopy(s.default) for k, s in specs.items()}
        origin: dict[str, str] = {}
        for source, layer in layers:
            for key, value in layer.items():
                head = key.split(".", 1)[0]
                if head not in specs:
                    raise _unknown_key_error(head, specs, model_name, source)
                origin[head] = source
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
        out = {}
        for key, spec in specs.items():
            try:
                out[key] = spec.check(key, resolved[key])
            except ConfigError as exc:
                where = f" (from {origin[key]})" if key in origin else ""
                raise ConfigError(f"{exc}{where}") from None
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
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

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


def run_keys() -> dict[str, KeySpec]:
    """The keys every run takes, whatever its model."""
    return dict(BASE_SPECS)


def available_keys(model: str = DEFAULT_MODEL) -> dict[str, KeySpec]:
    """Every key valid for ``model`` with its spec: the run's keys, then the model's."""
    return {**run_keys(), **model_keys(model)}
