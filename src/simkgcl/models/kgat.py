"""KGAT: knowledge graph attention network on the collaborative knowledge graph.

Wang, He, Cao, Liu, Chua, "KGAT: Knowledge Graph Attention Network for Recommendation", KDD'19.
Faithful to RecBole 1.2.1's ``knowledge_aware_recommender/kgat.py`` and its ``KGATTrainer``
(read, not copied; RecBole's version needs DGL, this one is plain PyTorch), with RecBole's
defaults (``properties/model/KGAT.yaml``).

Notation: the CKG of :mod:`~simkgcl.models.ckg_index` (N = U + E nodes, users first; the
interaction relation, KG relations and optional inverses), d = ``embedding_size``, k =
``kg_embedding_size``, ``x`` the node table ``[user rows; entity rows]``, ``e_r`` (k) and
``W_r`` (d x k) each relation's vector and TransR projection.

Knowledge-aware attention (RecBole's ``update_attentive_A``), for every CKG edge::

    pi(h, r, t) = (x_t W_r) . tanh(x_h W_r + e_r)
    A[h, t] = softmax over the cells of row h of  sum_{edges (h, r, t)} pi(h, r, t)

(:func:`~simkgcl.models.ops.transr_attention_logits`, a segment softmax per head; a cell sums
its edges' logits, as RecBole's coalescing sparse softmax does). Before the first update ``A``
is RecBole's ``init_graph``: per relation, row-normalised adjacencies, summed.

Propagation (RecBole's ``forward``), ``x^0 = x``, one layer per entry of ``layers``::

    s = A x^(l)                                       (the neighbours' attentive sum)
    bi:        x^(l+1) = drop( LReLU(W1 (x^(l) + s)) + LReLU(W2 (x^(l) * s)) )
    gcn:       x^(l+1) = drop( LReLU(W (x^(l) + s)) )
    graphsage: x^(l+1) = drop( LReLU(W [x^(l); s]) )

(``LReLU`` slope 0.01, ``drop`` = dropout ``mess_dropout`` with the ``1/(1-p)`` scale, training
only; ``W``: linear layers with bias). Final rows: ``[x^0, n(x^1), ..., n(x^L)]`` concatenated
(``n`` = row-wise L2 normalisation; the next layer reads the unnormalised ``x^(l+1)``); scores
are dot products of user rows with item (entity) rows.

Loss terms (``loss_reduction`` "batch": under DDP every process computes the whole step, so
that data-parallel training is exactly one process's):

* per interaction batch (``calculate_loss``): ``bpr`` = batch mean of ``-log(1e-10 +
  sigmoid(pos - neg))`` on the final rows, ``reg`` = ``reg_weight`` x RecBole's EmbLoss of the
  batch's final user, positive and negative rows (unsquared norms summed / batch);
* per KG batch (``calculate_kg_loss``, TransR): with ``h, t+, t-`` projected by ``W_r``,
  ``kg`` = batch mean of ``softplus(|h + e_r - t+|^2 - |h + e_r - t-|^2)`` and ``kg_reg`` =
  ``reg_weight`` x EmbLoss(h, e_r, t+, t-) (the projected rows).

Training order. RecBole's epoch is: every interaction batch, then every KG batch (each one
optimiser step, the same Adam), then the attention update (eval mode, no gradient). The
engine's hooks run before an epoch's interaction batches (:meth:`on_epoch_start`,
:meth:`extra_steps`), so the cycle is cut differently here, keeping RecBole's sequence of
steps: epoch 0 is interaction batches only (on ``A0``); every later epoch runs first the KG
batches (drawn from the epoch's generator), then the attention update (at the epoch's first
interaction forward), then its interaction batches. **Departure**: validation after epoch e
sees RecBole's state after its epoch e's interaction batches, i.e. before that epoch's KG
batches and attention update (RecBole validates after them). ``A`` is a persistent buffer, so
checkpoints hold the attention that was used and a resumed run continues exactly.

RecBole's oddities, kept: the interaction relation's ``e_r`` and ``W_r`` are never trained (KG
batches hold KG triples only; the attention update has no gradient), so interaction edges are
scored with their initial values; the same ``reg_weight`` weighs both regularisers; inverse
relations are off by default (the run's ``kg_reverse_r: false``, RecBole's default; the
authors' code adds them: ``kg_reverse_r=true``).

Departures (numerics and randomness only): initialisation is RecBole's Xavier-normal with its
table shapes (one [PAD] row more in the user, entity and relation tables: std
``sqrt(2 / (rows + 1 + cols))``; linear layers Xavier-normal, bias 0), drawn from the torch RNG;
KG batches are shuffled and corrupted from the epoch's generator (RecBole: its own numpy
streams); message dropout masks are 16-bit draws (:func:`~simkgcl.models.ops.keep_mask`), the
last layer's for the scored rows only (users and items: the only rows that layer is computed
for, see :meth:`KGAT.propagate`). Under DDP a TransR batch is the step's global batch
(``train_batch_size`` x processes) and every process runs the same TransR steps. With
``epochs: 1`` no TransR step runs (RecBole's epoch 0 ends with a TransR pass, before it validates).
``A`` is saved with the weights, so the best epoch is tested with the attention it was
validated with. RecBole does the same in effect: ``A_in`` is not in its checkpoints, but the
final rows its validation cached (``restore_user_e``/``restore_entity_e``, its
``other_parameter_name``) are, and its test of the best checkpoint scores those cached rows.

Checked against RecBole itself (not part of the tests, which need no RecBole): on lastfm-kg,
with RecBole's parameters copied in by token and DGL's three calls stood in for, ``A0``, the
attention update, the final rows, both losses and their gradients agree to float32 rounding
(``bench/faithful_kgat.py``; BENCHMARKS.md, KGAT section).

The same maths written plainly (dense matrices, loops) is ``tests/models/reference_kgat.py``;
the tests check that this model's attention, embeddings, losses and gradients equal it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, choice, float_in, int_in, int_list, optional
from simkgcl.models.base import Recommender
from simkgcl.models.bpr import bpr_mean, emb_loss
from simkgcl.models.ckg_index import CollaborativeKG, KGBatch
from simkgcl.models.ops import (
    at_least_float32,
    l2_normalize_rows,
    scaled_dropout,
    segment_softmax,
    translation_distance,
    transr_attention_logits,
    transr_project,
)

AGGREGATORS = ("bi", "gcn", "graphsage")
LEAKY_SLOPE = 0.01  # nn.LeakyReLU()'s default, as RecBole


class Aggregator(nn.Module):
    """One propagation layer: ``x^(l+1)`` from ``x^(l)`` and ``s = A x^(l)`` (see the module
    docstring); the dropout is applied by the caller."""

    def __init__(self, in_dim: int, out_dim: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "bi":
            self.W1 = nn.Linear(in_dim, out_dim)
            self.W2 = nn.Linear(in_dim, out_dim)
        else:
            self.W = nn.Linear(2 * in_dim if kind == "graphsage" else in_dim, out_dim)

    def forward(self, ego: Tensor, side: Tensor) -> Tensor:
        if self.kind == "bi":
            return (F.leaky_relu(self.W1(ego + side), LEAKY_SLOPE)
                    + F.leaky_relu(self.W2(ego * side), LEAKY_SLOPE))
        if self.kind == "gcn":
            return F.leaky_relu(self.W(ego + side), LEAKY_SLOPE)
        return F.leaky_relu(self.W(torch.cat([ego, side], dim=1)), LEAKY_SLOPE)


def _world_size() -> int:
    """Processes training together (1 outside ``torchrun``)."""
    distributed = torch.distributed
    return (distributed.get_world_size()
            if distributed.is_available() and distributed.is_initialized() else 1)


def recbole_xavier_normal_(weight: Tensor, pad_rows: int) -> None:
    """Xavier-normal as RecBole draws it for a table with ``pad_rows`` more rows than ours."""
    rows, cols = weight.shape
    nn.init.normal_(weight, std=math.sqrt(2.0 / (rows + pad_rows + cols)))


class KGAT(Recommender):
    """KGAT with RecBole's defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "kgat"
    # RecBole's EmbLoss (unsquared norms / batch) does not split over rows, and the whole graph
    # is propagated at every step anyway: under DDP every process computes the whole step
    loss_reduction: ClassVar[str] = "batch"
    # trained by the TransR steps only, identically on every rank: kept out of DDP
    ddp_ignored_parameters: ClassVar[tuple[str, ...]] = ("relation_embedding.weight",
                                                          "trans_w.weight")
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "user and entity embedding dimension d"),
        "kg_embedding_size": KeySpec(64, int_in(1), "relation (TransR space) dimension k"),
        "layers": KeySpec([64], int_list(1), "output widths of the propagation layers "
                          "(RecBole: [64]; the paper: [64, 32, 16])"),
        "aggregator_type": KeySpec("bi", choice(AGGREGATORS), "layer aggregator: bi "
                                   "(bi-interaction) | gcn | graphsage"),
        "mess_dropout": KeySpec(0.1, float_in(0.0, 1.0, hi_open=True),
                                "dropout on each layer's output (training)"),
        "reg_weight": KeySpec(1e-5, float_in(0.0), "weight of both EmbLoss terms"),
        "kg_batch_size": KeySpec(None, optional(int_in(1)), "triples per TransR step "
                                 "(null: the step's batch, train_batch_size x processes)"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        dim = self.embedding_size = int(cfg["embedding_size"])
        kg_dim = self.kg_embedding_size = int(cfg["kg_embedding_size"])
        self.aggregator_type = str(cfg["aggregator_type"])
        self.mess_dropout = float(cfg["mess_dropout"])
        self.reg_weight = float(cfg["reg_weight"])
        batch = cfg["kg_batch_size"]
        if batch is None:  # the step's whole batch: train_batch_size on each of the processes
            batch = int(config.get("train_batch_size", 2048)) * _world_size()
        self.kg_batch_size = int(batch)

        self.ckg = CollaborativeKG(graph)
        n_rel = self.ckg.n_relation_rows
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.entity_embedding = nn.Embedding(graph.n_entities, dim)
        self.relation_embedding = nn.Embedding(n_rel, kg_dim)
        self.trans_w = nn.Embedding(n_rel, dim * kg_dim)
        widths = [dim, *cfg["layers"]]
        self.aggregator_layers = nn.ModuleList(
            Aggregator(a, b, self.aggregator_type) for a, b in itertools.pairwise(widths))
        for table in (self.user_embedding, self.entity_embedding, self.relation_embedding,
                      self.trans_w):
            recbole_xavier_normal_(table.weight, pad_rows=1)
        for layer in self.aggregator_layers.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        # the attention A, one value per CKG cell: part of the model's state (see the
        # docstring); float64 like the other graph weights (products cast it to the rows' dtype)
        self.register_buffer("attention_values", self.ckg.initial_values())
        self.register_buffer("attention_cells", self.ckg.grouped_cells(), persistent=False)
        self._kg_batches: list[KGBatch] = []
        self._attention_due = False

    # ------------------------------------------------------------------ attention

    @torch.no_grad()
    def attention(self) -> Tensor:
        """``A`` from the current parameters (one value per cell; no gradient)."""
        weight = self.entity_embedding.weight
        dtype = at_least_float32(weight.dtype)
        with torch.autocast(weight.device.type, enabled=False):
            table = torch.cat([self.user_embedding.weight, weight]).to(dtype)
            logits = transr_attention_logits(table, self.relation_embedding.weight.to(dtype),
                                             self.trans_w.weight.to(dtype), self.ckg.groups)
            cell_logits = logits.new_zeros(self.ckg.n_cells).index_add_(
                0, self.attention_cells, logits)
            return segment_softmax(cell_logits, self.ckg.cell_rows, self.ckg.n_nodes)

    def update_attention(self) -> None:
        """RecBole's ``update_attentive_A``: recompute ``A`` in place."""
        self.attention_values.copy_(self.attention())

    # ------------------------------------------------------------------ per epoch

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Epochs after the first: draw the KG batches; the attention update follows them."""
        if epoch == 0:
            self._kg_batches, self._attention_due = [], False
            return
        self._kg_batches = self.ckg.kg_batches(self.kg_batch_size, generator)
        self._attention_due = True

    def extra_steps(self) -> list[Callable[[], dict[str, Tensor]]]:
        """This epoch's TransR steps, one optimiser step each (see the base class)."""
        return [functools.partial(self.kg_loss, *batch) for batch in self._kg_batches]

    def kg_loss(self, heads: Tensor, relations: Tensor, pos_tails: Tensor,
                neg_tails: Tensor) -> dict[str, Tensor]:
        """``kg`` and ``kg_reg`` (TransR) on one batch of triples (entity ids)."""
        device = self.entity_embedding.weight.device
        heads, relations, pos_tails, neg_tails = (
            t.to(device) for t in (heads, relations, pos_tails, neg_tails))
        rows = self.entity_embedding(torch.stack([heads, pos_tails, neg_tails]))  # (3, B, d)
        h, pos, neg = transr_project(rows, relations, self.trans_w.weight).unbind(0)
        r = self.relation_embedding(relations)
        kg = F.softplus(translation_distance(h, r, pos) - translation_distance(h, r, neg))
        return {"kg": kg.mean(), "kg_reg": self.reg_weight * emb_loss(h, r, pos, neg)}

    # ------------------------------------------------------------------ propagation

    def propagate(self) -> Tensor:
        """Final rows of the users, then the items (``(U + I) x (d + sum(layers))``); dropout
        when training.

        Only these rows are ever scored, so the last layer is computed for them alone (their
        rows of ``A``; every layer before it needs every node): the same values, about
        ``N / (U + I)`` times fewer rows in the last layer (13x on ml-100k, 2x on lastfm-kg)
        and its dropout mask drawn for them alone.
        """
        ckg = self.ckg
        n = ckg.n_scored
        ego = torch.cat([self.user_embedding.weight, self.entity_embedding.weight])
        values = self.attention_values
        rows = [ego[:n]]
        last = len(self.aggregator_layers) - 1
        for depth, layer in enumerate(self.aggregator_layers):
            if depth == last:
                side = ckg.scored_adjacency.matmul(values[: ckg.n_scored_cells], ego)
                ego = layer(ego[:n], side)
            else:
                ego = layer(ego, ckg.adjacency.matmul(values, ego))
            if self.training:
                ego = scaled_dropout(ego, self.mess_dropout)
            rows.append(l2_normalize_rows(ego[:n]))
        return torch.cat(rows, dim=1)

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        if self.training and self._attention_due:
            self.update_attention()
            self._attention_due = False
        final = self.propagate()
        n_batch = users.shape[0]
        rows = final.index_select(0, torch.cat([users, self.n_users + pos_items,
                                                self.n_users + neg_items]))
        u, pos, neg = rows[:n_batch], rows[n_batch : 2 * n_batch], rows[2 * n_batch :]
        return {
            "bpr": bpr_mean((u * pos).sum(-1), (u * neg).sum(-1)),
            "reg": self.reg_weight * emb_loss(u, pos, neg),
        }

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        final = self.propagate()
        return final[: self.n_users], final[self.n_users :]
