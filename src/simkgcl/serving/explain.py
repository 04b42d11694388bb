"""Why this item? Knowledge-graph paths between a recommended item and the user's history.

For a recommended item ``r`` and the user's training items ``H`` (the artifact's seen index; for
a folded-in user, the items given), an explanation lists paths in the KG, in the dataset's own
tokens, from ``r`` to some ``h`` in ``H``:

* 0 entities between: a triple links ``r`` and ``h`` directly (KGAT-style KGs, where items are
  entities, hold item-item triples);
* 1 entity: ``r — rel → e ← rel' — h`` (both items link to ``e``: the issue's "1-hop");
* 2 entities: ``r — rel → e1 — rel'' → e2 ← rel' — h`` (``e1`` and ``e2`` linked: "2-hop").

Triples are followed in both directions; every edge says which way its triple points
(``forward``: the triple is (left node, relation, right node)). Intermediate nodes are never
``r`` or ``h`` themselves, and a path visits no node twice. Paths through the same nodes by
other relations (a KG with inverse relations holds every path twice) are shown once, with the
relations of the lowest ids: the explanation lists distinct evidence, not relation variants.

**Ranking.** Paths are ranked by the *relevance of their history item*: the cosine between
``h``'s and ``r``'s embeddings in the model's scoring space (the artifact's item rows), then by
fewer entities, then by the order of the KG's ids. Why this one: the score is ``u . r``, and
every model here builds ``u`` from the user's items (exactly so for the propagation models, see
:mod:`simkgcl.serving.foldin`), so a history item whose row points where ``r``'s does is one
the score leans on; the KG path says what the two items share. Cosine rather than the dot
product, so that popular items with long rows do not explain everything. This ranks the
evidence; it does not claim that the model's score came through the KG (for models without a
KG, such as LightGCN, it cannot have).

At most ``max_paths`` paths come back (history items are visited best first, and the search
stops once that many are found). No path within two entities: ``explained`` is false and
``note`` says so. Cost per explanation: the neighbours of ``r`` and of their neighbours (one
vectorised gather), then the neighbours of each history item visited.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from simkgcl.artifact import Artifact


class Ranked(Protocol):
    """A ranked item (:class:`simkgcl.serving.recommend.ScoredItem`)."""

    def as_dict(self) -> dict[str, Any]: ...

DEFAULT_MAX_PATHS = 3
MAX_EXPLAINED = 1000  # explanations in one HTTP reply (users x k with explain on)


@dataclass(frozen=True)
class KGPath:
    """One path from the recommended item to a history item."""

    history_item: str
    relevance: float
    hops: int  # entities between the two items: 0, 1 or 2
    nodes: list[tuple[str, str]]  # (kind: item | entity, token), recommended item first
    edges: list[tuple[str, bool]]  # (relation token, forward) between consecutive nodes

    def text(self) -> str:
        parts = [_node_text(*self.nodes[0])]
        for (relation, forward), node in zip(self.edges, self.nodes[1:], strict=True):
            parts.append(f"— {relation} →" if forward else f"← {relation} —")
            parts.append(_node_text(*node))
        return " ".join(parts) + " (in your history)"

    def as_dict(self) -> dict[str, object]:
        return {"history_item": self.history_item, "relevance": self.relevance,
                "hops": self.hops,
                "nodes": [{"kind": kind, "token": token} for kind, token in self.nodes],
                "edges": [{"relation": rel, "forward": fwd} for rel, fwd in self.edges],
                "text": self.text()}


@dataclass(frozen=True)
class Explanation:
    item: str
    explained: bool
    paths: list[KGPath]
    note: str | None

    def as_dict(self) -> dict[str, object]:
        return {"item": self.item, "explained": self.explained,
                "paths": [p.as_dict() for p in self.paths], "note": self.note}


def _node_text(kind: str, token: str) -> str:
    return f"{kind} {token}"


class KGExplainer:
    """KG paths for one artifact: an undirected CSR view of its triples, built once."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.n_items = artifact.n_items
        self.has_kg = artifact.kg_triples is not None and artifact.kg_triples.shape[0] > 0
        self._unit = F.normalize(artifact.item_embeddings, dim=1)
        if not self.has_kg:
            return
        assert artifact.kg_triples is not None
        triples = artifact.kg_triples.numpy().astype(np.int64)
        triples = triples[triples[:, 0] != triples[:, 2]]  # a self-loop links nothing
        heads, rels, tails = triples[:, 0], triples[:, 1], triples[:, 2]
        n_nodes = max(len(artifact.entity_tokens), self.n_items)
        source = np.concatenate([heads, tails])
        target = np.concatenate([tails, heads])
        order = np.lexsort((np.concatenate([rels, rels]), target, source))
        self._target = target[order]
        self._relation = np.concatenate([rels, rels])[order]
        self._forward = np.concatenate([np.ones(len(heads), bool),
                                        np.zeros(len(heads), bool)])[order]
        self._indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(source, minlength=n_nodes))]).astype(np.int64)

    # ---- graph access -------------------------------------------------------------------------
    def _edges(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index of the owning node in ``nodes``, edge positions) of every edge of ``nodes``."""
        starts, ends = self._indptr[nodes], self._indptr[nodes + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(nodes)), lengths)
        offsets = np.cumsum(lengths) - lengths
        positions = np.arange(int(lengths.sum())) - offsets[owner] + starts[owner]
        return owner, positions

    def _node(self, node: int) -> tuple[str, str]:
        if node < self.n_items:
            return "item", self.artifact.item_tokens[node]
        return "entity", self.artifact.entity_tokens[node]

    def _path(self, history: int, relevance: float, nodes: list[int],
              edges: list[tuple[int, bool]]) -> KGPath:
        relations = self.artifact.relation_tokens
        return KGPath(history_item=self.artifact.item_tokens[history], relevance=relevance,
                      hops=len(nodes) - 2, nodes=[self._node(n) for n in nodes],
                      edges=[(relations[r], fwd) for r, fwd in edges])

    # ---- search -------------------------------------------------------------------------------
    def explain(self, item: int, history: np.ndarray,
                max_paths: int = DEFAULT_MAX_PATHS) -> Explanation:
        """At most ``max_paths`` KG paths from ``item`` to items of ``history`` (internal ids)."""
        token = self.artifact.item_tokens[item]
        history = np.unique(np.asarray(history, dtype=np.int64))
        history = history[history != item]
        if not self.has_kg:
            return Explanation(token, False, [], "this model's artifact holds no knowledge graph")
        if len(history) == 0:
            return Explanation(token, False, [], "no training items to relate the item to")
        relevance = (self._unit[torch.as_tensor(history)] @ self._unit[item]).numpy()
        order = np.lexsort((history, -relevance))  # best first, ties by id
        first = self._first_ring(item)
        second = self._second_ring(item, first)
        paths: list[KGPath] = []
        for pos in order:
            h = int(history[pos])
            shown: set[tuple[int, ...]] = set()
            for nodes, edges in self._paths_to(item, h, first, second):
                if tuple(nodes) in shown:  # the same nodes through other relations
                    continue
                shown.add(tuple(nodes))
                paths.append(self._path(h, float(relevance[pos]), nodes, edges))
                if len(paths) >= max_paths:
                    break
            if len(paths) >= max_paths:
                break
        if not paths:
            return Explanation(token, False, [], f"no KG link within two entities between "
                                                 f"item {token} and the {len(history)} "
                                                 "history items")
        return Explanation(token, True, paths, None)

    def _first_ring(self, item: int) -> dict[str, np.ndarray]:
        """Edges ``item — e1``."""
        _, pos = self._edges(np.asarray([item]))
        return {"node": self._target[pos], "rel": self._relation[pos], "fwd": self._forward[pos]}

    def _second_ring(self, item: int, first: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Edges ``e1 — e2`` from the first ring, sorted by ``e2`` (never back to ``item``)."""
        owner, pos = self._edges(first["node"])
        ring = {"e1": first["node"][owner], "rel1": first["rel"][owner],
                "fwd1": first["fwd"][owner], "e2": self._target[pos],
                "rel2": self._relation[pos], "fwd2": self._forward[pos]}
        keep = (ring["e2"] != item) & (ring["e2"] != ring["e1"])
        order = np.argsort(ring["e2"][keep], kind="stable")
        return {key: value[keep][order] for key, value in ring.items()}

    def _paths_to(self, item: int, h: int, first: dict[str, np.ndarray],
                  second: dict[str, np.ndarray]) -> Iterator[tuple[list[int], list]]:
        """Paths ``item .. h`` with 0, 1 then 2 entities between, lazily (the caller stops)."""
        for j in np.flatnonzero(first["node"] == h):  # direct triples
            yield [item, h], [(int(first["rel"][j]), bool(first["fwd"][j]))]
        _, pos = self._edges(np.asarray([h]))
        h_nodes, h_rels, h_fwd = self._target[pos], self._relation[pos], self._forward[pos]
        ends = [k for k in range(len(h_nodes)) if h_nodes[k] != item]
        for k in ends:  # h — e; the path walks e -> h: the edge reversed
            e = int(h_nodes[k])
            for j in np.flatnonzero(first["node"] == e):
                yield [item, e, h], [(int(first["rel"][j]), bool(first["fwd"][j])),
                                     (int(h_rels[k]), not bool(h_fwd[k]))]
        for k in ends:
            e2 = int(h_nodes[k])
            lo, hi = np.searchsorted(second["e2"], [e2, e2 + 1])
            for j in range(lo, hi):
                e1 = int(second["e1"][j])
                if e1 != h:
                    yield [item, e1, e2, h], [(int(second["rel1"][j]), bool(second["fwd1"][j])),
                                              (int(second["rel2"][j]), bool(second["fwd2"][j])),
                                              (int(h_rels[k]), not bool(h_fwd[k]))]


def explained_items(explainer: KGExplainer, history: np.ndarray, scored: Sequence[Ranked],
                    item_ids: Sequence[int], max_paths: int = DEFAULT_MAX_PATHS
                    ) -> list[dict[str, object]]:
    """Ranked items as dicts, each with its ``explanation`` (``item_ids``: their internal ids)."""
    return [{**s.as_dict(), "explanation": explainer.explain(i, history, max_paths).as_dict()}
            for s, i in zip(scored, item_ids, strict=True)]
