"""The self-contained model artifact every run writes, and its safe loader.

Layout of ``<run_dir>/artifact/``:

* ``tensors.pt`` — a plain ``dict[str, Tensor]`` (user/item embeddings, each user's training
  items as CSR ``seen_indptr``/``seen_indices``), read with ``torch.load(weights_only=True)`` so
  opening someone else's artifact never executes pickled code;
* ``meta.json`` — format version, model and dataset names, resolved config, metrics, and the
  user/item token lists that map internal ids back to the user's original ids;
* optionally (format 2) the fitted popularity blend of :mod:`simkgcl.calibration`: its β table
  (plain JSON, ``meta.json``'s ``blend``: groups, betas, the split and metric it was fitted on)
  and the items' training counts (``tensors.pt``'s ``popularity``, float32). Whoever scores from
  the artifact applies it (``recommend``, ``export``, HTTP, ``simkgcl evaluate``).

Format 1 artifacts (no blend) still load; this version writes 2.

Optional parts (an artifact without them loads, and the features that need them say so):

* ``kg_triples`` (``n_triples x 3`` int32: head entity, relation, tail entity; entity i is item
  i) with ``entity_tokens`` and ``relation_tokens`` in ``meta.json`` — the knowledge graph in the
  dataset's own tokens, for explanations (:mod:`simkgcl.serving.explain`). int32 halves the
  largest part of the file (amazon-book with a 686k-triple KG: 8 MB instead of 16 MB).
* ``foldin_items`` (``n_items x d`` float32) with ``foldin`` in ``meta.json`` — the item table a
  propagation model aggregates a user row from (:meth:`simkgcl.models.base.Recommender.
  fold_in_items`), for users the model never saw (:mod:`simkgcl.serving.foldin`).

Both files are written with :func:`simkgcl.fileio.atomic_write_bytes` (unique temporary file,
fsync, rename, folder fsync) so a crash mid-write never leaves a half artifact that looks
complete. Saving and loading run the same :func:`check_artifact`, so a file that loads is one the
saver could have written: string tokens, unique per kind; finite float32 embeddings of one
width whose rows match the token lists; a consistent seen-items index.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simkgcl.calibration.blend import BlendTable
from simkgcl.errors import ArtifactError, quoted
from simkgcl.fileio import atomic_write_bytes, safe_torch_load

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ARTIFACT_DIR = "artifact"
TENSOR_FILE = "tensors.pt"
META_FILE = "meta.json"
_TENSOR_KEYS = ("user_embeddings", "item_embeddings", "seen_indptr", "seen_indices")
_META_KEYS = ("model", "dataset", "user_tokens", "item_tokens")
_OPTIONAL_TENSORS = ("kg_triples", "foldin_items")


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
    blend: BlendTable | None = None  # fitted popularity blend, applied when scoring
    popularity: Tensor | None = None  # (n_items,) float32 training counts (with ``blend``)

    entity_tokens: list[str] = field(default_factory=list)  # empty: no KG stored
    relation_tokens: list[str] = field(default_factory=list)
    kg_triples: Tensor | None = None  # (n_triples, 3) int32: head, relation, tail
    foldin_items: Tensor | None = None  # (n_items, d) float32
    foldin: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    @property
    def embedding_dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    def training_counts(self) -> np.ndarray:
        """Training interactions per user (from the seen-items index)."""
        return (self.seen_indptr[1:] - self.seen_indptr[:-1]).numpy()

    def seen_items(self, user: int) -> Tensor:
        """Internal ids of the items ``user`` (internal id) interacted with in training."""
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def item_degrees(self) -> Tensor:
        """Training interactions per item (distinct users), the degrees of the model's graph."""
        users = torch.repeat_interleave(torch.arange(self.n_users), self.seen_indptr.diff())
        pairs = torch.unique(users * self.n_items + self.seen_indices)
        return torch.bincount(pairs % self.n_items, minlength=self.n_items)


def _check_token_list(tokens: object, key: str, where: Path) -> list[str]:
    if not isinstance(tokens, list):
        raise ArtifactError(f"{where}: {key} must be a list of strings, got {type(tokens).__name__}")
    for position, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ArtifactError(f"{where}: {key} must be a list of strings (entry {position} is "
                                f"{quoted(token)})")
    return tokens


def _check_tokens(tokens: object, key: str, where: Path) -> list[str]:
    tokens = _check_token_list(tokens, key, where)
    if not tokens:
        raise ArtifactError(f"{where}: {key} is empty")
    if len(set(tokens)) != len(tokens):  # the token -> id map would be ambiguous
        dup = next(tok for tok, n in Counter(tokens).items() if n > 1)
        kind = key.removesuffix("_tokens")
        raise ArtifactError(f"{where}: {kind} tokens must be unique (token {quoted(dup)} "
                            "appears more than once)")
    return tokens


def _check_meta(meta: object, where: Path) -> tuple[int, int]:
    """The description's fields; returns (n_users, n_items)."""
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where}: not an artifact description (expected a JSON object)")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ArtifactError(
            f"{where}: artifact format version {quoted(version)} is not supported by this simkgcl "
            f"(reads versions {', '.join(map(str, READABLE_VERSIONS))}); retrain or use a "
            "matching simkgcl release"
        )
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ArtifactError(f"{where}: missing fields {missing}")
    for key in ("model", "dataset"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise ArtifactError(f"{where}: {key} must be a non-empty string, got "
                                f"{quoted(meta[key])}")
    for key in ("config", "metrics"):
        if not isinstance(meta.get(key, {}), dict):
            raise ArtifactError(f"{where}: {key} must be a JSON object, got "
                                f"{type(meta[key]).__name__}")
    n_users = len(_check_tokens(meta["user_tokens"], "user_tokens", where))
    n_items = len(_check_tokens(meta["item_tokens"], "item_tokens", where))
    return n_users, n_items


def _check_embeddings(tensors: Mapping[str, Tensor], where: Path, n_users: int,
                      n_items: int) -> None:
    for key, rows in (("user_embeddings", n_users), ("item_embeddings", n_items)):
        emb = tensors[key]
        if emb.dtype != torch.float32:
            raise ArtifactError(f"{where}: {key} must be float32, got {emb.dtype}")
        if emb.dim() != 2 or emb.shape[1] < 1:
            raise ArtifactError(f"{where}: {key} must be a 2-D table, got shape "
                                f"{tuple(emb.shape)}")
        if emb.shape[0] != rows:
            raise ArtifactError(f"{where}: {key} has {emb.shape[0]} rows but the token list has "
                                f"{rows} entries")
        if not bool(torch.isfinite(emb).all()):
            bad = int((~torch.isfinite(emb)).any(dim=1).sum())
            raise ArtifactError(f"{where}: {key} is not finite ({bad} rows hold NaN or "
                                "infinity); the model diverged or the file was altered")
    if tensors["user_embeddings"].shape[1] != tensors["item_embeddings"].shape[1]:
        raise ArtifactError(f"{where}: user and item embeddings differ in width "
                            f"({tensors['user_embeddings'].shape[1]} vs "
                            f"{tensors['item_embeddings'].shape[1]})")


def _check_seen_index(indptr: Tensor, indices: Tensor, where: Path, n_users: int,
                      n_items: int) -> None:
    bad = (
        indptr.dtype != torch.int64
        or indices.dtype != torch.int64
        or indptr.dim() != 1
        or indices.dim() != 1
        or indptr.shape[0] != n_users + 1
        or int(indptr[0]) != 0
        or int(indptr[-1]) != indices.shape[0]
        or bool((indptr[1:] < indptr[:-1]).any())
        or (indices.numel() > 0 and (int(indices.min()) < 0 or int(indices.max()) >= n_items))
    )
    if bad:
        raise ArtifactError(f"{where}: the seen-items index (seen_indptr/seen_indices) "
                            "is inconsistent")


def _check_blend(meta: dict, tensors: Mapping[str, Tensor], meta_path: Path,
                 tensor_path: Path, n_items: int) -> BlendTable | None:
    """The blend table, if the artifact has one, with its popularity vector checked."""
    if meta.get("blend") is None:
        if "popularity" in tensors:
            raise ArtifactError(f"{tensor_path}: 'popularity' without a blend in {META_FILE}")
        return None
    try:
        table = BlendTable.from_dict(meta["blend"])
    except ValueError as exc:
        raise ArtifactError(f"{meta_path}: blend: {exc}") from None
    pop = tensors.get("popularity")
    if not isinstance(pop, Tensor) or pop.dtype != torch.float32 or pop.shape != (n_items,) \
            or not bool(torch.isfinite(pop).all()) or bool((pop < 0).any()):
        raise ArtifactError(f"{tensor_path}: a blend needs 'popularity', {n_items} finite "
                            "non-negative float32 training counts")
    return table


def check_artifact(meta: object, tensors: object, *, meta_path: Path, tensor_path: Path) -> None:
    """Every rule an artifact obeys; ``save_artifact`` runs it before writing, the loader after
    reading, so the two can never disagree. Errors name ``meta_path`` or ``tensor_path``."""
    n_users, n_items = _check_meta(meta, meta_path)
    if not isinstance(tensors, dict):
        raise ArtifactError(f"{tensor_path}: expected a dictionary of tensors")
    missing = [k for k in _TENSOR_KEYS if k not in tensors]
    if missing:
        raise ArtifactError(f"{tensor_path}: missing tensors {missing}")
    for key in _TENSOR_KEYS:
        if not isinstance(tensors[key], Tensor):
            raise ArtifactError(f"{tensor_path}: {key!r} is not a tensor")
    _check_embeddings(tensors, tensor_path, n_users, n_items)
    _check_seen_index(tensors["seen_indptr"], tensors["seen_indices"], tensor_path, n_users,
                      n_items)
    assert isinstance(meta, dict)
    _check_blend(meta, tensors, meta_path, tensor_path, n_items)

    _check_extras(meta, tensors, meta_path, tensor_path)  # type: ignore[arg-type]


def _check_extras(meta: dict[str, Any], tensors: Mapping[str, Tensor], meta_path: Path,
                  tensor_path: Path) -> None:
    """The optional KG and fold-in parts: present together with what they refer to, in range."""
    for key in _OPTIONAL_TENSORS:
        if key in tensors and not isinstance(tensors[key], Tensor):
            raise ArtifactError(f"{tensor_path}: {key!r} is not a tensor")
    triples = tensors.get("kg_triples")
    if triples is not None:
        # entity tokens need not be unique: an item without a linked entity has token ''
        entities = _check_token_list(meta.get("entity_tokens"), "entity_tokens", meta_path) \
            if "entity_tokens" in meta else None
        relations = _check_token_list(meta.get("relation_tokens"), "relation_tokens",
                                      meta_path) if "relation_tokens" in meta else None
        if entities is None or relations is None:
            raise ArtifactError(f"{meta_path}: kg_triples needs entity_tokens and relation_tokens")
        n_items = len(meta["item_tokens"])
        bad = (triples.dtype != torch.int32 or triples.dim() != 2 or triples.shape[1] != 3
               or len(entities) < n_items)
        if not bad and triples.shape[0]:
            low, high = triples.min(dim=0).values, triples.max(dim=0).values
            bad = (int(low.min()) < 0 or int(high[0]) >= len(entities)
                   or int(high[2]) >= len(entities) or int(high[1]) >= len(relations))
        if bad:
            raise ArtifactError(f"{tensor_path}: kg_triples must be an int32 (n, 3) table of "
                                "(head, relation, tail) ids within the token lists")
    fold = tensors.get("foldin_items")
    if fold is not None:
        items = tensors["item_embeddings"]
        if fold.dtype != torch.float32 or fold.shape != items.shape:
            raise ArtifactError(f"{tensor_path}: foldin_items must be float32 of the item "
                                f"embeddings' shape {tuple(items.shape)}")
        if not bool(torch.isfinite(fold).all()):
            raise ArtifactError(f"{tensor_path}: foldin_items is not finite")
        if not isinstance(meta.get("foldin"), dict):
            raise ArtifactError(f"{meta_path}: foldin_items needs a 'foldin' description")


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
    blend: dict[str, Any] | None = None,
    popularity: Tensor | None = None,

    kg: tuple[np.ndarray, list[str], list[str]] | None = None,
    foldin_items: Tensor | None = None,
    foldin: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact under ``run_dir/artifact`` and return that folder.

    ``train_users``/``train_items`` are the internal ids of the training interactions; they are
    stored per user so that serving can leave out items a user has already seen. ``blend``
    (:meth:`BlendTable.to_dict`) and ``popularity`` (training counts per item) go together.
    ``kg`` is (triples as (head, relation, tail) ids, entity tokens, relation tokens);
    ``foldin_items`` and its description ``foldin`` come from the model (see the module
    docstring). Nothing is written unless :func:`check_artifact` accepts the result.
    """
    users_tok = [str(t) for t in user_tokens]
    items_tok = [str(t) for t in item_tokens]
    n_users, n_items = len(users_tok), len(items_tok)
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
        "user_embeddings": user_embeddings.detach().float().cpu().contiguous(),
        "item_embeddings": item_embeddings.detach().float().cpu().contiguous(),
        "seen_indptr": torch.from_numpy(indptr),
        "seen_indices": torch.from_numpy(np.ascontiguousarray(train_i[order])),
    }
    if popularity is not None:
        tensors["popularity"] = popularity.detach().float().cpu().contiguous()
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "dataset": dataset,
        "config": config,
        "metrics": metrics,
        "user_tokens": users_tok,
        "item_tokens": items_tok,
    }
    if blend is not None:
        meta["blend"] = blend

    if kg is not None:
        triples, entity_tokens, relation_tokens = kg
        tensors["kg_triples"] = torch.from_numpy(
            np.ascontiguousarray(np.asarray(triples).reshape(-1, 3), dtype=np.int32))
        meta["entity_tokens"] = [str(t) for t in entity_tokens]
        meta["relation_tokens"] = [str(t) for t in relation_tokens]
    if foldin_items is not None:
        tensors["foldin_items"] = foldin_items.detach().float().cpu().contiguous()
        meta["foldin"] = dict(foldin or {})
    out = Path(run_dir) / ARTIFACT_DIR
    check_artifact(meta, tensors, meta_path=out / META_FILE, tensor_path=out / TENSOR_FILE)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    atomic_write_bytes(out / TENSOR_FILE, buffer.getvalue())
    atomic_write_bytes(out / META_FILE, json.dumps(meta, default=str).encode())
    return out


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
    _check_meta(meta, meta_path)  # before reading tensors: a wrong version fails fast
    tensors = safe_torch_load(tensor_path)
    check_artifact(meta, tensors, meta_path=meta_path, tensor_path=tensor_path)
    blend = _check_blend(meta, tensors, meta_path, tensor_path, len(meta["item_tokens"]))
    return Artifact(
        model=meta["model"],
        dataset=meta["dataset"],
        config=meta.get("config", {}),
        metrics=meta.get("metrics", {}),
        user_tokens=meta["user_tokens"],
        item_tokens=meta["item_tokens"],
        user_embeddings=tensors["user_embeddings"].contiguous(),
        item_embeddings=tensors["item_embeddings"].contiguous(),
        seen_indptr=tensors["seen_indptr"],
        seen_indices=tensors["seen_indices"],
        path=path,
        blend=blend,
        popularity=tensors.get("popularity"),

        entity_tokens=meta.get("entity_tokens", []) if "kg_triples" in tensors else [],
        relation_tokens=meta.get("relation_tokens", []) if "kg_triples" in tensors else [],
        kg_triples=tensors.get("kg_triples"),
        foldin_items=tensors.get("foldin_items"),
        foldin=meta.get("foldin", {}) if "foldin_items" in tensors else {},
    )
