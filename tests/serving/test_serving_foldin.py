"""Fold-in: a user row built from items equals the trained row where the model's aggregation is
exact, and the least-squares fit solves its stated objective. References are dense numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simkgcl.artifact import load_artifact, save_artifact
from simkgcl.errors import ConfigError, NotFoundError
from simkgcl.models.bpr import BPR
from simkgcl.models.lightgcn import LightGCN
from simkgcl.models.simgcl import SimGCL
from simkgcl.serving.foldin import FoldIn
from simkgcl.serving.recommend import RecommendationService
from tests.models.toy_graph import dense_norm_adjacency, toy_graph

ITEM_TOKENS = [f"it{i}" for i in range(6)]


def _save(tmp_path: Path, model, graph) -> RecommendationService:
    model.eval()
    with torch.no_grad():
        users, items = model.final_embeddings()
        fold = model.fold_in_items()
    save_artifact(tmp_path, model=model.name, dataset="toy", config={}, metrics={},
                  user_tokens=[f"u{u}" for u in range(graph.n_users)], item_tokens=ITEM_TOKENS,
                  user_embeddings=users, item_embeddings=items,
                  train_users=graph.train_users.numpy(), train_items=graph.train_items.numpy(),
                  foldin_items=None if fold is None else fold[0],
                  foldin=None if fold is None else {"method": "propagation",
                                                    "user_layer0_weight": fold[1]})
    return RecommendationService(load_artifact(tmp_path))


def _dense_lightgcn_users(graph, user0: np.ndarray, item0: np.ndarray, n_layers: int,
                          with_layer0: bool) -> np.ndarray:
    """Plain dense propagation: mean of layers 0..L (or 1..L), user rows."""
    adj = dense_norm_adjacency(graph).numpy()
    x = np.concatenate([user0, item0]).astype(np.float64)
    layers = [x] if with_layer0 else []
    for _ in range(n_layers):
        x = adj @ x
        layers.append(x)
    return np.mean(layers, axis=0)[: graph.n_users]


def _user_items(graph, user: int) -> list[str]:
    items = graph.train_items[graph.train_users == user].tolist()
    return [ITEM_TOKENS[i] for i in items]  # duplicates kept: fold-in must collapse them


def test_lightgcn_fold_in_equals_trained_row_without_layer0(tmp_path: Path) -> None:
    graph = toy_graph()
    torch.manual_seed(0)
    model = LightGCN(graph, {"n_layers": 3, "embedding_size": 4})
    with torch.no_grad():  # no layer-0 user rows: the aggregation is then the whole row
        model.user_embedding.weight.zero_()
    service = _save(tmp_path, model, graph)
    reference = _dense_lightgcn_users(graph, np.zeros((5, 4)),
                                      model.item_embedding.weight.detach().numpy(), 3, True)
    assert service.fold_in.method == "propagation"
    for user in range(graph.n_users):
        row = service.fold_in.user(_user_items(graph, user)).row.numpy()
        np.testing.assert_allclose(row, reference[user], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row, service.artifact.user_embeddings[user].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_lightgcn_fold_in_leaves_out_only_the_users_own_layer0(tmp_path: Path) -> None:
    graph = toy_graph()
    torch.manual_seed(1)
    model = LightGCN(graph, {"n_layers": 2, "embedding_size": 4})
    service = _save(tmp_path, model, graph)
    user0 = model.user_embedding.weight.detach().numpy().astype(np.float64)
    trained = service.artifact.user_embeddings.numpy()
    for user in range(graph.n_users):
        row = service.fold_in.user(_user_items(graph, user)).row.numpy()
        np.testing.assert_allclose(row + user0[user] / 3, trained[user], rtol=1e-5, atol=1e-6)


def test_simgcl_fold_in_is_exact_with_trained_user_rows(tmp_path: Path) -> None:
    graph = toy_graph()
    torch.manual_seed(2)
    model = SimGCL(graph, {"n_layers": 2, "embedding_size": 4})
    service = _save(tmp_path, model, graph)
    reference = _dense_lightgcn_users(graph, model.user_embedding.weight.detach().numpy(),
                                      model.item_embedding.weight.detach().numpy(), 2, False)
    for user in range(graph.n_users):
        row = service.fold_in.user(_user_items(graph, user)).row.numpy()
        np.testing.assert_allclose(row, reference[user], rtol=1e-5, atol=1e-6)


def test_least_squares_fold_in_solves_its_objective(tmp_path: Path) -> None:
    graph = toy_graph()
    torch.manual_seed(3)
    service = _save(tmp_path, BPR(graph, {"embedding_size": 4}), graph)
    assert service.fold_in.method == "mean"
    fold = FoldIn(service.artifact, "least_squares")
    items = service.artifact.item_embeddings.numpy().astype(np.float64)
    row = fold.user(["it2", "it5", "it2"]).row.numpy()
    expected = _lstsq_row(items, [2, 5])
    np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-6)


def test_unknown_items_are_reported_and_fatal_only_if_all_unknown(tmp_path: Path) -> None:
    graph = toy_graph()
    torch.manual_seed(4)
    service = _save(tmp_path, LightGCN(graph, {"n_layers": 1, "embedding_size": 4}), graph)
    user, items = service.recommend_for_items(["nope", "it1", "it3", "nope", "0"], k=3)
    assert user.unknown == ["nope", "0"] and user.item_ids.tolist() == [1, 3]
    scores = service.artifact.item_embeddings.numpy() @ user.row.numpy()
    order = [i for i in np.argsort(-scores, kind="stable") if i not in (1, 3)][:3]
    assert [s.item for s in items] == [ITEM_TOKENS[i] for i in order]
    _, with_given = service.recommend_for_items(["it1"], k=6, include_given=True)
    assert {s.item for s in with_given} == set(ITEM_TOKENS)
    with pytest.raises(NotFoundError, match="none of the 2 items"):
        FoldIn(service.artifact).user(["x", "y", "x"])
    with pytest.raises(ConfigError, match="not available"):
        FoldIn(load_artifact(tmp_path), "nonsense")


def _lstsq_row(items: np.ndarray, history: list[int]) -> np.ndarray:
    """The least-squares objective as one stacked problem, solved by numpy."""
    n, d = items.shape
    alpha = len(history) / n
    normal = items[history].T @ items[history] + alpha * items.T @ items
    lam = 1e-3 * np.trace(normal) / d
    design = np.vstack([items[history], np.sqrt(alpha) * items, np.sqrt(lam) * np.eye(d)])
    target = np.concatenate([np.ones(len(history)), np.zeros(n + d)])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def test_cli_recommend_for_items(toy_run) -> None:
    import json
    import subprocess
    import sys

    given = [toy_run.item_tokens[3], "not-an-item", toy_run.item_tokens[10]]
    done = subprocess.run([sys.executable, "-m", "simkgcl", "recommend", str(toy_run.run_dir),
                           "--items", ",".join(given), "--k", "5", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["unknown_items"] == ["not-an-item"] and payload["items_known"] == 2
    assert payload["fold_in"] == "mean"
    row = (toy_run.item_emb[3].astype(np.float64) + toy_run.item_emb[10]) / 2
    scores = toy_run.item_emb.astype(np.float64) @ row
    order = [i for i in np.argsort(-scores, kind="stable") if i not in (3, 10)][:5]
    assert [r["item"] for r in payload["items"]] == [toy_run.item_tokens[i] for i in order]
    bad = subprocess.run([sys.executable, "-m", "simkgcl", "recommend", str(toy_run.run_dir),
                          "--items", "x,y"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "none of the 2 items" in bad.stderr


def test_http_for_items(toy_run) -> None:
    import asyncio

    import httpx

    from simkgcl.serving.app import ServingLimits, create_app

    service = RecommendationService.from_run_dir(toy_run.run_dir)
    app = create_app(service, limits=ServingLimits(max_batch_users=4))

    async def post(body: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v1/recommendations/for-items", json=body)

    given = [toy_run.item_tokens[1], "??", toy_run.item_tokens[7]]
    resp = asyncio.run(post({"items": given, "k": 4}))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    scores = toy_run.item_emb.astype(np.float64) @ (toy_run.item_emb[1] + toy_run.item_emb[7])
    order = [i for i in np.argsort(-scores, kind="stable") if i not in (1, 7)][:4]
    assert [r["item"] for r in body["items"]] == [toy_run.item_tokens[i] for i in order]
    assert body["unknown_items"] == ["??"] and body["items_known"] == 2
    assert asyncio.run(post({"items": ["??"]})).json()["error"] == "not_found"
    assert asyncio.run(post({"items": given * 2})).status_code == 422  # over max_batch_users
    assert asyncio.run(post({"items": [1]})).status_code == 422
    spec = app.openapi()["paths"]["/v1/recommendations/for-items"]["post"]["responses"]
    assert set(spec) == {"200", "400", "404", "413", "422"}


@pytest.mark.parametrize("name", ["sgl", "xsimgcl"])
def test_other_propagation_models_fold_in_exactly(tmp_path: Path, name: str) -> None:
    from simkgcl.models.sgl import SGL
    from simkgcl.models.xsimgcl import XSimGCL

    graph = toy_graph()
    torch.manual_seed(5)
    model = {"sgl": SGL, "xsimgcl": XSimGCL}[name](graph, {"n_layers": 2, "embedding_size": 4})
    if name == "sgl":  # its mean holds the user's layer 0: zero it to make the fold-in exact
        with torch.no_grad():
            model.user_embedding.weight.zero_()
    service = _save(tmp_path, model, graph)
    reference = _dense_lightgcn_users(graph, model.user_embedding.weight.detach().numpy(),
                                      model.item_embedding.weight.detach().numpy(), 2,
                                      name == "sgl")
    for user in range(graph.n_users):
        row = service.fold_in.user(_user_items(graph, user)).row.numpy()
        np.testing.assert_allclose(row, reference[user], rtol=1e-5, atol=1e-6)
