"""The experiment file of ``simkgcl compare``: datasets × models × seeds, read and checked once.

    name: baselines                      # optional; default: the file's name
    datasets:                            # label: folder (or bundled name), or {path, settings}
      lastfm-kg: ../../../shared/splits/lastfm-kg
      ml-100k: {path: ../../../shared/splits/ml-100k, settings: {eval_batch_size: 1000000}}
    models:                              # label: {model, config, settings} (all optional)
      bpr: {config: ../bpr.yaml}
      simkgcl-tuned: {model: simkgcl, config: "../tuned/simkgcl-{dataset}.yaml"}
    seeds: [2020, 2021, 2022]
    settings: {threads: 1}               # shared key: value settings of every run
    baseline: bpr                        # significance tests against this model label
    significance_metric: NDCG@20         # default: the baseline's valid_metric

Relative paths are read from the experiment file's folder (so the file works from any working
directory); ``{dataset}`` in a config path is replaced by the dataset's label, for per-dataset
tuned configs. The model a label trains is its ``model:``, else the label itself when it is a
model name, else the ``model:`` its config files set.

One run's settings, lowest precedence first: built-in defaults, the model's defaults, the model's
config files, the shared ``settings``, the dataset's ``settings``, the model's ``settings``, and
finally what the experiment fixes: ``dataset``, ``seed``, the run's own ``checkpoint_dir`` and
``show_progress: false``. Every run's config is built (and so validated) before anything trains:
a bad file stops with one line — the file, the line and what is wrong.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simkgcl.config import Config, read_yaml_file
from simkgcl.data.loader import bundled_names
from simkgcl.errors import ConfigError
from simkgcl.training.multiseed import parse_seeds

EXPERIMENT_COPY = "experiment.yaml"  # what describe() returns, stored in the experiment folder
TOP_KEYS = ("name", "datasets", "models", "seeds", "settings", "baseline", "significance_metric")
DATASET_KEYS = ("path", "settings")
MODEL_KEYS = ("model", "config", "settings")


@dataclass(frozen=True)
class DatasetEntry:
    label: str
    path: str  # absolute folder, or a bundled dataset's name
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    label: str
    model: str
    configs: tuple[str, ...] = ()  # absolute paths, may hold "{dataset}"
    settings: dict[str, Any] = field(default_factory=dict)

    def config_files(self, dataset: str) -> list[str]:
        return [c.replace("{dataset}", dataset) for c in self.configs]


@dataclass
class Experiment:
    """A checked experiment file (see the module docstring)."""

    name: str
    source: Path
    datasets: list[DatasetEntry]
    models: list[ModelEntry]
    seeds: list[int]
    settings: dict[str, Any]
    baseline: str | None
    significance_metric: str | None

    def run_config(self, dataset: DatasetEntry, model: ModelEntry, seed: int,
                   checkpoint_dir: str | Path) -> Config:
        """The resolved config of one (dataset, model, seed) run (precedence in the module doc)."""
        values = {**self.settings, **dataset.settings, **model.settings, "model": model.model,
                  "dataset": dataset.path, "seed": seed, "checkpoint_dir": str(checkpoint_dir),
                  "show_progress": False}
        return Config(files=model.config_files(dataset.label), overrides=values)


class _Lines:
    """Line numbers of the keys of a YAML document, for messages that point into the file."""

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        try:
            root = yaml.compose(text)
        except yaml.YAMLError:
            root = None
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[path + (str(key.value),)] = key.start_mark.line + 1
                self._walk(value, path + (str(key.value),))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                self._walk(value, path + (i,))

    def of(self, *path: Any) -> int | None:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None


class _Reader:
    """Checks one experiment file; every problem becomes ``FILE:LINE: message``."""

    def __init__(self, path: Path):
        self.path = path
        self.base = path.resolve().parent
        try:
            self.text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the experiment file ({exc.strerror})") from exc
        self.where = _Lines(self.text)

    def error(self, message: str, *path: Any) -> ConfigError:
        line = self.where.of(*path)
        return ConfigError(f"{self.path}{f':{line}' if line else ''}: {message}")

    def mapping(self, value: Any, what: str, allowed: tuple[str, ...], *path: Any
                ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"{what}: expected a mapping with keys {', '.join(allowed)}, got "
                             f"{type(value).__name__}", *path)
        for key in value:
            if str(key) not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.error(f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})"
                                 f"{hint}", *path, str(key))
        return {str(k): v for k, v in value.items()}

    def settings(self, value: Any, *path: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error("settings: expected a mapping of config key: value", *path)
        return {str(k): v for k, v in value.items()}

    def local_path(self, text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else self.base / p

    def dataset(self, label: str, value: Any) -> DatasetEntry:
        entry = {"path": value} if isinstance(value, str) else value
        entry = self.mapping(entry, f"dataset {label!r}", DATASET_KEYS, "datasets", label)
        raw = entry.get("path")
        if not isinstance(raw, str) or not raw:
            raise self.error(f"dataset {label!r}: expected a folder (or a bundled dataset name)",
                             "datasets", label)
        folder = self.local_path(raw)
        if folder.exists():
            path = str(folder.resolve())
        elif raw in bundled_names():
            path = raw
        else:
            raise self.error(f"dataset {label!r}: folder not found: {folder} (relative paths "
                             "are read from the experiment file's folder)", "datasets", label)
        return DatasetEntry(label, path,
                            self.settings(entry.get("settings"), "datasets", label, "settings"))

    def model(self, label: str, value: Any) -> ModelEntry:
        from simkgcl.models import available_models

        entry = self.mapping(value or {}, f"model {label!r}", MODEL_KEYS, "models", label)
        configs = entry.get("config") or []
        configs = [configs] if isinstance(configs, str) else configs
        if not isinstance(configs, list) or not all(isinstance(c, str) for c in configs):
            raise self.error(f"model {label!r}: config: expected a file or a list of files",
                             "models", label, "config")
        paths = tuple(str(self.local_path(c)) for c in configs)
        name = entry.get("model") or (label if label.lower() in available_models()
                                      else self.model_in_configs(label, paths))
        if not isinstance(name, str) or name.lower() not in available_models():
            raise self.error(f"model {label!r}: {name!r} is not a model name (available: "
                             f"{', '.join(available_models())}); set model: NAME", "models", label)
        return ModelEntry(label, name.lower(), paths,
                          self.settings(entry.get("settings"), "models", label, "settings"))

    def model_in_configs(self, label: str, paths: tuple[str, ...]) -> str:
        """The ``model:`` its config files set (the last one wins), else the label itself."""
        name = label
        for path in paths:
            file = Path(path.replace("{dataset}", "*"))
            for found in sorted(file.parent.glob(file.name))[:1]:
                try:
                    name = (read_yaml_file(found) or {}).get("model", name)
                except ConfigError as exc:
                    raise self.error(f"model {label!r}: {exc}", "models", label, "config") from exc
        return name

    def named_entries(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key)
        if not isinstance(value, dict) or not value:
            raise self.error(f"{key}: expected a non-empty mapping of label: entry", key)
        return {str(k): v for k, v in value.items()}

    def read(self) -> Experiment:
        try:
            doc = yaml.safe_load(self.text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{self.path}{line}: not valid YAML "
                              f"({getattr(exc, 'problem', None) or exc})") from exc
        doc = self.mapping(doc, "experiment file", TOP_KEYS)
        datasets = [self.dataset(k, v) for k, v in self.named_entries(doc, "datasets").items()]
        models = [self.model(k, v) for k, v in self.named_entries(doc, "models").items()]
        try:
            seeds = parse_seeds([doc["seeds"]] if isinstance(doc.get("seeds"), int)
                                else doc.get("seeds") or [])
        except ConfigError as exc:
            raise self.error(str(exc), "seeds") from exc
        baseline = doc.get("baseline")
        labels = [m.label for m in models]
        if baseline is not None and str(baseline) not in labels:
            raise self.error(f"baseline: {baseline!r} is not one of the models "
                             f"({', '.join(labels)})", "baseline")
        metric = doc.get("significance_metric")
        if metric is not None and baseline is None:
            raise self.error("significance_metric needs a baseline model to test against",
                             "significance_metric")
        name = doc.get("name") or self.path.stem
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise self.error("name: expected a non-empty name without '/'", "name")
        return Experiment(name=name, source=self.path.resolve(), datasets=datasets,
                          models=models, seeds=seeds,
                          settings=self.settings(doc.get("settings"), "settings"),
                          baseline=None if baseline is None else str(baseline),
                          significance_metric=None if metric is None else str(metric))

    def check_runs(self, experiment: Experiment) -> None:
        """Build every run's config (validates keys, values and config files) and the metric."""
        configs: dict[tuple[str, str], Config] = {}
        for model in experiment.models:
            for dataset in experiment.datasets:
                for cfg_file in model.config_files(dataset.label):
                    if not Path(cfg_file).is_file():
                        raise self.error(f"model {model.label!r}: config file not found: "
                                         f"{cfg_file}", "models", model.label, "config")
                try:
                    config = experiment.run_config(dataset, model, experiment.seeds[0], ".")
                except ConfigError as exc:
                    raise self.error(f"model {model.label!r} on dataset {dataset.label!r}: {exc}",
                                     "models", model.label) from exc
                configs[model.label, dataset.label] = config
                if experiment.significance_metric is None and model.label == experiment.baseline:
                    experiment.significance_metric = config["valid_metric"]
        metric = experiment.significance_metric
        if metric is None:
            return
        for (model_label, dataset_label), config in configs.items():
            names = {f"{m}@{k}" for m in config["metrics"] for k in config["topk"]}
            if metric not in names:
                raise self.error(f"significance_metric {metric!r} is not computed for model "
                                 f"{model_label!r} on {dataset_label!r} (its metrics: "
                                 f"{', '.join(sorted(names))})", "significance_metric")


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; ConfigError (``FILE:LINE: what``) if it is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: experiment file not found")
    reader = _Reader(p)
    experiment = reader.read()
    reader.check_runs(experiment)
    return experiment


def describe(experiment: Experiment) -> dict[str, Any]:
    """A plain-data copy of the experiment (stored beside its results)."""
    return {
        "name": experiment.name,
        "source": str(experiment.source),
        "datasets": {d.label: {"path": d.path, "settings": d.settings}
                     for d in experiment.datasets},
        "models": {m.label: {"model": m.model, "config": list(m.configs), "settings": m.settings}
                   for m in experiment.models},
        "seeds": experiment.seeds,
        "settings": experiment.settings,
        "baseline": experiment.baseline,
        "significance_metric": experiment.significance_metric,
    }
