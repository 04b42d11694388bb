"""HTTP service (FastAPI) over one loaded artifact.

Embeddings are loaded once when the app is built. Endpoints are plain ``def`` functions, which
FastAPI runs in its thread pool, so the event loop keeps answering (e.g. /health) while a
request does its matmul + top-k. Batch requests are capped so one call cannot monopolise it.

No ``from __future__ import annotations`` here: FastAPI must see the request models, which are
built inside :func:`create_app` (their limits depend on the artifact), as real classes.
"""

import importlib
from typing import Any

from simkgcl import __version__
from simkgcl.errors import ConfigError, NotFoundError
from simkgcl.serving.recommend import RecommendationService, ScoredItem

DEFAULT_MAX_BATCH_USERS = 1000


def require_serving_deps() -> None:
    """Clear message instead of an ImportError deep inside the server start."""
    missing = []
    for module in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"serving needs {' and '.join(missing)}, not installed: "
                          "pip install 'simkgcl[serve]'")


def _items(scored: list[ScoredItem]) -> list[dict[str, Any]]:
    return [s.as_dict() for s in scored]


def split_test_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test-set metrics of a run (``metrics['test']`` if the run nests them by split)."""
    nested = metrics.get("test")
    return nested if isinstance(nested, dict) else metrics


def create_app(service: RecommendationService, *,
               max_batch_users: int = DEFAULT_MAX_BATCH_USERS) -> Any:
    """Build the FastAPI app answering from ``service`` (already loaded)."""
    require_serving_deps()
    from fastapi import FastAPI, Path, Query, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    art = service.artifact
    n_items = service.n_items
    app = FastAPI(
        title="simkgcl recommendations",
        version=__version__,
        description=f"Top-k recommendations from a trained {art.model} model on {art.dataset} "
                    "(original user and item ids).",
    )

    class ItemScore(BaseModel):
        rank: int
        item: str
        score: float

    class UserRecommendations(BaseModel):
        user: str
        k: int
        exclude_seen: bool
        items: list[ItemScore]

    class BatchRequest(BaseModel):
        users: list[str | int] = Field(min_length=1, max_length=max_batch_users,
                                       description=f"user tokens (at most {max_batch_users})")
        k: int = Field(20, ge=1, le=n_items)
        exclude_seen: bool = True

    class BatchResponse(BaseModel):
        results: list[UserRecommendations]

    class SimilarItems(BaseModel):
        item: str
        k: int
        items: list[ItemScore]

    @app.exception_handler(NotFoundError)
    def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": "not_found", "detail": str(exc)})

    @app.exception_handler(ConfigError)
    def bad_value(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": "invalid", "detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict[str, Any]:
        return {
            "model": art.model,
            "dataset": art.dataset,
            "n_users": service.n_users,
            "n_items": n_items,
            "embedding_dim": art.embedding_dim,
            "test_metrics": split_test_metrics(art.metrics),
        }

    @app.get("/v1/users/{user:path}/recommendations", response_model=UserRecommendations)
    def user_recommendations(
        user: str = Path(description="original user id"),
        k: int = Query(20, ge=1, le=n_items),
        exclude_seen: bool = Query(True, description="leave out the user's training items"),
    ) -> dict[str, Any]:
        items = service.recommend(user, k, include_seen=not exclude_seen)
        return {"user": user, "k": k, "exclude_seen": exclude_seen, "items": _items(items)}

    @app.post("/v1/recommendations", response_model=BatchResponse)
    def batch_recommendations(body: BatchRequest) -> dict[str, Any]:
        users = [str(u) for u in body.users]
        lists = service.recommend_many(users, body.k, include_seen=not body.exclude_seen)
        return {"results": [
            {"user": u, "k": body.k, "exclude_seen": body.exclude_seen, "items": _items(lst)}
            for u, lst in zip(users, lists, strict=True)
        ]}

    @app.get("/v1/items/{item:path}/similar", response_model=SimilarItems)
    def similar(
        item: str = Path(description="original item id"),
        k: int = Query(20, ge=1, le=max(n_items - 1, 1)),
    ) -> dict[str, Any]:
        return {"item": item, "k": k, "items": _items(service.similar_items(item, k))}

    return app


def serve(service: RecommendationService, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", max_batch_users: int = DEFAULT_MAX_BATCH_USERS) -> None:
    """Run uvicorn in the foreground until interrupted."""
    app = create_app(service, max_batch_users=max_batch_users)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
