"""HTTP routes for users the model never saw (fold-in) and for KG explanations.

Added to the app by :func:`simkgcl.serving.app.create_app`, with its error handling, limits
and worker threads (``off_loop``):

* ``POST /v1/recommendations/for-items`` — ``{"items": [...], "k": 20, "exclude_given": true,
  "explain": false}``: top-k for a user built from item tokens (:mod:`simkgcl.serving.foldin`);
  unknown tokens are listed in ``unknown_items`` (at most 100), 404 only when none is known;
* ``GET /v1/users/{user}/items/{item}/explanation`` — the KG paths between ``item`` and the
  user's training items (:mod:`simkgcl.serving.explain`).

No ``from __future__ import annotations``: FastAPI must see the request models as real classes.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from simkgcl.serving.foldin import UNKNOWN_SHOWN, recommend_for_items
from simkgcl.serving.limits import ServingLimits
from simkgcl.serving.recommend import RecommendationService


def register_extra_routes(app: Any, service: RecommendationService, *, limits: ServingLimits,
                          off_loop: Callable[[Callable[[], bytes]], Awaitable[Any]],
                          errors: Callable[..., dict[int | str, dict[str, Any]]],
                          item_model: type, json_integer: Callable[[Any], Any],
                          render: Callable[[Any], bytes]) -> None:
    """Add the fold-in and explanation routes; ``item_model`` is the app's ranked-item model."""
    from fastapi import Response
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
        def work() -> bytes:
            user, items = recommend_for_items(service, body.items, body.k,
                                              include_given=not body.exclude_given)
            return render({"k": body.k, "fold_in": user.method,
                           "items_known": len(user.item_ids), "unknown_items": user.unknown,
                           "items": [s.as_dict() for s in items]})

        return await off_loop(work)
