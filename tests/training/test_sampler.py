"""Negative sampler: never a training item, uniform, seeded, whole epochs, rank shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simkgcl.errors import InputError
from simkgcl.sampling import NegativeSampler
from simkgcl.sampling.negative import step_bounds


def _dense_train(seed: int = 0, n_users: int = 30, n_items: int = 25):
    """Users who have seen most of the catalogue, so collisions are frequent."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(1, n_items - 1))  # at least one unseen item per user
        chosen = rng.choice(n_items, size=k, replace=False)
        users += [u] * k
        items += chosen.tolist()
    return np.asarray(users), np.asarray(items), n_items


def test_negatives_are_never_training_items() -> None:
    users, items, n_items = _dense_train()
    seen = set(zip(users.tolist(), items.tolist(), strict=True))
    sampler = NegativeSampler(users, items, n_items, batch_size=64, seed=1, num_negatives=3)
    for epoch in range(5):
        batches = sampler.epoch(epoch)
        for u, _, n in batches:
            assert not {(a, b) for a, b in zip(u.tolist(), n.tolist(), strict=True)} & seen


def test_each_training_pair_appears_once_per_negative_per_epoch() -> None:
    users, items, n_items = _dense_train(seed=3)
    sampler = NegativeSampler(users, items, n_items, batch_size=50, seed=0, num_negatives=2)
    batches = sampler.epoch(0)
    got_u = torch.cat([u for u, _, _ in batches])
    got_p = torch.cat([p for _, p, _ in batches])
    assert len(got_u) == 2 * len(users)
    got = sorted(zip(got_u.tolist(), got_p.tolist(), strict=True))
    expected = sorted(list(zip(users.tolist(), items.tolist(), strict=True)) * 2)
    assert got == expected


def test_negatives_are_uniform_over_unseen_items() -> None:
    # one user, item 3 seen: 4000 draws over the four other items
    sampler = NegativeSampler([0], [3], 5, batch_size=4000, seed=7, num_negatives=4000)
    (u, _, n), = list(sampler.epoch(0))
    counts = torch.bincount(n, minlength=5).tolist()
    assert counts[3] == 0
    for c in counts[:3] + counts[4:]:
        assert 850 <= c <= 1150  # expectation 1000, sd ~27


def test_same_seed_same_epoch_same_samples_and_epochs_differ() -> None:
    users, items, n_items = _dense_train()

    def draw(seed: int, epoch: int):
        s = NegativeSampler(users, items, n_items, batch_size=32, seed=seed)
        b = s.epoch(epoch)
        return torch.stack([b.users, b.pos_items, b.neg_items])

    assert torch.equal(draw(5, 2), draw(5, 2))
    assert not torch.equal(draw(5, 2), draw(5, 3))  # reshuffled each epoch
    assert not torch.equal(draw(5, 2), draw(6, 2))


def test_an_epoch_does_not_depend_on_earlier_epochs() -> None:
    # what makes resume exact: epoch 3 drawn fresh equals epoch 3 drawn after 0..2
    users, items, n_items = _dense_train()
    a = NegativeSampler(users, items, n_items, batch_size=32, seed=1)
    for e in range(3):
        a.epoch(e)
    b = NegativeSampler(users, items, n_items, batch_size=32, seed=1)
    assert torch.equal(a.epoch(3).neg_items, b.epoch(3).neg_items)


def test_batch_sizes_and_last_partial_batch() -> None:
    users, items, n_items = _dense_train()
    sampler = NegativeSampler(users, items, n_items, batch_size=64, seed=1)
    sizes = [len(u) for u, _, _ in sampler.epoch(0)]
    assert sum(sizes) == len(users)
    assert all(s == 64 for s in sizes[:-1]) and 0 < sizes[-1] <= 64
    assert len(sizes) == sampler.n_batches


def test_rank_shards_together_are_the_batches_of_one_process_with_the_global_batch() -> None:
    users, items, n_items = _dense_train()
    world = 3
    single = NegativeSampler(users, items, n_items, batch_size=20 * world, seed=1).epoch(0)
    shards = [NegativeSampler(users, items, n_items, batch_size=20, seed=1, rank=r,
                              world_size=world).epoch(0) for r in range(world)]
    # every rank runs the same number of steps (all-reduce needs it), and step k of the ranks
    # together is exactly batch k of one process whose batch is world_size times larger
    assert {len(s) for s in shards} == {len(single)}
    steps = zip(*[list(s) for s in shards], list(single), strict=True)
    for *parts, (su, sp, sn) in steps:
        assert torch.equal(torch.cat([p[0] for p in parts]), su)
        assert torch.equal(torch.cat([p[1] for p in parts]), sp)
        assert torch.equal(torch.cat([p[2] for p in parts]), sn)
        assert max(len(p[0]) for p in parts) - min(len(p[0]) for p in parts) <= 1
    # each rank's share of a step's rows, as the trainer weights a batch-mean loss
    for k in range(len(single)):
        assert sum(s.shares[k] for s in shards) == pytest.approx(1.0)
    assert single.shares == [1.0] * len(single)


def test_a_last_step_smaller_than_the_ranks_joins_the_step_before() -> None:
    # 2 * 64 + 1 rows, 2 ranks of 32: the single leftover row cannot feed both ranks
    rows = 129
    assert step_bounds(rows, 32, 2) == [(0, 64), (64, 129)]
    assert step_bounds(rows, 64, 1)[-1] == (128, 129)  # one process keeps its 1-row batch
    users = torch.arange(rows) % 43
    items = torch.arange(rows) % 7
    shards = [NegativeSampler(users, items, 50, batch_size=32, seed=3, rank=r,
                              world_size=2).epoch(0) for r in range(2)]
    sizes = [[len(b[0]) for b in s] for s in shards]
    assert sizes == [[32, 33], [32, 32]]
    with pytest.raises(InputError, match="fewer than the 4 training processes"):
        NegativeSampler([0, 1, 2], [0, 0, 0], 5, batch_size=8, seed=0, rank=0, world_size=4)


def test_user_who_saw_every_item_is_reported() -> None:
    with pytest.raises(InputError, match="all 3 items"):
        NegativeSampler([0, 0, 0, 1], [0, 1, 2, 0], 3, batch_size=4, seed=0)


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_popularity_negatives_follow_count_plus_one_to_the_alpha(alpha: float) -> None:
    # user 0 saw item 3 once; users 1-3 give items 0 and 1 training counts 3 and 1 (user 0 has
    # not seen them). Expected shares for user 0 over items {0, 1, 2, 4}: (c + 1)^alpha
    users = [0, 1, 2, 3, 1]
    items = [3, 0, 0, 0, 1]
    sampler = NegativeSampler(users, items, 5, batch_size=20000, seed=11, num_negatives=4000,
                              popularity_alpha=alpha)
    batches = sampler.epoch(0)
    mask = batches.users == 0
    negs = batches.neg_items[mask]
    counts = torch.bincount(negs, minlength=5).double()
    weights = {0: 4.0 ** alpha, 1: 2.0 ** alpha, 2: 1.0, 4: 1.0}
    total = sum(weights.values())
    assert counts[3] == 0
    for item, w in weights.items():
        share = float(counts[item] / counts.sum())
        assert abs(share - w / total) < 0.03  # 4000 draws for user 0: sd of a share < 0.008
