"""Item indexes: exact over-fetch-and-filter equals brute force, approximate indexes keep seen
items out exactly and reach their recall on a seeded index (skipped without faiss)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import GREEDY_USER, ToyRun

from simkgcl.artifact import load_artifact
from simkgcl.errors import ConfigError
from simkgcl.serving.index import ItemIndex, build_index, top_k_excluding
from simkgcl.serving.recommend import RecommendationService


def _brute(items: np.ndarray, query: np.ndarray, k: int, exclude: set[int]) -> list[int]:
    scores = items.astype(np.float64) @ query.astype(np.float64)
    return [i for i in np.argsort(-scores, kind="stable") if i not in exclude][:k]


def _seeded(n: int = 4000, d: int = 16, n_queries: int = 60):
    rng = np.random.default_rng(7)
    items = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((n_queries, d)).astype(np.float32)
    exclude = [rng.choice(n, 30, replace=False) for _ in range(n_queries)]
    return items, queries, exclude


def test_exact_over_fetch_and_filter_equals_brute_force() -> None:
    items, queries, exclude = _seeded(500, 8, 20)
    exclude[3] = np.arange(495)  # only 5 items left: fewer than k come back
    got, scores, counts = top_k_excluding(ItemIndex(torch.from_numpy(items)),
                                          torch.from_numpy(queries), 10, exclude)
    for q in range(len(queries)):
        expected = _brute(items, queries[q], 10, set(exclude[q].tolist()))
        assert counts[q] == len(expected) and got[q, : counts[q]].tolist() == expected
        np.testing.assert_allclose(scores[q, : counts[q]], items[expected] @ queries[q],
                                   rtol=1e-5)
    assert counts[3] == 5 and np.isneginf(scores[3, 5:]).all()


def test_service_with_an_index_matches_the_default_path(toy_run: ToyRun) -> None:
    artifact = load_artifact(toy_run.run_dir)
    service = RecommendationService(artifact, index=ItemIndex(artifact.item_embeddings))
    for include_seen in (False, True):
        lists = service.recommend_many(toy_run.user_tokens, 7, include_seen=include_seen)
        for token, got in zip(toy_run.user_tokens, lists, strict=True):
            expected = toy_run.brute_force(token, 7, include_seen)
            assert [s.item for s in got] == [item for item, _ in expected]
    assert len(service.recommend(toy_run.user_tokens[GREEDY_USER], 10)) == 3
    with pytest.raises(ConfigError, match="unknown index"):
        build_index(artifact.item_embeddings, "annoy")


def test_approximate_indexes_recall_and_exact_exclusion() -> None:
    pytest.importorskip("faiss")
    items, queries, exclude = _seeded()
    exact = ItemIndex(torch.from_numpy(items))
    truth, _, _ = top_k_excluding(exact, torch.from_numpy(queries), 20, exclude)
    for kind in ("hnsw", "ivf"):
        index = build_index(torch.from_numpy(items), kind, seed=0)
        got, scores, counts = top_k_excluding(index, torch.from_numpy(queries), 20, exclude)
        assert (counts == 20).all()
        recall = np.mean([len(set(got[q]) & set(truth[q])) / 20 for q in range(len(queries))])
        for q in range(len(queries)):  # seen items never come back; scores are exact
            assert not set(got[q].tolist()) & set(exclude[q].tolist())
            np.testing.assert_allclose(scores[q], items[got[q]] @ queries[q], rtol=1e-4,
                                       atol=1e-4)
        if kind == "hnsw":
            assert recall >= 0.95, recall
        else:  # probing every cell is an exhaustive search: exactly the exact top-k
            assert recall > 0.3, recall
            index.set_search_effort(index.describe()["nlist"])
            full, _, _ = top_k_excluding(index, torch.from_numpy(queries), 20, exclude)
            assert (full == truth).all()
    rebuilt = build_index(torch.from_numpy(items), "ivf", seed=0)
    again, _, _ = top_k_excluding(rebuilt, torch.from_numpy(queries), 20, exclude)
    first = build_index(torch.from_numpy(items), "ivf", seed=0)
    once, _, _ = top_k_excluding(first, torch.from_numpy(queries), 20, exclude)
    assert (again == once).all()  # same seed, same index


def test_export_with_hnsw_on_a_small_catalogue_equals_exact(toy_run: ToyRun,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    outs = {}
    for kind, effort in (("exact", []), ("hnsw", ["--index-effort", "100"])):
        outs[kind] = tmp_path / f"{kind}.csv"
        done = subprocess.run([sys.executable, "-m", "simkgcl", "export", str(toy_run.run_dir),
                               "--out", str(outs[kind]), "--k", "5", "--index", kind, *effort],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    exact_rows = outs["exact"].read_text().splitlines()
    hnsw_rows = outs["hnsw"].read_text().splitlines()
    # efSearch 100 exceeds the 60 items: the graph search visits them all
    assert [r.rsplit(",", 1)[0] for r in hnsw_rows] == [r.rsplit(",", 1)[0] for r in exact_rows]
    tuned = RecommendationService.from_run_dir(toy_run.run_dir, index="hnsw", effort=77)
    assert tuned.index is not None and tuned.index.describe()["efSearch"] == 77
