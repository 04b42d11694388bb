"""Top-k recommendation and item similarity over a loaded artifact, in original tokens.

The service keeps the embeddings in memory once; each call scores only the requested users
(``batch x n_items``), never the full ``users x items`` matrix, so the same code serves a single
HTTP request and a 70k-user export.

When the artifact holds a fitted popularity blend (:mod:`simkgcl.calibration`), every score
goes through it before seen items are masked, exactly as the evaluator ranked the test split:
the scores returned are then the blended ones (per-user z-scores plus β times the popularity
prior), not raw dot products. That holds on every path:

* exact scoring of known users: the blend over the user's full row, as the evaluator does;
* an approximate index (``index=``, see :mod:`simkgcl.serving.index`): the index is built over
  the item rows with the popularity prior appended as one more column and queried with
  ``[u, β_u (σ_u + eps)]`` (:mod:`simkgcl.calibration.inner_product`), which ranks exactly like
  the blend; the raw scores are converted back, so the returned scores are the blended ones and
  only which items the index visits is approximate. Seen items are still left out exactly;
* fold-in users (:meth:`RecommendationService.recommend_for_items`): a user folded in from
  ``|H|`` distinct known items gets the β of the activity group containing ``|H|``, from the
  same table, and the same blended scores (exact or through the index). This is a departure:
  the β were fitted on trained users' groups, not on folded-in rows. A folded-in row ranks about
  as well as the trained row of the same user (NDCG@20 0.98-1.02 x the trained rows' with the
  ``mean`` fold-in, 0.95-0.99 x with ``propagation``; BENCHMARKS.md "fold-in"), which is why the
  same β are used. The per-user z-score also makes the arbitrary scale of a ``mean`` fold-in
  row irrelevant.
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
from simkgcl.calibration.blend import ScoreBlend, popularity_prior
from simkgcl.calibration.inner_product import InnerProductBlend
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
    through the artifact's popularity blend when it has one (every path, module docstring);
    similarity is cosine over item embeddings. Tokens in, tokens out. An ``index`` must be built
    over :meth:`index_items` (with a blend: one more column than the item rows).
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
        self._ip_blend = (None if self._blend is None else
                          InnerProductBlend(artifact.item_embeddings, self._blend.prior))
        expected = int(artifact.item_embeddings.shape[1]) + (self._blend is not None)
        if index is not None and (index.dim, index.n_items) != (expected, artifact.n_items):
            raise ConfigError(f"the index holds {index.n_items} rows of {index.dim} columns; this "
                              f"artifact needs {artifact.n_items} of {expected} (build it over "
                              "RecommendationService.index_items(artifact))")
        if index is not None and self._ip_blend is not None:
            _ = self._ip_blend.moments  # O(n d²) once at start, not in the first request

    @staticmethod
    def index_items(artifact: Artifact) -> Tensor:
        """The rows an inner-product index over this artifact holds: the item rows, with the
        popularity prior appended as a last column when the artifact has a blend."""
        if artifact.blend is None or artifact.popularity is None:
            return artifact.item_embeddings
        return InnerProductBlend(artifact.item_embeddings,
                                 popularity_prior(artifact.popularity)).items()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, index: str = "exact",
                     effort: int | None = None) -> RecommendationService:
        """Load a run's artifact; ``index`` = exact | hnsw | ivf (built over the item rows),
        ``effort`` its efSearch (hnsw) or nprobe (ivf) instead of the default."""
        artifact = load_artifact(run_dir)
        if index == "exact":
            return cls(artifact)
        from simkgcl.serving.index import build_index

        built = build_index(cls.index_items(artifact), index)
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
            betas = None if self._blend is None else self._blend.betas[users]
            return self.top_k_rows(self._user_emb[users], k, seen, betas)
        scores = self._user_emb[users] @ self._item_emb_t
        if self._blend is not None:
            scores = self._blend(users, scores)
        if not include_seen:
            self._mask_seen(scores, users)
        top_scores, top_items = torch.topk(scores, k, dim=1)
        valid = top_scores != float("-inf")  # -inf marks a masked (seen) item
        return TopK(items=top_items.numpy(), scores=top_scores.numpy(),
                    counts=valid.sum(dim=1).numpy().astype(np.int64))

    def top_k_rows(self, rows: Tensor, k: int, exclude: Sequence[np.ndarray],
                   betas: Tensor | None = None) -> TopK:
        """Top-k for user rows (folded-in users, or trained users' rows with an index), through
        the index (exact when there is none), ``exclude[r]`` left out exactly.

        With the artifact's blend ``betas[r]`` is row ``r``'s β (required) and the scores are
        blended: over every item without an index, through the augmented index with one.
        """
        if self._ip_blend is None:
            items, scores, counts = top_k_excluding(self.index or self._exact, rows, k, exclude)
        elif betas is None:
            raise ValueError("this artifact has a popularity blend: top_k_rows needs each row's β")
        elif self.index is None:
            return self._top_k_blended_exact(rows, k, exclude, betas)
        else:
            queries, mean, scale = self._ip_blend.queries(rows, betas)
            items, raw, counts = top_k_excluding(self.index, queries, k, exclude)
            scores = self._ip_blend.blended_scores(raw, mean, scale)
        return TopK(items=items, scores=scores, counts=counts)

    @torch.no_grad()
    def _top_k_blended_exact(self, rows: Tensor, k: int, exclude: Sequence[np.ndarray],
                             betas: Tensor) -> TopK:
        """The blend over every item (the known users' exact path, for arbitrary rows)."""
        assert self._blend is not None
        blend = ScoreBlend(self._blend.prior, betas)
        scores = blend(torch.arange(len(rows)), rows.float() @ self._item_emb_t)
        for r, ids in enumerate(exclude):
            scores[r, torch.as_tensor(np.asarray(ids, dtype=np.int64))] = float("-inf")
        top_scores, top_items = torch.topk(scores, k, dim=1)
        valid = top_scores != float("-inf")
        return TopK(items=top_items.numpy(), scores=top_scores.numpy(),
                    counts=valid.sum(dim=1).numpy().astype(np.int64))

    def fold_in_betas(self, n_known: Sequence[int] | np.ndarray) -> Tensor | None:
        """β of folded-in users built from ``n_known`` distinct known items: the blend table's
        β of the activity group containing that count (None without a blend)."""
        if self._blend is None or self.artifact.blend is None:
            return None
        return torch.from_numpy(self.artifact.blend.user_betas(np.asarray(n_known)))

    @functools.cached_property
    def fold_in(self) -> FoldIn:
        """Builds rows for users the model never saw (:mod:`simkgcl.serving.foldin`)."""
        return FoldIn(self.artifact)

    def recommend_for_items(self, tokens: Sequence[str], k: int = 20, *,
                            include_given: bool = False) -> tuple[FoldInUser, list[ScoredItem]]:
        """Top-``k`` for a user folded in from item ``tokens`` (the given items left out unless
        ``include_given``): the folded-in user (with the unknown tokens) and the items. With a
        blend, β is that of the group containing the number of distinct known items."""
        k = self.check_k(k)
        user = self.fold_in.user(tokens)
        exclude = np.empty(0, dtype=np.int64) if include_given else user.item_ids
        top = self.top_k_rows(user.row[None, :], k, [exclude],
                              self.fold_in_betas([len(user.item_ids)]))
        return user, self.scored(top, 0)

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
