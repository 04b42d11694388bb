"""The small interface every model implements.

A model never sees files or a dataset object: it receives a :class:`~simkgcl.graph.GraphData`
(ids and counts only) and a flat config mapping. Training calls
``model(users, pos_items, neg_items)``, which returns **named loss terms** (their sum is what is
minimised; the names are what the trainer logs). Evaluation and serving call
:meth:`Recommender.final_embeddings` once and score users against items with a dot product.
A model without trainable parameters (``pop``) is never trained: the trainer runs no epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec


class Recommender(nn.Module):
    """Base class: named loss terms per batch, final embeddings for scoring.

    Subclasses set ``name`` (the registry key) and ``keys`` (their own config keys, each a
    :class:`~simkgcl.keyspec.KeySpec` with its default and range). The config layer validates a
    run's values against ``keys`` before any data is read; :meth:`settings` applies the same
    specs when a model is built from a plain mapping.
    """

    name: ClassVar[str] = ""
    keys: ClassVar[Mapping[str, KeySpec]] = {}

    @classmethod
    def settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """This model's keys: the value in ``config`` where given, else the default; validated."""
        return {key: spec.check(key, config.get(key, spec.default))
                for key, spec in cls.keys.items()}

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__()
        self.n_users = graph.n_users
        self.n_items = graph.n_items

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Called by the trainer before every training epoch; a no-op by default.

        Models that redraw something once per epoch (SGL's augmented graphs, KGCL's KG
        augmentation) draw it here from ``generator``: a CPU generator determined by
        ``(seed, epoch)`` alone, so a resumed run and every DDP rank draw exactly the same.
        """

    def extra_steps(self) -> Sequence[Callable[[], dict[str, Tensor]]]:
        """Optimiser steps of their own that the trainer runs after :meth:`on_epoch_start`,
        before the epoch's batches; none by default.

        Each callable returns named loss terms (e.g. KGCL's TransE ``kg`` on one batch of
        triples); the trainer minimises their sum with the run's optimiser, one step each, and
        logs the terms' sums with the epoch's. They call the model itself (not a DDP wrapper),
        so every rank must compute the same steps: draw them in :meth:`on_epoch_start`.
        """
        return ()

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        """Loss terms for one batch of (user, positive item, negative item) triples."""
        raise NotImplementedError

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """(user embeddings U x d, item embeddings I x d) used to score: score = u . i.

        Called in eval mode (no dropout) under ``torch.no_grad()``.
        """
        raise NotImplementedError

    def fold_in_items(self) -> tuple[Tensor, float] | None:
        """How a user row is aggregated from the user's items, for users the model never saw.

        ``(F, w0)`` when the final user row is ``sum_i F_i / sqrt(d_u d_i)`` over the user's
        distinct training items (``d`` = training degrees, as in the symmetric-normalised
        adjacency) plus ``w0`` x the user's own layer-0 row, which a new user does not have.
        ``None`` (the default): the user row is no such aggregation, and serving fits one
        (:mod:`simkgcl.serving.foldin`). Called like :meth:`final_embeddings`.
        """
        return None


def user_item_tables(n_users: int, n_items: int, dim: int) -> tuple[nn.Embedding, nn.Embedding]:
    """User and item embedding tables, Xavier-uniform initialised (RecBole's
    ``xavier_uniform_initialization``), drawn in this order: users, items."""
    users, items = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
    nn.init.xavier_uniform_(users.weight)
    nn.init.xavier_uniform_(items.weight)
    return users, items
