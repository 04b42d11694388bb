"""Training triples (user, positive item, negative item) for a whole epoch at once.

Negatives are drawn uniformly from the items the user has *not* interacted with in training, or
(``neg_sampling: {popularity: N}``) with probability proportional to ``(c_j + 1)^α`` over those
items, ``c_j`` item j's training count and ``α`` = ``neg_popularity_alpha``: RecBole's popularity
sampling draws ∝ ``c_j`` (its α = 1; the +1 here keeps items without training interactions
drawable and lets α < 0 favour rare items). Rejection works the same for both.
Everything is vectorised: draw one candidate per row, find the rows whose candidate is a training
item (binary search in the sorted keys ``user * n_items + item``), redraw only those rows, and
repeat until none is left. Since a user who has seen a share ``p`` of the catalogue needs ``1/(1-p)``
draws on average, the loop ends after a handful of rounds on real data.

The random stream of epoch ``e`` comes from a generator seeded with ``(seed, e)`` only, so the
samples of an epoch do not depend on what ran before it: a resumed run draws exactly what an
uninterrupted one would, and every DDP rank draws the same epoch and keeps its own share of the
batches. Samples are drawn on the host (identical on CPU and CUDA) and moved to the device once per
epoch; a batch is then a slice of device tensors, never a host-to-device copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from simkgcl.errors import InputError

# Distinguish the sampler's random stream and the models' per-epoch stream (augmented graphs,
# see ``Recommender.on_epoch_start``) from other streams derived from the same seed.
_SAMPLER_STREAM = 0x5A3D
MODEL_EPOCH_STREAM = 0x6D0E


def epoch_generator(seed: int, epoch: int, stream: int = _SAMPLER_STREAM) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, stream) alone."""
    words = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2)
    gen = torch.Generator()
    gen.manual_seed(int(words[0]) << 31 ^ int(words[1]))
    return gen


@dataclass
class EpochBatches:
    """One epoch's triples on the device, cut into this rank's batches.

    ``bounds[j]`` is the [start, end) row range of this rank's ``j``-th batch; ``shares[j]`` is
    that batch's fraction of the rows all ranks train on in optimiser step ``j`` (1.0 in a single
    process), which the trainer needs to weight a batch-mean loss exactly like one big batch.
    """

    users: Tensor
    pos_items: Tensor
    neg_items: Tensor
    bounds: list[tuple[int, int]]
    shares: list[float]

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def n_samples(self) -> int:
        return int(self.users.shape[0])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for start, end in self.bounds:
            yield self.users[start:end], self.pos_items[start:end], self.neg_items[start:end]

    def head(self, n: int | None) -> EpochBatches:
        """The first ``n`` batches (all of them when ``n`` is None), e.g. to time a few steps."""
        if n is None or n >= len(self.bounds):
            return self
        return EpochBatches(self.users, self.pos_items, self.neg_items, self.bounds[:n],
                            self.shares[:n])


class EpochSource(Protocol):
    """Where the trainer gets each epoch's batches: a :class:`NegativeSampler`, or a wrapper of
    one that hands out :class:`EpochBatches` (the benchmarks time batches this way)."""

    def epoch(self, epoch: int) -> EpochBatches: ...


def step_bounds(n_samples: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """[start, end) rows of each optimiser step: ``world_size * batch_size`` rows per step.

    A final step with fewer rows than ranks is merged into the step before it, so that every
    rank gets at least one row in every step and no row is trained twice or dropped.
    """
    per_step = batch_size * world_size
    n_steps = max(1, math.ceil(n_samples / per_step))
    if n_steps > 1 and n_samples - (n_steps - 1) * per_step < world_size:
        n_steps -= 1
    return [(k * per_step, n_samples if k == n_steps - 1 else (k + 1) * per_step)
            for k in range(n_steps)]


def rank_share(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous [start, end) share of ``n`` rows for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class NegativeSampler:
    """Uniform negatives outside each user's training items; shuffled batches per epoch.

    ``num_negatives`` > 1 repeats every training pair that many times, each with its own negative
    (RecBole's ``neg_sampling: {uniform: N}``). With ``world_size`` > 1, ``batch_size`` is the
    batch of *one* rank: optimiser step ``k`` covers the epoch's rows
    ``[k * W * batch_size, (k + 1) * W * batch_size)``, exactly the batch of a single process
    run with ``batch_size * W``, and rank ``r`` trains on the ``r``-th contiguous part of them.
    Every rank runs the same number of steps (gradient all-reduce needs it); the last step's rows
    are split as evenly as the ranks allow.
    """

    def __init__(
        self,
        users: np.ndarray | Tensor,
        items: np.ndarray | Tensor,
        n_items: int,
        *,
        batch_size: int,
        seed: int,
        num_negatives: int = 1,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        popularity_alpha: float | None = None,
    ) -> None:
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64).cpu()
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64).cpu()
        if u.shape != i.shape or u.dim() != 1:
            raise ValueError("users and items must be 1-D arrays of the same length")
        if u.numel() == 0:
            raise InputError("the training split is empty: nothing to train on")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if u.numel() * num_negatives < world_size:
            raise InputError(f"the training split has {u.numel()} interactions, fewer than the "
                             f"{world_size} training processes")
        self.n_items = int(n_items)
        self.keys = torch.unique(u * self.n_items + i)  # sorted, de-duplicated
        seen_per_user = torch.bincount(self.keys // self.n_items)
        full = (seen_per_user >= self.n_items).nonzero().flatten()
        if full.numel():
            raise InputError(
                f"user id {int(full[0])} has interacted with all {self.n_items} items in training, "
                "so no negative item can be drawn for it; filter such users out"
            )
        self.users = u
        self.items = i
        # None: uniform; else draw weights (c_j + 1)^alpha (see the module docstring)
        self.weights = (None if popularity_alpha is None else
                        (torch.bincount(i, minlength=self.n_items).double() + 1.0)
                        .pow(float(popularity_alpha)))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_negatives = int(num_negatives)
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size

    @property
    def n_samples(self) -> int:
        return int(self.users.numel()) * self.num_negatives

    @property
    def n_batches(self) -> int:
        """Batches (= optimiser steps) this rank runs per epoch."""
        return len(step_bounds(self.n_samples, self.batch_size, self.world_size))

    def is_training_item(self, users: Tensor, items: Tensor) -> Tensor:
        """Bool mask: is ``items[k]`` a training item of ``users[k]`` (host tensors)."""
        keys = users * self.n_items + items
        where = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[where] == keys

    def _candidates(self, n: int, generator: torch.Generator) -> Tensor:
        if self.weights is None:
            return torch.randint(0, self.n_items, (n,), generator=generator)
        return torch.multinomial(self.weights, n, replacement=True, generator=generator)

    def draw_negatives(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One non-training item per entry of ``users`` (host tensor), uniform or weighted."""
        neg = self._candidates(users.numel(), generator).reshape(users.shape)
        todo = self.is_training_item(users, neg).nonzero().flatten()
        while todo.numel():
            neg[todo] = self._candidates(todo.numel(), generator)
            todo = todo[self.is_training_item(users[todo], neg[todo])]
        return neg

    def epoch(self, epoch: int) -> EpochBatches:
        """Shuffled triples of ``epoch`` for this rank, on the device."""
        gen = epoch_generator(self.seed, epoch)
        users, items = self.users, self.items
        if self.num_negatives > 1:
            users = users.repeat_interleave(self.num_negatives)
            items = items.repeat_interleave(self.num_negatives)
        order = torch.randperm(users.numel(), generator=gen)
        users, items = users[order], items[order]
        negs = self.draw_negatives(users, gen)
        on_device = torch.stack([users, items, negs]).to(self.device)
        bounds, shares = [], []
        for start, end in step_bounds(users.numel(), self.batch_size, self.world_size):
            lo, hi = rank_share(end - start, self.rank, self.world_size)
            bounds.append((start + lo, start + hi))
            shares.append((hi - lo) / (end - start))
        return EpochBatches(on_device[0], on_device[1], on_device[2], bounds, shares)
