"""What a run does after training: fit the popularity blend on validation, then test.

Recipe (``popularity_blend: auto``, a validation split that is not the test split, a model
whose validation users exist): fit β per user group on the validation split
(:func:`simkgcl.calibration.fit_blend`), and test the model both without and with the fitted
blend. The blend is *kept* (served from the artifact, reported as ``test``) only when some
group's validation metric strictly improved; otherwise the model alone is kept and
``popularity_blend`` records why. ``results.json`` then holds ``test`` (what the artifact
serves), ``test_unblended`` and ``test_groups_unblended`` (the model alone), and the fitted table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from simkgcl.calibration import BlendTable, fit_blend
from simkgcl.config import Config
from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.evaluation.evaluator import ScoreTransform
from simkgcl.evaluation.groups import breakdown, format_groups
from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.models.pop import item_popularity
from simkgcl.training.components import Components
from simkgcl.training.trainer import format_metrics

logger = logging.getLogger("simkgcl.training")


@dataclass
class TestOutcome:
    """The test metrics to report (blended if the blend is kept) and what goes with them."""

    test: dict[str, float]
    seconds: float
    per_user: PerUserMetrics | None
    blend: BlendTable | None = None  # kept blend (None: the model alone)
    extra: dict[str, Any] = field(default_factory=dict)  # more results.json entries


def training_counts(dataset: KnowledgeDataset, split: Split) -> tuple[np.ndarray, torch.Tensor]:
    """Training interactions per user (numpy) and per item (float32 tensor)."""
    users = np.bincount(np.asarray(split.train.users, dtype=np.int64), minlength=dataset.n_users)
    items = item_popularity(torch.as_tensor(np.asarray(split.train.items, dtype=np.int64)),
                            dataset.n_items)
    return users, items


def _fit(config: Config, parts: Components, dataset: KnowledgeDataset,
         split: Split) -> tuple[BlendTable | None, str]:
    """The blend validation asks for, or None and the reason."""
    if config["popularity_blend"] == "off":
        return None, "popularity_blend: off"
    if len(split.valid) == 0 or split.valid_is_test:
        return None, "no validation split apart from the test split to fit it on"
    user_counts, popularity = training_counts(dataset, split)
    model = parts.model
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model.final_embeddings()
    task = parts.evaluator.task(split.valid, split.valid_exclusions())
    t0 = time.perf_counter()
    table = fit_blend(parts.evaluator, user_emb, item_emb, task, popularity, user_counts,
                      config["user_groups"], config["valid_metric"])
    rows = "\n".join(f"  {r['label']:>6} users {r['n_users']:>5}  beta {r['beta']:<5g} "
                     f"{table.metric} {_num(r['unblended'])} -> {_num(r['blended'])}"
                     for r in table.report["groups"])
    logger.info("popularity blend fitted on valid in %.1fs (%s %.4f -> %.4f):\n%s",
                time.perf_counter() - t0, table.metric, table.report["unblended"],
                table.report["blended"], rows)
    if not table.active:
        return None, "validation improved no group"
    return table, "kept: validation improved"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def blend_transform(table: BlendTable, dataset: KnowledgeDataset, split: Split,
                    device: torch.device) -> ScoreTransform:
    user_counts, popularity = training_counts(dataset, split)
    return table.bind(popularity, user_counts, device)


def evaluate_test(config: Config, parts: Components, dataset: KnowledgeDataset, split: Split,
                  transform: ScoreTransform | None = None
                  ) -> tuple[dict[str, float], float, PerUserMetrics | None]:
    """Test metrics, seconds, and every test user's metrics when ``test_per_user`` asks."""
    task = parts.evaluator.task(split.test, split.test_exclusions())
    t0 = time.perf_counter()
    per_user = None
    if config["test_per_user"]:
        test, per_user = parts.evaluator.evaluate_per_user(parts.model, task, transform)
        per_user = per_user.labelled(dataset.user_tokens, split.train.users, dataset.n_users)
    else:
        test = parts.evaluator.evaluate(parts.model, task, transform)
    return test, time.perf_counter() - t0, per_user


def log_groups(per_user: PerUserMetrics, config: Config, what: str = "test") -> dict[str, Any]:
    """Metrics by user group (``results.json``'s ``test_groups``), also logged."""
    groups = breakdown(per_user, config["user_groups"], config["user_group_quantiles"])
    for kind in ("edges", "quantiles"):
        if kind in groups:
            logger.info("%s by training interactions (%s):\n%s", what, kind,
                        format_groups(groups[kind], per_user.metric_names))
    return groups


def run_test_phase(config: Config, parts: Components, dataset: KnowledgeDataset,
                   split: Split) -> TestOutcome:
    """Fit the blend (if asked and possible), test, and say what was kept (module docstring)."""
    table, reason = _fit(config, parts, dataset, split)
    test, seconds, per_user = evaluate_test(config, parts, dataset, split)
    if table is None:
        logger.info("test:       %s", format_metrics(test))
        extra: dict[str, Any] = {"popularity_blend": {"kept": False, "reason": reason}}
        return TestOutcome(test, seconds, per_user, None, extra)
    logger.info("test (model alone):   %s", format_metrics(test))
    extra = {"test_unblended": test,
             "popularity_blend": {"kept": True, "reason": reason, **table.to_dict()}}
    if per_user is not None:
        extra["test_groups_unblended"] = log_groups(per_user, config, "test (model alone)")
    transform = blend_transform(table, dataset, split, parts.evaluator.device)
    blended, seconds_b, per_user_b = evaluate_test(config, parts, dataset, split, transform)
    logger.info("test (blended):       %s", format_metrics(blended))
    return TestOutcome(blended, seconds + seconds_b, per_user_b, table, extra)


__all__ = ["TestOutcome", "blend_transform", "evaluate_test", "log_groups", "run_test_phase",
           "training_counts"]
