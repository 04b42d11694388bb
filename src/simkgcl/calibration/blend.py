"""Activity-aware blending of a model's scores with a popularity prior (issue 17).

For user ``u`` with ``d_u`` training interactions and item ``i`` with training count ``c_i``:

    score(u, i) = (s_ui - mean_u(s)) / (std_u(s) + eps)  +  β_g(d_u) · p_i
    p_i         = (log(1 + c_i) - mean_j log(1 + c_j)) / std_j log(1 + c_j)

``s_ui`` is the model's raw score (``u · i``); ``mean_u``/``std_u`` run over the whole catalogue
(population std; ``eps`` = 1e-12 keeps a constant row finite); ``g(d_u)`` is the user's activity
group (the ``user_groups`` edges of :mod:`simkgcl.evaluation.groups`: ≤1, 2–3, 4–5, ...), and
``β_g ≥ 0`` one weight per group, non-increasing from sparse to dense groups, fitted on validation
(:mod:`simkgcl.calibration.fit`).

Why these choices:

* **norm = per-user z-score.** Raw dot products differ in scale between users (a propagated
  vector's norm grows with degree) and between models; standardising each user's row puts every
  user's scores on one scale, so one β per group means the same thing for all its users and for
  every model. It is monotone per user, so β = 0 ranks exactly as the model does.
* **f = z-score of log(1 + count).** Counts are heavy-tailed: standardised raw counts would give
  the handful of blockbusters a huge prior and leave the rest flat, so β would only ever move
  the top few items. The logarithm (the usual log-popularity prior) spreads the prior over the
  catalogue, and standardising it puts it on the model term's scale, making β dimensionless.
  Any increasing ``f`` alone ranks like "most popular", so a large β recovers the pop model.

The blend is applied to full-ranking scores before training items are masked, identically in
the evaluator (a :data:`~simkgcl.evaluation.evaluator.ScoreTransform`) and in serving. An
approximate inner-product index cannot score every item; it serves the same blend through
augmented item and query rows (:mod:`simkgcl.calibration.inner_product`).
:class:`BlendTable` is the JSON-able fitted table the artifact stores (no pickle);
:class:`ScoreBlend` is it bound to a popularity vector and each user's training count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simkgcl.evaluation.groups import UserGroup, groups_from_edges

EPS = 1e-12
NORM = "per-user z-score of the model's scores over all items"
PRIOR = "z-score over items of log(1 + training interactions)"


def popularity_prior(popularity: Tensor) -> Tensor:
    """``p_i``: standardised log(1 + count) (all zeros if every item has the same count)."""
    logp = torch.log1p(popularity.to(torch.float32))
    std = logp.std(unbiased=False)
    return (logp - logp.mean()) / std if float(std) > 0 else torch.zeros_like(logp)


def standardize_rows(scores: Tensor) -> Tensor:
    """Each row minus its mean, divided by its (population) std + eps."""
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, unbiased=False, keepdim=True)
    return (scores - mean) / (std + EPS)


def group_index(counts: np.ndarray | Tensor, groups: Sequence[UserGroup]) -> np.ndarray:
    """Index of each count's group in ``groups`` (which cover 0..∞ without gaps)."""
    values = np.asarray(counts, dtype=np.int64)
    out = np.full(values.shape, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        out[group.contains(values)] = g
    if (out < 0).any():
        raise ValueError("user groups do not cover every training count")
    return out


@dataclass(frozen=True)
class BlendTable:
    """β per activity group and what it was fitted on; ``to_dict``/``from_dict`` are its JSON."""

    edges: list[int]
    betas: list[float]
    fitted_on: str = "valid"
    metric: str = "NDCG@20"
    report: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.betas) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} group edges need {len(self.edges) + 1} betas, "
                             f"got {len(self.betas)}")
        if any(not np.isfinite(b) or b < 0 for b in self.betas):
            raise ValueError(f"betas must be finite and >= 0, got {self.betas}")
        groups_from_edges(self.edges)  # checks the edges

    @property
    def active(self) -> bool:
        """Whether any group blends at all (all zeros: the model's own ranking)."""
        return any(b > 0 for b in self.betas)

    def groups(self) -> list[UserGroup]:
        return groups_from_edges(self.edges)

    def user_betas(self, counts: np.ndarray | Tensor) -> np.ndarray:
        """β of each user from its number of training interactions."""
        return np.asarray(self.betas, dtype=np.float32)[group_index(counts, self.groups())]

    def bind(self, popularity: Tensor, user_counts: np.ndarray | Tensor,
             device: torch.device | str = "cpu") -> ScoreBlend:
        return ScoreBlend(popularity_prior(popularity.to(device)),
                          torch.from_numpy(self.user_betas(user_counts)).to(device))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "popularity_blend", "norm": NORM, "prior": PRIOR,
                "fitted_on": self.fitted_on, "metric": self.metric,
                "groups": [g.to_dict() for g in self.groups()],
                "edges": list(self.edges), "betas": [float(b) for b in self.betas],
                "report": self.report}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlendTable:
        """The table of :meth:`to_dict`; ``ValueError`` (one line) when it is not one."""
        if not isinstance(data, Mapping) or data.get("kind") != "popularity_blend":
            raise ValueError("not a popularity blend (expected kind 'popularity_blend')")
        edges, betas = data.get("edges"), data.get("betas")
        if not isinstance(edges, list) or not all(isinstance(e, int) for e in edges):
            raise ValueError("blend 'edges' must be a list of integers")
        if not isinstance(betas, list) or not all(
                isinstance(b, int | float) and not isinstance(b, bool) for b in betas):
            raise ValueError("blend 'betas' must be a list of numbers")
        report = data.get("report", {})
        return cls(edges=edges, betas=[float(b) for b in betas],
                   fitted_on=str(data.get("fitted_on", "")), metric=str(data.get("metric", "")),
                   report=dict(report) if isinstance(report, Mapping) else {})


class ScoreBlend:
    """The blend for one catalogue and one set of users: call it on a batch of raw scores.

    ``prior`` (n_items,) is ``p``; ``betas`` (n_users,) each user's β. Usable as the evaluator's
    ``transform`` and by serving.
    """

    def __init__(self, prior: Tensor, betas: Tensor) -> None:
        self.prior = prior
        self.betas = betas

    def __call__(self, users: Tensor, scores: Tensor) -> Tensor:
        beta = self.betas.to(scores.device)[users.to(scores.device)].unsqueeze(1)
        return standardize_rows(scores) + beta * self.prior.to(scores.device).unsqueeze(0)

    @classmethod
    def uniform(cls, popularity: Tensor, n_users: int, beta: float) -> ScoreBlend:
        """Every user with the same β (the grid search's candidates)."""
        return cls(popularity_prior(popularity), torch.full((n_users,), float(beta)))


__all__ = ["BlendTable", "EPS", "NORM", "PRIOR", "ScoreBlend", "group_index",
           "popularity_prior", "standardize_rows"]
