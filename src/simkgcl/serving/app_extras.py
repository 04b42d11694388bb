"""HTTP routes for users the model never saw (fold-in) and for KG explanations.

Added to the app by :func:`simkgcl.serving.app.create_app`, with its error handling, limits
and worker threads (``off_loop``):

* ``POST /v1/recommendations/for-items`` — ``{"items": [...], "k": 20, "exclude_given": true,
  "explain": false}``: top-k for a user built from item tokens (:mod:`simkgcl.serving.foldin`);
  unknown tokens are listed in ``unknown_items`` (at most 100), 404 only when none is known;
* ``GET /v1/users/{user}/items/{item}/explanation`` — the KG paths between ``item`` and the
  user's training items (:mod:`simkgcl.serving.explain`), ``max_paths`` at most (default 3);
* ``explain`` (query parameter or body field) on the recommendation endpoints adds each item's
  explanation; then users x k may not exceed ``MAX_EXPLAINED`` (422 above).

No ``from __future__ import annotations``: FastAPI must see the request models as real classes.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from simkgcl.errors import ConfigError
from simkgcl.serving.explain import DEFAULT_MAX_PATHS, MAX_EXPLAINED, explained_items
from simkgcl.serving.foldin import UNKNOWN_SHOWN
from simkgcl.serving.limits import ServingLimits
from simkgcl.serving.recommend import RecommendationService

MAX_PATHS_LIMIT = 50  # most paths one explanation request may ask for


def explanation_model() -> type:
    """The pydantic model of one explanation (pydantic is imported only when serving)."""
    from pydantic import BaseModel, Field

    class Node(BaseModel):
        kind: str = Field(description="item | entity")
        token: str = Field(description="original id ('' for an item without a linked entity)")

    class Edge(BaseModel):
        relation: str
        forward: bool = Field(description="the triple is (left node, relation, right node)")

    class Path(BaseModel):
        history_item: str = Field(description="the user's training item the path ends at")
        relevance: float = Field(description="cosine of the history item and the recommended "
                                             "item in the model's embedding space")
        hops: int = Field(description="entities between the two items: 0, 1 or 2")
        nodes: list[Node]
        edges: list[Edge]
        text: str

    class Explanation(BaseModel):
        item: str
        explained: bool = Field(description="false: no KG path (see note)")
        paths: list[Path]
        note: str | None = None

    return Explanation


def check_explained(n_results: int, explain: bool) -> None:
    """Explanations cost a graph search each: at most ``MAX_EXPLAINED`` per reply."""
    if explain and n_results > MAX_EXPLAINED:
        raise ConfigError(f"explain=true allows at most {MAX_EXPLAINED} explained items per "
                          f"request (users x k), got {n_results}")


def items_payload(service: RecommendationService, history: Any, scored: list[Any],
                  explain: bool) -> list[dict[str, Any]]:
    """Ranked items as JSON-ready dicts, with explanations when asked (``history``: the user's
    internal item ids, or a user token whose training items are used)."""
    if not explain:
        return [s.as_dict() for s in scored]
    if isinstance(history, str):
        history = service.artifact.seen_items(service.user_id(history)).numpy()
    ids = [service.item_id(s.item) for s in scored]
    return explained_items(service.explainer, history, scored, ids)


def register_extra_routes(app: Any, service: RecommendationService, *, limits: ServingLimits,
                          off_loop: Callable[[Callable[[], bytes]], Awaitable[Any]],
                          errors: Callable[..., dict[int | str, dict[str, Any]]],
                          item_model: type, explanation: type,
                          json_integer: Callable[[Any], Any],
                          render: Callable[[Any], bytes]) -> None:
    """Add the fold-in and explanation routes; ``item_model`` is the app's ranked-item model,
    ``explanation`` the model of :func:`explanation_model`."""
    from fastapi import Path, Query, Response
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

    max_k = min(service.n_items, limits.max_results)
    max_items = limits.max_batch_users  # the same bound on list length as a batch of users

    class ForItemsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[StrictStr] = Field(min_length=1, max_length=max_items,
                                       description="item ids (strings) of a user the model "
                                                   f"never saw; at most {max_items}")
        k: Annotated[int, BeforeValidator(json_integer)] = Field(min(20, max_k), ge=1, le=max_k)
        exclude_given: StrictBool = Field(True, description="leave out the given items")
        explain: StrictBool = Field(False, description="add each item's KG paths to the "
                                                       "given items")

    class ForItemsResponse(BaseModel):
        k: int
        fold_in: str = Field(description="propagation | mean (see the README)")
        items_known: int
        unknown_items: list[str] = Field(description=f"unknown item ids (first {UNKNOWN_SHOWN})")
        items: list[item_model]  # type: ignore[valid-type]

    @app.post("/v1/recommendations/for-items", response_model=ForItemsResponse,
              responses=errors(400, 404, 413, 422))
    async def for_items(body: ForItemsRequest) -> Response:
        """Top-k for a new or anonymous user from a list of items, without retraining."""
        check_explained(body.k, body.explain)
        def work() -> bytes:
            user, items = service.recommend_for_items(body.items, body.k,
                                                      include_given=not body.exclude_given)
            return render({"k": body.k, "fold_in": user.method,
                           "items_known": len(user.item_ids), "unknown_items": user.unknown,
                           "items": items_payload(service, user.item_ids, items,
                                                  body.explain)})

        return await off_loop(work)

    class UserExplanation(explanation):  # type: ignore[valid-type,misc]
        user: str

    @app.get("/v1/users/{user:path}/items/{item:path}/explanation",
             response_model=UserExplanation, responses=errors(404, 422))
    async def explanation_route(
        user: str = Path(description="original user id"),
        item: str = Path(description="original item id"),
        max_paths: int = Query(DEFAULT_MAX_PATHS, ge=1, le=MAX_PATHS_LIMIT),
    ) -> Response:
        """KG paths between the item and the user's training items, most relevant first."""
        def work() -> bytes:
            return render({"user": user, **service.explain(user, item, max_paths).as_dict()})

        return await off_loop(work)
