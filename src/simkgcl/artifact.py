"""The self-contained model artifact every run writes, and its safe loader.

Layout of ``<run_dir>/artifact/``:

* ``tensors.pt`` — a plain ``dict[str, Tensor]`` (user/item embeddings, each user's training
  items as CSR ``seen_indptr``/``seen_indices``), read with ``torch.load(weights_only=True)`` so
  opening someone else's artifact never executes pickled code;
* ``meta.json`` — format version, model and dataset names, resolved config, metrics, and the
  user/item token lists that map internal ids back to the user's original ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simkgcl.errors import ArtifactError

FORMAT_VERSION = 1
ARTIFACT_DIR = "artifact"


@dataclass
class Artifact:
    model: str
    dataset: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    user_tokens: list[str]
    item_tokens: list[str]
    user_embeddings: Tensor  # (n_users, d) float32
    item_embeddings: Tensor  # (n_items, d) float32
    seen_indptr: Tensor  # (n_users + 1,) int64
    seen_indices: Tensor  # (n_seen,) int64

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    def seen_items(self, user: int) -> Tensor:
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_artifact(
    run_dir: str | Path,
    *,
    model: str,
    dataset: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    user_tokens: np.ndarray | list[str],
    item_tokens: np.ndarray | list[str],
    user_embeddings: Tensor,
    item_embeddings: Tensor,
    train_users: np.ndarray,
    train_items: np.ndarray,
) -> Path:
    """Write the artifact under ``run_dir/artifact`` and return that folder."""
    out = Path(run_dir) / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    n_users = len(user_tokens)
    order = np.lexsort((train_items, train_users))
    counts = np.bincount(train_users, minlength=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    tensors = {
        "user_embeddings": user_embeddings.detach().float().cpu().contiguous(),
        "item_embeddings": item_embeddings.detach().float().cpu().contiguous(),
        "seen_indptr": torch.from_numpy(indptr),
        "seen_indices": torch.from_numpy(np.asarray(train_items, dtype=np.int64)[order]),
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "dataset": dataset,
        "config": config,
        "metrics": metrics,
        "user_tokens": [str(t) for t in user_tokens],
        "item_tokens": [str(t) for t in item_tokens],
    }
    _atomic_write_bytes(out / "tensors.pt", lambda fh: torch.save(tensors, fh))
    _atomic_write_bytes(
        out / "meta.json", lambda fh: fh.write(json.dumps(meta, default=str).encode())
    )
    return out


def load_artifact(run_dir: str | Path) -> Artifact:
    """Load ``run_dir/artifact`` (or an artifact folder given directly) without unpickling code."""
    path = Path(run_dir)
    if (path / ARTIFACT_DIR).is_dir():
        path = path / ARTIFACT_DIR
    meta_path, tensor_path = path / "meta.json", path / "tensors.pt"
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ArtifactError(f"{run_dir}: no model artifact found (expected {ARTIFACT_DIR}/meta.json "
                            "and tensors.pt; is this a finished run folder?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: not a readable artifact description ({exc})") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{meta_path}: artifact format version {version!r} is not supported by this simkgcl "
            f"(reads version {FORMAT_VERSION}); retrain or use a matching simkgcl release"
        )
    try:
        tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or something that is not plain tensors
        raise ArtifactError(f"{tensor_path}: cannot be loaded safely ({exc})") from exc
    missing = {"user_embeddings", "item_embeddings", "seen_indptr", "seen_indices"} - set(tensors)
    if missing:
        raise ArtifactError(f"{tensor_path}: missing tensors {sorted(missing)}")
    art = Artifact(
        model=meta["model"],
        dataset=meta["dataset"],
        config=meta.get("config", {}),
        metrics=meta.get("metrics", {}),
        user_tokens=meta["user_tokens"],
        item_tokens=meta["item_tokens"],
        **{k: tensors[k] for k in ("user_embeddings", "item_embeddings", "seen_indptr",
                                   "seen_indices")},
    )
    if art.user_embeddings.shape[0] != art.n_users or art.item_embeddings.shape[0] != art.n_items:
        raise ArtifactError(f"{path}: embedding sizes do not match the token lists")
    return art
