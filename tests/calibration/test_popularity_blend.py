"""The popularity blend: its formula against hand arithmetic, the β search against a brute-force
reference, and an artifact round trip that serves exactly what the evaluator ranked."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from simkgcl.artifact import load_artifact, save_artifact
from simkgcl.calibration import BlendTable, fit_blend
from simkgcl.calibration.fit import monotone_choice
from simkgcl.data.dataset import Interactions
from simkgcl.errors import ArtifactError
from simkgcl.evaluation import Evaluator
from simkgcl.serving import RecommendationService


def test_blend_matches_a_hand_computation() -> None:
    popularity = torch.tensor([0.0, 1.0, 3.0])
    scores = torch.tensor([[1.0, 2.0, 6.0], [4.0, 0.0, 2.0]])
    table = BlendTable(edges=[1, 3], betas=[2.0, 0.5, 0.0])
    counts = np.array([1, 7])  # user 0: group ≤1 (β 2), user 1: group >3 (β 0)
    got = table.bind(popularity, counts)(torch.tensor([0, 1]), scores)

    logs = [math.log(1 + c) for c in (0.0, 1.0, 3.0)]
    m = sum(logs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 3)
    prior = [(x - m) / sd for x in logs]
    want = []
    for row, beta in zip(scores.tolist(), (2.0, 0.0), strict=True):
        mu = sum(row) / 3
        sigma = math.sqrt(sum((x - mu) ** 2 for x in row) / 3)
        want.append([(x - mu) / sigma + beta * p for x, p in zip(row, prior, strict=True)])
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)
    assert table.user_betas(np.array([0, 1, 2, 3, 4, 100])).tolist() == [2, 2, .5, .5, 0, 0]


def test_monotone_choice_is_the_best_non_increasing_assignment() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        gains = rng.integers(0, 5, size=(4, 3)).astype(float)
        picks = monotone_choice(gains)
        feasible = [c for c in itertools.product(range(3), repeat=4)
                    if all(a >= b for a, b in itertools.pairwise(c))]
        best = max(sum(gains[g, c[g]] for g in range(4)) for c in feasible)
        assert all(a >= b for a, b in itertools.pairwise(picks))
        assert sum(gains[g, picks[g]] for g in range(4)) == best
        # ties: the lexicographically smallest optimum (smallest β first for the sparsest)
        optima = [c for c in feasible if sum(gains[g, c[g]] for g in range(4)) == best]
        assert tuple(picks) == min(optima)


def _two_group_case() -> tuple[Evaluator, torch.Tensor, torch.Tensor, object, torch.Tensor,
                               np.ndarray]:
    """6 items; the model prefers item 0 for everyone, item 5 is the most popular. Users 0-2
    (one training item: 1) like item 5 in validation, users 3-5 (3 training items) item 0."""
    n_users, n_items = 6, 6
    user_emb = torch.ones(n_users, 1)
    item_emb = torch.tensor([[5.0], [0.0], [1.0], [2.0], [3.0], [4.0]])
    train_u = np.array([0, 1, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5])
    train_i = np.array([1, 1, 1, 1, 2, 3, 1, 2, 4, 1, 3, 4])
    popularity = torch.tensor([0.0, 6, 2, 2, 2, 9])  # item 5: 9 (counts from elsewhere)
    valid = Interactions(users=np.arange(6), items=np.array([5, 5, 5, 0, 0, 0]))
    evaluator = Evaluator(n_users, n_items, metrics=["NDCG"], topk=[1], eval_batch_size=12)
    task = evaluator.task(valid, [Interactions(users=train_u, items=train_i)])
    counts = np.bincount(train_u, minlength=n_users)
    return evaluator, user_emb, item_emb, task, popularity, counts


def test_fit_picks_the_beta_validation_asks_for() -> None:
    evaluator, user_emb, item_emb, task, popularity, counts = _two_group_case()
    grid = (0.0, 0.1, 0.5, 1.0, 2.0, 4.0)
    table = fit_blend(evaluator, user_emb, item_emb, task, popularity, counts, [1, 3], "NDCG@1",
                      grid=grid)
    # by hand: z(model) over the items: item 0 = (5 - 2.5) / sd, item 5 = (4 - 2.5) / sd; the
    # prior p_5 - p_0 = (log 10 - log 1) / sd_log. Item 5 overtakes item 0 once
    # β (p_5 - p_0) > (5 - 4) / sd, the smallest such β in the grid is the answer for ≤1.
    sd = float(np.std([5, 0, 1, 2, 3, 4]))
    logs = np.log1p([0, 6, 2, 2, 2, 9])
    gap = (logs[5] - logs[0]) / float(np.std(logs))
    need = (1 / sd) / gap
    want = min(b for b in grid if b > need)
    assert table.betas == [want, 0.0, 0.0]  # ≤1 blended; 2–3 (empty) and >3 not
    assert table.fitted_on == "valid" and table.metric == "NDCG@1"
    assert table.report["unblended"] == pytest.approx(0.5)  # users 3-5 hit, 0-2 miss
    assert table.report["blended"] == pytest.approx(1.0)


def test_no_gain_anywhere_keeps_every_beta_at_zero() -> None:
    evaluator, user_emb, item_emb, task, popularity, counts = _two_group_case()
    flat = torch.ones_like(popularity)  # a constant prior cannot change any ranking
    table = fit_blend(evaluator, user_emb, item_emb, task, flat, counts, [1, 3], "NDCG@1")
    assert table.betas == [0.0, 0.0, 0.0] and not table.active


def test_artifact_round_trip_serves_what_the_evaluator_ranked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_users, n_items, dim = 12, 30, 4
    train_u = np.repeat(np.arange(n_users), [1, 1, 2, 3, 5, 8, 1, 2, 4, 6, 9, 11])
    train_i = np.concatenate([rng.choice(n_items, size=n, replace=False)
                              for n in [1, 1, 2, 3, 5, 8, 1, 2, 4, 6, 9, 11]])
    user_emb = torch.from_numpy(rng.standard_normal((n_users, dim)).astype(np.float32))
    item_emb = torch.from_numpy(rng.standard_normal((n_items, dim)).astype(np.float32))
    popularity = torch.bincount(torch.from_numpy(train_i), minlength=n_items).float()
    table = BlendTable(edges=[1, 3, 5], betas=[3.0, 1.0, 0.35, 0.0])
    save_artifact(tmp_path, model="m", dataset="d", config={}, metrics={},
                  user_tokens=[f"u{u}" for u in range(n_users)],
                  item_tokens=[f"i{i}" for i in range(n_items)],
                  user_embeddings=user_emb, item_embeddings=item_emb,
                  train_users=train_u, train_items=train_i, blend=table.to_dict(),
                  popularity=popularity)
    art = load_artifact(tmp_path)
    assert art.blend == table and torch.equal(art.popularity, popularity)

    evaluator = Evaluator(n_users, n_items, metrics=["Recall"], topk=[10], eval_batch_size=90)
    held = Interactions(users=np.arange(n_users), items=np.array(
        [next(i for i in range(n_items) if i not in set(train_i[train_u == u]))
         for u in range(n_users)]))
    task = evaluator.task(held, [Interactions(users=train_u, items=train_i)])
    counts = np.bincount(train_u, minlength=n_users)
    expected = evaluator.top_items(user_emb, item_emb, task, table.bind(popularity, counts))
    service = RecommendationService(art)
    top = service.top_k_ids(task.users.numpy(), 10)
    assert top.items.tolist() == expected.numpy().tolist()
    unblended = evaluator.top_items(user_emb, item_emb, task)
    assert not torch.equal(unblended, expected)  # the blend changed something here
    # the served score of user 0's first item is the hand formula's
    u, i = 0, int(top.items[0, 0])
    z = (user_emb[u] @ item_emb.t()).double()
    logp = torch.log1p(popularity.double())
    want = ((z[i] - z.mean()) / z.std(unbiased=False)
            + 3.0 * (logp[i] - logp.mean()) / logp.std(unbiased=False))
    assert float(top.scores[0, 0]) == pytest.approx(float(want), abs=1e-4)


def test_a_tampered_blend_is_refused_in_one_line(tmp_path: Path) -> None:
    table = BlendTable(edges=[1], betas=[1.0, 0.0])
    save_artifact(tmp_path, model="m", dataset="d", config={}, metrics={},
                  user_tokens=["a", "b"], item_tokens=["x", "y", "z"],
                  user_embeddings=torch.ones(2, 2), item_embeddings=torch.ones(3, 2),
                  train_users=np.array([0]), train_items=np.array([1]),
                  blend=table.to_dict(), popularity=torch.tensor([0.0, 1.0, 0.0]))
    meta_path = tmp_path / "artifact" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["blend"]["betas"] = [-1.0, 0.0]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="meta.json: blend: betas must be finite and >= 0"):
        load_artifact(tmp_path)
