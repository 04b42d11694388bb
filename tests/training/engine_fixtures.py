"""Hand-built data and a tiny model for engine tests (no file reading, no real model needed)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simkgcl.data.dataset import Interactions, KnowledgeDataset, Split
from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, float_in, int_in
from simkgcl.models.base import Recommender

TINY_MODEL = "tinymf"


class TinyMF(Recommender):
    """Matrix factorisation with dropout (so the torch RNG matters for exact resume).

    ``batch_delay`` slows every batch down (resume test: time to kill the process mid-epoch);
    ``poison_after`` >= 0 makes the ``aux`` loss term NaN from that forward call on.
    """

    name: ClassVar[str] = TINY_MODEL
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(8, int_in(1), "embedding dimension"),
        "batch_delay": KeySpec(0.0, float_in(0.0), "seconds of sleep per batch"),
        "poison_after": KeySpec(-1, int_in(-1), "forward call from which aux is NaN (-1: never)"),
        "dropout": KeySpec(0.2, float_in(0.0, 1.0, hi_open=True), "dropout on user rows"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        self.users = nn.Embedding(graph.n_users, int(cfg["embedding_size"]))
        self.items = nn.Embedding(graph.n_items, int(cfg["embedding_size"]))
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        self.batch_delay = float(cfg["batch_delay"])
        self.poison_after = int(cfg["poison_after"])
        self.dropout = float(cfg["dropout"])
        self.calls = 0

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        if self.batch_delay:
            time.sleep(self.batch_delay)
        u = F.dropout(self.users(users), self.dropout, self.training)
        diff = (u * self.items(pos_items)).sum(1) - (u * self.items(neg_items)).sum(1)
        terms = {"bpr": -F.logsigmoid(diff).mean()}
        poisoned = 0 <= self.poison_after <= self.calls
        terms["aux"] = (torch.tensor(float("nan")) if poisoned else torch.tensor(0.0)) \
            + 0.0 * self.users.weight.sum()
        self.calls += 1
        return terms

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.users.weight, self.items.weight


def register_tiny_model() -> None:
    """Make ``model: tinymf`` resolvable through the model registry (tests only)."""
    import simkgcl.models as registry

    registry._MODELS[TINY_MODEL] = ("engine_fixtures", "TinyMF")


def make_tiny_data(n_users: int = 40, n_items: int = 30, per_user: int = 8,
                   seed: int = 0) -> tuple[KnowledgeDataset, Split]:
    """Random interactions with a per-user 6/1/1 split, and a small KG over the items."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        users.extend([u] * per_user)
        items.extend(chosen.tolist())
    users_a = np.asarray(users, dtype=np.int64)
    items_a = np.asarray(items, dtype=np.int64)
    position = np.tile(np.arange(per_user), n_users)
    train = position < per_user - 2
    valid = position == per_user - 2
    test = position == per_user - 1
    inter = Interactions(users_a, items_a)
    n_entities = n_items + 5
    triples = np.stack([rng.integers(0, n_items, 50), rng.integers(0, 3, 50),
                        rng.integers(0, n_entities, 50)], axis=1).astype(np.int64)
    ds = KnowledgeDataset(
        name="tiny",
        user_tokens=np.asarray([f"u{i}" for i in range(n_users)]),
        item_tokens=np.asarray([f"i{i}" for i in range(n_items)]),
        entity_tokens=np.asarray([f"e{i}" for i in range(n_entities)]),
        relation_tokens=np.asarray(["r0", "r1", "r2"]),
        interactions=inter,
        triples=triples,
    )
    split = Split(train=inter.subset(train), valid=inter.subset(valid), test=inter.subset(test))
    return ds, split


def write_kgcn_folder(folder, n_users: int = 40, n_items: int = 30, per_user: int = 10,
                      seed: int = 0) -> None:
    """A tiny dataset on disk in the KGCN layout (ratings_final.txt + kg_final.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            rows.append(f"{u}\t{i}\t1")
    (folder / "ratings_final.txt").write_text("\n".join(rows) + "\n")
    kg = [f"{rng.integers(0, n_items)}\t{rng.integers(0, 3)}\t{rng.integers(0, n_items + 5)}"
          for _ in range(60)]
    (folder / "kg_final.txt").write_text("\n".join(kg) + "\n")


def write_atomic_train_test_folder(folder, n_users: int = 40, n_items: int = 30,
                                   per_user: int = 10, seed: int = 0) -> None:
    """RecBole atomic files ``<name>.train.inter`` and ``<name>.test.inter`` (8 + 2 per user),
    no knowledge graph: the seed's ``benchmark_filename: [train, test, test]`` setting."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    header = "user_id:token\titem_id:token\n"
    train, test = [header], [header]
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        train += [f"u{u}\ti{i}\n" for i in chosen[:-2]]
        test += [f"u{u}\ti{i}\n" for i in chosen[-2:]]
    (folder / f"{folder.name}.train.inter").write_text("".join(train))
    (folder / f"{folder.name}.test.inter").write_text("".join(test))
