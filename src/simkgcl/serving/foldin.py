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
* ``mean`` — every other model (BPR, KGIN, KGCL, SimKGCL, whose user rows pass through
  non-linear steps: attention, L2 normalisation): the mean of the items' embeddings,
  ``u = sum_{i in H} v_i / |H|``.
* ``least_squares`` (on request, ``FoldIn(artifact, "least_squares")``) — the implicit-feedback
  fit of iALS, ``u = argmin sum_{i in H} (u . v_i - 1)^2 + alpha sum_{all i} (u . v_i)^2 +
  lambda |u|^2``, solved in closed form as ``(V_H^T V_H + alpha V^T V + lambda I) u = V_H^T 1``
  (``V^T V`` computed once), ``alpha = |H| / n_items`` (the other items weigh, in total, as
  much as the user's own), ``lambda`` = 1e-3 x the mean diagonal of the matrix. It was the
  first choice for BPR, but on lastfm-kg it reached 0.74 x the trained rows' NDCG@20 where the
  mean reached 1.02 x (a stronger ridge moves it towards the mean and closer: 0.97 x at
  ``lambda`` = the mean diagonal), so the mean is the default. That comparison was made on
  lastfm-kg's test split; ml-100k was measured after the choice.

The scale of ``u`` is arbitrary for ``mean`` and ``least_squares``: raw scores of folded-in users
rank items, they are not comparable with trained users' scores. With an artifact's popularity
blend the service serves blended scores (per-user z-scores, which drop that scale, plus β times
the prior), with the β of the group containing ``|H|``
(:class:`~simkgcl.serving.recommend.RecommendationService`, module docstring).

Measured against the trained rows on the test users of lastfm-kg and ml-100k in BENCHMARKS.md
(``bench/bench_foldin.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simkgcl.artifact import Artifact
from simkgcl.errors import ConfigError, NotFoundError, quoted

METHODS = ("propagation", "mean", "least_squares")
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
    """Builds user rows from items for one artifact; ``method`` None = the artifact's default."""

    def __init__(self, artifact: Artifact, method: str | None = None):
        self.artifact = artifact
        self._item_ids = {tok: i for i, tok in enumerate(artifact.item_tokens)}
        default = "propagation" if artifact.foldin_items is not None else "mean"
        self.method = method or default
        if self.method not in METHODS or (self.method == "propagation"
                                          and artifact.foldin_items is None):
            raise ConfigError(f"fold-in method {method!r} is not available for this artifact "
                              f"(choose {default}, mean or least_squares)")
        self._items64 = artifact.item_embeddings.to(torch.float64)
        if self.method == "propagation":
            assert artifact.foldin_items is not None
            self._table = artifact.foldin_items
            degrees = artifact.item_degrees().to(torch.float64)
            # an item nobody trained on has no edge: it adds nothing (1/sqrt(0) would be inf)
            self._inv_sqrt_degree = torch.where(degrees > 0, degrees.clamp(min=1).rsqrt(),
                                                torch.zeros_like(degrees))
        elif self.method == "least_squares":
            self._gram = self._items64.T @ self._items64  # V^T V, once

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
        if self.method == "mean":
            return history.mean(0).float()
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

