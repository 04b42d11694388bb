"""SimKGCL: knowledge-aware graph contrastive recommendation, as the seed computes it.

Notation: U users, I items (= entities 0..I-1), E entities, R relations (the relation table has
R + 1 rows, as in the seed), d = ``embedding_size``.

One layer:

* IG step: ``ig = A x`` on the user-item graph (``A`` = symmetric-normalised bipartite adjacency,
  applied as its two blocks ``UI`` and ``UI.T``).
* KG step (``kg_forward``): per triple (h, r, t) the message ``e_t * w_r`` and the attention
  logit ``(|e_h * w_r| |e_t * w_r|)^2``; softmax over the triples sharing a head, then the mean of
  the weighted messages per head (zero for an entity without triples). Users:
  ``u' = UI e_items``, ``s = softmax(u W^T)`` (``user_rel_softmax``), ``u' = u' + (s W) * u'``.
  When training, a fresh ``1 - kg_drop_rate`` share of triples is kept, entries of ``UI`` are
  dropped with rate ``ig_drop_rate`` (kept ones scaled by ``1/(1 - rate)``), message dropout is
  applied; every user and entity row is then L2-normalised.
* fusion: ``x = kg`` with ``ig`` added to its user and item rows.

``kg_view: fused`` is the seed's in-place behaviour: the next KG step consumes the fused rows and
the KG view (mean of layers 0..L) is the mean of the fused layers plus layer 0. ``kg_view: pure``
is the paper's one-direction fusion: the KG chain never sees the IG signal. The IG view is the
mean of the fused layers 1..L in both modes. Scores are IG-view user . IG-view item.
The default is ``pure``: with the seed's other settings it reaches a much higher validation
NDCG@20 on ml-100k (the fused model peaks at epoch 0 there) and a higher one on lastfm-kg
(BENCHMARKS.md); ``kg_view: fused`` reproduces the seed's code.

Loss terms: ``bpr_reg`` = sum over the batch of ``-log(1e-10 + sigmoid(pos - neg))`` on the IG view
plus ``reg_weight`` x the unsquared Frobenius norms of the batch's layer-0 user, positive and
negative rows; ``cl`` = ``cl_rate`` x (InfoNCE over the batch's unique users + InfoNCE over its
unique positive items) between the IG and KG views (cosine similarity, temperature ``tau``).

Speed (plain PyTorch, CPU first):

* Users and entities live in one node table (users first, then entities; items are the first
  entity rows), so every per-row step (dropout, L2 norm, fusion, layer sums) is one operation.
  After layer 0 the entity part is a compact table of ``slots`` (see ``_build_structures``).
* The attention never expands to ``triples x d``. Since ``|e_h * w_r|^2 =
  (e_h * e_h) . (w_r * w_r)``, one ``rows x (R + 1)`` product gives every logit factor, gathered
  as one scalar per triple; the softmax is a segment operation on those scalars.
* One KG step is three sparse products on fixed structures. ``G`` (rows: users, then (head,
  relation) pairs) gathers ``UI e_items`` for the users and, per pair, the attention-weighted
  tails (entries: weight / head degree; their gradients come from a sampled dense-dense
  product). The rows are scaled (users by ``1 + s W``, a pair by ``w_r``) and ``H`` sums the pair
  rows of each head. The IG step is one symmetric product over the table.
* Dropout is drawn fresh per call on fixed structures: triples with zero weights, ``UI`` entries
  with 16-bit uniform draws (four per 64-bit random word, a quarter of ``torch.rand``'s cost;
  rates are exact to 2^-16), and message dropout without its ``1 / (1 - rate)`` scale, which
  the L2 normalisation right after it cancels.
* The InfoNCE loss is one autograd function: one ``n x n`` buffer, no ``logsumexp`` backward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.keyspec import KeySpec, boolean, choice, float_in, int_in
from simkgcl.models.base import GraphData, Recommender
from simkgcl.models.graph import (
    SparsePattern,
    l2_normalize_rows,
    normalized_user_item_entries,
    segment_softmax,
)

BPR_GAMMA = 1e-10
KG_VIEWS = ("fused", "pure")


class SimKGCL(Recommender):
    """SimKGCL with the seed's defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "simkgcl"
    # The loss does not split over a batch's rows (InfoNCE contrasts the batch's unique users and
    # items with each other; the regulariser is the norm of the whole batch): under DDP every
    # process computes the whole step (simkgcl.training.components).
    loss_reduction: ClassVar[str] = "batch"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_layers": KeySpec(3, int_in(1), "propagation layers L"),
        "reg_weight": KeySpec(1e-4, float_in(0.0), "weight of the L2 term on layer-0 rows"),
        "cl_rate": KeySpec(0.5, float_in(0.0), "weight of the InfoNCE term"),
        "tau": KeySpec(0.2, float_in(0.0, lo_open=True), "InfoNCE temperature"),
        "kg_drop_rate": KeySpec(0.1, float_in(0.0, 1.0, hi_open=True),
                                "share of KG triples dropped per KG step when training"),
        "ig_drop_rate": KeySpec(0.5, float_in(0.0, 1.0, hi_open=True),
                                "share of user-item entries dropped in the KG step's user rows"),
        "mess_drop_rate": KeySpec(0.1, float_in(0.0, 1.0, hi_open=True),
                                  "message dropout on the KG step's output"),
        "kg_view": KeySpec("pure", choice(KG_VIEWS),
                           "fused: the seed's in-place fusion; pure: the paper's KG -> IG fusion"),
        "user_rel_softmax": KeySpec(True, boolean, "users attend over the relation table"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        self.embedding_size = int(cfg["embedding_size"])
        self.n_layers = int(cfg["n_layers"])
        self.reg_weight = float(cfg["reg_weight"])
        self.cl_rate = float(cfg["cl_rate"])
        self.tau = float(cfg["tau"])
        self.kg_drop_rate = float(cfg["kg_drop_rate"])
        self.ig_drop_rate = float(cfg["ig_drop_rate"])
        self.mess_drop_rate = float(cfg["mess_drop_rate"])
        self.kg_view = str(cfg["kg_view"])
        self.user_rel_softmax = bool(cfg["user_rel_softmax"])
        if graph.n_entities < graph.n_items:
            raise ConfigError(
                f"n_entities ({graph.n_entities}) < n_items ({graph.n_items}): item i must be entity i"
            )

        self.n_entities = graph.n_entities
        self.n_relations = graph.n_relations
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.entity_embedding = nn.Embedding(self.n_entities, self.embedding_size)
        self.relation_embedding = nn.Embedding(self.n_relations + 1, self.embedding_size)
        for table in (self.user_embedding, self.entity_embedding, self.relation_embedding):
            nn.init.xavier_uniform_(table.weight)

        self._build_structures(graph)

    def _build_structures(self, graph: GraphData) -> None:
        """Sort triples by (head, relation, tail) and build the reusable sparse structures.

        Node tables: ``[users; entity rows]``. Only *active* entities (items and triple heads)
        can be non-zero after a KG step: any other entity has no triples, so its new row is
        zero. Layer 0 reads the full entity table, ordered active entities first (in id order,
        so items first, as entity i is item i), then the inactive ones; every later table holds
        ``slots``: the active entities and one trailing slot that is always zero and stands for
        every inactive entity. A triple whose tail is inactive keeps its place in the softmax
        (its logit is 0) and sends a zero message, exactly as in the full table.
        """
        graph = graph.to("cpu")  # built once on the host; .to(device) moves the buffers
        n_users, n_items, n_entities = self.n_users, self.n_items, self.n_entities
        n_rel_rows = self.n_relations + 1
        heads, rels, tails = (
            graph.kg_heads.long().cpu(),
            graph.kg_relations.long().cpu(),
            graph.kg_tails.long().cpu(),
        )
        if heads.numel() and (
            int(torch.cat([heads, tails]).min()) < 0
            or int(torch.cat([heads, tails]).max()) >= n_entities
            or int(rels.min()) < 0
            or int(rels.max()) >= self.n_relations
        ):
            raise ConfigError("KG triple ids out of range for n_entities / n_relations")
        order = torch.argsort((heads * n_rel_rows + rels) * n_entities + tails)
        heads, rels, tails = heads[order], rels[order], tails[order]
        self.n_triples = int(heads.numel())

        active = torch.unique(torch.cat([torch.arange(n_items), heads]))
        n_active = int(active.numel())
        self.n_slots = n_slots = n_active + 1  # + the zero slot
        slot_of = torch.full((n_entities,), n_active, dtype=torch.long)
        slot_of[active] = torch.arange(n_active)
        is_inactive = torch.ones(n_entities, dtype=torch.bool)
        is_inactive[active] = False
        layer0_order = torch.cat([active, torch.nonzero(is_inactive).flatten()])
        position0 = torch.empty(n_entities, dtype=torch.long)  # row in the layer-0 entity table
        position0[layer0_order] = torch.arange(n_entities)
        head_slots = slot_of[heads]  # == position0[heads]: active entities come first
        tail_slots, tail_positions0 = slot_of[tails], position0[tails]

        pair_keys, pair_of_triple = torch.unique_consecutive(
            head_slots * n_rel_rows + rels, return_inverse=True
        )
        pair_heads, pair_rels = pair_keys // n_rel_rows, pair_keys % n_rel_rows
        n_pairs = int(pair_keys.numel())

        ui_users, ui_items, ui_values = normalized_user_item_entries(graph)
        n_nodes = n_users + n_slots
        # IG step: the symmetric matrix [[0, UI], [UI.T, 0]] over [users; slots] (item rows only)
        by_item = torch.sort(ui_items, stable=True).indices
        self.ig_step = SparsePattern(
            torch.cat([ui_users, n_users + ui_items[by_item]]),
            torch.cat([n_users + ui_items, ui_users[by_item]]),
            (n_nodes, n_nodes),
        )
        # KG step, gathering: rows = [users; (head, relation) pairs], columns = table rows;
        # user rows hold UI (dropped), pair rows the attention weights / head degree
        gather_rows = torch.cat([ui_users, n_users + pair_of_triple])
        self.gather_layer0 = SparsePattern(
            gather_rows,
            torch.cat([n_users + ui_items, n_users + tail_positions0]),
            (n_users + n_pairs, n_users + n_entities),
            fixed_rows=n_users,
        )
        self.gather_slots = SparsePattern(
            gather_rows,
            torch.cat([n_users + ui_items, n_users + tail_slots]),
            (n_users + n_pairs, n_nodes),
            fixed_rows=n_users,
        )
        # KG step, summing: [users; slots] <- [users; pairs] (identity on users, 1 per pair)
        self.aggregate = SparsePattern(
            torch.cat([torch.arange(n_users), n_users + pair_heads]),
            torch.arange(n_users + n_pairs),
            (n_nodes, n_users + n_pairs),
        )
        # Gradient of the attention logits: (table row, relation) entries of every head and
        # tail factor, rows sorted (``*_order`` maps [head entries; tail entries] to them)
        factor_rels = torch.cat([rels, rels])
        for name, tail_rows, n_rows in (
            ("layer0", tail_positions0, n_users + n_entities),
            ("slots", tail_slots, n_nodes),
        ):
            factor_rows = n_users + torch.cat([head_slots, tail_rows])
            factor_order = torch.sort(factor_rows, stable=True).indices
            pattern = SparsePattern(
                factor_rows[factor_order], factor_rels[factor_order], (n_rows, n_rel_rows)
            )
            setattr(self, f"logit_grad_{name}", pattern)
            self.register_buffer(
                f"logit_grad_order_{name}", factor_order.to(pattern.col.dtype), persistent=False
            )
        # the logit factor table has (R + 1) columns padded to a multiple of 8: GEMMs with an
        # odd width run at two thirds of the speed on CPU
        self.n_factor_cols = n_factor_cols = -(-n_rel_rows // 8) * 8
        identity_order = bool(torch.equal(layer0_order, torch.arange(n_entities)))
        buffers = {
            "ui_values": ui_values,
            "ig_values": torch.cat([ui_values, ui_values[by_item]]),
            "aggregate_values": torch.ones(n_users + n_pairs),
            "active_entities": active,
            "layer0_order": None if identity_order else layer0_order,
            "triple_head_slots": head_slots,
            # flat indices into the (entity rows x (R + 1)) table of squared-norm products
            "head_rel": head_slots * n_factor_cols + rels,
            "tail_rel_layer0": tail_positions0 * n_factor_cols + rels,
            "tail_rel_slots": tail_slots * n_factor_cols + rels,
            "pair_rels": pair_rels,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------ propagation

    def _draw_kg_dropout(self, device: torch.device) -> tuple[Tensor | None, Tensor]:
        """Fresh dropout draws of one KG step: (kept-triple mask or None, dropped UI values)."""
        keep = None
        if self.training and self.kg_drop_rate > 0.0 and self.n_triples > 0:
            n_keep = int(self.n_triples * (1.0 - self.kg_drop_rate))
            chosen = torch.randperm(self.n_triples, device=device)[:n_keep]
            keep = torch.zeros(self.n_triples, dtype=torch.bool, device=device)
            keep.index_fill_(0, chosen, True)
        ui_values = self.ui_values
        if self.training and self.ig_drop_rate > 0.0:
            kept = _keep_mask(ui_values.shape, self.ig_drop_rate, ui_values.dtype, ui_values.device)
            ui_values = kept.mul_(ui_values).mul_(1.0 / (1.0 - self.ig_drop_rate))
        return keep, ui_values

    def _kg_step(
        self, table: Tensor, relation_terms: tuple[Tensor, Tensor], layer0: bool
    ) -> Tensor:
        """The seed's ``kg_forward`` on a node table: new ``[users; slots]`` rows, L2-normalised.

        Per head: mean over its (kept) triples of softmax(att) * e_t * w_r (zero without
        triples); per user: ``u' = UI e_items``, ``u' * (1 + s W)``; then message dropout.
        ``table``: the layer-0 table (``layer0``) or a ``[users; slots]`` table.
        """
        relations, pair_relations = relation_terms
        n_users = self.n_users
        keep, ui_values = self._draw_kg_dropout(table.device)
        with torch.autocast(table.device.type, enabled=False):
            table = table.to(_at_least_float32(table.dtype))
            relations = relations.to(table.dtype)
            suffix = "layer0" if layer0 else "slots"
            logits = _AttentionLogits.apply(
                table,
                relations,
                self,
                getattr(self, f"tail_rel_{suffix}"),
                getattr(self, f"logit_grad_{suffix}"),
                getattr(self, f"logit_grad_order_{suffix}"),
            )
            weights = segment_softmax(logits, self.triple_head_slots, self.n_slots, keep, mean=True)
            gather = self.gather_layer0 if layer0 else self.gather_slots
            values = torch.cat([ui_values.to(weights.dtype), weights])
            gathered = gather.matmul(values, table)  # [users; pairs]

            affinity = table[:n_users] @ relations.t()
            if self.user_rel_softmax:
                affinity = torch.softmax(affinity, dim=-1)
            user_scale = (affinity @ relations).add_(1.0)
            scaled = _ScaleRows.apply(
                gathered, user_scale, relations, pair_relations, self.pair_rels
            )
            new = self.aggregate.matmul(self.aggregate_values, scaled)
            if self.training and self.mess_drop_rate > 0.0:
                # no 1 / (1 - rate) scale: the L2 normalisation below cancels it
                new = new * _keep_mask(new.shape, self.mess_drop_rate, new.dtype, new.device)
            return l2_normalize_rows(new)

    def _layer0_table(self) -> Tensor:
        """``[users; entities]`` with the entities in layer-0 order (active ones first)."""
        entities = self.entity_embedding.weight
        if self.layer0_order is not None:
            entities = entities.index_select(0, self.layer0_order)
        return torch.cat([self.user_embedding.weight, entities])

    def _relation_terms(self) -> tuple[Tensor, Tensor]:
        """What every KG step of one forward reads: ``W`` and ``W[pair relations]`` (a constant
        copy: :class:`_ScaleRows` sends its gradient to ``W`` directly)."""
        relations = self.relation_embedding.weight
        return relations, relations.detach().index_select(0, self.pair_rels)

    def _layer_sums(self) -> tuple[Tensor, Tensor, Tensor]:
        """(sum of the fused layers 1..L, sum of the KG chain's layers 1..L, layer-0 table).

        The sums are full ``[users; slots]`` tables (rows past users + items are unused): the
        callers gather rows from them, which is cheaper than slicing every layer.
        """
        table0 = self._layer0_table()
        relation_terms = self._relation_terms()
        fused = kg_input = table0  # the IG chain (fused layers) and the KG chain's input
        ig_sum: Tensor | None = None
        kg_sum: Tensor | None = None
        for layer in range(self.n_layers):
            ig = self.ig_step.matmul(self.ig_values, fused)
            new = self._kg_step(kg_input, relation_terms, layer == 0)
            fused = new + ig  # ig is zero outside the user and item rows
            kg_input = fused if self.kg_view == "fused" else new
            ig_sum = fused if ig_sum is None else ig_sum + fused
            kg_sum = kg_input if kg_sum is None else kg_sum + kg_input
        assert ig_sum is not None and kg_sum is not None
        return ig_sum, kg_sum, table0

    def views(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(IG users, IG items, KG users, KG items); dropout on when the module is training."""
        n_users, n_rows = self.n_users, self.n_users + self.n_items
        ig_sum, kg_sum, table0 = self._layer_sums()
        ig_mean = ig_sum[:n_rows] / self.n_layers
        kg_mean = (kg_sum[:n_rows] + table0[:n_rows]) / (self.n_layers + 1)
        return ig_mean[:n_users], ig_mean[n_users:], kg_mean[:n_users], kg_mean[n_users:]

    # ------------------------------------------------------------------ losses

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        n_users, n_batch = self.n_users, users.shape[0]
        ig_sum, kg_sum, table0 = self._layer_sums()
        items = torch.cat([pos_items, neg_items])
        unique_users, unique_items = torch.unique(users), torch.unique(pos_items)
        n_uu = unique_users.shape[0]
        # one gather per table (each gather's backward allocates a table-sized gradient)
        cl_rows = torch.cat([unique_users, unique_items + n_users])
        ig_rows = ig_sum.index_select(0, torch.cat([users, items + n_users, cl_rows]))
        kg_rows = kg_sum.index_select(0, cl_rows) + table0.index_select(0, cl_rows)
        u = ig_rows[:n_batch] / self.n_layers
        i = ig_rows[n_batch : 3 * n_batch] / self.n_layers
        pos_scores = (u * i[:n_batch]).sum(-1)
        neg_scores = (u * i[n_batch:]).sum(-1)
        bpr = -torch.log(BPR_GAMMA + torch.sigmoid(pos_scores - neg_scores)).sum()
        item_rows0 = self.entity_embedding.weight.index_select(0, items)
        reg = (
            torch.linalg.vector_norm(self.user_embedding.weight.index_select(0, users))
            + torch.linalg.vector_norm(item_rows0[:n_batch])
            + torch.linalg.vector_norm(item_rows0[n_batch:])
        )
        # InfoNCE normalises its rows, so the views need no division by the layer counts
        ig_cl = ig_rows[3 * n_batch :]
        cl = info_nce(ig_cl[:n_uu], kg_rows[:n_uu], self.tau) + info_nce(
            ig_cl[n_uu:], kg_rows[n_uu:], self.tau
        )
        return {"bpr_reg": bpr + self.reg_weight * reg, "cl": self.cl_rate * cl}

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        ig_users, ig_items, _, _ = self.views()
        return ig_users, ig_items


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _keep_mask(
    shape: torch.Size | tuple[int, ...], rate: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """0/1 mask in ``dtype``, each entry 1 with probability ``1 - rate``, from the torch RNG.

    On CPU four 16-bit uniforms come from one 64-bit random word (a third of the cost of
    ``torch.rand``; ``rate`` is then exact to 2^-16: 0.1 -> 0.100006), and the comparison is
    done in floating point: boolean masks take slow, unvectorised paths in CPU kernels.
    Elsewhere ``torch.rand``.
    """
    if device.type != "cpu":
        return (torch.rand(shape, device=device) >= rate).to(dtype)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    return lanes.to(dtype).ge_(round(rate * 65536) - 32768)


def _at_least_float32_tensor(x: Tensor) -> Tensor:
    return x.to(_at_least_float32(x.dtype))


class _AttentionLogits(torch.autograd.Function):
    """Per triple ``|x_h * w_r|^2 |x_t * w_r|^2`` from a node table ``x`` and relation rows ``w``.

    Forward: one ``entity rows x (R + 1)`` product ``(x * x) @ (w * w).T`` (columns padded with
    zeros to ``model.n_factor_cols``) and two gathers.
    Backward: the gradient of that product is non-zero only at the 2 x triples (row, relation)
    entries used, so it goes through two sparse products on a fixed pattern
    (``2 x (G @ (w * w))`` and ``2 w * (G.T @ (x * x))``) instead of two dense ones.
    """

    @staticmethod
    def forward(
        ctx,
        table: Tensor,
        relations: Tensor,
        model: SimKGCL,
        tail_rel: Tensor,
        grad_pattern: SparsePattern,
        grad_order: Tensor,
    ) -> Tensor:
        sq_relations = relations * relations
        padded = sq_relations.new_zeros(model.n_factor_cols, sq_relations.shape[1])
        padded[: sq_relations.shape[0]] = sq_relations
        sq_table = table * table  # kept for the backward (the user rows are few)
        sq_norms = torch.mm(sq_table[model.n_users :], padded.t()).reshape(-1)
        head_sq = sq_norms.index_select(0, model.head_rel)
        tail_sq = sq_norms.index_select(0, tail_rel)
        ctx.save_for_backward(table, relations, sq_relations, sq_table, head_sq, tail_sq)
        ctx.grad_pattern = grad_pattern
        ctx.grad_order = grad_order
        return head_sq * tail_sq

    @staticmethod
    def backward(ctx, grad: Tensor):
        table, relations, sq_relations, sq_table, head_sq, tail_sq = ctx.saved_tensors
        pattern: SparsePattern = ctx.grad_pattern
        # d logit / d (head factor) = tail factor and vice versa, in the pattern's entry order;
        # the 2 of d(x * x) = 2 x dx is folded into these per-triple values
        grad2 = grad * 2.0
        values = torch.cat([grad2 * tail_sq, grad2 * head_sq]).index_select(0, ctx.grad_order)
        grad_table = grad_relations = None
        if ctx.needs_input_grad[0]:
            grad_table = pattern.product(values, sq_relations).mul_(table)
        if ctx.needs_input_grad[1]:
            grad_relations = pattern.t_product(values, sq_table).mul_(relations)
        return grad_table, grad_relations, None, None, None, None


class _ScaleRows(torch.autograd.Function):
    """``[users; pairs] * [user_scale; W[pair relations]]`` without materialising the scales.

    ``pair_relations`` is a constant copy of ``W[pair_rels]`` made once per forward; the
    gradient of ``W`` is gathered per relation with one ``index_add_``. No ``(U + P) x d`` cat
    and no per-layer ``(P x d)`` gradient copy to sum over the layers.
    """

    @staticmethod
    def forward(
        ctx,
        rows: Tensor,
        user_scale: Tensor,
        relations: Tensor,
        pair_relations: Tensor,
        pair_rels: Tensor,
    ) -> Tensor:
        n_users = user_scale.shape[0]
        out = torch.empty_like(rows)
        torch.mul(rows[:n_users], user_scale, out=out[:n_users])
        torch.mul(rows[n_users:], pair_relations, out=out[n_users:])
        ctx.save_for_backward(rows, user_scale, pair_relations, pair_rels)
        ctx.n_relations = relations.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, user_scale, pair_relations, pair_rels = ctx.saved_tensors
        n_users = user_scale.shape[0]
        grad_user = grad_relations = None
        if ctx.needs_input_grad[1]:
            grad_user = grad[:n_users] * rows[:n_users]
        if ctx.needs_input_grad[2]:
            per_pair = grad[n_users:] * rows[n_users:]
            grad_relations = grad.new_zeros(ctx.n_relations, grad.shape[1])
            grad_relations.index_add_(0, pair_rels, per_pair)
        grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_rows = torch.empty_like(grad)
            torch.mul(grad[:n_users], user_scale, out=grad_rows[:n_users])
            torch.mul(grad[n_users:], pair_relations, out=grad_rows[n_users:])
        return grad_rows, grad_user, grad_relations, None, None


class _InfoNCE(torch.autograd.Function):
    """``sum_i logsumexp_j(a_i . b_j / tau) - a_i . b_i / tau`` for row-normalised ``a``, ``b``.

    One ``n x n`` buffer holds the logits, then (in place) their exponentials ``E``; the row
    sums ``s`` give the loss and the gradients ``(E b / s - b) / tau`` and
    ``(E.T (a / s) - a) / tau``, so the softmax is never divided out over ``n x n``. The logits
    of unit rows lie in ``[-1/tau, 1/tau]``: for ``tau > 1/80`` their exponentials neither
    overflow nor underflow in float32 and no max is subtracted; otherwise the row max is.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, tau: float) -> Tensor:
        inv_tau = 1.0 / tau
        logits = torch.mm(a * inv_tau, b.t())
        positive = torch.diagonal(logits).sum()
        shift = None
        if inv_tau >= 80.0:
            shift = logits.amax(dim=1, keepdim=True)
            logits.sub_(shift)
        exps = logits.exp_()
        totals = exps.sum(dim=1, keepdim=True)
        lse = totals.log().sum()
        if shift is not None:
            lse = lse + shift.sum()
        ctx.save_for_backward(a, b, exps, totals)
        ctx.inv_tau = inv_tau
        return lse - positive

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b, exps, totals = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (exps @ b).div_(totals).sub_(b).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_b = (exps.t() @ (a / totals)).sub_(a).mul_(scale)
        return grad_a, grad_b, None


def info_nce(view1: Tensor, view2: Tensor, tau: float) -> Tensor:
    """Sum over rows of -log softmax of the matching row among all rows (cosine / tau)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = l2_normalize_rows(_at_least_float32_tensor(view1))
        b = l2_normalize_rows(view2.to(a.dtype))
        return _InfoNCE.apply(a, b, tau)
