"""KGCL: knowledge graph contrastive learning for recommendation, as its authors' code computes it.

Paper: Yang, Huang, Xia, Li, "Knowledge Graph Contrastive Learning for Recommendation", SIGIR'22.
Reference implementation: github.com/yuh-yang/KGCL-SIGIR22, last commit (2a15e21, files
``code/{model,contrast,GAT,Procedure,main,world,parse,dataloader,utils}.py``); read, not copied.

Notation: U users, I items, E entities (tails; item i's own entity row is *not* its item row:
the authors keep items and entities in separate tables), R relations, d = ``embedding_size``,
K = ``neighbours_per_item``, p = ``gat_dropout``, ``drop(.)`` = dropout with rate p (scaled).

Knowledge encoder (``GAT.forward_relation`` via ``KGCL.cal_item_embedding_rgat``). Item i's
neighbours are its first K triples ``(i, r_k, t_k)`` in the KG file's order (``KGDataset.
get_kg_dict``: a truncation, not a sample); unused slots point at a padding entity row::

    x_i = drop(e_i),  y_ik = drop(e_{t_k}),  z_ik = LeakyReLU_0.2( w_{r_k} . (A [x_i; y_ik] + b) )
    a_ik = drop( softmax_k( z_ik if slot k is kept, else -9e15 ) )
    kg(i) = drop( x_i + sum_k a_ik y_ik )

``A``, ``b``: the GAT's ``fc`` (Linear 2d -> d). A masked slot (unused, or dropped in a view)
reads the padding entity row. An item whose slots are all masked (no triple, or all dropped in
a view) gets the uniform softmax, i.e. the mean of its K dropped copies of the padding row, a
trained row (the authors' padding is a real embedding row; kept as is).

Propagation (``KGCL.computer`` / ``view_computer_all``): ``[users; kg(items)]`` through L
layers of ``G = D^-1/2 A D^-1/2`` (no degree epsilon, as the authors), mean of layers 0..L.

Per epoch (``Contrast.get_views``, drawn here in :meth:`on_epoch_start` from the trainer's
``(seed, epoch)`` generator and built at the epoch's first training forward, i.e. after the
TransE steps, the authors' order):

* two KG views: every neighbour slot kept with probability ``1 - kg_drop_rate``
  (``drop_edge_random``: a dropped tail becomes the padding entity);
* KG consistency (``item_kg_stability``): ``s_i = cos(kg_1(i), kg_2(i))`` with the encoder's
  dropout on (the authors compute it in training mode), then (``get_ui_views_weighted``)
  ``w = exp(s)``, ``c = max((w - min w) / (max w - min w), 0.3)``,
  ``q_i = min((1 - ui_drop_rate) c_i / mean(c), 0.95)``;
* two interaction-graph views: each item kept with probability ``q_i`` (independently per view)
  with all its interactions; ``G`` renormalised on what is kept (``ui_drop_weighted``).
  ``ui_augmentation: random`` is the authors' ``RANDOM`` mode instead (``ui_drop_random``: a
  uniform ``int(n (1 - ui_drop_rate))`` of the n interactions per view, no consistency scores).

Loss per batch (``Procedure.BPR_train_contrast``, ``KGCL.bpr_loss``, ``Contrast.grace_loss``):

* ``bpr`` = sum over the batch of ``softplus(-(u.i+ - u.i-))`` on the main propagation, which
  encodes the full neighbour table and, when training, drops each entry of ``G`` (both
  directions independently) with rate ``graph_drop_rate`` and scales kept ones by
  ``1 / (1 - rate)`` (``KGCL.__dropout_x``; the authors' default ``--dropout 1 --keepprob 0.7``);
* ``reg`` = ``reg_weight`` x ``(|e_u|^2 + |e_i+|^2 + |e_i-|^2) / 2 / B`` over the batch's raw
  user and item rows (the item table, not the encoded items);
* ``cl`` = ``cl_rate`` x (GRACE(users of view 1, of view 2) + GRACE(positive items of view 1,
  of view 2)) over the batch's rows as they come (repeats included),
  :func:`~simkgcl.models.ops.grace_loss` with temperature ``tau``; each view is the
  propagation of ``[users; kg_v(items)]`` on ``G_v`` (no further graph dropout).

TransE (``Procedure.TransR_train`` -> ``KGCL.calc_kg_loss_transE``), when ``kg_trans``: before
each epoch's batches, one optimiser step per batch of ``kg_batch_size`` item heads
(:meth:`~simkgcl.models.kg_index.ItemTriples.transe_batches`): ``kg`` =
:func:`~simkgcl.models.ops.transe_bpr_loss` with heads from the item table, tails from the
entity table, weight ``kg_reg_weight`` on its L2 term. :meth:`extra_steps` hands these steps to
the trainer, which runs each with the run's optimiser (the authors share one Adam).

Defaults: the authors' for amazon-book and yelp2018 (``world.py``: ``WEIGHTED``,
``ui_p_drop`` 0.1; ``parse.py``: lr 1e-3, decay 1e-4, batch 2048, 64 dims, 3 layers, dropout on
with keep 0.7; ssl_reg 0.1, temperature 0.2, kg_p_drop 0.5, 10 neighbours, TransE on). MIND's
``WEIGHTED-MIX`` (a random share mixed into the weighted views) is not implemented.

Departures from the authors' code:

* Engine: the run's sampler (RecBole-style: each training interaction once per epoch with one
  uniform negative, batch 2048, the last batch kept) instead of their loader (a uniform positive
  of each interaction's user, last batch dropped); early stopping on validation NDCG@20, not on
  test recall. Initialisation as theirs: normal(0, 0.1) tables, ``nn.Linear``'s default for
  the attention layer (the random streams differ).
* TransE: ``max(1, heads // kg_batch_size)`` batches (the authors drop the last partial batch,
  so with fewer heads than a batch their code has no batch and fails); only triples whose head
  is an item are used by the encoder and by TransE (their heads are all items; others counted
  and logged).
* Unused parameters are not allocated: the relation table's two padding rows (masked slots
  never read a relation), ``W_R`` and the GAT's ``W``/``a`` (no gradient, no effect).
* Degenerate consistency scores (all items equal) give ``q = 1 - ui_drop_rate`` for every item
  (the authors' formula divides by zero there).
* Duplicate interactions collapse to one edge (the authors' sparse sum would weigh them 2).
* GRACE's denominator sums the pairs other than the row's own instead of subtracting the self
  pair from the full sum (the same value, without the cancellation). An earlier commit of theirs
  (13384a5) used ``info_nce_loss_overall`` (batch rows against every row of view 2) instead.
* Dropout masks come from 16-bit draws (:func:`~simkgcl.models.ops.keep_mask`; rate exact to
  2^-16) on the torch RNG per forward; per-epoch draws from the epoch's generator.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, boolean, choice, float_in, int_in
from simkgcl.models.base import Recommender
from simkgcl.models.kg_index import ItemTriples
from simkgcl.models.ops import (
    at_least_float32,
    bipartite_adjacency,
    grace_loss,
    interaction_weights,
    keep_mask,
    sparse_dropout,
    transe_bpr_loss,
    unique_interactions,
)

log = logging.getLogger(__name__)

UI_AUGMENTATIONS = ("weighted", "random")
LEAKY_SLOPE = 0.2  # GAT(alpha=0.2)
MASKED_LOGIT = -9e15  # the authors' fill for masked attention slots
MIN_CONSISTENCY = 0.3  # the floor of the min-max scaled consistency (p_tau)
MAX_KEEP = 0.95  # the ceiling of an item's keep probability

Dropout = Callable[[Tensor], Tensor]


@dataclass
class EpochViews:
    """One epoch's augmented graphs: KG slot masks ``(2, I, K)``, the two interaction views'
    values on the fixed bipartite pattern ``(2, 2 nnz)``, and (weighted mode) the items'
    consistency scores and keep masks ``(2, I)``."""

    kg_keep: Tensor
    ui_values: Tensor
    stability: Tensor | None = None
    item_keep: Tensor | None = None


class KGCL(Recommender):
    """KGCL with the authors' defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "kgcl"
    # BPR and GRACE are batch sums (the authors' reductions); only the L2 term is a batch mean.
    loss_reduction: ClassVar[str] = "sum"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d (recdim)"),
        "n_layers": KeySpec(3, int_in(1), "propagation layers L (layer)"),
        "reg_weight": KeySpec(1e-4, float_in(0.0), "weight of the L2 term on raw rows (decay)"),
        "cl_rate": KeySpec(0.1, float_in(0.0), "weight of the GRACE terms (ssl_reg)"),
        "tau": KeySpec(0.2, float_in(0.0, lo_open=True), "GRACE temperature (kgc_temp)"),
        "kg_drop_rate": KeySpec(0.5, float_in(0.0, 1.0, hi_open=True),
                                "share of neighbour slots dropped per KG view (kg_p_drop)"),
        "ui_drop_rate": KeySpec(0.1, float_in(0.0, 1.0, hi_open=True),
                                "target share of interactions dropped per view (ui_p_drop)"),
        "ui_augmentation": KeySpec("weighted", choice(UI_AUGMENTATIONS),
                                   "weighted: KG-consistency-guided item dropout (WEIGHTED); "
                                   "random: uniform interaction dropout (RANDOM)"),
        "graph_drop_rate": KeySpec(0.3, float_in(0.0, 1.0, hi_open=True),
                                   "edge dropout of the main propagation (1 - keepprob)"),
        "gat_dropout": KeySpec(0.4, float_in(0.0, 1.0, hi_open=True),
                               "dropout inside the knowledge encoder (GAT dropout)"),
        "neighbours_per_item": KeySpec(10, int_in(1),
                                       "first triples per item read by the encoder"),
        "kg_trans": KeySpec(True, boolean, "TransE steps before each epoch (use_trans)"),
        "kg_batch_size": KeySpec(4096, int_in(1), "heads per TransE step"),
        "kg_reg_weight": KeySpec(1e-3, float_in(0.0), "weight of TransE's L2 term"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        dim = self.embedding_size = int(cfg["embedding_size"])
        self.n_layers = int(cfg["n_layers"])
        self.reg_weight = float(cfg["reg_weight"])
        self.cl_rate = float(cfg["cl_rate"])
        self.tau = float(cfg["tau"])
        self.kg_drop_rate = float(cfg["kg_drop_rate"])
        self.ui_drop_rate = float(cfg["ui_drop_rate"])
        self.ui_augmentation = str(cfg["ui_augmentation"])
        self.graph_drop_rate = float(cfg["graph_drop_rate"])
        self.gat_dropout = float(cfg["gat_dropout"])
        self.kg_trans = bool(cfg["kg_trans"])
        self.kg_batch_size = int(cfg["kg_batch_size"])
        self.kg_reg_weight = float(cfg["kg_reg_weight"])

        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_embedding = nn.Embedding(self.n_items, dim)
        self.entity_embedding = nn.Embedding(graph.n_entities + 1, dim)  # + the padding row
        self.relation_embedding = nn.Embedding(max(graph.n_relations, 1), dim)
        for table in (self.user_embedding, self.item_embedding, self.entity_embedding,
                      self.relation_embedding):
            nn.init.normal_(table.weight, std=0.1)
        self.attention = nn.Linear(2 * dim, dim)  # the GAT's fc

        host = graph.to("cpu")
        self.kg = ItemTriples(host, int(cfg["neighbours_per_item"]), pad_entity=graph.n_entities)
        if self.kg.n_other_head_triples:
            log.info("kgcl: %d of %d triples have a head that is not an item; the encoder and "
                     "TransE read item-headed triples only", self.kg.n_other_head_triples,
                     int(host.kg_heads.numel()))
        users, items = unique_interactions(host.train_users, host.train_items, host.n_items)
        values = interaction_weights(users, items, self.n_users, self.n_items, eps=0.0)
        self.adjacency, adjacency_values = bipartite_adjacency(
            users, items, values, self.n_users, self.n_users + self.n_items
        )
        self.register_buffer("adjacency_values", adjacency_values, persistent=False)
        self.register_buffer("interaction_users", users, persistent=False)
        self.register_buffer("interaction_items", items, persistent=False)
        # entry order of the item -> user half of the bipartite pattern
        self.register_buffer("mirror_order", torch.sort(items, stable=True).indices,
                             persistent=False)
        self._epoch_draws: tuple[Tensor, torch.Generator] | None = None
        self._views: EpochViews | None = None
        self._transe_batches: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    # ------------------------------------------------------------------ knowledge encoder

    def _torch_dropout(self, x: Tensor) -> Tensor:
        """The encoder's dropout per forward (torch RNG), in training mode only."""
        if not self.training or self.gat_dropout == 0.0:
            return x
        mask = keep_mask(x.shape, self.gat_dropout, x.dtype, x.device)
        return x * mask.mul_(1.0 / (1.0 - self.gat_dropout))  # one pass over x, not two

    def _generator_dropout(self, generator: torch.Generator) -> Dropout:
        """The encoder's dropout with masks from ``generator`` (the per-epoch consistency)."""
        rate = self.gat_dropout

        def drop(x: Tensor) -> Tensor:
            if rate == 0.0:
                return x
            keep = torch.rand(x.shape, generator=generator) >= rate
            return x * keep.to(x.device, x.dtype).mul_(1.0 / (1.0 - rate))

        return drop

    def item_kg_embeddings(self, slot_keep: Tensor, dropout: Dropout | None = None) -> Tensor:
        """``kg(i)`` of the module docstring for every item; ``slot_keep``: ``(I, K)`` bool
        (False on unused slots too).

        Both attention terms are taken per relation, never as ``(I, K, d) x (d, d)`` products:
        ``w_r . (A_1 x) = (A_1^T w_r) . x`` per item and ``w_r . (A_2 y) = (A_2^T w_r) . y``.
        """
        drop = dropout if dropout is not None else self._torch_dropout
        dim, relations = self.embedding_size, self.relation_embedding.weight
        shape = (*slot_keep.shape, dim)
        items = drop(self.item_embedding.weight)
        # a dropped slot reads the padding row, as the authors' views replace its tail
        tails = self.kg.neighbour_tails.masked_fill(~slot_keep, self.kg.pad_entity)
        # index_select (backward: index_add_) rather than advanced indexing (index_put_)
        neighbours = drop(self.entity_embedding.weight.index_select(0, tails.flatten())
                          .view(shape))
        weight, bias = self.attention.weight, self.attention.bias
        slot_relations = self.kg.neighbour_relations
        item_scores = F.linear(items, weight[:, :dim], bias) @ relations.t()  # (I, R)
        logits = item_scores.gather(1, slot_relations)
        tail_directions = (relations @ weight[:, dim:]).index_select(
            0, slot_relations.flatten()).view(shape)
        logits = logits + (neighbours * tail_directions).sum(-1)
        logits = F.leaky_relu(logits, LEAKY_SLOPE).masked_fill(~slot_keep, MASKED_LOGIT)
        attention = drop(torch.softmax(logits, dim=1))
        aggregated = torch.bmm(attention.unsqueeze(1), neighbours).squeeze(1)
        return drop(aggregated + items)

    # ------------------------------------------------------------------ propagation

    def propagate(self, item_rows: Tensor, adjacency_values: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of layers 0..L of ``[users; item_rows]`` on ``G`` with the given entry values."""
        x = torch.cat([self.user_embedding.weight, item_rows])
        total = x
        for _ in range(self.n_layers):
            x = self.adjacency.matmul(adjacency_values, x)
            total = total + x
        mean = total / (self.n_layers + 1)
        return mean[: self.n_users], mean[self.n_users :]

    def main_views(self) -> tuple[Tensor, Tensor]:
        """(users, items) of the main propagation (``computer``): graph dropout when training."""
        values = self.adjacency_values.to(at_least_float32(self.user_embedding.weight.dtype))
        if self.training and self.graph_drop_rate > 0.0:
            values = sparse_dropout(values, self.graph_drop_rate)
        items = self.item_kg_embeddings(self.kg.neighbour_valid)
        return self.propagate(items, values)

    def contrast_views(self) -> list[tuple[Tensor, Tensor]]:
        """(users, items) of the two augmented propagations (``view_computer_all``)."""
        views = self.epoch_views()
        return [
            self.propagate(self.item_kg_embeddings(self.kg.neighbour_valid & views.kg_keep[v]),
                           views.ui_values[v])
            for v in range(2)
        ]

    # ------------------------------------------------------------------ per-epoch augmentation

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Draw the epoch's KG views and TransE batches; the interaction views follow at the
        first :meth:`epoch_views` call, after the TransE steps (from the same generator)."""
        shape = (2, *self.kg.neighbour_valid.shape)
        kg_keep = torch.rand(shape, generator=generator) > self.kg_drop_rate
        self._transe_batches = (self.kg.transe_batches(self.kg_batch_size, generator)
                                if self.kg_trans else [])
        self._epoch_draws = (kg_keep, generator)
        self._views = None

    def extra_steps(self) -> list[Callable[[], dict[str, Tensor]]]:
        """This epoch's TransE steps, each one optimiser step of its own (see the base class)."""
        return [functools.partial(self.transe_loss, *batch) for batch in self._transe_batches]

    def transe_loss(self, heads: Tensor, relations: Tensor, pos_tails: Tensor,
                    neg_tails: Tensor) -> dict[str, Tensor]:
        """``kg``: TransE on one batch (heads from the item table, tails from the entity table)."""
        device = self.item_embedding.weight.device
        heads, relations, pos_tails, neg_tails = (
            t.to(device) for t in (heads, relations, pos_tails, neg_tails))
        return {"kg": transe_bpr_loss(
            self.item_embedding(heads), self.relation_embedding(relations),
            self.entity_embedding(pos_tails), self.entity_embedding(neg_tails),
            self.kg_reg_weight)}

    def item_keep_probability(self, stability: Tensor) -> Tensor:
        """``q_i`` of the module docstring from the consistency scores ``s``."""
        w = torch.exp(stability)
        span = w.max() - w.min()
        if float(span) > 0.0:
            scaled = ((w - w.min()) / span).clamp_min(MIN_CONSISTENCY)
        else:
            scaled = torch.ones_like(w)
        return ((1.0 - self.ui_drop_rate) / scaled.mean() * scaled).clamp_max(MAX_KEEP)

    def epoch_views(self) -> EpochViews:
        """This epoch's augmented graphs, built on first use (drawn now if no epoch started)."""
        if self._views is not None:
            return self._views
        if self._epoch_draws is None:  # called outside the trainer: draw from the torch RNG
            seed = int(torch.randint(2**62, (1,)))
            self.on_epoch_start(0, torch.Generator().manual_seed(seed))
        assert self._epoch_draws is not None
        kg_keep, generator = self._epoch_draws
        device = self.user_embedding.weight.device
        kg_keep = kg_keep.to(device)
        n = self.interaction_users.numel()
        with torch.no_grad():
            stability = item_keep = None
            if self.ui_augmentation == "weighted":
                drop = self._generator_dropout(generator)
                first, second = (
                    self.item_kg_embeddings(self.kg.neighbour_valid & kg_keep[v], drop)
                    for v in range(2))
                stability = F.cosine_similarity(first, second, dim=1)
                keep_probability = self.item_keep_probability(stability).cpu()
                uniforms = torch.rand((2, self.n_items), generator=generator,
                                      dtype=keep_probability.dtype)
                item_keep = (uniforms < keep_probability).to(device)
                kept = item_keep[:, self.interaction_items]
            else:
                size = int(n * (1.0 - self.ui_drop_rate))
                kept = torch.zeros((2, n), dtype=torch.bool)
                for v in range(2):
                    kept[v, torch.randperm(n, generator=generator)[:size]] = True
                kept = kept.to(device)
            ui_values = torch.stack([self._view_values(kept[v]) for v in range(2)])
        self._views = EpochViews(kg_keep, ui_values, stability, item_keep)
        return self._views

    def _view_values(self, kept: Tensor) -> Tensor:
        """Entries of ``G`` rebuilt on the kept interactions (zero elsewhere), float64."""
        users, items = self.interaction_users[kept], self.interaction_items[kept]
        values = torch.zeros(kept.shape[0], dtype=torch.float64, device=kept.device)
        values[kept] = interaction_weights(users, items, self.n_users, self.n_items, eps=0.0)
        return torch.cat([values, values[self.mirror_order]])

    # ------------------------------------------------------------------ losses

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        user_all, item_all = self.main_views()
        u = user_all.index_select(0, users)
        pos_scores = (u * item_all.index_select(0, pos_items)).sum(-1)
        neg_scores = (u * item_all.index_select(0, neg_items)).sum(-1)
        raw_items = self.item_embedding.weight
        squares = (self.user_embedding.weight.index_select(0, users).pow(2).sum()
                   + raw_items.index_select(0, pos_items).pow(2).sum()
                   + raw_items.index_select(0, neg_items).pow(2).sum())
        terms = {
            "bpr": F.softplus(neg_scores - pos_scores).sum(),
            "reg": self.reg_weight * squares / (2.0 * users.shape[0]),
        }
        if self.cl_rate > 0.0:
            (users1, items1), (users2, items2) = self.contrast_views()
            cl = grace_loss(users1.index_select(0, users), users2.index_select(0, users),
                            self.tau)
            cl = cl + grace_loss(items1.index_select(0, pos_items),
                                 items2.index_select(0, pos_items), self.tau)
            terms["cl"] = self.cl_rate * cl
        return terms

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.main_views()
