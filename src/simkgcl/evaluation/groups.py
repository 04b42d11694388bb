"""Test metrics by user group, the groups defined by each user's number of training interactions.

A knowledge graph is meant to help the users the interaction graph knows little about, so an
average over all users can hide what matters. Two groupings are reported:

* **fixed edges** (config ``user_groups``, default ``[1, 3, 5, 10, 20, 50]``, see config.py): upper bounds,
  inclusive, giving the groups ≤1, 2–3, 4–5, 6–10, 11–20, 21–50, >50. The same bounds on every
  dataset make groups comparable across datasets; the default separates the one-interaction
  users from those with a handful (≤5 is the usual "cold user" cut) and is the grouping the
  sparse-user work reports. The first group starts at 0, so a test user without training
  interactions (possible with fixed split files) is counted in it, never dropped.
* **quantiles** (config ``user_group_quantiles``, default 5): group ``j`` holds the users whose
  count is at most the ``j/q`` quantile of the evaluated users' counts and above the previous one
  (``np.quantile(..., method="inverted_cdf")``: the smallest count with at least ``j/q`` of the
  users at or below it). Users with equal counts always share a group, so the groups are equal in
  size only up to ties, and coinciding quantiles merge (a dense dataset can give fewer than ``q``
  groups). Quantiles adapt to the dataset: every group has enough users for a stable mean.

A group's metric is the plain mean of its users' values, so the groups' means weighted by their
sizes give back the overall metric. Empty groups are kept (``n_users`` 0, no metrics) so tables
line up across runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkgcl.evaluation.per_user import PerUserMetrics


@dataclass(frozen=True)
class UserGroup:
    """Users with ``lo <= training interactions <= hi`` (``hi`` None: no upper bound)."""

    label: str
    lo: int
    hi: int | None

    def contains(self, counts: np.ndarray) -> np.ndarray:
        inside = counts >= self.lo
        if self.hi is not None:
            inside &= counts <= self.hi
        return inside

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "lo": self.lo, "hi": self.hi}


def _label(lo: int, hi: int | None) -> str:
    if hi is None:
        return f">{lo - 1}"
    if lo == 0:
        return f"≤{hi}"
    return str(lo) if lo == hi else f"{lo}–{hi}"


def groups_from_edges(edges: Sequence[int]) -> list[UserGroup]:
    """Inclusive upper bounds ``e1 < e2 < ...`` -> [0, e1], [e1+1, e2], ..., [e_last+1, ∞)."""
    bounds = [int(e) for e in edges]
    if any(b < 0 for b in bounds) or any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"group edges must be increasing non-negative integers, got {edges}")
    groups: list[UserGroup] = []
    lo = 0
    for hi in bounds:
        groups.append(UserGroup(_label(lo, hi), lo, hi))
        lo = hi + 1
    groups.append(UserGroup(_label(lo, None), lo, None))
    return groups


def quantile_edges(counts: np.ndarray, q: int) -> list[int]:
    """Distinct upper bounds at the ``1/q, 2/q, ...`` quantiles of ``counts`` (see module doc);
    the largest count is never an edge (the open last group holds it)."""
    values = np.asarray(counts, dtype=np.int64)
    if q < 2 or len(values) == 0:
        return []
    cuts = np.quantile(values, np.arange(1, q) / q, method="inverted_cdf")
    top = int(values.max())
    return sorted({int(c) for c in cuts if int(c) < top})


def quantile_groups(counts: np.ndarray, q: int) -> list[UserGroup]:
    """Groups at the quantiles of ``counts``, labelled by their ranges of counts."""
    values = np.asarray(counts, dtype=np.int64)
    if len(values) == 0:
        return []
    groups = groups_from_edges(quantile_edges(values, q))
    low = int(values.min())  # the first group starts at the smallest count that occurs
    first = groups[0]
    groups[0] = UserGroup(_label(low, first.hi) if first.hi != low else str(low), low, first.hi)
    return groups


def group_metrics(per_user: PerUserMetrics, groups: Sequence[UserGroup],
                  counts: np.ndarray | None = None) -> list[dict[str, Any]]:
    """``[{label, lo, hi, n_users, metrics: {name: mean}}]``, one entry per group.

    ``counts`` defaults to the table's own ``n_train``.
    """
    n_train = per_user.n_train if counts is None else counts
    if n_train is None:
        raise ValueError("per-user metrics without training counts cannot be grouped")
    n_train = np.asarray(n_train)
    out = []
    for group in groups:
        inside = group.contains(n_train)
        n = int(inside.sum())
        metrics = ({name: float(values[inside].mean()) for name, values in per_user.values.items()}
                   if n else {})
        out.append({**group.to_dict(), "n_users": n, "metrics": metrics})
    return out


def breakdown(per_user: PerUserMetrics, edges: Sequence[int],
              quantiles: int) -> dict[str, Any]:
    """Both groupings of one evaluation, as stored in ``results.json`` (``test_groups``)."""
    if per_user.n_train is None:
        raise ValueError("per-user metrics without training counts cannot be grouped")
    out: dict[str, Any] = {"by": "training interactions"}
    if edges:
        out["edges"] = group_metrics(per_user, groups_from_edges(edges))
    if quantiles >= 2:
        out["quantiles"] = group_metrics(per_user, quantile_groups(per_user.n_train, quantiles))
    return out


def format_groups(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """Plain-text table of :func:`group_metrics` rows (for the log)."""
    width = max([len("group")] + [len(str(r["label"])) for r in rows])
    head = f"{'group':<{width}}  {'users':>6}  " + "  ".join(f"{m:>10}" for m in metrics)
    lines = [head]
    for r in rows:
        cells = [f"{r['metrics'][m]:>10.4f}" if m in r["metrics"] else f"{'-':>10}"
                 for m in metrics]
        lines.append(f"{r['label']:<{width}}  {r['n_users']:>6}  " + "  ".join(cells))
    return "\n".join(lines)
