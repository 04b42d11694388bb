"""HTTP service (FastAPI) over one loaded artifact.

Contract (also in the README and the OpenAPI document at ``/openapi.json``):

* ``GET /health``, ``GET /v1/model`` answer on the event loop at once, whatever else runs;
* the scoring endpoints run their matmul + top-k *and* the JSON rendering of the reply in worker
  threads, at most ``limits.max_concurrent`` at a time (:mod:`simkgcl.serving.limits`);
* types are strict: ``k`` is a JSON integer (not ``true``, ``"5"``, ``5.0``, ``NaN``),
  ``exclude_seen`` a JSON boolean, user ids JSON strings — numbers are refused rather than
  converted, since ``7`` cannot say whether the user is ``"7"`` or ``"007"`` — and unknown body
  fields are refused (a typo must not be silently ignored). Query parameters are text by nature
  and are parsed (``k=5``, ``exclude_seen=false``);
* every error is ``{"error": CODE, "detail": ONE_LINE}`` with a short detail: values from the
  request are cut to a few dozen characters and valid ids are never listed. Codes:
  400 ``bad_request`` (body not valid JSON), 404 ``not_found`` (unknown user or item),
  405 ``method_not_allowed``, 413 ``payload_too_large`` (body over ``max_body_bytes``),
  422 ``invalid`` (a value out of range or of the wrong type, too many users, users x k over
  ``max_results``), 500 ``internal`` (a bug; the traceback goes to the server log only).

The fold-in and explanation routes (``POST /v1/recommendations/for-items``,
``GET /v1/users/{user}/items/{item}/explanation``) live in :mod:`simkgcl.serving.app_extras`.

``/docs`` serves Swagger UI from files shipped in the ``fastapi-offline`` package, so the docs
work without internet access.

No ``from __future__ import annotations`` here: FastAPI must see the request models, which are
built inside :func:`create_app` (their limits depend on the artifact), as real classes.
"""

import gc
import importlib
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

from simkgcl import __version__
from simkgcl.errors import ConfigError, NotFoundError
from simkgcl.serving.app_extras import (
    check_explained,
    explanation_model,
    items_payload,
    register_extra_routes,
)
from simkgcl.serving.limits import SCORE_CHUNK_USERS, BodySizeLimit, ServingLimits
from simkgcl.serving.recommend import RecommendationService, ScoredItem

__all__ = ["ServingLimits", "create_app", "require_serving_deps", "serve", "split_test_metrics"]

log = logging.getLogger(__name__)

_DETAIL_CHARS = 300  # an error detail is cut to this length
_ERRORS_SHOWN = 3  # validation problems named in one 422 detail
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 422: "invalid", 500: "internal"}


def require_serving_deps() -> None:
    """Clear message instead of an ImportError deep inside the server start."""
    missing = []
    for module in ("fastapi", "uvicorn", "fastapi_offline"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module.replace("_", "-"))
    if missing:
        raise ConfigError(f"serving needs {', '.join(missing)}, not installed: "
                          "pip install 'simkgcl[serve]'")


def split_test_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test-set metrics of a run (``metrics['test']`` if the run nests them by split)."""
    nested = metrics.get("test")
    return nested if isinstance(nested, dict) else metrics


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return _clip(" ".join(str(text).split()), _DETAIL_CHARS)


def _error_body(status: int, detail: str) -> dict[str, str]:
    return {"error": _STATUS_CODES.get(status, "error"), "detail": _one_line(detail)}


def _validation_detail(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """(status, one line) for pydantic errors, naming fields but never echoing inputs."""
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            return 400, f"the request body is not valid JSON ({reason})" if reason else \
                "the request body is not valid JSON"
    if any(tuple(err.get("loc", ())) == ("body",) and err.get("type") == "model_attributes_type"
           for err in errors):  # raw text: not sent as JSON
        return 422, "body: must be a JSON object sent with Content-Type: application/json"
    parts = []
    for err in errors[:_ERRORS_SHOWN]:  # a location may hold a request's own (long) key
        where = ".".join(_clip(str(part), 24) for part in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    more = f" (and {len(errors) - _ERRORS_SHOWN} more problems)" \
        if len(errors) > _ERRORS_SHOWN else ""
    return 422, "; ".join(parts) + more


def _json_integer(value: Any) -> Any:
    """Refuse what lax parsing would turn into an int: ``true``/``false`` and text. A JSON number
    with no fractional part (``5.0``) is an integer in JSON Schema, and stays accepted; ``5.5``,
    ``NaN`` and ``1e400`` (infinity) are refused by the int validation that follows."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer (not a boolean, text or null)")
    return value


def _items(scored: list[ScoredItem]) -> list[dict[str, Any]]:
    return [s.as_dict() for s in scored]


def create_app(service: RecommendationService, *, limits: ServingLimits | None = None) -> Any:
    """Build the FastAPI app answering from ``service`` (already loaded)."""
    require_serving_deps()
    import anyio
    from fastapi import Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr
    from starlette.exceptions import HTTPException

    limits = limits or ServingLimits()
    art = service.artifact
    n_items = service.n_items
    max_k = min(n_items, limits.max_results)
    max_similar_k = max(min(n_items - 1, limits.max_results), 1)
    app = FastAPIOffline(
        title="simkgcl recommendations",
        version=__version__,
        description=f"Top-k recommendations from a trained {art.model} model on {art.dataset} "
                    "(original user and item ids). Errors: `{\"error\": code, \"detail\": "
                    f"one line}}`. Limits: {limits.as_dict()}.",
    )
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    scoring: dict[str, anyio.CapacityLimiter] = {}

    async def off_loop(work: Callable[[], bytes]) -> Response:
        """Run ``work`` (score + render JSON) in a worker thread, ``max_concurrent`` at once."""
        if "limiter" not in scoring:  # created on the loop that serves the requests
            scoring["limiter"] = anyio.CapacityLimiter(limits.max_concurrent)
        body = await anyio.to_thread.run_sync(work, limiter=scoring["limiter"])
        return Response(content=body, media_type="application/json")

    class ErrorBody(BaseModel):
        error: str = Field(description="bad_request | not_found | method_not_allowed | "
                                       "payload_too_large | invalid | internal")
        detail: str = Field(description="one line; request values cut short")

    def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
        text = {400: "The body is not valid JSON.", 404: "Unknown user or item.",
                413: f"The body exceeds {limits.max_body_bytes} bytes.",
                422: "A value of the wrong type or out of range, or more work than the limits "
                     f"allow (users x k over {limits.max_results}, over "
                     f"{limits.max_batch_users} users)."}
        return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}

    Explanation = explanation_model()

    class ItemScore(BaseModel):
        rank: int
        item: str
        score: float
        explanation: Explanation | None = Field(None, description="with explain=true")  # type: ignore[valid-type]

    class UserRecommendations(BaseModel):
        user: str
        k: int
        exclude_seen: bool
        items: list[ItemScore]

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        users: list[StrictStr] = Field(min_length=1, max_length=limits.max_batch_users,
                                       description="user ids as strings (at most "
                                                   f"{limits.max_batch_users})")
        k: Annotated[int, BeforeValidator(_json_integer)] = Field(
            min(20, max_k), ge=1, le=max_k,
            description=f"items per user; users x k at most {limits.max_results}")
        exclude_seen: StrictBool = True
        explain: StrictBool = Field(False, description="add each item's KG explanation")

    class BatchResponse(BaseModel):
        results: list[UserRecommendations]

    class SimilarItems(BaseModel):
        item: str
        k: int
        items: list[ItemScore]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = _validation_detail(list(exc.errors()))
        return JSONResponse(status_code=status, content=_error_body(status, detail))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, headers=exc.headers,
                            content=_error_body(exc.status_code, str(exc.detail)))

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content=_error_body(404, str(exc)))

    @app.exception_handler(ConfigError)
    async def bad_value(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(status_code=422, content=_error_body(422, str(exc)))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return JSONResponse(status_code=500, content=_error_body(500, "internal server error"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return {
            "model": art.model,
            "dataset": art.dataset,
            "n_users": service.n_users,
            "n_items": n_items,
            "embedding_dim": art.embedding_dim,
            "index": service.index.describe() if service.index else {"index": "exact"},
            "test_metrics": split_test_metrics(art.metrics),
            "limits": limits.as_dict(),
            "popularity_blend": (None if art.blend is None else
                                 {"betas": dict(zip([g.label for g in art.blend.groups()],
                                                    art.blend.betas, strict=True)),
                                  "fitted_on": art.blend.fitted_on,
                                  "metric": art.blend.metric}),
        }

    @app.get("/v1/users/{user:path}/recommendations", response_model=UserRecommendations,
             responses=errors(404, 422))
    async def user_recommendations(
        user: str = Path(description="original user id"),
        k: int = Query(min(20, max_k), ge=1, le=max_k),
        exclude_seen: bool = Query(True, description="leave out the user's training items"),
        explain: bool = Query(False, description="add each item's KG explanation"),
    ) -> Response:
        check_explained(k, explain)

        def work() -> bytes:
            items = service.recommend(user, k, include_seen=not exclude_seen)
            return _json_bytes({"user": user, "k": k, "exclude_seen": exclude_seen,
                                "items": items_payload(service, user, items, explain)})

        return await off_loop(work)

    @app.post("/v1/recommendations", response_model=BatchResponse,
              responses=errors(400, 404, 413, 422))
    async def batch_recommendations(body: BatchRequest) -> Response:
        if len(body.users) * body.k > limits.max_results:
            raise ConfigError(f"{len(body.users)} users x k={body.k} = "
                              f"{len(body.users) * body.k} results, over the limit of "
                              f"{limits.max_results} per request; ask for fewer users or a "
                              "smaller k")
        check_explained(len(body.users) * body.k, body.explain)

        def work() -> bytes:
            lists = service.recommend_many(body.users, body.k,
                                           include_seen=not body.exclude_seen,
                                           chunk_users=SCORE_CHUNK_USERS)
            # One small dumps per user, not one for the whole reply: a single C call would hold
            # the GIL (and so stall /health) for as long as the largest reply takes to render.
            parts = [_json_bytes({"user": u, "k": body.k, "exclude_seen": body.exclude_seen,
                                  "items": items_payload(service, u, lst, body.explain)})
                     for u, lst in zip(body.users, lists, strict=True)]
            return b'{"results":[' + b",".join(parts) + b"]}"

        return await off_loop(work)

    @app.get("/v1/items/{item:path}/similar", response_model=SimilarItems,
             responses=errors(404, 422))
    async def similar(
        item: str = Path(description="original item id"),
        k: int = Query(min(20, max_similar_k), ge=1, le=max_similar_k),
    ) -> Response:
        def work() -> bytes:
            return _json_bytes({"item": item, "k": k,
                                "items": _items(service.similar_items(item, k))})

        return await off_loop(work)

    register_extra_routes(app, service, limits=limits, off_loop=off_loop, errors=errors,
                          item_model=ItemScore, explanation=Explanation,
                          json_integer=_json_integer, render=_json_bytes)
    return app


def serve(service: RecommendationService, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", limits: ServingLimits | None = None) -> None:
    """Run uvicorn in the foreground until interrupted."""
    app = create_app(service, limits=limits)
    import uvicorn

    # Move everything loaded so far (torch, the artifact's token lists: ~170k objects) out of
    # the garbage collector's reach: a reply builds ~10^5 small objects, which triggers full
    # collections, and each traversed them all with the GIL held — a 200-300 ms stall of
    # /health per large request on lastfm-kg, gone with the freeze (BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
