"""Turn :class:`RawData` into a :class:`KnowledgeDataset`: ids, entity table, de-duplication.

Id assignment (the same for every layout, so a dataset converted to atomic files and read back
gets identical ids):

* users, items and relations are numbered in natural token order ("2" before "10"), so integer
  ids that are already contiguous and 0-based keep their value;
* items take entity ids ``0..n_items-1``; KG-only entities follow, in natural token order.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from simkgcl.data.dataset import Interactions, KnowledgeDataset, Split
from simkgcl.data.io import natural_order
from simkgcl.data.options import check_threshold
from simkgcl.data.readers import InteractionPart, RawData
from simkgcl.errors import ConfigError, InputError

log = logging.getLogger(__name__)

INVERSE_SUFFIX = "_inverse"
SEPARATE_TAIL_PREFIX = "tail:"


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, codes)``: sorted distinct tokens (as str) and each value's index into them."""
    if values.dtype.kind in "iu":
        uniques, codes = np.unique(values, return_inverse=True)
        return uniques.astype(str).astype(object), codes.astype(np.int64)
    codes, uniques = pd.factorize(values)
    order = natural_order(np.asarray(uniques, dtype=object))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return np.asarray(uniques, dtype=object)[order].astype(str).astype(object), rank[codes]


def _apply_threshold(parts: list[InteractionPart], threshold: dict | None, report: dict) -> None:
    """RecBole-style ``threshold: {rating: 4}``: keep rows whose column is >= the value."""
    threshold = check_threshold("threshold", threshold)
    if not threshold:
        return
    ((column, value),) = threshold.items()
    dropped = 0
    for part in parts:
        values = part.ratings if column == "rating" else part.timestamps
        if values is None:
            raise ConfigError(
                f"threshold on {column!r} asked for, but {part.source or 'the data'} has no "
                f"{column} column"
            )
        keep = values >= float(value)
        dropped += int((~keep).sum())
        part.users, part.items = part.users[keep], part.items[keep]
        part.ratings = None if part.ratings is None else part.ratings[keep]
        part.timestamps = None if part.timestamps is None else part.timestamps[keep]
    report[f"rows_below_{column}_threshold_dropped"] = dropped


def _concat(values: list[np.ndarray | None]) -> np.ndarray | None:
    if any(v is None for v in values):
        return None
    return np.concatenate(values)  # type: ignore[arg-type]


def _join_tokens(parts: list[np.ndarray]) -> np.ndarray:
    if all(p.dtype.kind in "iu" for p in parts):
        return np.concatenate(parts).astype(np.int64)
    return np.concatenate([p.astype(str).astype(object) for p in parts])


def build_dataset(raw: RawData, *, threshold: dict | None, kg_reverse_r: bool) -> KnowledgeDataset:
    """Assign ids, build the entity table and the fixed split (if the files define one)."""
    report = dict(raw.report)
    warnings = list(raw.warnings)
    _apply_threshold(raw.parts, threshold, report)

    sizes = [len(p.users) for p in raw.parts]
    user_values = _join_tokens([p.users for p in raw.parts])
    item_values = _join_tokens([p.items for p in raw.parts])
    if len(user_values) == 0:
        raise InputError(
            "no interactions left to use" + (" after the rating threshold" if threshold else ""),
            raw.files[0] if raw.files else None,
        )
    user_tokens, users = factorize(user_values)
    item_tokens, items = factorize(item_values)
    ratings = _concat([p.ratings for p in raw.parts])
    timestamps = _concat([p.timestamps for p in raw.parts])
    part_index = np.repeat(np.arange(len(raw.parts)), sizes)

    # De-duplicate (user, item): the first occurrence wins (train before valid before test).
    pairs = pd.DataFrame({"u": users, "i": items})
    duplicated = pairs.duplicated(keep="first").to_numpy()
    within = pd.DataFrame({"u": users, "i": items, "p": part_index}).duplicated().to_numpy()
    report["duplicate_interactions_removed"] = int(within.sum())
    if len(raw.parts) > 1:
        report["eval_pairs_already_in_an_earlier_part_removed"] = int((duplicated & ~within).sum())
    keep = ~duplicated
    interactions = Interactions(users=users, items=items, ratings=ratings, timestamps=timestamps)
    interactions = interactions.subset(keep)
    part_index = part_index[keep]

    fixed_split = None
    if len(raw.parts) > 1:
        roles = [p.name for p in raw.parts]
        by_role = {role: interactions.subset(part_index == k) for k, role in enumerate(roles)}
        empty = interactions.subset(np.zeros(len(interactions), dtype=bool))
        notes: dict[str, int | str] = {"source": "benchmark files " + "/".join(raw.part_order)}
        valid = by_role.get("valid", empty)
        if raw.valid_is_test:
            valid = by_role["test"]
            notes["valid_is_test"] = 1
            warnings.append(
                "the validation part is the test file "
                f"(benchmark {raw.part_order}): model selection then sees the test set"
            )
        fixed_split = Split(train=by_role["train"], valid=valid, test=by_role["test"], notes=notes)

    n_items = len(item_tokens)
    entity_tokens = np.full(n_items, "", dtype=object)
    relation_tokens = np.zeros(0, dtype=object)
    triples = np.zeros((0, 3), dtype=np.int64)
    if raw.kg is not None:
        heads, relations, tails = raw.kg
        if raw.link is not None:
            head_ids, tail_ids, kg_only = _map_linked_entities(
                raw, item_tokens, heads, tails, entity_tokens, report, warnings
            )
        elif raw.kg_id_space == "separate":
            head_ids, tail_ids, kg_only = _map_separate_space(
                item_tokens, heads, tails, entity_tokens, report
            )
        else:
            head_ids, tail_ids, kg_only = _map_shared_space(
                item_tokens, heads, tails, entity_tokens, report
            )
        relation_tokens, relation_ids = factorize(relations)
        triples = np.stack([head_ids, relation_ids, tail_ids], axis=1)
        duplicated = pd.DataFrame(triples).duplicated().to_numpy()
        report["duplicate_triples_removed"] = int(duplicated.sum())
        triples = triples[~duplicated]
        entity_tokens = np.concatenate([entity_tokens, kg_only])
        if kg_reverse_r:
            n_rel = len(relation_tokens)
            inverse = triples[:, [2, 1, 0]].copy()
            inverse[:, 1] += n_rel
            triples = np.concatenate([triples, inverse])
            relation_tokens = np.concatenate(
                [relation_tokens, np.array([t + INVERSE_SUFFIX for t in relation_tokens], object)]
            )
            report["inverse_triples_added"] = int(len(inverse))
    item_in_kg = np.zeros(n_items, dtype=bool)
    if len(triples):
        ends = np.concatenate([triples[:, 0], triples[:, 2]])
        item_in_kg[np.unique(ends[ends < n_items])] = True
    report["items_linked_to_kg"] = int(item_in_kg.sum())

    for message in warnings:
        log.warning(message)
    return KnowledgeDataset(
        name=raw.name,
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        entity_tokens=entity_tokens.astype(object),
        relation_tokens=relation_tokens.astype(object),
        interactions=interactions,
        triples=triples.astype(np.int64),
        fixed_split=fixed_split,
        report=report,
        warnings=warnings,
        layout=raw.layout,
        files=list(raw.files),
        inverse_relations=bool(kg_reverse_r and raw.kg is not None),
    )


def _item_lookup(item_tokens: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Item id of each integer ``value`` whose token is an item, else -1."""
    item_ints = item_tokens.astype(np.int64)  # integer layouts: tokens are sorted ints
    pos = np.searchsorted(item_ints, values)
    pos_clipped = np.minimum(pos, len(item_ints) - 1)
    hit = (pos < len(item_ints)) & (item_ints[pos_clipped] == values)
    return np.where(hit, pos_clipped, -1)


def _map_shared_space(
    item_tokens: np.ndarray,
    heads: np.ndarray,
    tails: np.ndarray,
    entity_tokens: np.ndarray,
    report: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KGAT/KGCN ``kg_final.txt``: entity e is item e when e is an item id."""
    n_items = len(item_tokens)
    ends = np.concatenate([heads, tails])
    report["kg_entities_in_file"] = int(len(np.unique(ends)))
    as_item = _item_lookup(item_tokens, ends)
    linked = np.unique(as_item[as_item >= 0])
    entity_tokens[linked] = item_tokens[linked]
    other, other_codes = np.unique(ends[as_item < 0], return_inverse=True)
    ids = as_item.copy()
    ids[as_item < 0] = n_items + other_codes
    return ids[: len(heads)], ids[len(heads) :], other.astype(str).astype(object)


def _map_separate_space(
    item_tokens: np.ndarray,
    heads: np.ndarray,
    tails: np.ndarray,
    entity_tokens: np.ndarray,
    report: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KGCL ``kg.txt``: heads are item ids, tails live in their own id space."""
    n_items = len(item_tokens)
    head_items = _item_lookup(item_tokens, heads)
    report["kg_entities_in_file"] = int(len(np.unique(heads)) + len(np.unique(tails)))
    report["kg_heads_not_items"] = int(len(np.unique(heads[head_items < 0])))
    linked = np.unique(head_items[head_items >= 0])
    entity_tokens[linked] = item_tokens[linked]
    # KG-only entities: heads without interactions (plain token) and every tail ("tail:<id>").
    other_heads = heads[head_items < 0].astype(str).astype(object)
    tail_tokens = np.char.add(SEPARATE_TAIL_PREFIX, tails.astype(str)).astype(object)
    kg_only, codes = factorize(np.concatenate([other_heads, tail_tokens]))
    head_ids = head_items.copy()
    head_ids[head_items < 0] = n_items + codes[: len(other_heads)]
    tail_ids = n_items + codes[len(other_heads) :]
    return head_ids, tail_ids, kg_only


def _map_linked_entities(
    raw: RawData,
    item_tokens: np.ndarray,
    heads: np.ndarray,
    tails: np.ndarray,
    entity_tokens: np.ndarray,
    report: dict,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atomic files: ``.link`` maps an item token to an entity token of ``.kg``."""
    assert raw.link is not None
    link_items, link_entities = (np.asarray(a).astype(str) for a in raw.link)
    link = pd.DataFrame({"item": link_items, "entity": link_entities}).drop_duplicates()
    item_index = pd.Index(item_tokens)
    link["item_id"] = item_index.get_indexer(link["item"])
    unknown_item = link["item_id"] < 0
    report["link_rows_for_items_without_interactions"] = int(unknown_item.sum())
    link = link[~unknown_item]
    repeated_item = link.duplicated("item_id")
    repeated_entity = link.duplicated("entity") & ~repeated_item
    report["link_rows_dropped_item_already_linked"] = int(repeated_item.sum())
    report["link_rows_dropped_entity_already_linked"] = int(repeated_entity.sum())
    link = link[~(repeated_item | repeated_entity)]

    heads, tails = heads.astype(str), tails.astype(str)
    kg_entities = pd.unique(np.concatenate([heads, tails]))
    report["kg_entities_in_file"] = int(len(kg_entities))
    absent = ~link["entity"].isin(kg_entities)
    report["link_entities_absent_from_kg"] = int(absent.sum())
    if absent.any():
        example = link["entity"][absent].iloc[0]
        warnings.append(
            f"{int(absent.sum())} entities of the .link file do not occur in the .kg file "
            f"(e.g. {example!r}); their items get no triples"
        )
    entity_tokens[link["item_id"].to_numpy()] = link["entity"].to_numpy()
    linked = pd.Index(link["entity"].to_numpy())
    kg_only_tokens, _ = factorize(kg_entities[~pd.Index(kg_entities).isin(linked)])
    lookup = pd.Series(
        np.concatenate(
            [link["item_id"].to_numpy(), len(item_tokens) + np.arange(len(kg_only_tokens))]
        ),
        index=np.concatenate([link["entity"].to_numpy(), kg_only_tokens]),
    )
    head_ids = lookup.reindex(heads).to_numpy(dtype=np.int64)
    tail_ids = lookup.reindex(tails).to_numpy(dtype=np.int64)
    return head_ids, tail_ids, kg_only_tokens
