"""MCCLK: multi-level cross-view contrastive learning for knowledge-aware recommendation.

Zou et al., "Multi-level Cross-view Contrastive Learning for Knowledge-aware Recommender
System", SIGIR 2022. Faithful to RecBole 1.2.1's ``knowledge_aware_recommender/mcclk.py`` with
its defaults (``properties/model/MCCLK.yaml``).

Notation: U users, I items (= entities 0..I-1), E entities, d = ``embedding_size``; the relation
table ``W`` has ``R + extra_relation_rows`` rows. Parameters: user rows ``u``, entity rows ``e``,
``W`` and three projection heads ``fc1..3`` (Linear-ReLU-Linear, d -> d); Xavier-normal
weights, zero biases (RecBole's ``xavier_normal_initialization``).

Three views, each a ``layer mean`` (layer 0 included):

* structural (``n_hops`` hops of :meth:`~simkgcl.models.kg_index.KGIndex.attentive_hop`, each
  followed by message dropout and row L2 normalisation): per head the mean over its triples of
  ``softmax_h(|e_h*w_r|^2 |e_t*w_r|^2) (e_t * w_r)``; per user ``(mean_{i in N_u} e_i) * (1 +
  softmax(u W^T) W)``. Gives ``u_s``, ``e_s``.
* collaborative: LightGCN (``lightgcn_layer`` layers) on ``D^-1 A`` over ``[users; items]``
  (RecBole's ``si`` graph: a row is the mean of its neighbours). Gives ``u_c``, ``i_c``.
* semantic: ``item_agg_layer`` products with the kNN graph ``S = (1 - lambda) A(c) +
  lambda A(e)`` over all entities, ``A(x)`` the ``k``-NN cosine graph of the rows ``x`` normalised
  by its row sums (:mod:`~simkgcl.models.ops.knn`), a constant (RecBole detaches it); ``c`` the
  layer mean of ``n_hops`` mean-aggregation hops (``e_t * w_r`` averaged per head, no attention,
  no users; message dropout, L2 norm) — ``build_graph_separately`` (default) — or ``e_s``.
  Gives ``i_m``.

Scores: ``[u_s, u_c] . [e_s, i_m + i_c]`` (2d). Loss on a batch (users ``b``, items ``a`` =
positives then negatives): ``bpr`` = mean ``-log(1e-10 + sigmoid(pos - neg))`` (or ``bce``:
BCE with logits, ``loss_type``); ``reg`` = ``reg_weight`` x RecBole's EmbLoss of the 2d user,
positive and negative rows; ``cl_local`` = ``beta alpha`` x mean_i one-way GRACE
``l(fc1(i_m[a]), fc1(i_c[a]))``; ``cl_global`` = ``beta (1 - alpha)`` x (symmetric GRACE of
``fc2(u_s[b]), fc2(u_c[b])`` + of ``fc3(e_s[a]), fc3(i_m[a] + i_c[a])``, row means), cosine with
``temperature`` (:func:`~simkgcl.models.ops.grace_loss`; RecBole writes the same denominator as
``refl.sum - refl.diag + between.sum``).

RecBole's oddities, kept:

* ``node_dropout_rate`` is the share of triples **kept** per forward (``int(n * rate)``, drawn
  without replacement, separately for the structural and the graph-building hops); 0 turns it
  off, and the interaction matrix's dropout (rate ``mess_dropout_rate``, kept entries scaled by
  ``1 / (1 - rate)``, training only) is drawn only when it is on.
* The kNN graph is over all E entities (not items only), including KG-only entities.
* RecBole's relation table has R + 2 rows ([PAD], [UI-Relation]) which enter
  ``softmax(u W^T) W``: ``extra_relation_rows`` = 2.
* RecBole's evaluation samples the triples too; here it uses every triple unless
  ``eval_edge_sampling: true`` (as KGIN).

Departures: randomness from the torch RNG (``randperm`` triples, 16-bit dropout draws),
message dropout without its ``1 / (1 - rate)`` scale (the L2 norm cancels it), float32
rounding. ``knn_refresh_steps`` (default 1 = RecBole: every forward) rebuilds the kNN graph
at an epoch's first training step and then every that many steps (0: once per epoch); the steps
between reuse it whole (neighbours and entries). Evaluation always builds it afresh. Keeping
the neighbour sets but refreshing their cosines does not work: the aggregated rows are
dominated by their unit hop rows, which edge sampling and dropout redraw every step, so a stale
set's cosines can sum below zero.

Speed (BENCHMARKS.md "MCCLK"): the kNN selection is blocked, without autograd or an ``n x n``
matrix, and made only for the rows the items' semantic rows read — the items and, for their
neighbours' row sums, the neighbours (:func:`~simkgcl.models.ops.mixed_knn_graph`; only the
item rows of the semantic view enter scores and losses, so they and every gradient are those of
the full graph). ``bench/knn_rows.py``: on ml-100k (1,682 items, 34,712 entities) 4.1x less kNN
CPU time at the initial weights and 18.7x once trained (its first validation: 52 s -> 8.5 s);
on lastfm-kg 1.1x and 2.5x. The graph is applied as a fixed-width CSR product
(:func:`~simkgcl.models.ops.fixed_width_matmul`); the graph-building hops run without autograd
(they only feed the constant graph); the KG hops run on
:class:`~simkgcl.models.kg_index.KGIndex`; GRACE is computed once per distinct id of the batch,
weighted by its count (the same sums), as single autograd functions. The plain reference is
``tests/models/reference_mcclk.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, boolean, choice, float_in, int_in
from simkgcl.models.base import Recommender
from simkgcl.models.bpr import bpr_mean, emb_loss
from simkgcl.models.kg_index import KGIndex
from simkgcl.models.ops import (
    at_least_float32,
    fixed_width_matmul,
    grace_loss,
    interaction_weights,
    keep_mask,
    l2_normalize_rows,
    layer_mean,
    mean_adjacency,
    mixed_knn_graph,
    propagate_layers,
    relational_aggregate,
    sampled_subset,
    segment_mean_weights,
    sparse_dropout,
    unique_interactions,
)

LOSS_TYPES = ("bpr", "bce")


def projection_head(dim: int) -> nn.Sequential:
    """Linear-ReLU-Linear, Xavier-normal weights and zero biases."""
    head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
    for layer in (head[0], head[2]):
        nn.init.xavier_normal_(layer.weight)
        nn.init.zeros_(layer.bias)
    return head


class MCCLK(Recommender):
    """MCCLK with RecBole's defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "mcclk"
    # GRACE contrasts a batch's rows with each other: the loss does not split over rows
    loss_reduction: ClassVar[str] = "batch"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_hops": KeySpec(2, int_in(1), "KG hops of the structural view (and graph building)"),
        "node_dropout_rate": KeySpec(
            0.5, float_in(0.0, 1.0), "share of KG triples KEPT per forward (RecBole's edge "
            "sampling); 0: no sampling, and no interaction dropout"),
        "mess_dropout_rate": KeySpec(
            0.1, float_in(0.0, 1.0, hi_open=True),
            "message dropout after each hop, and the interaction matrix's dropout (RecBole)"),
        "lightgcn_layer": KeySpec(2, int_in(1), "layers of the collaborative view"),
        "item_agg_layer": KeySpec(1, int_in(1), "kNN-graph layers of the semantic view"),
        "k": KeySpec(10, int_in(1), "neighbours per entity in the kNN semantic graph"),
        "lambda_coeff": KeySpec(0.5, float_in(0.0, 1.0), "weight of the kNN graph of the "
                                "layer-0 entity rows (1 - it: of the aggregated rows)"),
        "build_graph_separately": KeySpec(
            True, boolean, "aggregate the kNN graph's rows with their own attention-free hops "
            "(the paper); false: from the structural view (the authors' code)"),
        "alpha": KeySpec(0.2, float_in(0.0, 1.0), "local share of the contrastive loss"),
        "beta": KeySpec(0.1, float_in(0.0), "weight of the contrastive loss"),
        "temperature": KeySpec(0.8, float_in(0.0, lo_open=True), "contrastive temperature"),
        "reg_weight": KeySpec(1e-5, float_in(0.0), "weight of the L2 term on the batch's rows"),
        "loss_type": KeySpec("bpr", choice(LOSS_TYPES), "recommendation loss"),
        "extra_relation_rows": KeySpec(
            2, int_in(0), "relation-table rows beyond the R relations, all in softmax(u W^T) W: "
            "2 = RecBole's [PAD] and [UI-Relation]"),
        "eval_edge_sampling": KeySpec(
            False, boolean, "sample triples in evaluation too (RecBole's behaviour)"),
        "knn_refresh_steps": KeySpec(
            1, int_in(0), "re-select the kNN neighbour sets every this many training steps "
            "(1 = every forward, RecBole; 0 = once per epoch); entries stay current"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        dim = int(cfg["embedding_size"])
        for key in ("n_hops", "lightgcn_layer", "item_agg_layer", "k", "knn_refresh_steps"):
            setattr(self, key, int(cfg[key]))
        for key in ("node_dropout_rate", "mess_dropout_rate", "lambda_coeff", "alpha", "beta",
                    "temperature", "reg_weight"):
            setattr(self, key, float(cfg[key]))
        self.build_graph_separately = bool(cfg["build_graph_separately"])
        self.eval_edge_sampling = bool(cfg["eval_edge_sampling"])
        self.loss_type = str(cfg["loss_type"])
        if self.k > graph.n_entities:
            raise ConfigError(f"k = {self.k} neighbours, but the graph has only "
                              f"{graph.n_entities} entities")
        n_relation_rows = graph.n_relations + int(cfg["extra_relation_rows"])

        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.entity_embedding = nn.Embedding(graph.n_entities, dim)
        self.relation_embedding = nn.Embedding(n_relation_rows, dim)
        for table in (self.user_embedding, self.entity_embedding, self.relation_embedding):
            nn.init.xavier_normal_(table.weight)
        self.fc1, self.fc2, self.fc3 = (projection_head(dim) for _ in range(3))

        host = graph.to("cpu")  # structures are built once on the host; .to(device) moves them
        users, items = unique_interactions(host.train_users, host.train_items, host.n_items)
        self.kg = KGIndex(host, users, items, n_relation_rows)
        self.n_kept_triples = int(self.kg.n_triples * self.node_dropout_rate)
        self.register_buffer(
            "ui_values", interaction_weights(users, items, self.n_users, self.n_items, "mean"),
            persistent=False)
        self.collab_graph, collab_values = mean_adjacency(users, items, self.n_users,
                                                          self.n_items)
        self.register_buffer("collab_values", collab_values, persistent=False)
        self._knn_cache: tuple[Tensor, Tensor] | None = None  # training's last graph
        self._knn_step = 0

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """The first training step of every epoch builds the kNN graph afresh (so a resumed
        run builds it exactly where an uninterrupted one does)."""
        self._knn_step = 0

    # ------------------------------------------------------------------ views

    def _sampling(self) -> Tensor | None:
        """Kept-triple mask of one forward (None: every triple)."""
        if self.node_dropout_rate <= 0.0 or self.node_dropout_rate >= 1.0:
            return None
        if not (self.training or self.eval_edge_sampling):
            return None
        return sampled_subset(self.kg.n_triples, self.n_kept_triples, self.ui_values.device)

    def _message_dropout(self, rows: Tensor) -> Tensor:
        """Message dropout without its ``1 / (1 - rate)`` scale: the L2 norm after it cancels it."""
        if not (self.training and self.mess_dropout_rate > 0.0):
            return rows
        return rows * keep_mask(rows.shape, self.mess_dropout_rate, rows.dtype, rows.device)

    def _hops(self, table0: Tensor, attentive: bool) -> Tensor:
        """Sum of the ``n_hops`` normalised hop tables ``[users; slots]`` from the layer-0 table
        ``[users; layer-0 entities]``: attentive hops with users (structural view) or plain
        means over a head's triples (graph building: user rows unused)."""
        kg = self.kg
        keep = self._sampling()
        ui_values = self.ui_values.to(table0.dtype)
        if attentive and self.node_dropout_rate > 0.0 and self.training \
                and self.mess_dropout_rate > 0.0:
            ui_values = sparse_dropout(ui_values, self.mess_dropout_rate)
        relations = self.relation_embedding.weight.to(table0.dtype)
        pair_relations = relations.detach().index_select(0, kg.pair_rels)
        if not attentive:
            weights = segment_mean_weights(kg.triple_head_slots, kg.n_slots, keep, table0.dtype)
            values = torch.cat([torch.zeros_like(ui_values), weights])
            unit_scale = table0.new_ones(1, table0.shape[1]).expand(self.n_users, -1)
        table, total = table0, None
        for hop in range(self.n_hops):
            if attentive:
                new = kg.attentive_hop(table, relations, pair_relations, ui_values, keep,
                                       layer0=hop == 0)
            else:
                layout = kg.layer0 if hop == 0 else kg.slots
                new = relational_aggregate(layout.gather.matmul(values, table), unit_scale,
                                           relations, pair_relations, kg.pair_rels,
                                           kg.aggregate, kg.aggregate_values)
            table = l2_normalize_rows(self._message_dropout(new))
            total = table if total is None else total + table
        assert total is not None
        return total

    def _knn_graph(self, aggregated: Tensor, entities: Tensor) -> tuple[Tensor, Tensor]:
        """``S = (1 - lambda) A(aggregated) + lambda A(entities)`` as (columns, values), ``2k``
        per row, on the rows the items' semantic rows read (the others empty); in training,
        the one built at the last refresh (see ``knn_refresh_steps``)."""
        step, every = self._knn_step, self.knn_refresh_steps
        fresh = not self.training or self._knn_cache is None or (
            step == 0 if every == 0 else step % every == 0)
        if self.training:
            self._knn_step += 1
        if not fresh:
            assert self._knn_cache is not None
            return self._knn_cache
        graph = mixed_knn_graph((aggregated, entities),
                                (1.0 - self.lambda_coeff, self.lambda_coeff), self.k,
                                n_targets=self.n_items, layers=self.item_agg_layer)
        if self.training:
            self._knn_cache = graph
        return graph

    def views(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(u_s, e_s, u_c, i_c, i_m): structural users / entities (E rows), collaborative users /
        items, semantic items (I rows: the only rows of the semantic view anything reads);
        dropout on when training."""
        kg, n_users = self.kg, self.n_users
        weight = self.entity_embedding.weight
        with torch.autocast(weight.device.type, enabled=False):
            dtype = at_least_float32(weight.dtype)
            users0, entities0 = self.user_embedding.weight.to(dtype), weight.to(dtype)
            table0 = torch.cat([users0, kg.layer0_entities(entities0)])
            n_views = self.n_hops + 1
            structural = self._hops(table0, attentive=True)
            users_s = (users0 + structural[:n_users]) / n_views
            entities_s = (entities0 + kg.entity_rows(structural)) / n_views
            if self.build_graph_separately:
                with torch.no_grad():  # it only feeds the kNN graph, a constant
                    hops = self._hops(table0, attentive=False)
                    aggregated = (entities0 + kg.entity_rows(hops)) / n_views
            else:
                aggregated = entities_s
            index, values = self._knn_graph(aggregated, entities0)
            semantic_layers = [entities0]
            for _ in range(self.item_agg_layer):
                semantic_layers.append(fixed_width_matmul(index, values, semantic_layers[-1]))
            semantic = layer_mean([layer[: self.n_items] for layer in semantic_layers])
            collab0 = torch.cat([users0, entities0[: self.n_items]])
            collab = layer_mean([collab0, *propagate_layers(
                collab0, [(self.collab_graph, self.collab_values)] * self.lightgcn_layer)])
        return users_s, entities_s, collab[:n_users], collab[n_users:], semantic

    # ------------------------------------------------------------------ losses

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        n_batch = users.shape[0]
        users_s, entities_s, users_c, items_c, semantic = self.views()
        items = torch.cat([pos_items, neg_items])
        n_items = items.shape[0]
        # GRACE on each distinct id once, weighted by its count (the same sums as on the rows)
        item_ids, item_counts = torch.unique(items, return_counts=True)
        user_ids, user_counts = torch.unique(users, return_counts=True)
        rows = torch.cat([items, item_ids])
        item_m, item_c = semantic.index_select(0, rows), items_c.index_select(0, rows)
        item_s = entities_s.index_select(0, rows)
        mixed = item_m + item_c
        m_ids, c_ids, s_ids, mixed_ids = (x[n_items:] for x in (item_m, item_c, item_s, mixed))
        tau = self.temperature
        local = grace_loss(self.fc1(m_ids), self.fc1(c_ids), tau, False, item_counts)
        global_users = grace_loss(self.fc2(users_s.index_select(0, user_ids)),
                                  self.fc2(users_c.index_select(0, user_ids)), tau,
                                  counts=user_counts)
        global_items = grace_loss(self.fc3(s_ids), self.fc3(mixed_ids), tau, counts=item_counts)
        user_rows = torch.cat([users_s.index_select(0, users), users_c.index_select(0, users)],
                              dim=1)
        item_rows = torch.cat([item_s[:n_items], mixed[:n_items]], dim=1)
        pos, neg = item_rows[:n_batch], item_rows[n_batch:]
        pos_scores, neg_scores = (user_rows * pos).sum(-1), (user_rows * neg).sum(-1)
        if self.loss_type == "bpr":
            rec = {"bpr": bpr_mean(pos_scores, neg_scores)}
        else:
            logits = torch.cat([pos_scores, neg_scores])
            target = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)])
            rec = {"bce": F.binary_cross_entropy_with_logits(logits, target)}
        return {
            **rec,
            "reg": self.reg_weight * emb_loss(user_rows, pos, neg),
            "cl_local": self.beta * self.alpha * local / n_items,
            "cl_global": self.beta * (1.0 - self.alpha) * (global_users / n_batch
                                                           + global_items / n_items),
        }

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users_s, entities_s, users_c, items_c, semantic = self.views()
        n_items = self.n_items
        return (torch.cat([users_s, users_c], dim=1),
                torch.cat([entities_s[:n_items], semantic + items_c], dim=1))
