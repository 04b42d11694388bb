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

:class:`ItemTriples` is the other view of the same triples that KGCL reads: the item-headed
triples in the file's order, as a fixed-width neighbour table per item and as per-head triple
lists from which its TransE batches are drawn (with a given generator).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.models.ops.relation_attention import TripleFactors, attention_logits
from simkgcl.models.ops.relational_aggregation import relational_aggregate, user_relation_scale
from simkgcl.models.ops.segment import segment_softmax
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
    entity_table_rows: Tensor  # row of each entity id in a [users; slots] table

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
        self.register_buffer("entity_table_rows", n_users + slot_of, persistent=False)

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

    def entity_rows(self, table: Tensor) -> Tensor:
        """The ``E`` entity rows, by entity id, of a ``[users; slots]`` table (an inactive
        entity reads the zero slot)."""
        return table.index_select(0, self.entity_table_rows)

    def attentive_hop(
        self,
        table: Tensor,
        relations: Tensor,
        pair_relations: Tensor,
        ui_values: Tensor,
        keep: Tensor | None,
        layer0: bool,
        user_softmax: bool = True,
    ) -> Tensor:
        """One relation-attentive hop (SimKGCL's KG step, MCCLK's ``Aggregator``): new
        ``[users; slots]`` rows, before dropout and normalisation.

        Per head: the mean over its kept triples (``keep``; all when None) of
        ``softmax_h(z) * (e_t * w_r)`` with ``z = |e_h * w_r|^2 |e_t * w_r|^2`` (zero without
        triples); per user: ``u' = (sum_i v_ui e_i) * (1 + softmax(u W^T) W)`` with the
        interaction weights ``ui_values``. ``table``: ``[users; layer-0 entities]`` (``layer0``)
        or ``[users; slots]``; ``pair_relations``: ``relations.detach()[pair_rels]``.
        """
        layout = self.layer0 if layer0 else self.slots
        logits = attention_logits(table, relations, layout.factors)
        weights = segment_softmax(logits, self.triple_head_slots, self.n_slots, keep, mean=True)
        values = torch.cat([ui_values.to(weights.dtype), weights])
        gathered = layout.gather.matmul(values, table)  # [users; pairs]
        user_scale = user_relation_scale(table[: self.n_users], relations, user_softmax)
        return relational_aggregate(gathered, user_scale, relations, pair_relations,
                                    self.pair_rels, self.aggregate, self.aggregate_values)

    def layer0_entities(self, entity_table: Tensor) -> Tensor:
        """An entity table (rows = entity ids) in layer-0 order (active entities first)."""
        if self.layer0_order is None:
            return entity_table
        return entity_table.index_select(0, self.layer0_order)


# ---------------------------------------------------------------------------------------------
# Item-headed triples in the file's order (KGCL's ``kg_dict``): a fixed-width neighbour table
# for its attention encoder and per-head triple lists for its TransE batches.


def sorted_contains(known: Tensor, keys: Tensor) -> Tensor:
    """Whether each of ``keys`` is in ``known`` (sorted, same device)."""
    if known.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    where = torch.searchsorted(known, keys).clamp_max_(known.numel() - 1)
    return known[where] == keys


def first_occurrences(graph: GraphData) -> Tensor:
    """Indices of the graph's distinct triples (first occurrence of each), in file order."""
    heads, rels, tails = graph.kg_heads.long(), graph.kg_relations.long(), graph.kg_tails.long()
    keys = (heads * graph.n_relations + rels) * graph.n_entities + tails
    unique, inverse = torch.unique(keys, return_inverse=True)
    positions = torch.arange(keys.numel())
    first = torch.full((unique.numel(),), keys.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, positions, "amin")
    return torch.sort(first).values


class ItemTriples(nn.Module):
    """The distinct triples whose head is an item, grouped by head in file order.

    * ``neighbour_tails``, ``neighbour_relations``, ``neighbour_valid`` (``n_items x width``):
      each item's first ``width`` triples in the file's order (KGCL's ``get_kg_dict``: no
      sampling, a truncation); unused slots hold tail ``pad_entity``, relation 0 and False.
    * ``heads``: the item heads in order of first appearance; their triples are
      ``triple_relations/triple_tails[starts[k] : starts[k] + counts[k]]`` (for TransE batches);
      ``triple_keys``: every kept triple's ``(h * R + r) * E + t``, sorted (membership tests).

    Triples whose head is not an item are not used (``n_other_head_triples`` counts them).
    Buffers move with ``.to(device)`` and are not saved in checkpoints.
    """

    neighbour_tails: Tensor
    neighbour_relations: Tensor
    neighbour_valid: Tensor
    heads: Tensor
    starts: Tensor
    counts: Tensor
    triple_relations: Tensor
    triple_tails: Tensor
    triple_keys: Tensor

    def __init__(self, graph: GraphData, width: int, pad_entity: int):
        super().__init__()
        graph = graph.to("cpu")
        n_items, n_relations, n_entities = graph.n_items, graph.n_relations, graph.n_entities
        order = first_occurrences(graph)
        heads = graph.kg_heads.long()[order]
        rels = graph.kg_relations.long()[order]
        tails = graph.kg_tails.long()[order]
        on_items = heads < n_items
        self.n_other_head_triples = int((~on_items).sum())
        heads, rels, tails = heads[on_items], rels[on_items], tails[on_items]
        by_head = torch.sort(heads, stable=True).indices  # file order kept within a head
        heads, rels, tails = heads[by_head], rels[by_head], tails[by_head]
        counts = torch.bincount(heads, minlength=n_items)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(heads.numel()) - starts[heads]
        slot = rank < width
        self.width, self.pad_entity = int(width), int(pad_entity)
        neighbour_tails = torch.full((n_items, width), int(pad_entity), dtype=torch.long)
        neighbour_relations = torch.zeros((n_items, width), dtype=torch.long)
        neighbour_valid = torch.zeros((n_items, width), dtype=torch.bool)
        neighbour_tails[heads[slot], rank[slot]] = tails[slot]
        neighbour_relations[heads[slot], rank[slot]] = rels[slot]
        neighbour_valid[heads[slot], rank[slot]] = True
        self.register_buffer("neighbour_tails", neighbour_tails, persistent=False)
        self.register_buffer("neighbour_relations", neighbour_relations, persistent=False)
        self.register_buffer("neighbour_valid", neighbour_valid, persistent=False)

        first_seen = torch.full((n_items,), heads.numel(), dtype=torch.long)
        first_seen = first_seen.scatter_reduce(0, heads, by_head, "amin")
        head_order = torch.argsort(first_seen[counts > 0], stable=True)
        ordered_heads = torch.nonzero(counts > 0).flatten()[head_order]
        self.register_buffer("heads", ordered_heads, persistent=False)
        self.register_buffer("starts", starts[ordered_heads], persistent=False)
        self.register_buffer("counts", counts[ordered_heads], persistent=False)
        self.register_buffer("triple_relations", rels, persistent=False)
        self.register_buffer("triple_tails", tails, persistent=False)
        keys = (heads * n_relations + rels) * n_entities + tails
        self.register_buffer("triple_keys", torch.sort(keys).values, persistent=False)
        self.n_relations, self.n_entities = n_relations, n_entities

    def _random_triples(self, head_positions: Tensor, generator: torch.Generator) -> Tensor:
        """One triple (an index into ``triple_*``) per head position, uniformly among its own."""
        u = torch.rand(head_positions.numel(), generator=generator, dtype=torch.float64)
        counts = self.counts.cpu()[head_positions]
        pick = (u * counts).long().clamp_max_(counts - 1)
        return self.starts.cpu()[head_positions] + pick

    def is_triple(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Whether each ``(h, r, t)`` is one of the kept triples (on the CPU)."""
        keys = (heads * self.n_relations + relations) * self.n_entities + tails
        return sorted_contains(self.triple_keys.cpu(), keys)

    def transe_batches(
        self, batch_size: int, generator: torch.Generator, max_rounds: int = 10_000
    ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """One epoch of KGCL's TransE batches (its ``KGDataset`` through an unshuffled loader).

        The heads in order, ``batch_size`` at a time, the last partial batch dropped
        (``drop_last``) unless there is no full batch (then one batch of every head); per head,
        a true ``(r, t+)`` uniformly among its triples and a corrupted ``t-``: the tail of a
        uniform triple of a uniform head, redrawn while ``(h, r, t-)`` is a triple. On the CPU.
        """
        n_heads = int(self.heads.numel())
        if n_heads == 0:
            return []
        n_batches = max(n_heads // batch_size, 1)
        used = n_heads if n_heads < batch_size else n_batches * batch_size
        positions = torch.arange(used)
        heads = self.heads.cpu()[positions]
        chosen = self._random_triples(positions, generator)
        relations = self.triple_relations.cpu()[chosen]
        pos_tails = self.triple_tails.cpu()[chosen]
        neg_tails = torch.empty_like(pos_tails)
        todo = torch.arange(used)
        for _ in range(max_rounds):
            other = torch.randint(n_heads, (todo.numel(),), generator=generator)
            neg_tails[todo] = self.triple_tails.cpu()[self._random_triples(other, generator)]
            todo = todo[self.is_triple(heads[todo], relations[todo], neg_tails[todo])]
            if todo.numel() == 0:
                break
        else:
            raise ValueError("TransE sampling: no corrupted tail found for some heads")
        size = used if n_heads < batch_size else batch_size
        return [tuple(t[k : k + size] for t in (heads, relations, pos_tails, neg_tails))
                for k in range(0, used, size)]
