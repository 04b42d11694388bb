"""Serving a trained model: top-k in original ids, bulk export, and an HTTP service.

FastAPI/uvicorn (``simkgcl[serve]``) and pyarrow (``simkgcl[parquet]``) are imported only by the
parts that need them.
"""

from simkgcl.serving.export import ExportSummary, export_recommendations, read_user_list
from simkgcl.serving.recommend import RecommendationService, ScoredItem, TopK

__all__ = [
    "ExportSummary",
    "RecommendationService",
    "ScoredItem",
    "TopK",
    "export_recommendations",
    "read_user_list",
]
