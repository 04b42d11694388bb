"""The figures a researcher checks first about a dataset (``simkgcl data stats``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from simkgcl.data.dataset import KnowledgeDataset, Split


def dataset_stats(ds: KnowledgeDataset, split: Split | None = None) -> dict[str, Any]:
    """Counts, densities, KG coverage, what was dropped and (optionally) the split sizes."""
    n_inter = len(ds.interactions)
    n_users, n_items = ds.n_users, ds.n_items
    linked = int(ds.item_linked.sum())
    stats: dict[str, Any] = {
        "name": ds.name,
        "layout": ds.layout,
        "files": list(ds.files),
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "avg_interactions_per_user": n_inter / n_users if n_users else 0.0,
        "avg_interactions_per_item": n_inter / n_items if n_items else 0.0,
        "sparsity": 1.0 - n_inter / (n_users * n_items) if n_users and n_items else 1.0,
        "has_rating": ds.interactions.ratings is not None,
        "has_timestamp": ds.interactions.timestamps is not None,
        "entities": ds.n_entities,
        "kg_only_entities": ds.n_entities - n_items,
        "kg_entities_in_file": int(ds.report.get("kg_entities_in_file", 0)),
        "relations": ds.n_relations,
        "triples": ds.n_triples,
        "inverse_relations": ds.inverse_relations,
        "linked_items": linked,
        "linked_items_share": linked / n_items if n_items else 0.0,
        "interactions_on_linked_items": int(ds.item_linked[ds.interactions.items].sum()),
        "dropped": {k: int(v) for k, v in ds.report.items() if _is_drop(k) and v},
        "warnings": list(ds.warnings),
        "fixed_split": ds.fixed_split is not None,
    }
    if split is not None:
        stats["split"] = {
            "train": len(split.train),
            "valid": len(split.valid),
            "test": len(split.test),
            "test_users": int(len(np.unique(split.test.users))),
            "notes": dict(split.notes),
        }
    return stats


def _is_drop(key: str) -> bool:
    return any(word in key for word in ("dropped", "removed", "without", "absent", "not_items"))


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable block for the terminal."""
    lines = [
        f"dataset            {stats['name']} ({stats['layout']} layout)",
        f"users              {stats['users']:,}",
        f"items              {stats['items']:,}",
        f"interactions       {stats['interactions']:,}"
        + ("  (with rating)" if stats["has_rating"] else "")
        + ("  (with timestamp)" if stats["has_timestamp"] else ""),
        f"avg per user       {stats['avg_interactions_per_user']:.2f}",
        f"avg per item       {stats['avg_interactions_per_item']:.2f}",
        f"sparsity           {100 * stats['sparsity']:.4f}%",
        f"entities           {stats['entities']:,}  (items {stats['items']:,} + KG-only "
        f"{stats['kg_only_entities']:,}; distinct entities in the KG file "
        f"{stats['kg_entities_in_file']:,})",
        f"relations          {stats['relations']:,}"
        + ("  (incl. inverse relations)" if stats["inverse_relations"] else ""),
        f"triples            {stats['triples']:,}",
        f"linked items       {stats['linked_items']:,}  ({100 * stats['linked_items_share']:.1f}% "
        f"of items; {stats['interactions_on_linked_items']:,} interactions on them)",
    ]
    dropped = stats["dropped"]
    if dropped:
        lines.append(
            "dropped / removed  "
            + "; ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in dropped.items())
        )
    else:
        lines.append("dropped / removed  nothing")
    split = stats.get("split")
    if split is not None:
        lines.append(
            f"split              train {split['train']:,} / valid {split['valid']:,} / "
            f"test {split['test']:,}  ({split['notes'].get('method', '')})"
        )
        extra = {k: v for k, v in split["notes"].items() if k != "method" and v}
        if extra:
            lines.append(
                "split notes        "
                + "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in extra.items())
            )
    for warning in stats["warnings"]:
        lines.append(f"warning            {warning}")
    return "\n".join(lines)
