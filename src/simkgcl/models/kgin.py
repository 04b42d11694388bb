"""KGIN: user intents over relations and relational path-aware aggregation on a KG.

Wang et al., "Learning Intents behind Interactions with Knowledge Graph for Recommendation",
WWW 2021. Faithful to RecBole 1.2.1's ``knowledge_aware_recommender/kgin.py`` (itself a port of
the authors' code), with RecBole's defaults (``properties/model/KGIN.yaml``).

Notation: U users, I items (= entities 0..I-1), E entities, F intents (``n_factors``),
d = ``embedding_size``; the relation table ``W`` has ``C = R + extra_relation_rows`` rows
(rows 0..R-1 are the dataset's relations). Parameters: user rows ``u``, entity rows ``e``,
``W``, the intent embeddings ``L`` (F x d, RecBole's ``latent_embedding``) and the intents'
relation logits ``A`` (F x C, RecBole's ``disen_weight_att``); all Xavier-uniform.

Each intent is a mix of relations, ``D = softmax(A, dim=1) W`` (F x d). One hop (``context_hops``
of them, from ``u^0 = u``, ``e^0 = e``):

* entities — relational path-aware aggregation, the mean over a head's (relation, tail) messages
  (zero for an entity without triples)::

      e_h' = mean_{(h, r, t)} e_t * w_r

* users — the interactions' mean, weighted through the intents the user attends to::

      u' = (sum_i v_ui e_i) * (1 + softmax(u L^T) D),     v_ui = 1 / deg(u)  (RecBole's "si")

* message dropout (rate ``mess_dropout_rate``, when training) on both, then every row is
  L2-normalised: ``u^(l+1)``, ``e^(l+1)``.

Final rows (scores are ``u . e_i``): ``u^0 + sum_l u^l``, ``e^0 + sum_l e^l`` (layer 0 plus the
normalised hops, no mean).

Loss terms (``loss_reduction`` "mean"): ``bpr`` = batch mean of ``-log(1e-10 + sigmoid(pos -
neg))`` on the final rows; ``reg`` = ``reg_weight`` x RecBole's EmbLoss of the batch's *final*
user, positive and negative rows (unsquared Frobenius norms summed / batch size: the gradient
runs through the propagation, as RecBole's); ``ind`` = ``sim_regularity`` x the independence of
the intents' relation logits ``A`` (``ind``: ``cosine`` — the default —, ``distance`` or ``mi``
with ``temperature``; :mod:`~simkgcl.models.ops.independence`).

RecBole's oddities, kept (each is the reference's behaviour, not the paper's):

* ``node_dropout_rate`` is the share of triples **kept**: every forward uses
  ``int(n_triples * node_dropout_rate)`` triples drawn uniformly without replacement (the mean
  runs over a head's kept triples); 0 turns the sampling off. The interaction matrix's dropout
  is drawn in the same branch (only when ``node_dropout_rate > 0``) with rate
  ``mess_dropout_rate`` (RecBole's ``SparseDropout(p=mess_dropout_rate)``; kept entries scaled
  by ``1 / (1 - rate)``), when training.
* RecBole samples the triples in evaluation too (its ``forward`` never looks at ``training``),
  so its test embeddings use a random half of the KG. Here evaluation uses every triple (the
  authors' code) unless ``eval_edge_sampling: true``, which reproduces RecBole's.
* RecBole's relation table has R + 2 rows ([PAD] and [UI-Relation] carry no triple) and every
  row enters ``softmax(A) W`` and the independence loss: ``extra_relation_rows`` = 2 (default)
  reproduces it, 0 keeps only the dataset's relations. Rows R.. are the extra rows (copy weights
  from RecBole by relation token; [PAD] and [UI-Relation] go to rows R and R + 1).
* The independence loss is RecBole's for all three kinds, epsilons included
  (:mod:`~simkgcl.models.ops.independence`).

Departures (numerics and randomness only): triples are drawn with ``torch.randperm`` on the
torch RNG (RecBole: ``np.random.choice``), interaction dropout with 16-bit draws
(:func:`~simkgcl.models.ops.keep_mask`), message dropout without its ``1 / (1 - rate)`` scale
(the L2 normalisation right after it cancels it); ``u * (1 + s)`` is computed where RecBole
writes ``u * s + u``, a mean as a sum of ``1/n``-weighted messages: float32 rounding apart,
the same values (``bench/faithful_kgin.py`` measures it).

Speed: the aggregation is three products on the fixed structures of
:class:`~simkgcl.models.kg_index.KGIndex` (never a ``triples x d`` tensor; the users'
interactions ride in the same gather product; dropped triples are zero weights on the fixed
pattern), with entities without triples collapsed into one zero slot after layer 0.

The same maths written plainly (dense tensors, loops) is ``tests/models/reference_kgin.py``; the
tests check that this model's embeddings, losses and gradients equal it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, boolean, choice, float_in, int_in
from simkgcl.models.base import Recommender
from simkgcl.models.bpr import bpr_mean, emb_loss
from simkgcl.models.kg_index import KGIndex
from simkgcl.models.ops import (
    INDEPENDENCE_KINDS,
    at_least_float32,
    independence_loss,
    intent_scale,
    interaction_weights,
    keep_mask,
    l2_normalize_rows,
    relational_aggregate,
    sampled_subset,
    segment_mean_weights,
    sparse_dropout,
    unique_interactions,
)


class KGIN(Recommender):
    """KGIN with RecBole's defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "kgin"
    loss_reduction: ClassVar[str] = "mean"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_factors": KeySpec(4, int_in(1), "user intents F"),
        "context_hops": KeySpec(2, int_in(1), "aggregation hops"),
        "node_dropout_rate": KeySpec(
            0.5, float_in(0.0, 1.0), "share of KG triples KEPT per forward (RecBole's edge "
            "sampling); 0: no sampling, and no interaction dropout"),
        "mess_dropout_rate": KeySpec(
            0.0, float_in(0.0, 1.0, hi_open=True),
            "message dropout after each hop, and the interaction matrix's dropout (RecBole)"),
        "ind": KeySpec("cosine", choice(INDEPENDENCE_KINDS), "intent independence loss"),
        "sim_regularity": KeySpec(1e-4, float_in(0.0), "weight of the independence loss"),
        "reg_weight": KeySpec(1e-5, float_in(0.0), "weight of the L2 term on final rows"),
        "temperature": KeySpec(0.2, float_in(0.0, lo_open=True), "temperature of ind: mi"),
        "extra_relation_rows": KeySpec(
            2, int_in(0), "relation-table rows beyond the R relations, all in softmax(A) W: "
            "2 = RecBole's [PAD] and [UI-Relation]"),
        "eval_edge_sampling": KeySpec(
            False, boolean, "sample triples in evaluation too (RecBole's behaviour)"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        dim = int(cfg["embedding_size"])
        self.n_factors = int(cfg["n_factors"])
        self.context_hops = int(cfg["context_hops"])
        self.node_dropout_rate = float(cfg["node_dropout_rate"])
        self.mess_dropout_rate = float(cfg["mess_dropout_rate"])
        self.ind = str(cfg["ind"])
        self.sim_regularity = float(cfg["sim_regularity"])
        self.reg_weight = float(cfg["reg_weight"])
        self.temperature = float(cfg["temperature"])
        self.eval_edge_sampling = bool(cfg["eval_edge_sampling"])
        n_relation_rows = graph.n_relations + int(cfg["extra_relation_rows"])

        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.entity_embedding = nn.Embedding(graph.n_entities, dim)
        self.relation_embedding = nn.Embedding(n_relation_rows, dim)
        self.intent_embedding = nn.Embedding(self.n_factors, dim)
        self.intent_relation_logits = nn.Parameter(torch.empty(self.n_factors, n_relation_rows))
        for weight in (self.user_embedding.weight, self.entity_embedding.weight,
                       self.relation_embedding.weight, self.intent_embedding.weight,
                       self.intent_relation_logits):
            nn.init.xavier_uniform_(weight)

        host = graph.to("cpu")  # structures are built once on the host; .to(device) moves them
        users, items = unique_interactions(host.train_users, host.train_items, host.n_items)
        self.kg = KGIndex(host, users, items, n_relation_rows)
        # layer 0 reads the entity table itself (entity-id columns): no node table to build
        self.entity_gather = self.kg.entity_gather()
        self.n_kept_triples = int(self.kg.n_triples * self.node_dropout_rate)
        self.register_buffer(
            "ui_values", interaction_weights(users, items, self.n_users, self.n_items, "mean"),
            persistent=False)
        self.register_buffer(
            "triple_weights",
            segment_mean_weights(self.kg.triple_head_slots, self.kg.n_slots, dtype=torch.float64),
            persistent=False)

    # ------------------------------------------------------------------ propagation

    def _draw_values(self, dtype: torch.dtype) -> Tensor:
        """``G``'s entries for one forward: ``[UI values; triple weights]`` (fresh draws)."""
        ui_values = self.ui_values.to(dtype)
        triple_weights = self.triple_weights.to(dtype)
        if self.node_dropout_rate > 0.0:
            if self.training and self.mess_dropout_rate > 0.0:
                ui_values = sparse_dropout(ui_values, self.mess_dropout_rate)
            if (self.training or self.eval_edge_sampling) and self.node_dropout_rate < 1.0:
                kept = sampled_subset(self.kg.n_triples, self.n_kept_triples,
                                      self.ui_values.device)
                triple_weights = segment_mean_weights(
                    self.kg.triple_head_slots, self.kg.n_slots, kept, dtype)
        return torch.cat([ui_values, triple_weights])

    def _message_dropout(self, rows: Tensor) -> Tensor:
        """Message dropout without its ``1 / (1 - rate)`` scale: the L2 norm after it cancels it."""
        if not (self.training and self.mess_dropout_rate > 0.0):
            return rows
        return rows * keep_mask(rows.shape, self.mess_dropout_rate, rows.dtype, rows.device)

    def propagate(self) -> tuple[Tensor, Tensor, Tensor]:
        """(sum of the normalised hops, layer-0 user rows, layer-0 entity rows); dropout on
        when training.

        The sum is a ``[users; slots]`` table whose first ``U + I`` rows are the users then the
        items; a final row is its row plus the layer-0 row.
        """
        kg = self.kg
        weight = self.entity_embedding.weight
        with torch.autocast(weight.device.type, enabled=False):
            dtype = at_least_float32(weight.dtype)
            users0 = users = self.user_embedding.weight.to(dtype)
            entities0 = table = weight.to(dtype)
            values = self._draw_values(dtype)
            relations = self.relation_embedding.weight.to(dtype)
            pair_relations = relations.detach().index_select(0, kg.pair_rels)
            intents = self.intent_embedding.weight.to(dtype)
            intent_relations = torch.softmax(
                self.intent_relation_logits.to(dtype), dim=1) @ relations
            total: Tensor | None = None
            for hop in range(self.context_hops):
                gather = self.entity_gather if hop == 0 else kg.slots.gather
                gathered = gather.matmul(values, table)  # [users; pairs]
                scale = intent_scale(users, intents, intent_relations)
                new = relational_aggregate(gathered, scale, relations, pair_relations,
                                           kg.pair_rels, kg.aggregate, kg.aggregate_values)
                table = l2_normalize_rows(self._message_dropout(new))  # [users; slots]
                users = table[: self.n_users]
                total = table if total is None else total + table
        assert total is not None
        return total, users0, entities0

    def independence(self) -> Tensor:
        """The intents' independence loss (unweighted)."""
        logits = self.intent_relation_logits
        with torch.autocast(logits.device.type, enabled=False):
            return independence_loss(logits.to(at_least_float32(logits.dtype)), self.ind,
                                     self.temperature)

    # ------------------------------------------------------------------ losses

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        n_batch = users.shape[0]
        total, users0, entities0 = self.propagate()
        items = torch.cat([pos_items, neg_items])
        final = total.index_select(0, torch.cat([users, self.n_users + items])) + torch.cat(
            [users0.index_select(0, users), entities0.index_select(0, items)])
        u, pos, neg = final[:n_batch], final[n_batch : 2 * n_batch], final[2 * n_batch :]
        return {
            "bpr": bpr_mean((u * pos).sum(-1), (u * neg).sum(-1)),
            "reg": self.reg_weight * emb_loss(u, pos, neg),
            "ind": self.sim_regularity * self.independence(),
        }

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        total, users0, entities0 = self.propagate()
        n_users = self.n_users
        return (total[:n_users] + users0,
                total[n_users : n_users + self.n_items] + entities0[: self.n_items])
