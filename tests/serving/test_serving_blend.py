"""The artifact's popularity blend on every serving path: an approximate index (built over the
augmented items) and fold-in users serve the same items and blended scores as the blend written
out in float64 here (z-score of the user's full row + β · standardised log-popularity)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import COLD_USER, GREEDY_USER, ToyRun, make_toy_run

from simkgcl.artifact import load_artifact
from simkgcl.calibration import BlendTable
from simkgcl.errors import ConfigError
from simkgcl.serving.index import ItemIndex, build_index
from simkgcl.serving.recommend import RecommendationService

# groups ≤1, 2–3, 4–5, >5: the toy users have 0–7 training items (and one has 57)
TABLE = BlendTable(edges=[1, 3, 5], betas=[3.0, 1.0, 0.35, 0.0])


def _beta(n: int) -> float:
    """β of a user with ``n`` training (or given) items, read off TABLE by hand."""
    return 3.0 if n <= 1 else 1.0 if n <= 3 else 0.35 if n <= 5 else 0.0


@pytest.fixture(scope="module")
def blended_run(tmp_path_factory: pytest.TempPathFactory) -> ToyRun:
    return make_toy_run(tmp_path_factory.mktemp("blend") / "run", blend=TABLE.to_dict())


def _brute(run: ToyRun, row: np.ndarray, beta: float, k: int,
           exclude: set[int]) -> tuple[list[int], np.ndarray]:
    """Top-k (items, blended scores) of one user row, every item scored in float64."""
    logs = np.log(1.0 + run.popularity.astype(np.float64))
    prior = (logs - logs.mean()) / logs.std()
    s = run.item_emb.astype(np.float64) @ row.astype(np.float64)
    blended = (s - s.mean()) / (s.std() + 1e-12) + beta * prior
    order = [i for i in np.argsort(-blended, kind="stable") if i not in exclude][:k]
    return order, blended[order]


def _services(run: ToyRun) -> dict[str, RecommendationService]:
    """Exact, and hnsw and ivf (searching exhaustively) when faiss is installed."""
    services = {"exact": RecommendationService.from_run_dir(run.run_dir)}
    if importlib.util.find_spec("faiss") is not None:
        # 60 items: efSearch 200 and every ivf cell probed make both searches exhaustive
        services["hnsw"] = RecommendationService.from_run_dir(run.run_dir, "hnsw", effort=200)
        ivf = RecommendationService.from_run_dir(run.run_dir, "ivf")
        ivf.index.set_search_effort(ivf.index.describe()["nlist"])  # type: ignore[union-attr]
        services["ivf"] = ivf
    return services


def test_an_index_serves_the_blended_items_and_scores_of_known_users(blended_run: ToyRun) -> None:
    pytest.importorskip("faiss")
    run = blended_run
    services = _services(run)
    assert services["hnsw"].index is not None and services["hnsw"].index.dim == 8 + 1
    counts = [len(s) for s in run.seen]
    betas = {_beta(n) for n in counts}
    assert 0.0 in betas and 3.0 in betas and len(betas) == 4  # every group has users
    users = np.arange(len(run.user_tokens))
    for include_seen in (False, True):
        k = 10
        tops = {name: s.top_k_ids(users, k, include_seen=include_seen)
                for name, s in services.items()}
        for u in users:
            exclude = set() if include_seen else run.seen[u]
            want_items, want_scores = _brute(run, run.user_emb[u], _beta(counts[u]), k, exclude)
            for name, top in tops.items():
                n = int(top.counts[u])
                assert n == len(want_items), (name, u)
                assert top.items[u, :n].tolist() == want_items, (name, u)
                np.testing.assert_allclose(top.scores[u, :n], want_scores, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{name} user {u}")
    # the greedy user (β 0: plain ranking, standardised scores) has 3 unseen items left
    greedy = services["hnsw"].recommend(run.user_tokens[GREEDY_USER], 10)
    assert [s.item for s in greedy] == [run.item_tokens[i] for i in
                                        _brute(run, run.user_emb[GREEDY_USER], 0.0, 10,
                                               run.seen[GREEDY_USER])[0]]
    assert counts[COLD_USER] == 0  # group ≤1: β 3


def test_the_blend_changes_the_ann_ranking(blended_run: ToyRun) -> None:
    """Not vacuous: for β > 0 users the blended top-k differs from the model's own ranking."""
    run = blended_run
    differs = 0
    for u, seen in enumerate(run.seen):
        if _beta(len(seen)) > 0:
            plain = run.item_emb.astype(np.float64) @ run.user_emb[u]
            plain_top = [i for i in np.argsort(-plain, kind="stable") if i not in seen][:10]
            differs += plain_top != _brute(run, run.user_emb[u], _beta(len(seen)), 10, seen)[0]
    assert differs > 5


@pytest.mark.parametrize("n_given", [1, 2, 4, 6])
def test_fold_in_serves_the_blend_with_the_beta_of_its_item_count(blended_run: ToyRun,
                                                                  n_given: int) -> None:
    run = blended_run
    given = [run.item_tokens[i] for i in (3, 10, 17, 24, 31, 38)[:n_given]]
    tokens = given + given[:1] + ["not-an-item"]  # a repeat and an unknown: |H| = n_given
    for name, service in _services(run).items():
        assert service.fold_in_betas([n_given]).tolist() == [pytest.approx(_beta(n_given))]
        for include_given in (False, True):
            user, items = service.recommend_for_items(tokens, 8, include_given=include_given)
            assert len(user.item_ids) == n_given
            exclude = set() if include_given else set(user.item_ids.tolist())
            want_items, want_scores = _brute(run, user.row.numpy(), _beta(n_given), 8, exclude)
            assert [s.item for s in items] == [run.item_tokens[i] for i in want_items], name
            np.testing.assert_allclose([s.score for s in items], want_scores, rtol=1e-5,
                                       atol=1e-5, err_msg=name)


def test_a_one_item_fold_in_gets_the_sparsest_groups_beta(blended_run: ToyRun) -> None:
    run = blended_run
    service = RecommendationService.from_run_dir(run.run_dir)
    user, items = service.recommend_for_items([run.item_tokens[5]], 10)
    row = run.item_emb[5].astype(np.float64)  # the mean fold-in of one item is its row
    np.testing.assert_allclose(user.row.numpy(), row, rtol=1e-6)
    want_items, want_scores = _brute(run, row, 3.0, 10, {5})
    assert [s.item for s in items] == [run.item_tokens[i] for i in want_items]
    np.testing.assert_allclose([s.score for s in items], want_scores, rtol=1e-5, atol=1e-5)
    plain = [i for i in np.argsort(-(run.item_emb.astype(np.float64) @ row), kind="stable")
             if i != 5][:10]
    assert plain != want_items  # β 3 moved the ranking


def test_an_index_over_the_plain_items_is_refused(blended_run: ToyRun) -> None:
    artifact = load_artifact(blended_run.run_dir)
    with pytest.raises(ConfigError, match="needs 60 of 9 .*index_items"):
        RecommendationService(artifact, index=ItemIndex(artifact.item_embeddings))
    service = RecommendationService(artifact, index=build_index(
        RecommendationService.index_items(artifact), "exact"))
    exact = RecommendationService(artifact).top_k_ids(np.arange(40), 5)
    top = service.top_k_ids(np.arange(40), 5)
    assert (top.counts == exact.counts).all() and top.counts[GREEDY_USER] == 3
    for u, n in enumerate(top.counts):  # slots past counts[u] are unused
        assert top.items[u, :n].tolist() == exact.items[u, :n].tolist()
        np.testing.assert_allclose(top.scores[u, :n], exact.scores[u, :n], rtol=1e-5, atol=1e-5)
    plain = RecommendationService.index_items(load_artifact(make_toy_run(
        blended_run.run_dir.parent / "plain").run_dir))
    assert plain.shape == (60, 8) and torch.equal(plain, artifact.item_embeddings)


def test_cli_recommend_for_items_and_hnsw_export_serve_the_blend(blended_run: ToyRun,
                                                                 tmp_path: Path) -> None:
    run = blended_run
    done = subprocess.run([sys.executable, "-m", "simkgcl", "recommend", str(run.run_dir),
                           "--items", f"{run.item_tokens[3]},{run.item_tokens[10]}", "--k", "5",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    row = (run.item_emb[3].astype(np.float64) + run.item_emb[10]) / 2
    want_items, want_scores = _brute(run, row, 1.0, 5, {3, 10})  # 2 items: group 2–3, β 1
    assert [r["item"] for r in payload["items"]] == [run.item_tokens[i] for i in want_items]
    np.testing.assert_allclose([r["score"] for r in payload["items"]], want_scores, rtol=1e-5,
                               atol=1e-5)
    pytest.importorskip("faiss")
    out = tmp_path / "hnsw.csv"
    done = subprocess.run([sys.executable, "-m", "simkgcl", "export", str(run.run_dir),
                           "--out", str(out), "--k", "3", "--index", "hnsw", "--index-effort",
                           "200"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in out.read_text().splitlines()]  # user,rank,item,score
    assert rows[0] == ["user", "rank", "item", "score"]
    for u, token in enumerate(run.user_tokens):
        want_items, want_scores = _brute(run, run.user_emb[u], _beta(len(run.seen[u])), 3,
                                         run.seen[u])
        mine = [r for r in rows[1:] if r[0] == token]
        assert [r[2] for r in mine] == [run.item_tokens[i] for i in want_items], token
        np.testing.assert_allclose([float(r[3]) for r in mine], want_scores, rtol=1e-5,
                                   atol=1e-5)


def test_http_for_items_serves_the_blend(blended_run: ToyRun) -> None:
    import asyncio

    import httpx

    from simkgcl.serving.app import create_app

    run = blended_run
    app = create_app(RecommendationService.from_run_dir(run.run_dir))

    async def post(body: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v1/recommendations/for-items", json=body)

    resp = asyncio.run(post({"items": [run.item_tokens[7]], "k": 4}))
    assert resp.status_code == 200, resp.text
    want_items, want_scores = _brute(run, run.item_emb[7], 3.0, 4, {7})  # 1 item: β 3
    got = resp.json()["items"]
    assert [r["item"] for r in got] == [run.item_tokens[i] for i in want_items]
    np.testing.assert_allclose([r["score"] for r in got], want_scores, rtol=1e-5, atol=1e-5)
