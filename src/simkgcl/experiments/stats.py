"""Paired per-user significance tests of models against a baseline, Holm-corrected.

Pairing: the unit is the *user*. For a model M and the baseline B on one dataset, only seeds
both finished are used; for each such seed the users both runs evaluated are paired (by user
token), and each user's values are averaged over the seeds that hold the user, giving one
(M, B) pair per user. Averaging over seeds first (rather than pooling user × seed pairs) keeps
one observation per independent unit: the same user under three seeds is not three users, and
pooling would shrink p-values by treating seed noise as sample size.

On those pairs, from scipy: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided,
zero differences dropped — Wilcoxon's own treatment; per-user ranking metrics are far from normal
and many users score 0 under both models) and the paired t-test (``scipy.stats.ttest_rel``,
two-sided). Over the models compared with the baseline on a dataset, each test's p-values are
Holm-corrected (step-down, controls the family-wise error rate). Stars use the Holm-corrected
Wilcoxon p-value: ``*`` < 0.05, ``**`` < 0.01, ``***`` < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.experiments.collect import RunRecord

STAR_LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def require_scipy() -> Any:
    try:
        import scipy.stats
    except ImportError as exc:
        from simkgcl.errors import ConfigError

        raise ConfigError("significance tests need scipy: pip install 'simkgcl[report]'"
                          ) from exc
    return scipy.stats


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment; None entries (no test) are left out of the family."""
    tested = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    tested.sort()
    m = len(tested)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def stars(p: float | None) -> str:
    if p is None:
        return ""
    return next((mark for level, mark in STAR_LEVELS if p < level), "")


def paired_user_means(model_runs: Sequence[RunRecord], baseline_runs: Sequence[RunRecord],
                      metric: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(model, baseline) per-user values averaged over the common seeds; the seeds used."""
    baseline_by_seed = {r.seed: r for r in baseline_runs if r.done and r.has_per_user}
    frames = []
    seeds = []
    for run in sorted(model_runs, key=lambda r: r.seed):
        other = baseline_by_seed.get(run.seed)
        if other is None or not (run.done and run.has_per_user):
            continue
        seeds.append(run.seed)
        frames.append(pd.merge(_frame(run.per_user, metric, "model"),
                               _frame(other.per_user, metric, "baseline"), on="user"))
    if not frames:
        return np.zeros(0), np.zeros(0), []
    means = pd.concat(frames).groupby("user", sort=True)[["model", "baseline"]].mean()
    return means["model"].to_numpy(), means["baseline"].to_numpy(), seeds


def _frame(table: PerUserMetrics, metric: str, column: str) -> pd.DataFrame:
    return pd.DataFrame({"user": np.asarray(table.users).astype(str),
                         column: np.asarray(table.values[metric], dtype=np.float64)})


def paired_test(model: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank and paired t-test of per-user pairs (two-sided)."""
    st = require_scipy()
    diff = model - baseline
    out: dict[str, Any] = {"n_users": int(len(diff)),
                           "n_nonzero": int(np.count_nonzero(diff)),
                           "mean_model": float(model.mean()) if len(diff) else None,
                           "mean_baseline": float(baseline.mean()) if len(diff) else None,
                           "mean_difference": float(diff.mean()) if len(diff) else None,
                           "wilcoxon_p": None, "ttest_p": None}
    if out["n_nonzero"] == 0:  # identical everywhere: nothing to test
        return out
    out["wilcoxon_p"] = float(st.wilcoxon(model, baseline).pvalue)
    if len(diff) > 1 and float(np.std(diff)) > 0:
        out["ttest_p"] = float(st.ttest_rel(model, baseline).pvalue)
    return out


def significance(runs: Sequence[RunRecord], baseline: str, metric: str) -> dict[str, Any]:
    """Tests of every model label in ``runs`` (one dataset) against ``baseline``'s runs."""
    by_label: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    base_runs = by_label.get(baseline, [])
    tests: dict[str, dict[str, Any]] = {}
    for label, model_runs in by_label.items():
        if label == baseline:
            continue
        model_values, base_values, seeds = paired_user_means(model_runs, base_runs, metric)
        tests[label] = {"seeds": seeds, **paired_test(model_values, base_values)}
    labels = list(tests)
    for test in ("wilcoxon_p", "ttest_p"):
        for label, adjusted in zip(labels, holm([tests[lb][test] for lb in labels]),
                                   strict=True):
            tests[label][f"{test}_holm"] = adjusted
    for label in labels:
        tests[label]["stars"] = stars(tests[label]["wilcoxon_p_holm"])
    return {"baseline": baseline, "metric": metric,
            "pairing": "per-user mean over the seeds both finished", "stars_from":
            "wilcoxon_p_holm", "models": tests}
