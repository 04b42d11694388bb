"""The run folder: every path of a run and every read and write of it, in one place.

Layout of ``<checkpoint_dir>/<model>-<dataset>-<YYYYmmdd-HHMMSS>/``::

    config.yaml          the resolved config (written once, when the run starts)
    train.log            the run's log (appended to by every session, resumed ones too)
    metrics.jsonl        one JSON record per trained epoch
    checkpoints/best.pt  the best model so far (weights, epoch, score, validation metrics)
    checkpoints/last.pt  everything needed to continue exactly (see ``Trainer.resume``)
    results.json         best validation, test metrics (overall and by user group) and timings,
                         once the run has finished
    test_per_user.npz    every test user's metrics, keyed by user token (no pickle)
    artifact/            embeddings and token maps for serving (``simkgcl.artifact``)
    tensorboard/         event files, when tensorboard is installed

Nothing else in the package builds these paths. Writes are atomic (a reader sees the old or the
new file, never half of one), except ``metrics.jsonl``, which is appended line by line: a line
cut short by a crash is skipped when the history is read back. An ``OSError`` while creating or
writing the folder (read-only file system, full disk) becomes an :class:`ArtifactError` naming
the path, so the command line reports one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from simkgcl.artifact import ARTIFACT_DIR, save_artifact
from simkgcl.config import Config
from simkgcl.errors import ArtifactError
from simkgcl.training.checkpoint import atomic_write_bytes, save_checkpoint

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PER_USER_FILE = "test_per_user.npz"  # every test user's metrics (simkgcl.evaluation.per_user)
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
TENSORBOARD_DIR = "tensorboard"


def safe_path_part(name: str) -> str:
    """``name`` with every character that is awkward in a folder name replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def create_fresh_dir(root: str | Path, base: str) -> Path:
    """Create ``root/base`` (or ``base-2``, ``base-3`` ... if taken) atomically and return it.

    ``root`` is created if needed; a folder that cannot be created is an :class:`ArtifactError`.
    """
    root = Path(root)
    with _os_errors(root):
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = root / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    raise ArtifactError(f"{root}: cannot create a fresh folder named {base}")


def timestamped_name(*parts: str) -> str:
    """``part1-part2-...-YYYYmmdd-HHMMSS`` with awkward characters replaced."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join([*(safe_path_part(p) for p in parts), stamp])


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    """Turn an OSError (permissions, full disk, a file in the way) into one clear line."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ArtifactError(f"{exc.filename or path}: cannot write the run folder ({reason})"
                            ) from exc


class RunFolder:
    """One run's folder. ``RunFolder(path)`` opens an existing one; :meth:`create` a new one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def create(cls, checkpoint_dir: str | Path, model: str, dataset_name: str) -> RunFolder:
        """A new, empty ``<checkpoint_dir>/<model>-<dataset>-<timestamp>`` (suffixed if taken)."""
        folder = cls(create_fresh_dir(checkpoint_dir, timestamped_name(model, dataset_name)))
        with _os_errors(folder.checkpoint_dir):
            folder.checkpoint_dir.mkdir(exist_ok=True)
        return folder

    @classmethod
    def is_run_folder(cls, path: str | Path) -> bool:
        """Whether ``path`` holds a run (its ``config.yaml``)."""
        return (Path(path) / CONFIG_FILE).is_file()

    # -- paths ----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def per_user_path(self) -> Path:
        return self.path / PER_USER_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / BEST_CHECKPOINT

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / LAST_CHECKPOINT

    @property
    def artifact_dir(self) -> Path:
        return self.path / ARTIFACT_DIR

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    # -- config ---------------------------------------------------------------------------------

    def write_config(self, config: Config) -> None:
        self._write(self.config_path, config.to_yaml().encode())

    def read_config(self, overrides: Any = ()) -> Config:
        """The saved config with ``overrides`` applied; an error if this is not a run folder."""
        if not self.config_path.is_file():
            raise ArtifactError(f"{self.path}: not a run folder (no {CONFIG_FILE})")
        return Config.load(self.config_path, overrides=overrides)

    def require_resumable(self) -> None:
        if not self.config_path.is_file() or not self.last_path.is_file():
            raise ArtifactError(
                f"{self.path}: not a resumable run folder (needs {CONFIG_FILE} and "
                f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}; a run writes them after its first epoch)")

    # -- per-epoch records ----------------------------------------------------------------------

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` (flushed before returning)."""
        with _os_errors(self.metrics_path), open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def read_history(self, before_epoch: int | None = None) -> list[dict[str, Any]]:
        """Epoch records from ``metrics.jsonl`` (only epochs < ``before_epoch`` if given)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if before_epoch is None or record.get("epoch", 0) < before_epoch:
                records.append(record)
        return records

    def truncate_history(self, before_epoch: int) -> None:
        """Keep only the records of epochs < ``before_epoch`` (a resumed run trains the rest)."""
        kept = self.read_history(before_epoch=before_epoch)
        self._write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # -- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, path: Path, payload: Mapping[str, Any]) -> None:
        """Write ``payload`` (plain data and tensors) to ``path`` atomically."""
        with _os_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, dict(payload))

    def best_or_last_path(self) -> Path:
        """The checkpoint to evaluate: ``best.pt``, or ``last.pt`` when no validation ran."""
        return self.best_path if self.best_path.is_file() else self.last_path

    # -- results --------------------------------------------------------------------------------

    def write_results(self, results: Mapping[str, Any]) -> None:
        self._write(self.results_path, (json.dumps(results, indent=2) + "\n").encode())

    def read_results(self) -> dict[str, Any]:
        if not self.results_path.is_file():
            raise ArtifactError(f"{self.path}: no {RESULTS_FILE} (the run did not finish)")
        return json.loads(self.results_path.read_text(encoding="utf-8"))

    def record_test_metrics(self, test: Mapping[str, float]) -> None:
        """Fill in the test metrics of a run trained without them (a search's best trial)."""
        results = self.read_results()
        results["test"] = dict(test)
        self.write_results(results)

    # -- artifact, log, tensorboard -------------------------------------------------------------

    def save_artifact(self, **content: Any) -> Path:
        """Write ``artifact/`` (see :func:`simkgcl.artifact.save_artifact` for ``content``)."""
        with _os_errors(self.artifact_dir):
            return save_artifact(self.path, **content)

    def log_handler(self) -> logging.Handler:
        """A handler appending to ``train.log`` (the caller attaches and closes it)."""
        with _os_errors(self.log_path):
            handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        return handler

    def tensorboard_writer(self) -> Any:
        """A tensorboard ``SummaryWriter`` on ``tensorboard/``, or None without tensorboard."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(log_dir=str(self.tensorboard_dir))

    # -- writing --------------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        with _os_errors(path):
            atomic_write_bytes(path, data)


__all__ = ["RunFolder", "create_fresh_dir", "safe_path_part", "timestamped_name"]
