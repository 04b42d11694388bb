"""Full-ranking evaluation (Recall, NDCG, MRR, Hit, Precision, MAP, ItemCoverage at every K)."""

from simkgcl.evaluation.evaluator import Evaluator, RankingTask
from simkgcl.evaluation.metrics import RANKING_METRICS, per_user_metrics

__all__ = ["RANKING_METRICS", "Evaluator", "RankingTask", "per_user_metrics"]
