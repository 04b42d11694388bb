"""KGAT's collaborative knowledge graph (CKG): users and entities in one graph, built once.

Nodes: the U users first, then the E entities (node ``U + e`` is entity ``e``; items are the
first entities). Relations (RecBole 1.2.1's ``KnowledgeBasedDataset`` with its [PAD] row
removed, so RecBole's relation id is ours + 1):

* ``0 .. R-1`` — the graph's KG relations (with the run's ``kg_reverse_r: true``, as in
  RecBole, the data layer has already added each triple's inverse ``(t, r + R/2, h)``);
* ``R`` — the interaction relation ([UI-Relation]): each training interaction ``(u, i)`` gives
  two edges, ``u -> i`` and ``i -> u``.

Edges ``(h, r, t)`` are kept as given (RecBole's ``ckg_graph``: a repeated interaction or triple
is a repeated edge). The propagation matrix ``A`` has one entry per distinct ``(h, t)`` *cell*:
RecBole builds it as a sparse tensor, which sums the entries of edges that share a cell (two
relations between the same nodes, a repeated edge). Two values of ``A`` are built from this:

* :meth:`CollaborativeKG.initial_values` — RecBole's ``init_graph``: the per-relation
  row-normalised adjacencies summed, ``A0[h, t] = sum_{edges (h, r, t)} 1 / deg_r(h)`` with
  ``deg_r(h)`` the number of edges of relation ``r`` leaving ``h``;
* the attention of :mod:`~simkgcl.models.kgat` sums its edges' logits per cell before the
  softmax over each row's cells (``torch.sparse.softmax`` coalesces first).

The KG triples (never the interaction edges, as RecBole's KG
loader reads ``kg_feat`` only) are also what KGAT's TransR steps train on:
:meth:`CollaborativeKG.kg_batches` draws one epoch of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.models.kg_index import sorted_contains
from simkgcl.models.ops import RelationGroups, SparsePattern

KGBatch = tuple[Tensor, Tensor, Tensor, Tensor]
"""(heads, relations, true tails, corrupted tails): entity and relation ids, on the CPU."""


class CollaborativeKG(nn.Module):
    """The CKG's cells (the pattern of ``A``), its edges grouped by relation, and the KG
    triples of the TransR steps; index tensors are non-persistent buffers."""

    edge_cells: Tensor  # cell of each edge (edges: UI u->i, UI i->u, then the KG triples)
    cell_rows: Tensor  # head node of each cell (its softmax segment)
    triple_heads: Tensor
    triple_relations: Tensor
    triple_tails: Tensor
    head_tail_keys: Tensor  # sorted h * E + t of every KG triple (negative sampling)

    def __init__(self, graph: GraphData):
        super().__init__()
        graph = graph.to("cpu")
        n_users, n_entities, n_relations = graph.n_users, graph.n_entities, graph.n_relations
        if n_entities < graph.n_items:
            raise ConfigError(f"n_entities ({n_entities}) < n_items ({graph.n_items}): "
                              "item i must be entity i")
        heads, rels, tails = graph.kg_heads.long(), graph.kg_relations.long(), graph.kg_tails.long()
        self.n_users, self.n_entities = n_users, n_entities
        self.n_nodes = n_users + n_entities
        self.ui_relation = n_relations
        self.n_relation_rows = self.ui_relation + 1
        self.n_triples = int(heads.numel())

        users, items = graph.train_users.long(), graph.train_items.long()
        ui = torch.full((2 * users.numel(),), self.ui_relation, dtype=torch.long)
        src = torch.cat([users, n_users + items, n_users + heads])
        dst = torch.cat([n_users + items, users, n_users + tails])
        rel = torch.cat([ui, rels])
        self.n_edges = int(src.numel())
        cell_keys, edge_cells = torch.unique(src * self.n_nodes + dst, return_inverse=True)
        self.n_cells = int(cell_keys.numel())
        cell_rows = cell_keys // self.n_nodes
        cell_cols = cell_keys % self.n_nodes
        self.adjacency = SparsePattern(cell_rows, cell_cols, (self.n_nodes, self.n_nodes))
        # the rows that are scored (users, then items: a prefix of the nodes) and their cells,
        # a prefix of the row-sorted cells: the last layer is only needed there
        self.n_scored = n_users + graph.n_items
        self.n_scored_cells = int((cell_rows < self.n_scored).sum())
        k = self.n_scored_cells
        self.scored_adjacency = SparsePattern(cell_rows[:k], cell_cols[:k],
                                              (self.n_scored, self.n_nodes))
        self.groups = RelationGroups(src, rel, dst)
        self.register_buffer("edge_cells", edge_cells, persistent=False)
        self.register_buffer("cell_rows", cell_rows, persistent=False)
        degree = torch.bincount(src * self.n_relation_rows + rel)
        self._initial = torch.zeros(self.n_cells, dtype=torch.float64).index_add_(
            0, edge_cells, degree[src * self.n_relation_rows + rel].double().reciprocal())

        self.register_buffer("triple_heads", heads, persistent=False)
        self.register_buffer("triple_relations", rels, persistent=False)
        self.register_buffer("triple_tails", tails, persistent=False)
        self.register_buffer("head_tail_keys", torch.sort(heads * n_entities + tails).values,
                             persistent=False)

    def initial_values(self) -> Tensor:
        """``A0`` of the module docstring, one float64 value per cell (RecBole's ``init_graph``)."""
        return self._initial.clone()

    def grouped_cells(self) -> Tensor:
        """The cell of each edge in :class:`~simkgcl.models.ops.RelationGroups` order."""
        return self.edge_cells.index_select(0, self.groups.edge_order)

    def kg_batches(self, batch_size: int, generator: torch.Generator,
                   max_rounds: int = 10_000) -> list[KGBatch]:
        """One epoch of TransR batches (RecBole's ``KGSeqDataLoader`` with its ``KGSampler``).

        Every KG triple once, in a random order, ``batch_size`` at a time (the last batch
        partial); each with a corrupted tail drawn uniformly among the entities and redrawn
        while it is a tail of the same head under any relation. Drawn from ``generator`` on
        the CPU.
        """
        n = self.n_triples
        if n == 0:
            return []
        order = torch.randperm(n, generator=generator)
        heads = self.triple_heads.cpu()[order]
        relations = self.triple_relations.cpu()[order]
        pos_tails = self.triple_tails.cpu()[order]
        neg_tails = torch.empty_like(pos_tails)
        known = self.head_tail_keys.cpu()
        todo = torch.arange(n)
        for _ in range(max_rounds):
            neg_tails[todo] = torch.randint(self.n_entities, (todo.numel(),), generator=generator)
            todo = todo[sorted_contains(known, heads[todo] * self.n_entities + neg_tails[todo])]
            if todo.numel() == 0:
                break
        else:
            raise ValueError("TransR sampling: some head has every entity as a tail")
        return [(heads[k : k + batch_size], relations[k : k + batch_size],
                 pos_tails[k : k + batch_size], neg_tails[k : k + batch_size])
                for k in range(0, n, batch_size)]
