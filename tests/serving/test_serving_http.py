"""HTTP API against a real uvicorn process on 127.0.0.1, with a real client."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from serving_fixtures import GREEDY_USER, N_ITEMS, N_USERS, ToyRun

from simkgcl.serving.loadtest import request_plan, run_load, served

MAX_BATCH = 16


@pytest.fixture(scope="module")
def server(toy_run: ToyRun) -> Iterator[str]:
    with served(toy_run.run_dir, "--max-batch-users", str(MAX_BATCH), "--max-results", "500",
                "--max-body-bytes", "2048", "--max-concurrent", "3") as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30.0) as c:
        yield c


def _user_url(token: str) -> str:
    return f"/v1/users/{quote(token, safe='')}/recommendations"


def test_health_model_and_docs(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info == {"model": "SimKGCL", "dataset": "toy", "n_users": N_USERS, "n_items": N_ITEMS,
                    "embedding_dim": 8, "index": {"index": "exact"},
                    "test_metrics": {"recall@20": 0.25, "ndcg@20": 0.125},
                    "limits": {"max_batch_users": MAX_BATCH, "max_results": 500,
                               "max_body_bytes": 2048, "max_concurrent": 3},
                    "popularity_blend": None}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/recommendations", "/v1/items/{item}/similar"} <= set(paths)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_user_recommendations_match_brute_force(client, toy_run: ToyRun, exclude_seen) -> None:
    for token in (toy_run.user_tokens[0], toy_run.user_tokens[3]):  # [3] has '/' and a space
        resp = client.get(_user_url(token), params={"k": 5, "exclude_seen": exclude_seen})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        expected = toy_run.brute_force(token, 5, include_seen=not exclude_seen)
        assert body["user"] == token and body["k"] == 5
        assert [r["item"] for r in body["items"]] == [item for item, _ in expected]
        assert [r["rank"] for r in body["items"]] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([r["score"] for r in body["items"]],
                                   [s for _, s in expected], rtol=1e-5)


def test_batch_recommendations(client, toy_run: ToyRun) -> None:
    users = [toy_run.user_tokens[i] for i in (1, GREEDY_USER, 1)]
    resp = client.post("/v1/recommendations", json={"users": users, "k": 4})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["user"] for r in results] == users
    for r in results:
        assert [x["item"] for x in r["items"]] == [i for i, _ in toy_run.brute_force(r["user"], 4)]
    assert len(results[1]["items"]) == 3  # only 3 unseen items exist for this user


def test_similar_items_exclude_the_item(client, toy_run: ToyRun) -> None:
    item = toy_run.item_tokens[10]
    body = client.get(f"/v1/items/{item}/similar", params={"k": N_ITEMS - 1}).json()
    returned = [r["item"] for r in body["items"]]
    assert item not in returned and len(set(returned)) == N_ITEMS - 1
    assert body["items"][0]["score"] <= 1.0 + 1e-6


def test_unknown_ids_are_404_with_json_body(client) -> None:
    for url in (_user_url("nobody"), "/v1/items/nothing/similar"):
        resp = client.get(url)
        assert resp.status_code == 404
        assert resp.json()["error"] == "not_found" and "unknown" in resp.json()["detail"]
    resp = client.post("/v1/recommendations", json={"users": ["user-11", "ghost"]})
    assert resp.status_code == 404 and "'ghost'" in resp.json()["detail"]


def test_bad_k_and_oversized_batches_are_422(client, toy_run: ToyRun) -> None:
    user = toy_run.user_tokens[0]
    for k in (0, N_ITEMS + 1, "many"):
        assert client.get(_user_url(user), params={"k": k}).status_code == 422
    assert client.get(f"/v1/items/{toy_run.item_tokens[0]}/similar",
                      params={"k": N_ITEMS}).status_code == 422
    assert client.post("/v1/recommendations",
                       json={"users": [user], "k": N_ITEMS + 1}).status_code == 422
    too_many = {"users": [user] * (MAX_BATCH + 1), "k": 3}
    assert client.post("/v1/recommendations", json=too_many).status_code == 422
    assert client.post("/v1/recommendations", json={"users": []}).status_code == 422


def test_bounded_load_run_has_no_errors(server: str, toy_run: ToyRun) -> None:
    plan = request_plan(toy_run.user_tokens, toy_run.item_tokens, 400, k=10, seed=1)
    result = run_load(server, plan, concurrency=16)
    assert result.errors == 0, result.error_samples
    assert result.requests == 400 and np.all(result.latencies_ms > 0)


def test_limits_from_the_command_line_hold_over_a_real_socket(client, toy_run: ToyRun) -> None:
    user = toy_run.user_tokens[0]
    too_big = client.post("/v1/recommendations", json={"users": ["u" * 3000]})
    assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
    assert client.get("/health").status_code == 200  # the server is fine afterwards
    over = client.post("/v1/recommendations", json={"users": [user] * 9, "k": 60})
    assert over.status_code == 422 and "500" in over.json()["detail"]
    assert client.post("/v1/recommendations",
                       json={"users": [user] * 8, "k": 60}).status_code == 200


def test_a_taken_port_is_retried(toy_run: ToyRun, monkeypatch) -> None:
    """free_port() is bind-then-release: another process may take the port before the server."""
    import socket

    import simkgcl.serving.loadtest as loadtest

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real = loadtest.free_port
        monkeypatch.setattr(loadtest, "free_port", lambda: next(ports, None) or real())
        with served(toy_run.run_dir) as base:
            assert not base.endswith(f":{taken}")
            assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
