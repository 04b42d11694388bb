"""Top-k recommendation and item similarity over a loaded artifact, in original tokens.

The service keeps the embeddings in memory once; each call scores only the requested users
(``batch x n_items``), never the full ``users x items`` matrix, so the same code serves a single
HTTP request and a 70k-user export.

When the artifact holds a fitted popularity blend (:mod:`simkgcl.calibration`), every score
goes through it before seen items are masked, exactly as the evaluator ranked the test split:
the scores returned are then the blended ones (per-user z-scores plus β times the popularity
prior), not raw dot products. With an approximate index (``index=``, see
:mod:`simkgcl.serving.index`) the top-k comes from the index instead, seen items still left out
exactly, but the ranking is the model's dot product alone: the blend is a per-user
re-scoring of every item, which an inner-product index cannot serve (nor does fold-in apply it:
its β table is fitted on the known users' activity groups).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from simkgcl.artifact import Artifact, load_artifact
from simkgcl.errors import ConfigError, NotFoundError, quoted
from simkgcl.serving.explain import DEFAULT_MAX_PATHS, Explanation, KGExplainer
from simkgcl.serving.foldin import FoldIn, FoldInUser
from simkgcl.serving.index import ItemIndex, top_k_excluding


@dataclass(frozen=True)
class ScoredItem:
    """One ranked item: 1-based rank, original item token, and the model's score."""

    rank: int
    item: str
    score: float

    def as_dict(self) -> dict[str, int | str | float]:
        return {"rank": self.rank, "item": self.item, "score": self.score}


@dataclass(frozen=True)
class TopK:
    """Top-k internal item ids and scores for a batch of users.

    ``counts[r]`` is how many of row ``r``'s ``k`` slots are real: with seen items excluded a user
    may have fewer than ``k`` unseen items, and the remaining slots (score ``-inf``) are unused.
    """

    items: np.ndarray  # (batch, k) int64
    scores: np.ndarray  # (batch, k) float32
    counts: np.ndarray  # (batch,) int64


class RecommendationService:
    """Answers "which items for this user?" and "which items are like this one?".

    Scores are dot products of the final user and item embeddings (the models' scoring rule),
    through the artifact's popularity blend when it has one (exact scoring of known users);
    similarity is cosine over item embeddings. Tokens in, tokens out.
    """

    def __init__(self, artifact: Artifact, index: ItemIndex | None = None):
        self.artifact = artifact
        self.index = index  # None: exact scoring of every item
        self._user_ids = {tok: i for i, tok in enumerate(artifact.user_tokens)}
        self._item_ids = {tok: i for i, tok in enumerate(artifact.item_tokens)}
        self._item_token_array = np.asarray(artifact.item_tokens, dtype=object)
        self._user_emb = artifact.user_embeddings
        self._item_emb_t = artifact.item_embeddings.t().contiguous()  # (d, n_items)
        self._item_unit = F.normalize(artifact.item_embeddings, dim=1)
        self._blend = (None if artifact.blend is None or artifact.popularity is None else
                       artifact.blend.bind(artifact.popularity, artifact.training_counts()))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, index: str = "exact",
                     effort: int | None = None) -> RecommendationService:
        """Load a run's artifact; ``index`` = exact | hnsw | ivf (built over the item rows),
        ``effort`` its efSearch (hnsw) or nprobe (ivf) instead of the default."""
        artifact = load_artifact(run_dir)
        if index == "exact":
            return cls(artifact)
        from simkgcl.serving.index import build_index

        built = build_index(artifact.item_embeddings, index)
        if effort is not None:
            built.set_search_effort(effort)  # type: ignore[attr-defined]  # faiss kinds have it
        return cls(artifact, built)

    @property
    def n_users(self) -> int:
        return self.artifact.n_users

    @property
    def n_items(self) -> int:
        return self.artifact.n_items

    # ---- token <-> id ---------------------------------------------------------------------
    def user_id(self, token: str) -> int:
        """Internal id of a user token; ``NotFoundError`` (token cut short, no example ids)."""
        uid = self._user_ids.get(token)
        if uid is None:
            raise NotFoundError(f"unknown user {quoted(token)}: not among the {self.n_users} users "
                                "this model was trained on")
        return uid

    def item_id(self, token: str) -> int:
        iid = self._item_ids.get(token)
        if iid is None:
            raise NotFoundError(f"unknown item {quoted(token)}: not among the {self.n_items} items "
                                "this model knows")
        return iid

    def user_ids(self, tokens: Sequence[str]) -> list[int]:
        """Internal ids of several users; an error names the first unknown one and the count."""
        ids = [self._user_ids.get(t) for t in tokens]
        unknown = [t for t, uid in zip(tokens, ids, strict=True) if uid is None]
        if unknown:
            many = f" (and {len(unknown) - 1} more unknown users)" if len(unknown) > 1 else ""
            raise NotFoundError(f"unknown user {quoted(unknown[0])}{many}: not among the "
                                f"{self.n_users} users this model was trained on")
        return ids  # type: ignore[return-value]  # no None left

    def check_k(self, k: int, *, limit: int | None = None) -> int:
        """k must lie in 1..n_items (1..n_items-1 for similar items: the item itself is out)."""
        upper = self.n_items if limit is None else limit
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= upper:
            raise ConfigError(f"k must be an integer from 1 to {upper}, got {k!r}")
        return int(k)

    # ---- ranking ----------------------------------------------------------------------------
    def _mask_seen(self, scores: Tensor, user_ids: Tensor) -> None:
        """Set the training items of each row's user to -inf, in place, without Python loops."""
        indptr, indices = self.artifact.seen_indptr, self.artifact.seen_indices
        starts, ends = indptr[user_ids], indptr[user_ids + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return
        rows = torch.repeat_interleave(torch.arange(len(user_ids)), lengths)
        row_offsets = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(total) - row_offsets[rows] + starts[rows]
        scores[rows, indices[positions]] = float("-inf")

    @torch.no_grad()
    def top_k_ids(self, user_ids: Sequence[int] | np.ndarray | Tensor, k: int,
                  *, include_seen: bool = False) -> TopK:
        """Top-k for internal user ids: one ``batch x n_items`` matmul and one top-k."""
        k = self.check_k(k)
        users = torch.as_tensor(np.asarray(user_ids, dtype=np.int64))
        if self.index is not None:
            seen = [np.empty(0, dtype=np.int64) if include_seen
                    else self.artifact.seen_items(int(u)).numpy() for u in users]
            return self.top_k_rows(self._user_emb[users], k, seen)
        scores = self._user_emb[users] @ self._item_emb_t
        if self._blend is not None:
            scores = self._blend(users, scores)
        if not include_seen:
            self._mask_seen(scores, users)
        top_scores, top_items = torch.topk(scores, k, dim=1)
        valid = top_scores != float("-inf")  # -inf marks a masked (seen) item
        return TopK(items=top_items.numpy(), scores=top_scores.numpy(),
                    counts=valid.sum(dim=1).numpy().astype(np.int64))

    def top_k_rows(self, rows: Tensor, k: int, exclude: Sequence[np.ndarray]) -> TopK:
        """Top-k for query rows that are not trained users' (e.g. folded-in users), through the
        index (exact when there is none), ``exclude[r]`` left out exactly."""
        items, scores, counts = top_k_excluding(self.index or self._exact, rows, k, exclude)
        return TopK(items=items, scores=scores, counts=counts)

    @functools.cached_property
    def fold_in(self) -> FoldIn:
        """Builds rows for users the model never saw (:mod:`simkgcl.serving.foldin`)."""
        return FoldIn(self.artifact)

    def recommend_for_items(self, tokens: Sequence[str], k: int = 20, *,
                            include_given: bool = False) -> tuple[FoldInUser, list[ScoredItem]]:
        """Top-``k`` for a user folded in from item ``tokens`` (the given items left out unless
        ``include_given``): the folded-in user (with the unknown tokens) and the items."""
        k = self.check_k(k)
        user = self.fold_in.user(tokens)
        exclude = np.empty(0, dtype=np.int64) if include_given else user.item_ids
        return user, self.scored(self.top_k_rows(user.row[None, :], k, [exclude]), 0)

    @functools.cached_property
    def explainer(self) -> KGExplainer:
        """KG paths behind recommendations (:mod:`simkgcl.serving.explain`)."""
        return KGExplainer(self.artifact)

    def explain(self, user: str, item: str, max_paths: int = DEFAULT_MAX_PATHS) -> Explanation:
        """KG paths between ``item`` and ``user``'s training items, best first."""
        user_id, item_id = self.user_id(user), self.item_id(item)
        return self.explainer.explain(item_id, self.artifact.seen_items(user_id).numpy(),
                                      max_paths)

    @property
    def _exact(self) -> ItemIndex:
        return ItemIndex.over_transposed(self._item_emb_t)

    def scored(self, top: TopK, row: int) -> list[ScoredItem]:
        """Row ``row`` of ``top`` as ranked items in original tokens."""
        return self._to_scored(top.items[row], top.scores[row], int(top.counts[row]))

    def _to_scored(self, items: np.ndarray, scores: np.ndarray, count: int) -> list[ScoredItem]:
        tokens = self._item_token_array[items[:count]]
        return [ScoredItem(rank=r + 1, item=str(tokens[r]), score=float(scores[r]))
                for r in range(count)]

    def recommend(self, user: str, k: int = 20, *, include_seen: bool = False) -> list[ScoredItem]:
        """Best ``k`` items for one user, best first; training items left out by default.

        Fewer than ``k`` come back only when the user has fewer than ``k`` unseen items.
        """
        return self.recommend_many([user], k, include_seen=include_seen)[0]

    def recommend_many(self, users: Sequence[str], k: int = 20, *, include_seen: bool = False,
                       chunk_users: int = 256) -> list[list[ScoredItem]]:
        """Top-k for several users (one list per input token, in input order).

        Users are scored ``chunk_users`` at a time, so memory is bounded by
        ``chunk_users x n_items`` scores however many users are asked for.
        """
        ids = self.user_ids(users)
        k = self.check_k(k)
        lists: list[list[ScoredItem]] = []
        for start in range(0, len(ids), chunk_users):
            top = self.top_k_ids(ids[start : start + chunk_users], k, include_seen=include_seen)
            lists += [self._to_scored(top.items[r], top.scores[r], int(top.counts[r]))
                      for r in range(len(top.counts))]
        return lists

    @torch.no_grad()
    def similar_items(self, item: str, k: int = 20) -> list[ScoredItem]:
        """The ``k`` items with the highest cosine similarity to ``item``, excluding itself."""
        item_id = self.item_id(item)
        k = self.check_k(k, limit=self.n_items - 1)
        sims = self._item_unit @ self._item_unit[item_id]
        sims[item_id] = float("-inf")
        top_scores, top_items = torch.topk(sims, k)
        return self._to_scored(top_items.numpy(), top_scores.numpy(), k)

    def item_tokens_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Original tokens for an array of internal item ids (vectorised, for bulk export)."""
        return self._item_token_array[item_ids]
