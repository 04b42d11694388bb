"""The HTTP contract under abuse, in-process against the ASGI app: strict types, bounded work and
bodies, bounded error bodies that never list valid ids, every status code declared, offline docs,
and an event loop that keeps answering while a request scores."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serving_fixtures import N_ITEMS, ToyRun

from simkgcl.serving.app import ServingLimits, create_app
from simkgcl.serving.recommend import RecommendationService

USER = "user-11"


@pytest.fixture(scope="module")
def service(toy_run: ToyRun) -> RecommendationService:
    return RecommendationService.from_run_dir(toy_run.run_dir)


def make_app(service: RecommendationService, **limits: int) -> Any:
    return create_app(service, limits=ServingLimits(**limits))


@pytest.fixture(scope="module")
def app(service: RecommendationService) -> Any:
    return make_app(service, max_batch_users=16, max_results=200, max_body_bytes=4096)


def client_for(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)


def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with client_for(app) as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def post_raw(app: Any, body: str | bytes) -> httpx.Response:
    return call(app, "POST", "/v1/recommendations", content=body,
                headers={"content-type": "application/json"})


def assert_error(resp: httpx.Response, status: int, error: str, *fragments: str) -> dict:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    assert isinstance(body["detail"], str) and "\n" not in body["detail"]
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


@pytest.mark.parametrize("k", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_k_is_422_not_500(app, k: str) -> None:
    resp = post_raw(app, f'{{"users": ["{USER}"], "k": {k}}}')
    assert_error(resp, 422, "invalid", "k")


@pytest.mark.parametrize("body", [
    {"users": [USER], "k": True},
    {"users": [USER], "k": "5"},
    {"users": [USER], "k": 5.5},
    {"users": [USER], "k": None},
    {"users": [USER], "exclude_seen": 0},
    {"users": [USER], "exclude_seen": "true"},
    {"users": [True]},
    {"users": [11]},
    {"users": USER},
    {"users": [USER], "exclude_seem": False},  # a typo is an error, not silently ignored
])
def test_types_are_strict(app, body: dict) -> None:
    assert_error(call(app, "POST", "/v1/recommendations", json=body), 422, "invalid")


def test_integral_number_is_an_integer_as_json_schema_says(app) -> None:
    resp = post_raw(app, f'{{"users": ["{USER}"], "k": 3.0}}')
    assert resp.status_code == 200 and len(resp.json()["results"][0]["items"]) == 3


def test_valid_batch_still_answers(app, toy_run: ToyRun) -> None:
    resp = call(app, "POST", "/v1/recommendations",
                json={"users": [USER, toy_run.user_tokens[3]], "k": 3, "exclude_seen": False})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    for result, user in zip(results, [USER, toy_run.user_tokens[3]], strict=True):
        expected = toy_run.brute_force(user, 3, include_seen=True)
        assert result["user"] == user and result["exclude_seen"] is False
        assert [r["item"] for r in result["items"]] == [item for item, _ in expected]


def test_malformed_json_is_400(app) -> None:
    for body in ('{"users": [', "users=a", b"\xff\xfe"):
        assert_error(post_raw(app, body), 400, "bad_request", "not valid JSON")
    resp = call(app, "POST", "/v1/recommendations", content=b'{"users": ["user-11"]}',
                headers={"content-type": "text/plain"})
    assert_error(resp, 422, "invalid", "Content-Type: application/json")


def test_unknown_ids_echo_little_and_never_list_valid_ids(app, toy_run: ToyRun) -> None:
    long_id = "x" * 3000
    responses = [
        call(app, "GET", f"/v1/users/{long_id}/recommendations"),
        call(app, "GET", f"/v1/items/{long_id}/similar"),
        call(app, "POST", "/v1/recommendations", json={"users": [USER, long_id]}),
    ]
    for resp in responses:
        body = assert_error(resp, 404, "not_found", "unknown")
        assert len(resp.content) < 400 and "x" * 50 not in body["detail"]
        assert not any(token in body["detail"] for token in toy_run.user_tokens)
        assert not any(token in body["detail"] for token in toy_run.item_tokens)


def test_422_bodies_stay_small(service) -> None:
    roomy = make_app(service, max_batch_users=16, max_body_bytes=10_000_000)
    resp = call(roomy, "POST", "/v1/recommendations", json={"users": [USER] * 200_000})
    assert_error(resp, 422, "invalid", "users")
    assert len(resp.content) < 600
    many_bad = {"users": [{"id": i} for i in range(1000)], "k": "x" * 10_000}
    resp = call(roomy, "POST", "/v1/recommendations", json=many_bad)
    body = assert_error(resp, 422, "invalid")
    assert len(resp.content) < 600 and "x" * 50 not in body["detail"]


def test_body_over_the_limit_is_413(app) -> None:
    big = json.dumps({"users": ["u" * 5000]})
    assert_error(post_raw(app, big), 413, "payload_too_large", "4096 bytes")

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b" " * 1000
        yield b'{"users": ["user-11"]}'

    resp = call(app, "POST", "/v1/recommendations", content=chunks(),
                headers={"content-type": "application/json"})
    assert_error(resp, 413, "payload_too_large")


def test_work_of_one_request_is_bounded(app) -> None:
    """users x k above max_results (200 here) is refused before any scoring."""
    resp = call(app, "POST", "/v1/recommendations", json={"users": [USER] * 11, "k": 20})
    assert_error(resp, 422, "invalid", "11 users x k=20", "200")
    assert call(app, "POST", "/v1/recommendations",
                json={"users": [USER] * 10, "k": 20}).status_code == 200
    assert_error(call(app, "GET", f"/v1/users/{USER}/recommendations", params={"k": 201}),
                 422, "invalid")
    assert_error(call(app, "POST", "/v1/recommendations", json={"users": [USER] * 17, "k": 1}),
                 422, "invalid", "users")


def test_openapi_declares_every_status_with_the_error_schema(app) -> None:
    spec = call(app, "GET", "/openapi.json").json()
    declared = {(path, method): set(op["responses"])
                for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert declared[("/v1/recommendations", "post")] == {"200", "400", "404", "413", "422"}
    assert declared[("/v1/users/{user}/recommendations", "get")] == {"200", "404", "422"}
    assert declared[("/v1/items/{item}/similar", "get")] == {"200", "404", "422"}
    post = spec["paths"]["/v1/recommendations"]["post"]["responses"]
    for status in ("400", "404", "413", "422"):
        ref = post[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    error_schema = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_schema["required"]) == {"error", "detail"}


def test_docs_work_offline(app) -> None:
    html = call(app, "GET", "/docs").text
    scripts = [part.split('"')[1] for part in html.split("src=")[1:]]
    links = [part.split('"')[1] for part in html.split("href=")[1:]]
    assert scripts and all(url.startswith("/") for url in scripts + links), (scripts, links)
    for url in scripts:
        asset = call(app, "GET", url)
        assert asset.status_code == 200 and len(asset.content) > 100_000  # the real bundle


@pytest.fixture
def gated(service, monkeypatch) -> Iterator[tuple[threading.Event, threading.Event, list[int]]]:
    """Scoring waits for ``release``; ``entered`` tells that a request reached the scoring."""
    entered, release = threading.Event(), threading.Event()
    inside: list[int] = []
    real = service.top_k_ids

    def blocking(*args: Any, **kwargs: Any) -> Any:
        inside.append(1)
        entered.set()
        release.wait(timeout=20)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "top_k_ids", blocking)
    yield entered, release, inside
    release.set()


def test_health_answers_while_a_request_is_scoring(service, gated) -> None:
    entered, release, _ = gated
    app = make_app(service)

    async def scenario() -> None:
        async with client_for(app) as client:
            big = asyncio.create_task(client.post("/v1/recommendations",
                                                  json={"users": [USER] * 8, "k": N_ITEMS}))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            health = await asyncio.wait_for(client.get("/health"), timeout=10)
            model = await asyncio.wait_for(client.get("/v1/model"), timeout=10)
            assert health.json() == {"status": "ok"} and model.status_code == 200
            assert not big.done()  # answered while the scoring was still blocked
            release.set()
            assert (await big).status_code == 200

    asyncio.run(scenario())


def test_scoring_concurrency_is_bounded(service, gated) -> None:
    entered, release, inside = gated
    app = make_app(service, max_concurrent=1)

    async def scenario() -> None:
        async with client_for(app) as client:
            url = f"/v1/users/{USER}/recommendations"
            first = asyncio.create_task(client.get(url))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.get(url))
            await asyncio.sleep(0.3)
            assert len(inside) == 1  # the second waits for the first's slot
            assert (await client.get("/health")).status_code == 200
            release.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            assert len(inside) == 2

    asyncio.run(scenario())


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_results"):
        ServingLimits(max_results=0)
    assert ServingLimits().max_results >= ServingLimits().max_batch_users
