"""Fitting the popularity blend's β per activity group by grid search on one split.

For every β in the grid, every user of the split gets that β and the split is ranked once
(:meth:`~simkgcl.evaluation.evaluator.Evaluator.evaluate_embeddings_per_user`); a user's metric
depends on its own β only, so the users' values for β are regrouped afterwards.

The groups' β are chosen **jointly, non-increasing in activity** (β_≤1 ≥ β_2–3 ≥ ... ≥ β_>50),
to maximise the split's metric summed over all its users (= the overall mean). Why not each
group's own best: the sparsest groups are the smallest (lastfm-kg has ~20 validation users with
one training interaction, most with a single validation item), so their own optimum is noise,
while the prior's value can only grow as a user's own evidence shrinks. The constraint pools a
small group with its denser neighbours; a group is never given a β that lowers the total.
Among equal totals the smallest β wins (:func:`monotone_choice`), so with no gain anywhere every
β is 0 and the model is served alone. The chosen table's metric on the split is recombined from
the same per-user values, exactly.

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

# 0 = the model alone; 1000 ≈ "most popular" with the model only breaking ties (the prior's
# z-scores differ by ~0.1 or more between adjacent counts, the model's span a few units), so
# validation can also choose plain popularity for a group.
DEFAULT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
                1000.0)


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


def monotone_choice(gains: np.ndarray) -> list[int]:
    """Grid indices ``j_1 >= j_2 >= ... >= j_G`` maximising ``sum_g gains[g, j_g]``.

    ``gains`` is (groups from sparsest to densest) x (grid, ascending). Dynamic programme from
    the densest group: ``F_G(j) = gains[G, j]``, ``F_g(j) = gains[g, j] + max_{k <= j}
    F_{g+1}(k)``. Among equal totals the smallest index wins, group by group from the sparsest,
    so β stays 0 wherever validation is indifferent and the constraint does not forbid it.
    """
    n_groups, n_grid = gains.shape
    tol = 1e-12 * max(1.0, float(np.abs(gains).sum()))
    table = np.zeros((n_groups, n_grid))
    table[-1] = gains[-1]
    for g in range(n_groups - 2, -1, -1):
        table[g] = gains[g] + np.maximum.accumulate(table[g + 1])
    picks: list[int] = []
    upper = n_grid - 1
    for g in range(n_groups):
        best = table[g, : upper + 1].max()
        j = int(np.flatnonzero(table[g, : upper + 1] >= best - tol)[0])
        picks.append(j)
        upper = j
    return picks


def choose_betas(users: np.ndarray, values: dict[float, np.ndarray], user_counts: np.ndarray,
                 edges: Sequence[int]) -> tuple[list[float], list[dict[str, Any]], float]:
    """β per group (see the module docstring), a row per group, and the recombined mean."""
    grid = sorted(values)
    if not grid or grid[0] != 0.0:
        raise ValueError("the β grid must contain 0 (the unblended model)")
    groups = groups_from_edges(edges)
    gidx = group_index(np.asarray(user_counts)[users], groups)
    gains = np.array([[float(values[b][gidx == g].sum()) for b in grid]
                      for g in range(len(groups))])
    picks = monotone_choice(gains)
    chosen = np.zeros(len(users), dtype=np.float64)
    betas: list[float] = []
    rows: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        inside = gidx == g
        n = int(inside.sum())
        best = grid[picks[g]]
        own = grid[int(np.argmax(gains[g]))]  # the group's own best, without the constraint
        betas.append(best)
        chosen[inside] = values[best][inside]
        rows.append({**group.to_dict(), "n_users": n, "beta": best, "own_best_beta": own,
                     "unblended": gains[g, 0] / n if n else None,
                     "blended": gains[g, picks[g]] / n if n else None,
                     "by_beta": [gains[g, j] / n for j in range(len(grid))] if n else None})
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
