"""Recommendations for a user the model never saw, from a list of items (fold-in).

No retraining: a user row is built from the items, then scored like a trained user's row
(``u . i`` for every item, the given items left out). How the row is built depends on what the
model's user rows are, which the artifact records:

* ``propagation`` — the model's user row is an aggregation over the normalised user-item graph
  (LightGCN, SGL, SimGCL, XSimGCL; :meth:`simkgcl.models.base.Recommender.fold_in_items`): the
  artifact holds the item table ``F`` and the row is ``u = sum_{i in H} F_i / sqrt(|H| d_i)``
  over the distinct known items ``H``, ``d_i`` = the item's training degree (the seen index).
  For a trained user with its own training items this *is* the trained row, except for the
  user's own layer-0 row (weight ``1/(L+1)`` in LightGCN and SGL, 0 in SimGCL/XSimGCL), which a
  new user does not have and which is left out. Two departures from retraining with the user
  added: the items' rows and degrees do not include the new user (its one extra interaction per
  item would change them slightly), and the user's layer 0 is missing.
* ``least_squares`` — every other model (BPR, KGIN, KGCL, SimKGCL, whose user rows pass through
  non-linear steps: attention, L2 normalisation): the implicit-feedback least-squares fit of
  iALS, ``u = argmin sum_{i in H} (u . v_i - 1)^2 + alpha sum_{all i} (u . v_i)^2 + lambda |u|^2``
  over the item embeddings ``v``, solved in closed form as
  ``(V_H^T V_H + alpha V^T V + lambda I) u = V_H^T 1`` (``V^T V`` is computed once). The second
  term asks every other item to score near 0, which keeps the row from pointing at what all
  items share; ``alpha = |H| / n_items`` weighs the two terms equally (the other items count as
  much, in total, as the user's own), ``lambda`` = 1e-3 x the mean diagonal of the matrix keeps
  it invertible. The scale of ``u`` is arbitrary (1 is the target), so scores of folded-in
  users are comparable with each other, not with trained users' scores.

Measured against the trained rows on the test users of lastfm-kg and ml-100k in BENCHMARKS.md
(``bench/bench_foldin.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from simkgcl.artifact import Artifact
from simkgcl.errors import NotFoundError, quoted

if TYPE_CHECKING:  # recommend.py imports this module
    from simkgcl.serving.recommend import RecommendationService, ScoredItem

RIDGE = 1e-3  # lambda, relative to the mean diagonal of the normal matrix
UNKNOWN_SHOWN = 100  # unknown tokens echoed back in one reply


@dataclass(frozen=True)
class FoldInUser:
    """A folded-in user: its row, the known items it was built from, the unknown tokens."""

    row: Tensor  # (d,) float32
    item_ids: np.ndarray  # distinct known internal ids, in first-seen order
    unknown: list[str]  # unknown tokens, distinct, in input order
    method: str


class FoldIn:
    """Builds user rows from items for one artifact (``propagation`` or ``least_squares``)."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self._item_ids = {tok: i for i, tok in enumerate(artifact.item_tokens)}
        if artifact.foldin_items is not None:
            self.method = "propagation"
            self._table = artifact.foldin_items
            degrees = artifact.item_degrees().to(torch.float64)
            # an item nobody trained on has no edge: it adds nothing (1/sqrt(0) would be inf)
            self._inv_sqrt_degree = torch.where(degrees > 0, degrees.clamp(min=1).rsqrt(),
                                                torch.zeros_like(degrees))
        else:
            self.method = "least_squares"
            items = artifact.item_embeddings.to(torch.float64)
            self._items64 = items
            self._gram = items.T @ items  # V^T V, once

    def resolve(self, tokens: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(distinct known internal ids in first-seen order, distinct unknown tokens)."""
        known: dict[int, None] = {}
        unknown: dict[str, None] = {}
        for token in tokens:
            iid = self._item_ids.get(token)
            if iid is None:
                unknown[token] = None
            else:
                known[iid] = None
        return np.fromiter(known, dtype=np.int64, count=len(known)), list(unknown)

    def user_row_from_ids(self, item_ids: np.ndarray) -> Tensor:
        """The folded-in row (float32) for distinct internal item ids (at least one)."""
        ids = torch.as_tensor(item_ids, dtype=torch.int64)
        if self.method == "propagation":
            weights = self._inv_sqrt_degree[ids] / np.sqrt(len(ids))
            return (weights[:, None] * self._table[ids].to(torch.float64)).sum(0).float()
        history = self._items64[ids]
        alpha = len(ids) / self.artifact.n_items
        normal = history.T @ history + alpha * self._gram
        ridge = RIDGE * float(normal.diagonal().mean()) + 1e-12
        normal = normal + ridge * torch.eye(normal.shape[0], dtype=normal.dtype)
        return torch.linalg.solve(normal, history.sum(0)).float()

    def user(self, tokens: Sequence[str]) -> FoldInUser:
        """Fold in a user from item tokens; unknown ones are reported, fatal only if all are."""
        ids, unknown = self.resolve(tokens)
        if len(ids) == 0:
            first = quoted(unknown[0]) if unknown else "(none given)"
            raise NotFoundError(f"none of the {len(unknown)} items is known to this model "
                                f"(first: {first}); fold-in needs at least one known item")
        return FoldInUser(row=self.user_row_from_ids(ids), item_ids=ids,
                          unknown=unknown[:UNKNOWN_SHOWN], method=self.method)


def recommend_for_items(service: RecommendationService, tokens: Sequence[str], k: int = 20, *,
                        include_given: bool = False) -> tuple[FoldInUser, list[ScoredItem]]:
    """Top-``k`` for a user folded in from item ``tokens`` (the given items left out unless
    ``include_given``); returns the folded-in user (with the unknown tokens) and the items."""
    k = service.check_k(k)
    user = service.fold_in.user(tokens)
    exclude = np.empty(0, dtype=np.int64) if include_given else user.item_ids
    top = service.top_k_rows(user.row[None, :], k, [exclude])
    return user, service.scored(top, 0)
