"""Fitting the popularity blend's β per activity group by grid search on one split.

For every β in the grid, every user of the split gets that β and the split is ranked once
(:meth:`~simkgcl.evaluation.evaluator.Evaluator.evaluate_embeddings_per_user`); a user's metric
depends on its own β only, so the users' values for β are regrouped afterwards: each group takes
the β with the largest mean metric over its users. β = 0 (the model's own ranking) is kept unless
another β is **strictly** better, and among equal means the smallest β wins, so a group whose
split shows no gain is never blended. A group with no user in the split keeps β = 0. The chosen
table's metric on the split is recombined from the same per-user values, exactly.

The whole fit is ``len(grid)`` full rankings of the split (validation only: choosing β on the
test split would report a tuned number as a test figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from simkgcl.calibration.blend import BlendTable, ScoreBlend, group_index
from simkgcl.evaluation.evaluator import Evaluator, RankingTask
from simkgcl.evaluation.groups import groups_from_edges

DEFAULT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def per_user_by_beta(evaluator: Evaluator, user_emb: Tensor, item_emb: Tensor,
                     task: RankingTask, popularity: Tensor, metric: str,
                     grid: Sequence[float]) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """The split's users (internal ids) and, for each β, their values of ``metric``."""
    values: dict[float, np.ndarray] = {}
    users = np.zeros(0, dtype=np.int64)
    prior_source = popularity.to(evaluator.device)
    for beta in grid:
        transform = (None if beta == 0 else
                     ScoreBlend.uniform(prior_source, evaluator.n_users, beta))
        _, per_user = evaluator.evaluate_embeddings_per_user(user_emb, item_emb, task, transform)
        if metric not in per_user.values:
            raise ValueError(f"{metric} is not among the evaluated metrics "
                             f"({', '.join(per_user.values)})")
        values[float(beta)] = np.asarray(per_user.values[metric], dtype=np.float64)
        users = np.asarray(per_user.users, dtype=np.int64)
    return users, values


def choose_betas(users: np.ndarray, values: dict[float, np.ndarray], user_counts: np.ndarray,
                 edges: Sequence[int]) -> tuple[list[float], list[dict[str, Any]], float]:
    """β per group (see the module docstring), a row per group, and the recombined mean."""
    grid = sorted(values)
    if not grid or grid[0] != 0.0:
        raise ValueError("the β grid must contain 0 (the unblended model)")
    groups = groups_from_edges(edges)
    gidx = group_index(np.asarray(user_counts)[users], groups)
    chosen = np.zeros(len(users), dtype=np.float64)
    betas: list[float] = []
    rows: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        inside = gidx == g
        n = int(inside.sum())
        best = 0.0
        means = {b: float(values[b][inside].mean()) if n else 0.0 for b in grid}
        for beta in grid:
            if means[beta] > means[best]:
                best = beta
        betas.append(best)
        chosen[inside] = values[best][inside]
        rows.append({**group.to_dict(), "n_users": n, "beta": best,
                     "unblended": means[0.0] if n else None,
                     "blended": means[best] if n else None})
    return betas, rows, float(chosen.mean()) if len(chosen) else 0.0


def fit_blend(evaluator: Evaluator, user_emb: Tensor, item_emb: Tensor, task: RankingTask,
              popularity: Tensor, user_counts: np.ndarray, edges: Sequence[int], metric: str,
              *, grid: Sequence[float] = DEFAULT_GRID, split_name: str = "valid") -> BlendTable:
    """The :class:`BlendTable` that ``task`` (a ``split_name`` ranking) says is best."""
    users, values = per_user_by_beta(evaluator, user_emb, item_emb, task, popularity, metric,
                                     grid)
    betas, rows, after = choose_betas(users, values, user_counts, edges)
    before = float(values[0.0].mean()) if len(users) else 0.0
    report = {"grid": [float(b) for b in sorted(values)], "groups": rows,
              "unblended": before, "blended": after, "n_users": int(len(users))}
    return BlendTable(edges=[int(e) for e in edges], betas=betas, fitted_on=split_name,
                      metric=metric, report=report)


__all__ = ["DEFAULT_GRID", "choose_betas", "fit_blend", "per_user_by_beta"]
