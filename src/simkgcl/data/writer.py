"""Write a :class:`KnowledgeDataset` as RecBole atomic files (``simkgcl data convert``).

The files read back into the same ids, interactions, triples and fixed split: the reader numbers
tokens in natural order and keeps file order, and this writer keeps the dataset's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simkgcl.data.dataset import Interactions, KnowledgeDataset
from simkgcl.errors import InputError


def _check_tokens(tokens: np.ndarray, what: str) -> None:
    for token in tokens:
        if not token or "\t" in token or "\n" in token or "\r" in token:
            raise InputError(f"{what} token {token!r} cannot be written to a tab-separated file")


def _write_table(path: Path, header: list[str], columns: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(header) + "\n")
        for row in zip(*columns, strict=True):
            handle.write("\t".join(row) + "\n")


def _write_interactions(path: Path, ds: KnowledgeDataset, data: Interactions) -> None:
    header = ["user_id:token", "item_id:token"]
    columns = [list(ds.user_tokens[data.users]), list(ds.item_tokens[data.items])]
    if ds.interactions.ratings is not None and data.ratings is not None:
        header.append("rating:float")
        columns.append([repr(float(v)) for v in data.ratings])
    if ds.interactions.timestamps is not None and data.timestamps is not None:
        header.append("timestamp:float")
        columns.append([repr(float(v)) for v in data.timestamps])
    _write_table(path, header, columns)


def write_atomic(ds: KnowledgeDataset, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.inter``, ``.kg``, ``.link`` (and benchmark files for a fixed split)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_tokens(ds.user_tokens, "user")
    _check_tokens(ds.item_tokens, "item")
    written: list[Path] = []
    path = out / f"{ds.name}.inter"
    _write_interactions(path, ds, ds.interactions)
    written.append(path)
    split = ds.fixed_split
    if split is not None:
        parts = [("train", split.train)]
        if len(split.valid) and not split.notes.get("valid_is_test"):
            parts.append(("valid", split.valid))
        parts.append(("test", split.test))
        for part, data in parts:
            path = out / f"{ds.name}.{part}.inter"
            _write_interactions(path, ds, data)
            written.append(path)
    if ds.n_triples:
        triples = ds.triples
        relation_tokens = ds.relation_tokens
        if ds.inverse_relations:
            n_base = ds.n_relations // 2
            triples = triples[triples[:, 1] < n_base]
            relation_tokens = relation_tokens[:n_base]
        entity_tokens = ds.entity_tokens
        _check_tokens(np.unique(entity_tokens[np.unique(triples[:, [0, 2]])]), "entity")
        _check_tokens(relation_tokens, "relation")
        path = out / f"{ds.name}.kg"
        _write_table(
            path,
            ["head_id:token", "relation_id:token", "tail_id:token"],
            [
                list(entity_tokens[triples[:, 0]]),
                list(relation_tokens[triples[:, 1]]),
                list(entity_tokens[triples[:, 2]]),
            ],
        )
        written.append(path)
        linked = np.flatnonzero(entity_tokens[: ds.n_items] != "")
        path = out / f"{ds.name}.link"
        _write_table(
            path,
            ["item_id:token", "entity_id:token"],
            [list(ds.item_tokens[linked]), list(entity_tokens[linked])],
        )
        written.append(path)
    return written
