"""Serving a trained model: top-k in original ids, bulk export, and an HTTP service.

Names are imported on first use (PEP 562), so the command line can read the serving limits
(:mod:`simkgcl.serving.limits`, standard library only) without importing torch or pandas.
FastAPI/uvicorn (``simkgcl[serve]``) and pyarrow (``simkgcl[parquet]``) are imported only by the
parts that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simkgcl.serving.export import ExportSummary, export_recommendations, read_user_list
    from simkgcl.serving.limits import ServingLimits
    from simkgcl.serving.recommend import RecommendationService, ScoredItem, TopK

_HOMES = {
    "ExportSummary": "simkgcl.serving.export",
    "export_recommendations": "simkgcl.serving.export",
    "read_user_list": "simkgcl.serving.export",
    "ServingLimits": "simkgcl.serving.limits",
    "RecommendationService": "simkgcl.serving.recommend",
    "ScoredItem": "simkgcl.serving.recommend",
    "TopK": "simkgcl.serving.recommend",
}

__all__ = [
    "ExportSummary",
    "RecommendationService",
    "ScoredItem",
    "ServingLimits",
    "TopK",
    "export_recommendations",
    "read_user_list",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
