"""Run folders read back from their files: settings, epochs, results, per-user test metrics.

Everything here reads the documented file formats of a run folder (``config.yaml``,
``metrics.jsonl``, ``results.json``, ``test_per_user.npz``, ``checkpoints/``, ``artifact/``), never
a live object, so an experiment or a report can be built from folders written by other processes,
other machines or earlier versions. A run is

* ``done`` when ``results.json`` holds test metrics and the artifact is written (the last step);
* ``resumable`` when ``checkpoints/last.pt`` exists (``resume_run`` continues it; a run killed
  while testing or writing its artifact finishes there too);
* ``started`` otherwise (killed before its first epoch ended: nothing worth keeping).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simkgcl.artifact import META_FILE
from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.training.run_folder import (
    RunFolder,
)


def is_run_dir(path: Path) -> bool:
    folder = RunFolder(path)
    return folder.config_path.is_file() and (folder.metrics_path.is_file()
                                             or folder.last_path.is_file()
                                             or folder.results_path.is_file())


def run_state(run_dir: Path) -> str:
    """``done``, ``resumable`` or ``started`` (see the module docstring)."""
    folder = RunFolder(run_dir)
    results = folder.results_path
    if results.is_file() and (folder.artifact_dir / META_FILE).is_file():
        try:
            if json.loads(results.read_text()).get("test"):
                return "done"
        except ValueError:
            pass
    if RunFolder(run_dir).last_path.is_file():
        return "resumable"
    return "started"


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or below ``root`` (a run folder's own subfolders are not searched)."""
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        found.extend(find_run_dirs(child))
    return found


@dataclass
class RunRecord:
    """One run folder as an experiment or report sees it."""

    run_dir: Path
    dataset: str  # the experiment's dataset label, else the run's dataset name
    label: str  # the experiment's model label, else the model name
    seed: int
    config: dict[str, Any]
    results: dict[str, Any] | None  # None until the run is done
    history: list[dict[str, Any]] = field(default_factory=list)
    _per_user: PerUserMetrics | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.results is not None and bool(self.results.get("test"))

    @property
    def test(self) -> dict[str, float]:
        return dict(self.results.get("test") or {}) if self.results else {}

    @property
    def has_per_user(self) -> bool:
        return RunFolder(self.run_dir).per_user_path.is_file()

    @property
    def per_user(self) -> PerUserMetrics:
        """The run's test metrics per user (read once)."""
        if self._per_user is None:
            self._per_user = PerUserMetrics.load(RunFolder(self.run_dir).per_user_path)
        return self._per_user


def read_run(run_dir: str | Path, *, dataset: str | None = None,
             label: str | None = None) -> RunRecord:
    """Read a run folder (finished or not)."""
    path = Path(run_dir)
    config = yaml.safe_load(RunFolder(path).config_path.read_text()) or {}
    results = None
    if run_state(path) == "done":
        results = RunFolder(path).read_results()
    name = (results or {}).get("dataset") or Path(str(config.get("dataset", "?"))).name
    return RunRecord(run_dir=path, dataset=dataset or name, label=label or config.get("model", "?"),
                     seed=int(config.get("seed", 0)), config=config, results=results,
                     history=RunFolder(path).read_history())
