"""Train/valid/test splits with RecBole ``eval_args`` semantics, reproducible byte for byte.

Per-user counts for ``RS: [r_train, r_valid, r_test]`` and a user with ``n`` interactions:

1. ``n_valid = floor(r_valid * n)`` and ``n_test = floor(r_test * n)`` (a 1e-9 tolerance absorbs
   float error, so 0.1 * 30 gives 3); ``n_train`` takes the rest.
2. Then test, then valid: a part whose ratio is positive but whose count rounded down to 0 takes
   one interaction from training, as long as training keeps at least one.

So a user with 1 interaction is train only, 2 -> 1/0/1, 3 -> 1/1/1, 10 -> 8/1/1, 15 -> 13/1/1.
This matches RecBole's ``split_by_ratio`` per user group. ``RO`` shuffles each user's
interactions with ``numpy.random.default_rng(seed)``; ``TO`` orders them by timestamp (ties keep
file order), so the latest go to test. Each part keeps the dataset's row order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from simkgcl.data.dataset import Interactions, KnowledgeDataset, Split
from simkgcl.data.options import (
    DEFAULT_SEED,
    DEFAULT_VALID_RATIO,
    check_eval_args,
    check_valid_ratio,
)
from simkgcl.errors import ConfigError

log = logging.getLogger(__name__)

TEST_AS_VALID_WARNING = (
    "validating on the test set (valid_on_test / benchmark [train, test, test]): model "
    "selection and early stopping then see the test set, so test figures are optimistic"
)


def per_user_counts(sizes: np.ndarray, ratios: list[float]) -> np.ndarray:
    """``(n_groups, len(ratios))`` part sizes for groups of ``sizes`` interactions (see module doc)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    counts = np.zeros((len(sizes), len(ratios)), dtype=np.int64)
    for j in range(1, len(ratios)):
        counts[:, j] = np.floor(ratios[j] * sizes + 1e-9).astype(np.int64)
    counts[:, 0] = sizes - counts[:, 1:].sum(axis=1)
    for j in range(len(ratios) - 1, 0, -1):
        bump = (counts[:, j] == 0) & (ratios[j] > 0) & (counts[:, 0] > 1)
        counts[bump, j] += 1
        counts[bump, 0] -= 1
    return counts


def _order_key(data: Interactions, order: str, rng: np.random.Generator, name: str) -> np.ndarray:
    if order == "RO":
        return rng.permutation(len(data)).astype(np.float64)
    if order == "TO":
        if data.timestamps is None:
            raise ConfigError(
                f"eval_args.order TO (time order) needs timestamps, and {name} has none; "
                "use order RO"
            )
        return data.timestamps.astype(np.float64)
    raise ConfigError(f"eval_args.order must be RO (random) or TO (time), got {order!r}")


def ratio_split(
    data: Interactions,
    ratios: list[float],
    *,
    order: str,
    group_by: str | None,
    rng: np.random.Generator,
    name: str = "the dataset",
) -> list[Interactions]:
    """Split ``data`` into ``len(ratios)`` parts per user (or globally when group_by is None)."""
    n = len(data)
    groups = data.users if group_by == "user" else np.zeros(n, dtype=np.int64)
    key = _order_key(data, order, rng, name)
    # Sort by group, then by the order key, ties by row position (stable and deterministic).
    sorted_rows = np.lexsort((np.arange(n), key, groups))
    sorted_groups = groups[sorted_rows]
    _, starts, sizes = np.unique(sorted_groups, return_index=True, return_counts=True)
    counts = per_user_counts(sizes, ratios)
    group_of_row = np.repeat(np.arange(len(sizes)), sizes)
    rank = np.arange(n) - starts[group_of_row]
    bounds = np.cumsum(counts, axis=1)[group_of_row]
    part_sorted = (rank[:, None] >= bounds).sum(axis=1)
    part = np.empty(n, dtype=np.int64)
    part[sorted_rows] = part_sorted
    return [data.subset(np.flatnonzero(part == j)) for j in range(len(ratios))]


def _empty(data: Interactions) -> Interactions:
    return data.subset(np.zeros(len(data), dtype=bool))


def split_dataset(
    ds: KnowledgeDataset,
    *,
    eval_args: Mapping | None = None,
    seed: int = DEFAULT_SEED,
    valid_ratio: float = DEFAULT_VALID_RATIO,
    valid_on_test: bool = False,
) -> Split:
    """Train/valid/test split of ``ds`` (RecBole ``eval_args``), the same for the same seed.

    Uses ``ds.fixed_split`` when the files define one (the RS ratios are then ignored). When
    there is no validation part (KGAT train/test files, or two RS ratios) one is carved from each
    user's training interactions with ``valid_ratio``, unless ``valid_on_test`` asks to validate
    on the test set (logged as a warning). Validation and test rows of users that have no
    training row are dropped and counted in ``Split.notes``; items seen only outside training
    are kept and counted.
    """
    eval_args = check_eval_args("eval_args", eval_args)
    valid_ratio = check_valid_ratio("valid_ratio", valid_ratio)
    order, group_by = eval_args["order"], eval_args["group_by"]
    rng = np.random.default_rng(seed)
    notes: dict[str, int | str] = {}
    valid_is_test = False

    if ds.fixed_split is not None:
        fixed = ds.fixed_split
        log.info(
            "using the split defined by the files (%s); eval_args.split is ignored",
            fixed.notes.get("source", "fixed split"),
        )
        train, valid, test = fixed.train, fixed.valid, fixed.test
        valid_is_test = bool(fixed.notes.get("valid_is_test"))
        notes["method"] = str(fixed.notes.get("source", "fixed split from the files"))
        needs_valid = len(valid) == 0 and not valid_is_test
    else:
        ratios = eval_args["split"]["RS"]
        parts = ratio_split(
            ds.interactions, ratios, order=order, group_by=group_by, rng=rng, name=ds.name
        )
        if len(ratios) == 3:
            train, valid, test = parts
        else:
            (train, test), valid = parts, _empty(parts[0])
        notes["method"] = f"RS {ratios} order {order} group_by {group_by} seed {seed}"
        needs_valid = len(ratios) == 2

    if valid_on_test and not needs_valid and not valid_is_test:
        raise ConfigError(
            "valid_on_test asks to validate on the test set, but this split already has a "
            "validation part; use it, or split with two ratios / train+test files"
        )
    if needs_valid:
        if valid_on_test:
            valid_is_test = True
        elif valid_ratio > 0:
            train, valid = ratio_split(
                train,
                [1.0 - valid_ratio, valid_ratio],
                order=order,
                group_by=group_by,
                rng=rng,
                name=ds.name,
            )
            notes["validation"] = f"carved from training: valid_ratio {valid_ratio} per user"

    train_users = np.zeros(ds.n_users, dtype=bool)
    train_users[train.users] = True
    train_items = np.zeros(ds.n_items, dtype=bool)
    train_items[train.items] = True
    test = _drop_unseen_users(test, train_users, train_items, "test", notes)
    if valid_is_test:
        valid = test
        notes["valid_is_test"] = 1
        log.warning(TEST_AS_VALID_WARNING)
    else:
        valid = _drop_unseen_users(valid, train_users, train_items, "valid", notes)
    split = Split(train=train, valid=valid, test=test, notes=notes,
                  valid_is_test=valid_is_test)
    log.info("split %s: train %d, valid %d, test %d", ds.name, len(train), len(valid), len(test))
    return split


def _drop_unseen_users(
    part: Interactions, train_users: np.ndarray, train_items: np.ndarray, name: str, notes: dict
) -> Interactions:
    """Drop rows of users without training data (they cannot be scored); count unseen items."""
    seen = train_users[part.users]
    notes[f"{name}_users_unseen_in_train_dropped"] = int(len(np.unique(part.users[~seen])))
    notes[f"{name}_rows_of_unseen_users_dropped"] = int((~seen).sum())
    kept = part.subset(seen)
    unseen_items = ~train_items[kept.items]
    notes[f"{name}_items_unseen_in_train_kept"] = int(len(np.unique(kept.items[unseen_items])))
    notes[f"{name}_rows_with_unseen_items_kept"] = int(unseen_items.sum())
    return kept
