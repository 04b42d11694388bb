"""Full-ranking evaluator: masking, hand-checked averages, batching and sharding invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simkgcl.data.dataset import Interactions
from simkgcl.errors import ConfigError
from simkgcl.evaluation import Evaluator
from simkgcl.models.base import Recommender


def _inter(pairs: list[tuple[int, int]]) -> Interactions:
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    return Interactions(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))


# Scores are user * item value: user 0 ranks items 0,1,2,3,4; user 1 ranks them 4,3,2,1,0.
# User 2 has no held-out items and must not count in any average.
ITEM_EMB = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
USER_EMB = torch.tensor([[1.0], [-1.0], [1.0]])
TRAIN = _inter([(0, 0), (1, 4), (2, 1)])
VALID = _inter([(0, 2), (1, 3)])
TEST = _inter([(0, 1), (0, 3), (1, 0)])
ALL_METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision", "MAP", "ItemCoverage"]


def _evaluator(topk=(1, 2, 3), budget=1000, **kw) -> Evaluator:
    return Evaluator(3, 5, metrics=ALL_METRICS, topk=list(topk), eval_batch_size=budget, **kw)


def test_validation_masks_training_items() -> None:
    ev = _evaluator()
    got = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, ev.task(VALID, [TRAIN]))
    # user 0 ranks [1, 2, 3, 4] (item 0 is a training item): hit at rank 2.
    # user 1 ranks [3, 2, 1, 0] (item 4 masked): hit at rank 1.
    assert got["Recall@1"] == pytest.approx((0 + 1) / 2)
    assert got["Recall@2"] == pytest.approx((1 + 1) / 2)
    assert got["NDCG@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert got["MRR@2"] == pytest.approx((1 / 2 + 1) / 2)


def test_testing_masks_training_and_validation_items() -> None:
    ev = _evaluator()
    got = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, ev.task(TEST, [TRAIN, VALID]))
    # user 0: items 0 (train) and 2 (valid) masked -> ranks [1, 3, 4], held out {1, 3}: hits 1,1,0
    # user 1: items 4 (train) and 3 (valid) masked -> ranks [2, 1, 0], held out {0}:    hits 0,0,1
    assert got["Recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["Recall@2"] == pytest.approx((1 + 0) / 2)
    assert got["Recall@3"] == pytest.approx((1 + 1) / 2)
    assert got["Precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert got["Hit@1"] == pytest.approx((1 + 0) / 2)
    assert got["MRR@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert got["NDCG@2"] == pytest.approx((1 + 0) / 2)
    assert got["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert got["MAP@3"] == pytest.approx((1 + 1 / 3) / 2)
    # distinct recommended items / 5 items: top-1 lists {1}, {2}; top-3 lists cover all five
    assert got["ItemCoverage@1"] == pytest.approx(2 / 5)
    assert got["ItemCoverage@3"] == pytest.approx(5 / 5)


def test_without_masking_validation_items_the_ranking_differs() -> None:
    ev = _evaluator()
    masked = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, ev.task(TEST, [TRAIN, VALID]))
    unmasked = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, ev.task(TEST, [TRAIN]))
    # user 0 then ranks [1, 2, 3]: item 2 pushes held-out item 3 out of the top 2
    assert unmasked["Recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert masked["Recall@2"] != unmasked["Recall@2"]


def test_results_are_ordered_by_metric_then_k() -> None:
    ev = _evaluator(topk=(2, 1))
    got = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, ev.task(TEST, [TRAIN]))
    assert list(got)[:4] == ["Recall@1", "Recall@2", "NDCG@1", "NDCG@2"]


def test_users_per_batch_follow_the_cell_budget() -> None:
    assert _evaluator(budget=5).users_per_batch == 1  # 5 cells / 5 items
    assert _evaluator(budget=12).users_per_batch == 2
    assert _evaluator(budget=1).users_per_batch == 1  # never zero


def _random_problem(seed: int = 0, n_users: int = 50, n_items: int = 40):
    rng = np.random.default_rng(seed)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 600),
                                              rng.integers(0, n_items, 600), strict=True)}
    pairs_l = sorted(pairs)
    rng.shuffle(pairs_l)
    train, test = _inter(pairs_l[:450]), _inter(pairs_l[450:])
    user_emb = torch.from_numpy(rng.normal(size=(n_users, 6))).float()
    item_emb = torch.from_numpy(rng.normal(size=(n_items, 6))).float()
    return train, test, user_emb, item_emb


def test_batch_size_does_not_change_results() -> None:
    train, test, ue, ie = _random_problem()
    small = Evaluator(50, 40, metrics=ALL_METRICS, topk=[5, 10], eval_batch_size=40)
    large = Evaluator(50, 40, metrics=ALL_METRICS, topk=[5, 10], eval_batch_size=10**7)
    assert small.users_per_batch == 1 and large.users_per_batch >= 50
    a = small.evaluate_embeddings(ue, ie, small.task(test, [train]))
    b = large.evaluate_embeddings(ue, ie, large.task(test, [train]))
    assert a == pytest.approx(b, abs=1e-12)


def test_rank_shards_partition_users_and_combine_to_the_whole() -> None:
    train, test, ue, ie = _random_problem(seed=1)
    metrics = ["Recall", "NDCG", "MAP"]
    whole_ev = Evaluator(50, 40, metrics=metrics, topk=[10], eval_batch_size=400)
    whole_task = whole_ev.task(test, [train])
    whole = whole_ev.evaluate_embeddings(ue, ie, whole_task)
    shards, users = [], []
    for rank in range(3):
        ev = Evaluator(50, 40, metrics=metrics, topk=[10], eval_batch_size=400, rank=rank,
                       world_size=3)
        task = ev.task(test, [train])
        users.append(task.users)
        shards.append((task.n_rows, ev.evaluate_embeddings(ue, ie, task)))
    assert torch.equal(torch.cat(users), whole_task.users)
    for name in whole:
        combined = sum(n * m[name] for n, m in shards) / whole_task.n_rows
        assert combined == pytest.approx(whole[name], abs=1e-12)


def test_top_items_never_contain_excluded_items() -> None:
    train, test, ue, ie = _random_problem(seed=2)
    ev = Evaluator(50, 40, metrics=["Recall"], topk=[10], eval_batch_size=100)
    task = ev.task(test, [train])
    top = ev.top_items(ue, ie, task)
    seen = {(int(u), int(i)) for u, i in zip(train.users, train.items, strict=True)}
    for row, user in enumerate(task.users.tolist()):
        assert not {(user, i) for i in top[row].tolist()} & seen


def test_topk_larger_than_catalogue_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="topk"):
        Evaluator(3, 5, metrics=["Recall"], topk=[10], eval_batch_size=100)


class _CountingModel(Recommender):
    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.calls = 0
        self.mode_seen: list[bool] = []

    def final_embeddings(self):
        self.calls += 1
        self.mode_seen.append(self.training)
        return USER_EMB, ITEM_EMB


def test_model_embeddings_computed_once_in_eval_mode_and_mode_restored() -> None:
    model = _CountingModel()
    model.train()
    ev = _evaluator(budget=5)  # one user per batch: several batches, still one call
    ev.evaluate(model, ev.task(TEST, [TRAIN, VALID]))
    assert model.calls == 1
    assert model.mode_seen == [False]
    assert model.training


# -- ranking by counting (no topk) when only the hits matter --------------------------------------

HIT_METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision", "MAP"]


def _plain_metrics(scores: np.ndarray, heldout: dict[int, set[int]],
                   excluded: dict[int, set[int]], topk: list[int]) -> dict[str, float]:
    """The ranking metrics by sorting each user's candidate items (a stable sort of the negated
    scores): no code shared with the evaluator. Scores here never tie."""
    sums: dict[str, float] = {f"{m}@{k}": 0.0 for m in HIT_METRICS for k in topk}
    for user, pos in heldout.items():
        candidates = [i for i in range(scores.shape[1]) if i not in excluded.get(user, set())]
        ranked = sorted(candidates, key=lambda i: -scores[user, i])
        for k in topk:
            hit_pos = [p for p, i in enumerate(ranked[:k]) if i in pos]  # 0-based positions
            n_hits = len(hit_pos)
            sums[f"Recall@{k}"] += n_hits / len(pos)
            sums[f"Precision@{k}"] += n_hits / k
            sums[f"Hit@{k}"] += float(n_hits > 0)
            sums[f"MRR@{k}"] += 1.0 / (hit_pos[0] + 1) if hit_pos else 0.0
            ideal = sum(1.0 / math.log2(p + 2) for p in range(min(len(pos), k)))
            sums[f"NDCG@{k}"] += sum(1.0 / math.log2(p + 2) for p in hit_pos) / ideal
            precisions = [(j + 1) / (p + 1) for j, p in enumerate(hit_pos)]
            sums[f"MAP@{k}"] += sum(precisions) / min(len(pos), k)
    return {name: value / len(heldout) for name, value in sums.items()}


def _by_user(inter: Interactions) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(inter.users.tolist(), inter.items.tolist(), strict=True):
        out.setdefault(u, set()).add(i)
    return out


@pytest.mark.parametrize("budget", [40, 400, 10**6])  # one user, ten users, all users per batch
def test_counted_ranks_give_the_metrics_of_a_plain_sort(budget: int) -> None:
    train, test, ue, ie = _random_problem(seed=3)
    ev = Evaluator(50, 40, metrics=HIT_METRICS, topk=[1, 5, 10], eval_batch_size=budget)
    task = ev.task(test, [train])
    assert task.pos_keys.numel() <= ev.count_ranks_below * task.n_rows  # the counting path
    got = ev.evaluate_embeddings(ue, ie, task)
    want = _plain_metrics((ue @ ie.T).numpy(), _by_user(test), _by_user(train), [1, 5, 10])
    assert got == pytest.approx(want, abs=1e-12)
    ev.count_ranks_below = -1.0  # every batch through topk: the very same numbers
    assert ev.evaluate_embeddings(ue, ie, task) == got


def _tied_problem():
    """Integer scores (like popularity counts): most held-out items tie with other items."""
    rng = np.random.default_rng(4)
    train, test, _, _ = _random_problem(seed=4)
    item_emb = torch.from_numpy(rng.integers(0, 6, size=(40, 1))).float()
    user_emb = torch.ones(50, 1)
    return train, test, user_emb, item_emb


def test_ties_are_ranked_as_topk_ranks_them() -> None:
    train, test, ue, ie = _tied_problem()
    ev = Evaluator(50, 40, metrics=HIT_METRICS, topk=[3, 10], eval_batch_size=400)
    task = ev.task(test, [train])
    scores = ue[task.users[:10]] @ ie.T
    assert ev._hits_by_rank(scores, 0, 10, task) is None  # a tie: counting declines
    counted = ev.evaluate_embeddings(ue, ie, task)
    ev.count_ranks_below = -1.0
    assert ev.evaluate_embeddings(ue, ie, task) == counted
    # Had ties been counted in the held-out item's favour (its position = items strictly above
    # it), Recall@3 would be higher: the fallback to topk is what keeps the two paths equal.
    scores_all = (ue @ ie.T).numpy()
    train_by_user, optimistic = _by_user(train), 0.0
    for user, pos in _by_user(test).items():
        allowed = [i for i in range(40) if i not in train_by_user.get(user, set())]
        above = [sum(scores_all[user, j] > scores_all[user, i] for j in allowed) for i in pos]
        optimistic += sum(a < 3 for a in above) / len(pos)
    assert optimistic / task.n_rows > counted["Recall@3"] + 0.05


def test_a_nan_score_sends_the_batch_to_topk() -> None:
    train, test, ue, ie = _random_problem(seed=5)
    ie = ie.clone()
    ie[7, 0] = float("nan")
    ev = Evaluator(50, 40, metrics=HIT_METRICS, topk=[5, 10], eval_batch_size=400)
    task = ev.task(test, [train])
    assert ev._hits_by_rank(ue[task.users[:10]] @ ie.T, 0, 10, task) is None
    counted = ev.evaluate_embeddings(ue, ie, task)
    ev.count_ranks_below = -1.0
    assert ev.evaluate_embeddings(ue, ie, task) == counted


def test_an_excluded_heldout_item_is_never_credited_either_way() -> None:
    # user 0's held-out item 1 is also a training item: masked, so never a hit, and its -inf
    # score must not count as a tie with the other masked item.
    ev = Evaluator(3, 5, metrics=HIT_METRICS, topk=[1, 4], eval_batch_size=1000)
    task = ev.task(_inter([(0, 1), (1, 3)]), [_inter([(0, 0), (0, 1), (1, 4)])])
    counted = ev.evaluate_embeddings(USER_EMB, ITEM_EMB, task)
    assert counted["Recall@4"] == pytest.approx((0 + 1) / 2)  # user 1 ranks [3, 2, 1, 0]
    assert counted["Recall@1"] == pytest.approx((0 + 1) / 2)
    ev.count_ranks_below = -1.0
    assert ev.evaluate_embeddings(USER_EMB, ITEM_EMB, task) == counted


@pytest.mark.parametrize("buffered", [True, False])  # the CPU path and the one other devices take
def test_counts_of_higher_and_equal_scores_match_numpy(buffered: bool) -> None:
    from simkgcl.evaluation.evaluator import _count, _workspace

    rng = np.random.default_rng(6)
    scores = torch.from_numpy(rng.integers(0, 5, size=(300, 40))).float()  # many ties
    rows = torch.from_numpy(rng.integers(0, 300, size=600))
    values = torch.from_numpy(rng.integers(0, 5, size=600)).float()
    s, r, v = scores.numpy(), rows.numpy(), values.numpy()
    workspace = _workspace(40, scores.dtype, scores.device) if buffered else None
    for compare, plain in ((torch.gt, np.greater), (torch.eq, np.equal)):
        got = _count(scores, rows, values, compare, workspace)  # 600 rows: 3 chunks
        want = plain(s[r], v[:, None]).sum(1)
        assert got.tolist() == want.tolist()
        in_place = _count(scores, None, values[:300], compare, workspace)
        assert in_place.tolist() == plain(s, v[:300, None]).sum(1).tolist()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counting_on_cuda_gives_the_cpu_metrics() -> None:
    train, test, ue, ie = _random_problem(seed=7)
    results = []
    for device in ("cpu", "cuda"):
        for threshold in (float("inf"), -1.0):  # always count, never count
            ev = Evaluator(50, 40, metrics=HIT_METRICS, topk=[5, 10], eval_batch_size=400,
                           device=device)
            ev.count_ranks_below = threshold
            results.append(ev.evaluate_embeddings(ue, ie, ev.task(test, [train])))
    for other in results[1:]:
        assert other == pytest.approx(results[0], abs=1e-12)


def test_counting_chunks_stay_within_the_cpu_cell_budget() -> None:
    from simkgcl.evaluation.evaluator import CPU_SCORE_CELLS, _count_rows, _workspace

    for n_items in (40, 3846, 10**6, 10**8):
        rows = _count_rows(n_items)
        assert rows >= 1 and (rows == 1 or rows * n_items <= CPU_SCORE_CELLS)
    gathered, flags = _workspace(10**6, torch.float32, torch.device("cpu"))
    assert gathered.numel() <= CPU_SCORE_CELLS and flags.numel() <= CPU_SCORE_CELLS
