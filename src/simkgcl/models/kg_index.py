"""The fixed KG structures of a ``[users; entities]`` node table, built once per model.

Node tables hold the users first, then entity rows (items are the first entities: entity i is
item i), so every per-row step (dropout, L2 norm, fusion, layer sums) is one operation.

Only *active* entities (items and triple heads) can be non-zero after a KG step: any other
entity has no triples, so its aggregated row is zero. Two table layouts follow:

* ``layer0``: the full entity table, active entities first (in id order, so items first), then
  the inactive ones (``layer0_order`` maps rows to entity ids; None when it is the identity);
* ``slots``: every later table, ``n_slots`` rows = the active entities and one trailing slot
  that is always zero and stands for every inactive entity (7,022 of 34,712 entity rows on
  ml-100k: about 2x faster). A triple whose tail is inactive keeps its place in the softmax
  (its logit is 0) and sends a zero message, exactly as in the full table.

Triples are sorted by (head, relation, tail) and grouped into distinct (head, relation) pairs,
the rows of the gather product ``G`` of
:mod:`~simkgcl.models.ops.relational_aggregation`; ``H`` (``aggregate``) sums the pairs of each
head into ``[users; slots]``. The user rows of ``G`` hold the interactions (their values are
the model's normalised weights, given per call).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.models.ops.relation_attention import TripleFactors
from simkgcl.models.ops.sparse import SparsePattern


class KGLayout(nn.Module):
    """The KG step's structures for one node-table layout (``layer0`` or ``slots``).

    ``gather``: ``G`` (rows ``[users; pairs]``, columns: table rows; its first ``n_users`` rows
    are the constant interaction weights); ``factors``: the attention-logit index
    (:class:`~simkgcl.models.ops.relation_attention.TripleFactors`) of this table.
    """

    def __init__(self, gather: SparsePattern, factors: TripleFactors):
        super().__init__()
        self.gather = gather
        self.factors = factors


class KGIndex(nn.Module):
    """Sorted triples, (head, relation) pairs, slots and the sparse patterns over them.

    ``users``, ``items``: the distinct interactions sorted by user then item (from
    :func:`~simkgcl.models.ops.adjacency.unique_interactions`); the model's per-call values of
    ``G``'s user rows follow this order. ``n_relation_rows``: rows of the model's relation table
    (at least ``graph.n_relations``). All tensors are non-persistent buffers: ``.to(device)``
    on the owning model moves them and checkpoints do not store them.
    """

    active_entities: Tensor  # entity id of each slot but the last (the zero slot)
    layer0_order: Tensor | None  # entity id of each layer-0 entity row; None: identity
    triple_head_slots: Tensor  # slot of each sorted triple's head (its softmax segment)
    pair_rels: Tensor  # relation of each (head, relation) pair
    aggregate_values: Tensor  # ones: the entries of H

    def __init__(self, graph: GraphData, users: Tensor, items: Tensor, n_relation_rows: int):
        super().__init__()
        graph = graph.to("cpu")  # built once on the host; .to(device) moves the buffers
        n_users, n_items, n_entities = graph.n_users, graph.n_items, graph.n_entities
        if n_entities < n_items:
            raise ConfigError(
                f"n_entities ({n_entities}) < n_items ({n_items}): item i must be entity i"
            )
        if n_relation_rows < graph.n_relations:
            raise ValueError(f"{n_relation_rows} relation rows < {graph.n_relations} relations")
        heads, rels, tails = graph.kg_heads.long(), graph.kg_relations.long(), graph.kg_tails.long()
        if heads.numel() and (
            int(torch.cat([heads, tails]).min()) < 0
            or int(torch.cat([heads, tails]).max()) >= n_entities
            or int(rels.min()) < 0
            or int(rels.max()) >= graph.n_relations
        ):
            raise ConfigError("KG triple ids out of range for n_entities / n_relations")
        order = torch.argsort((heads * n_relation_rows + rels) * n_entities + tails)
        heads, rels, tails = heads[order], rels[order], tails[order]
        self.n_users, self.n_items, self.n_entities = n_users, n_items, n_entities
        self.n_relation_rows = int(n_relation_rows)
        self.n_triples = int(heads.numel())

        active = torch.unique(torch.cat([torch.arange(n_items), heads]))
        n_active = int(active.numel())
        self.n_slots = n_active + 1  # + the zero slot
        slot_of = torch.full((n_entities,), n_active, dtype=torch.long)
        slot_of[active] = torch.arange(n_active)
        is_inactive = torch.ones(n_entities, dtype=torch.bool)
        is_inactive[active] = False
        layer0_order = torch.cat([active, torch.nonzero(is_inactive).flatten()])
        position0 = torch.empty(n_entities, dtype=torch.long)  # row in the layer-0 entity table
        position0[layer0_order] = torch.arange(n_entities)
        head_slots = slot_of[heads]  # == position0[heads]: active entities come first

        pair_keys, pair_of_triple = torch.unique_consecutive(
            head_slots * n_relation_rows + rels, return_inverse=True
        )
        self.n_pairs = int(pair_keys.numel())
        # G's rows: users (interactions), then pairs (triples); H: [users; slots] <- [users; pairs]
        gather_rows = torch.cat([users, n_users + pair_of_triple])
        self.layer0 = self._layout(
            gather_rows, items, head_slots, position0[tails], rels, n_entities
        )
        self.slots = self._layout(
            gather_rows, items, head_slots, slot_of[tails], rels, self.n_slots
        )
        self.aggregate = SparsePattern(
            torch.cat([torch.arange(n_users), n_users + pair_keys // n_relation_rows]),
            torch.arange(n_users + self.n_pairs),
            (n_users + self.n_slots, n_users + self.n_pairs),
        )
        identity_order = bool(torch.equal(layer0_order, torch.arange(n_entities)))
        self.register_buffer("active_entities", active, persistent=False)
        self.register_buffer(
            "layer0_order", None if identity_order else layer0_order, persistent=False
        )
        self.register_buffer("triple_head_slots", head_slots, persistent=False)
        self.register_buffer("pair_rels", pair_keys % n_relation_rows, persistent=False)
        self.register_buffer(
            "aggregate_values", torch.ones(n_users + self.n_pairs), persistent=False
        )

    def _layout(
        self,
        gather_rows: Tensor,
        items: Tensor,
        head_rows: Tensor,
        tail_rows: Tensor,
        rels: Tensor,
        n_entity_rows: int,
    ) -> KGLayout:
        """``G`` and the logit factors for a table of ``n_users + n_entity_rows`` rows.

        ``gather_rows``: ``G``'s row of every entry (the interactions' users, then each triple's
        pair); ``items``: the interactions' items; ``*_rows``: table rows of the entity part.
        """
        n_users = self.n_users
        gather = SparsePattern(
            gather_rows,
            torch.cat([n_users + items, n_users + tail_rows]),
            (n_users + self.n_pairs, n_users + n_entity_rows),
            fixed_rows=n_users,
        )
        factors = TripleFactors(
            head_rows, tail_rows, rels, n_entity_rows, self.n_relation_rows, row_offset=n_users
        )
        return KGLayout(gather, factors)

    def entity_gather(self) -> SparsePattern:
        """``G`` of layer 0 over the entity table itself: its columns are entity ids (no user
        rows in the table, no layer-0 order). For a model that reads its layer-0 entity rows
        straight from its entity table, so that no layer-0 node table is built or reordered."""
        gather = self.layer0.gather
        cols = gather.col.long() - self.n_users
        if self.layer0_order is not None:
            cols = self.layer0_order.index_select(0, cols)
        return SparsePattern(gather.rows(), cols, (gather.shape[0], self.n_entities))

    def layer0_entities(self, entity_table: Tensor) -> Tensor:
        """An entity table (rows = entity ids) in layer-0 order (active entities first)."""
        if self.layer0_order is None:
            return entity_table
        return entity_table.index_select(0, self.layer0_order)
