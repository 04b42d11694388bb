"""Rankings from the service equal a brute-force ranking, in original tokens."""

from __future__ import annotations

import numpy as np
import pytest
from serving_fixtures import COLD_USER, GREEDY_USER, N_ITEMS, ToyRun

from simkgcl.errors import ConfigError, NotFoundError
from simkgcl.serving import RecommendationService


@pytest.fixture(scope="module")
def service(toy_run: ToyRun) -> RecommendationService:
    return RecommendationService.from_run_dir(toy_run.run_dir)


def _pairs(scored) -> list[tuple[str, float]]:
    return [(s.item, s.score) for s in scored]


def _assert_same_ranking(got, expected) -> None:
    assert [item for item, _ in got] == [item for item, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)


@pytest.mark.parametrize("include_seen", [False, True])
def test_every_user_matches_brute_force(service, toy_run: ToyRun, include_seen: bool) -> None:
    results = service.recommend_many(toy_run.user_tokens, 10, include_seen=include_seen)
    for token, got in zip(toy_run.user_tokens, results, strict=True):
        _assert_same_ranking(_pairs(got), toy_run.brute_force(token, 10, include_seen))
        assert [s.rank for s in got] == list(range(1, len(got) + 1))


def test_seen_items_are_excluded_by_default(service, toy_run: ToyRun) -> None:
    token = toy_run.user_tokens[0]
    seen_tokens = {toy_run.item_tokens[i] for i in toy_run.seen[0]}
    assert not seen_tokens & {s.item for s in service.recommend(token, N_ITEMS - len(seen_tokens))}
    everything = service.recommend(token, N_ITEMS, include_seen=True)
    assert seen_tokens <= {s.item for s in everything} and len(everything) == N_ITEMS


def test_user_with_few_unseen_items_gets_only_those(service, toy_run: ToyRun) -> None:
    got = service.recommend(toy_run.user_tokens[GREEDY_USER], 10)
    assert len(got) == 3 and all(np.isfinite(s.score) for s in got)
    assert len(service.recommend(toy_run.user_tokens[COLD_USER], 10)) == 10


def test_similar_items_are_cosine_ranked_without_the_item(service, toy_run: ToyRun) -> None:
    unit = toy_run.item_emb / np.linalg.norm(toy_run.item_emb, axis=1, keepdims=True)
    target = 4
    sims = unit @ unit[target]
    order = [i for i in np.argsort(-sims, kind="stable") if i != target][:7]
    got = service.similar_items(toy_run.item_tokens[target], 7)
    assert [s.item for s in got] == [toy_run.item_tokens[i] for i in order]
    np.testing.assert_allclose([s.score for s in got], sims[order], rtol=1e-5)
    with pytest.raises(ConfigError):
        service.similar_items(toy_run.item_tokens[target], N_ITEMS)  # only N_ITEMS-1 others


def test_unknown_tokens_and_bad_k_are_clear_errors(service, toy_run: ToyRun) -> None:
    with pytest.raises(NotFoundError, match="unknown user 'nobody'"):
        service.recommend("nobody")
    with pytest.raises(NotFoundError, match="unknown item '0'"):  # internal id is not a token
        service.similar_items("0")
    for bad_k in (0, N_ITEMS + 1, -3):
        with pytest.raises(ConfigError, match=f"from 1 to {N_ITEMS}"):
            service.recommend(toy_run.user_tokens[0], bad_k)
    assert len(service.recommend(toy_run.user_tokens[0], N_ITEMS, include_seen=True)) == N_ITEMS
