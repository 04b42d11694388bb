"""The self-contained model artifact every run writes, and its safe loader.

Layout of ``<run_dir>/artifact/``:

* ``tensors.pt`` — a plain ``dict[str, Tensor]`` (user/item embeddings, each user's training
  items as CSR ``seen_indptr``/``seen_indices``), read with ``torch.load(weights_only=True)`` so
  opening someone else's artifact never executes pickled code;
* ``meta.json`` — format version, model and dataset names, resolved config, metrics, and the
  user/item token lists that map internal ids back to the user's original ids.

Both files are written atomically (temporary file + rename) so a crash mid-write never leaves
a half artifact that looks complete.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from simkgcl.errors import ArtifactError

FORMAT_VERSION = 1
ARTIFACT_DIR = "artifact"
TENSOR_FILE = "tensors.pt"
META_FILE = "meta.json"
_TENSOR_KEYS = ("user_embeddings", "item_embeddings", "seen_indptr", "seen_indices")
_META_KEYS = ("model", "dataset", "user_tokens", "item_tokens")


@dataclass
class Artifact:
    """Everything needed to rank items for users, in memory, with original tokens."""

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
    path: Path | None = field(default=None, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    @property
    def embedding_dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    def seen_items(self, user: int) -> Tensor:
        """Internal ids of the items ``user`` (internal id) interacted with in training."""
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]


def _atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _check_unique(tokens: Sequence[str], kind: str) -> None:
    """Duplicate tokens would make the token -> id map ambiguous."""
    if len(set(tokens)) != len(tokens):
        dup = next(tok for tok, n in Counter(tokens).items() if n > 1)
        raise ArtifactError(f"{kind} tokens must be unique (token {dup!r} appears more than once)")


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
    """Write the artifact under ``run_dir/artifact`` and return that folder.

    ``train_users``/``train_items`` are the internal ids of the training interactions; they are
    stored per user so that serving can leave out items a user has already seen.
    """
    users_tok = [str(t) for t in user_tokens]
    items_tok = [str(t) for t in item_tokens]
    n_users, n_items = len(users_tok), len(items_tok)
    _check_unique(users_tok, "user")
    _check_unique(items_tok, "item")
    user_emb = user_embeddings.detach().float().cpu().contiguous()
    item_emb = item_embeddings.detach().float().cpu().contiguous()
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ArtifactError(
            f"user/item embeddings must be 2-D with one width, got {tuple(user_emb.shape)} and "
            f"{tuple(item_emb.shape)}"
        )
    if user_emb.shape[0] != n_users or item_emb.shape[0] != n_items:
        raise ArtifactError(
            f"embeddings have {user_emb.shape[0]} users x {item_emb.shape[0]} items but the token "
            f"lists have {n_users} users x {n_items} items"
        )
    train_u = np.asarray(train_users, dtype=np.int64).reshape(-1)
    train_i = np.asarray(train_items, dtype=np.int64).reshape(-1)
    if train_u.shape != train_i.shape:
        raise ArtifactError("train_users and train_items must have the same length")
    if train_u.size and (train_u.min() < 0 or train_u.max() >= n_users):
        raise ArtifactError(f"training user ids must lie in 0..{n_users - 1}")
    if train_i.size and (train_i.min() < 0 or train_i.max() >= n_items):
        raise ArtifactError(f"training item ids must lie in 0..{n_items - 1}")
    order = np.lexsort((train_i, train_u))
    counts = np.bincount(train_u, minlength=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    tensors = {
        "user_embeddings": user_emb,
        "item_embeddings": item_emb,
        "seen_indptr": torch.from_numpy(indptr),
        "seen_indices": torch.from_numpy(np.ascontiguousarray(train_i[order])),
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "dataset": dataset,
        "config": config,
        "metrics": metrics,
        "user_tokens": users_tok,
        "item_tokens": items_tok,
    }
    out = Path(run_dir) / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / TENSOR_FILE, lambda fh: torch.save(tensors, fh))
    _atomic_write_bytes(
        out / META_FILE, lambda fh: fh.write(json.dumps(meta, default=str).encode())
    )
    return out


def _validate_tensors(tensors: object, tensor_path: Path, n_users: int, n_items: int) -> None:
    """Refuse anything but the expected tensors with consistent shapes (no silent misuse)."""
    if not isinstance(tensors, dict):
        raise ArtifactError(f"{tensor_path}: expected a dictionary of tensors")
    missing = set(_TENSOR_KEYS) - set(tensors)
    if missing:
        raise ArtifactError(f"{tensor_path}: missing tensors {sorted(missing)}")
    for key in _TENSOR_KEYS:
        if not isinstance(tensors[key], Tensor):
            raise ArtifactError(f"{tensor_path}: {key!r} is not a tensor")
    user_emb, item_emb = tensors["user_embeddings"], tensors["item_embeddings"]
    indptr, indices = tensors["seen_indptr"], tensors["seen_indices"]
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ArtifactError(f"{tensor_path}: embeddings must be 2-D with the same width")
    if user_emb.shape[0] != n_users or item_emb.shape[0] != n_items:
        raise ArtifactError(
            f"{tensor_path}: embedding sizes ({user_emb.shape[0]} users, {item_emb.shape[0]} "
            f"items) do not match the token lists ({n_users} users, {n_items} items)"
        )
    bad_csr = (
        indptr.dim() != 1
        or indptr.shape[0] != n_users + 1
        or indices.dim() != 1
        or indptr.dtype != torch.int64
        or indices.dtype != torch.int64
        or int(indptr[0]) != 0
        or int(indptr[-1]) != indices.shape[0]
        or bool((indptr[1:] < indptr[:-1]).any())
        or (indices.numel() > 0 and (int(indices.min()) < 0 or int(indices.max()) >= n_items))
    )
    if bad_csr:
        raise ArtifactError(f"{tensor_path}: the seen-items index (seen_indptr/seen_indices) "
                            "is inconsistent")


def load_artifact(run_dir: str | Path) -> Artifact:
    """Load ``run_dir/artifact`` (or an artifact folder given directly) without unpickling code."""
    path = Path(run_dir)
    if (path / ARTIFACT_DIR).is_dir():
        path = path / ARTIFACT_DIR
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ArtifactError(f"{run_dir}: no model artifact found (expected {ARTIFACT_DIR}/"
                            f"{META_FILE} and {TENSOR_FILE}; is this a finished run folder?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: not a readable artifact description ({exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: not a readable artifact description")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{meta_path}: artifact format version {version!r} is not supported by this simkgcl "
            f"(reads version {FORMAT_VERSION}); retrain or use a matching simkgcl release"
        )
    missing_meta = [k for k in _META_KEYS if k not in meta]
    if missing_meta:
        raise ArtifactError(f"{meta_path}: missing fields {missing_meta}")
    try:
        tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or something that is not plain tensors
        raise ArtifactError(f"{tensor_path}: cannot be loaded safely ({exc})") from exc
    user_tokens = [str(t) for t in meta["user_tokens"]]
    item_tokens = [str(t) for t in meta["item_tokens"]]
    _validate_tensors(tensors, tensor_path, len(user_tokens), len(item_tokens))
    return Artifact(
        model=str(meta["model"]),
        dataset=str(meta["dataset"]),
        config=meta.get("config") or {},
        metrics=meta.get("metrics") or {},
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        user_embeddings=tensors["user_embeddings"].float().contiguous(),
        item_embeddings=tensors["item_embeddings"].float().contiguous(),
        seen_indptr=tensors["seen_indptr"],
        seen_indices=tensors["seen_indices"],
        path=path,
    )
