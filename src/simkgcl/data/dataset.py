"""In-memory containers for knowledge-aware recommendation data.

Id conventions (all ids are contiguous, 0-based int64):

* users ``0..n_users-1``; items ``0..n_items-1``;
* entities ``0..n_entities-1`` where **item i is entity i** (an item without a KG link still owns
  entity row i and simply has no triples), KG-only entities follow from ``n_items`` on;
* relations ``0..n_relations-1`` (inverse relations, when added, follow the originals).

Tokens (the user's original ids, as strings) are kept so results can be reported in them.
Ids follow natural token order ("2" before "10"), so already contiguous integer ids keep their
value. The entity token of an item without a KG link is "" (the row exists, no triple uses it);
in KGCL's separate tail id space, KG-only tail entities are named ``tail:<id>``; inverse relations
(``kg_reverse_r``) are named ``<relation>_inverse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Interactions:
    """A set of (user, item) interactions with optional rating and timestamp columns."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray | None = None  # float64
    timestamps: np.ndarray | None = None  # float64

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, index: np.ndarray) -> Interactions:
        """Rows ``index`` (an int array or a boolean mask), keeping optional columns."""
        return Interactions(
            users=self.users[index],
            items=self.items[index],
            ratings=None if self.ratings is None else self.ratings[index],
            timestamps=None if self.timestamps is None else self.timestamps[index],
        )


@dataclass
class Split:
    """Train/valid/test interactions over the ids of one :class:`KnowledgeDataset`.

    ``valid_is_test``: the validation part *is* the test part (``valid_on_test``, or benchmark
    files ``[train, test, test]``); model selection then sees the test set.
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    # Human-readable notes on how the split was made (e.g. unseen test users dropped: 3).
    notes: dict[str, int | str] = field(default_factory=dict)
    valid_is_test: bool = False

    def valid_exclusions(self) -> list[Interactions]:
        """Parts whose items a validation ranking never credits or recommends: training."""
        return [self.train]

    def test_exclusions(self) -> list[Interactions]:
        """Parts whose items a test ranking never credits or recommends: training, and
        validation unless it is the test part itself (hiding it would hide the answers)."""
        if self.valid_is_test or len(self.valid) == 0:
            return [self.train]
        return [self.train, self.valid]


@dataclass
class KnowledgeDataset:
    """Users, items, a knowledge graph over the items, and the token<->id maps.

    ``interactions`` holds every interaction that was read (after de-duplication and filtering).
    ``fixed_split`` is set when the files themselves define the split (benchmark files, or the
    KGAT layout's train/test files); otherwise :func:`simkgcl.data.split.split_dataset` makes one.
    ``report`` counts what was dropped and why, so nothing is silently lost.
    """

    name: str
    user_tokens: np.ndarray  # id -> original token (str)
    item_tokens: np.ndarray
    entity_tokens: np.ndarray
    relation_tokens: np.ndarray
    interactions: Interactions
    triples: np.ndarray  # (n_triples, 3) int64: head entity, relation, tail entity
    fixed_split: Split | None = None
    report: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Which reader made it ("atomic", "kgat", "kgcn") and from which files.
    layout: str = ""
    files: list[str] = field(default_factory=list)
    # True when relations n/2.. are the inverses of relations 0..n/2-1 (kg_reverse_r).
    inverse_relations: bool = False

    @property
    def n_users(self) -> int:
        return int(len(self.user_tokens))

    @property
    def n_items(self) -> int:
        return int(len(self.item_tokens))

    @property
    def n_entities(self) -> int:
        return int(len(self.entity_tokens))

    @property
    def n_relations(self) -> int:
        return int(len(self.relation_tokens))

    @property
    def n_triples(self) -> int:
        return int(self.triples.shape[0])

    @property
    def item_linked(self) -> np.ndarray:
        """Boolean mask over items: True where the item's entity occurs in some triple."""
        mask = np.zeros(self.n_items, dtype=bool)
        if self.n_triples:
            ends = np.concatenate([self.triples[:, 0], self.triples[:, 2]])
            mask[np.unique(ends[ends < self.n_items])] = True
        return mask

    def user_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of user ``tokens`` (original ids, as str); NotFoundError names the first unknown."""
        return _lookup(self.user_tokens, tokens, "user")

    def item_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of item ``tokens`` (original ids, as str); NotFoundError names the first unknown."""
        return _lookup(self.item_tokens, tokens, "item")


def _lookup(known: np.ndarray, tokens: Sequence[str], kind: str) -> np.ndarray:
    import pandas as pd

    from simkgcl.errors import NotFoundError

    wanted = [str(t) for t in tokens]
    ids = pd.Index(known).get_indexer(wanted)
    if (ids < 0).any():
        raise NotFoundError(f"unknown {kind} {wanted[int(np.flatnonzero(ids < 0)[0])]!r}")
    return ids.astype(np.int64)
