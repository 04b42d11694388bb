"""Negative sampler: never a training item, uniform, seeded, whole epochs, rank shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simkgcl.errors import InputError
from simkgcl.sampling import NegativeSampler


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


def test_rank_shards_split_the_epoch_evenly() -> None:
    users, items, n_items = _dense_train()
    full = NegativeSampler(users, items, n_items, batch_size=20, seed=1)
    n_batches = full.n_batches
    shards = [NegativeSampler(users, items, n_items, batch_size=20, seed=1, rank=r,
                              world_size=3).epoch(0) for r in range(3)]
    # every rank runs the same number of batches (all-reduce needs it) and together they
    # cover every batch of the epoch, which is identical on every rank
    assert len({len(s) for s in shards}) == 1
    assert set().union(*[s.batch_ids for s in shards]) == set(range(n_batches))
    assert all(torch.equal(s.neg_items, full.epoch(0).neg_items) for s in shards)


def test_user_who_saw_every_item_is_reported() -> None:
    with pytest.raises(InputError, match="all 3 items"):
        NegativeSampler([0, 0, 0, 1], [0, 1, 2, 0], 3, batch_size=4, seed=0)
