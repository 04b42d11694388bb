"""Item indexes for top-k by inner product: exact, or approximate with faiss (``simkgcl[ann]``).

Scoring is ``u . i`` over every item. ``exact`` does it with one matmul and a top-k (the
default, right for catalogues of tens of thousands). For millions of items an approximate
nearest-neighbour index answers a query by visiting a small part of the catalogue:

* ``hnsw`` — faiss ``IndexHNSWFlat`` with the inner-product metric (a layered proximity graph;
  ``M`` links per node, ``efConstruction`` candidates while building, ``efSearch`` while
  searching). No training; build time grows as ``n log n``.
* ``ivf`` — faiss ``IndexIVFFlat`` with the inner-product metric: k-means into ``nlist =
  sqrt(n_items)`` cells (trained on a seeded sample of ``64 x nlist`` items: k-means on all of
  a million items takes minutes), a query scans the ``nprobe = nlist / 8`` cells whose
  centroids score highest.

Neither changes the scores: both store the raw vectors (``Flat``), so every returned score is the
exact ``u . i``; only which items are visited is approximate. An artifact with a popularity blend
is served through the same indexes, built over the item rows plus one column (the prior) and
queried with augmented user rows (:mod:`simkgcl.calibration.inner_product`); the service turns
the raw scores back into blended ones. Excluding a user's seen items stays exact whatever the
index: the search over-fetches ``k + (number of excluded items)`` candidates and drops the
excluded ones, so an excluded item can never come back, and with an exact search at least ``k``
unexcluded items always remain (fewer only when fewer exist).
Recall against exact top-k and speed are in BENCHMARKS.md (``bench/bench_ann.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simkgcl.errors import ConfigError

INDEX_KINDS = ("exact", "hnsw", "ivf")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
IVF_PROBE_SHARE = 1 / 8  # nprobe = max(1, nlist * share)
IVF_TRAIN_PER_CELL = 64


def import_faiss() -> Any:
    """faiss, or one clear line saying how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        raise ConfigError("--index hnsw/ivf needs faiss, which is not installed: "
                          "pip install 'simkgcl[ann]'") from exc


def check_kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    return kind


class ItemIndex:
    """Exact inner-product search: one ``batch x n_items`` matmul and a top-k."""

    kind = "exact"

    def __init__(self, items: Tensor):
        self.n_items, self.dim = int(items.shape[0]), int(items.shape[1])
        self._items_t = items.float().t().contiguous()

    @classmethod
    def over_transposed(cls, items_t: Tensor) -> ItemIndex:
        """An exact index sharing an existing ``d x n_items`` table (no copy)."""
        index = cls.__new__(cls)
        index.dim, index.n_items = int(items_t.shape[0]), int(items_t.shape[1])
        index._items_t = items_t
        return index

    def search(self, queries: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each ``batch x k``, best first; ``k`` at most ``n_items``."""
        with torch.no_grad():
            scores, ids = torch.topk(queries.float() @ self._items_t, k, dim=1)
        return scores.numpy(), ids.numpy()

    def describe(self) -> dict[str, Any]:
        return {"index": self.kind}


class FaissIndex(ItemIndex):
    """An approximate faiss index (``hnsw`` or ``ivf``) over the item rows."""

    def __init__(self, items: Tensor, kind: str, *, seed: int = 0, threads: int | None = None):
        faiss = import_faiss()
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self.n_items, self.dim = int(items.shape[0]), int(items.shape[1])
        self.kind = kind
        data = np.ascontiguousarray(items.detach().float().cpu().numpy())
        self._params: dict[str, Any] = {}
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
            self._params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                            "efSearch": HNSW_EF_SEARCH}
        else:
            nlist = max(1, min(int(np.sqrt(self.n_items)), self.n_items // 39))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            n_train = min(self.n_items, IVF_TRAIN_PER_CELL * nlist)
            sample = data[np.sort(rng.choice(self.n_items, n_train, replace=False))]
            index.cp.seed = seed  # k-means initialisation, so a rebuild is identical
            index.train(sample)
            index.nprobe = max(1, int(nlist * IVF_PROBE_SHARE))
            self._params = {"nlist": nlist, "nprobe": index.nprobe}
        index.add(data)
        self._index = index
        self._quantizer = quantizer if kind == "ivf" else None  # owned by the index: keep alive

    def search(self, queries: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        scores, ids = self._index.search(q, k)  # ids -1 (score -inf-ish) where fewer found
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    def set_search_effort(self, effort: int) -> None:
        """``efSearch`` (hnsw) or ``nprobe`` (ivf): more visits, higher recall, slower."""
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = effort
            self._params["efSearch"] = effort
        else:
            self._index.nprobe = effort
            self._params["nprobe"] = effort

    def describe(self) -> dict[str, Any]:
        return {"index": self.kind, **self._params}


def build_index(items: Tensor, kind: str = "exact", *, seed: int = 0,
                threads: int | None = None) -> ItemIndex:
    """The index ``kind`` over ``items`` (``n_items x d``)."""
    if check_kind(kind) == "exact":
        return ItemIndex(items)
    return FaissIndex(items, kind, seed=seed, threads=threads)


def top_k_excluding(index: ItemIndex, queries: Tensor, k: int,
                    exclude: Sequence[np.ndarray | Tensor]) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Top-``k`` (items, scores, counts) per query row with ``exclude[r]`` left out exactly.

    Over-fetches ``k + len(exclude[r])`` (the largest in the batch) and filters; ``counts[r]`` is
    how many of the ``k`` slots are real (unused slots: item 0, score ``-inf``).
    """
    batch = queries.shape[0]
    extra = max((len(e) for e in exclude), default=0)
    fetch = min(index.n_items, k + extra)
    scores, ids = index.search(queries, fetch)
    out_items = np.zeros((batch, k), dtype=np.int64)
    out_scores = np.full((batch, k), -np.inf, dtype=np.float32)
    counts = np.zeros(batch, dtype=np.int64)
    for r in range(batch):
        keep = ids[r] >= 0
        if len(exclude[r]):
            keep &= ~np.isin(ids[r], np.asarray(exclude[r]))
        chosen = np.flatnonzero(keep)[:k]
        counts[r] = len(chosen)
        out_items[r, : len(chosen)] = ids[r, chosen]
        out_scores[r, : len(chosen)] = scores[r, chosen]
    return out_items, out_scores, counts
