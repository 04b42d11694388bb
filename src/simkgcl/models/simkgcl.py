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

Loss terms: ``bpr_reg`` = sum over the batch of ``-log(1e-10 + sigmoid(pos - neg))`` on the IG view
plus ``reg_weight`` x the unsquared Frobenius norms of the batch's layer-0 user, positive and
negative rows; ``cl`` = ``cl_rate`` x (InfoNCE over the batch's unique users + InfoNCE over its
unique positive items) between the IG and KG views (cosine similarity, temperature ``tau``).

Speed (plain PyTorch): the attention never expands to ``triples x d``. Since
``|e_h * w_r|^2 = (e_h * e_h) . (w_r * w_r)``, one ``E x (R + 1)`` product gives every logit factor,
gathered as one scalar per triple; the softmax is a segment operation on those scalars. The
aggregation groups triples by (head, relation) pair: ``Y = C e`` is a CSR product whose entries
``C[(h, r), t]`` are the attention weights divided by the head's degree (gradients for them come
from a sampled dense-dense product), then ``out_h = sum_r Y[(h, r)] * w_r`` is a second CSR
product. Dropout is done on the device with zero weights on a fixed, precomputed structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simkgcl.errors import ConfigError
from simkgcl.models.base import GraphData, Recommender
from simkgcl.models.graph import SparsePattern, normalized_user_item, segment_softmax

BPR_GAMMA = 1e-10
KG_VIEWS = ("fused", "pure")


class SimKGCL(Recommender):
    """SimKGCL with the seed's defaults; see the module docstring for the maths."""

    name: ClassVar[str] = "simkgcl"
    defaults: ClassVar[dict[str, Any]] = {
        "embedding_size": 64,
        "n_layers": 3,
        "reg_weight": 1e-4,
        "cl_rate": 0.5,
        "tau": 0.2,
        "kg_drop_rate": 0.1,
        "ig_drop_rate": 0.5,
        "mess_drop_rate": 0.1,
        "kg_view": "fused",
        "user_rel_softmax": True,
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = {**self.defaults, **{k: config[k] for k in self.defaults if k in config}}
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
        self._check_config()
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

        self.user_item, ui_values = normalized_user_item(graph)
        self.register_buffer("ui_values", ui_values, persistent=False)
        self._build_kg(graph)

    def _check_config(self) -> None:
        if self.kg_view not in KG_VIEWS:
            raise ConfigError(f"kg_view must be one of {', '.join(KG_VIEWS)}, got {self.kg_view!r}")
        for key in ("kg_drop_rate", "ig_drop_rate", "mess_drop_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.n_layers < 1:
            raise ConfigError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.tau <= 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")

    def _build_kg(self, graph: GraphData) -> None:
        """Sort triples by (head, relation, tail) and build the reusable CSR structures.

        Only *active* entities (items and triple heads) can be non-zero after a KG step: any
        other entity has no triples, so its new row is zero. Layers after the first therefore
        work on a compact table of ``slots``: active entities in id order (items first, as
        entity i is item i) and one trailing slot that is always zero and stands for every
        inactive entity. A triple whose tail is inactive keeps its place in the softmax (its
        logit is 0) and sends a zero message, exactly as in the full table.
        """
        n_rel_rows = self.n_relations + 1
        n_entities = self.n_entities
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

        active = torch.unique(torch.cat([torch.arange(self.n_items), heads]))
        self.n_slots = int(active.numel()) + 1  # + the zero slot
        slot_of = torch.full((n_entities,), self.n_slots - 1, dtype=torch.long)
        slot_of[active] = torch.arange(active.numel())
        head_slots, tail_slots = slot_of[heads], slot_of[tails]

        pair_keys, pair_of_triple = torch.unique_consecutive(
            head_slots * n_rel_rows + rels, return_inverse=True
        )
        pair_heads, pair_rels = pair_keys // n_rel_rows, pair_keys % n_rel_rows
        n_pairs = int(pair_keys.numel())
        self.n_triples = int(heads.numel())
        # rows = (head, relation) pairs, columns = tails (entity ids, or slots after layer 1);
        # entries = attention weight / head degree
        self.triple_pattern_full = SparsePattern(pair_of_triple, tails, (n_pairs, n_entities))
        self.triple_pattern_slots = SparsePattern(
            pair_of_triple, tail_slots, (n_pairs, self.n_slots)
        )
        # rows = head slots, columns = pairs; entries = 1 (sums the relation-scaled pair rows)
        self.pair_pattern = SparsePattern(
            pair_heads, torch.arange(n_pairs), (self.n_slots, n_pairs)
        )
        buffers = {
            "active_entities": active,
            "triple_head_slots": head_slots,
            "head_rel_full": heads * n_rel_rows + rels,
            "tail_rel_full": tails * n_rel_rows + rels,
            "head_rel_slots": head_slots * n_rel_rows + rels,
            "tail_rel_slots": tail_slots * n_rel_rows + rels,
            "pair_rels": pair_rels,
            "pair_ones": torch.ones(n_pairs),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------ propagation

    def _kg_entities(
        self, entities: Tensor, relations: Tensor, keep: Tensor | None, full: bool
    ) -> Tensor:
        """New entity slots: per head, mean over its (kept) triples of softmax(att) * e_t * w_r.

        ``entities`` is the full table (E rows, ``full``: layer 0) or the slot table; the
        result is always the slot table.
        """
        if full:
            pattern, head_rel, tail_rel = (
                self.triple_pattern_full,
                self.head_rel_full,
                self.tail_rel_full,
            )
        else:
            pattern, head_rel, tail_rel = (
                self.triple_pattern_slots,
                self.head_rel_slots,
                self.tail_rel_slots,
            )
        n_slots = self.n_slots
        with torch.autocast(entities.device.type, enabled=False):
            entities = entities.to(_at_least_float32(entities.dtype))
            relations = relations.to(entities.dtype)
            # |e * w_r|^2 for every (entity, relation): one rows x (R + 1) product.
            sq_norms = ((entities * entities) @ (relations * relations).t()).reshape(-1)
            logits = sq_norms.index_select(0, head_rel) * sq_norms.index_select(0, tail_rel)
            weights = segment_softmax(logits, self.triple_head_slots, n_slots, keep)
            ones = torch.ones_like(logits) if keep is None else keep.to(logits.dtype)
            degree = torch.zeros(n_slots, dtype=logits.dtype, device=logits.device)
            degree = degree.index_add(0, self.triple_head_slots, ones).clamp_min(1.0)
            weights = weights / degree.index_select(0, self.triple_head_slots)
            per_pair = pattern.matmul(weights, entities)
            per_pair = per_pair * relations.index_select(0, self.pair_rels)
            return self.pair_pattern.matmul(self.pair_ones.to(per_pair.dtype), per_pair)

    def _kg_forward(
        self, users: Tensor, entities: Tensor, items: Tensor, full: bool
    ) -> tuple[Tensor, Tensor]:
        """The seed's ``kg_forward``: KG aggregation for entities and users, dropout, L2 norm.

        ``entities``: full table (``full``) or slot table; ``items`` its first n_items rows
        (passed in so that autograd sees one slice of a table, not one per use). Returns
        (users, entity slots).
        """
        training = self.training
        keep = None
        if training and self.kg_drop_rate > 0.0 and self.n_triples > 0:
            n_keep = int(self.n_triples * (1.0 - self.kg_drop_rate))
            chosen = torch.randperm(self.n_triples, device=entities.device)[:n_keep]
            keep = torch.zeros(self.n_triples, dtype=torch.bool, device=entities.device)
            keep[chosen] = True
        ui_values = self.ui_values
        if training and self.ig_drop_rate > 0.0:
            kept = torch.rand(ui_values.shape, device=ui_values.device) >= self.ig_drop_rate
            ui_values = ui_values * kept.to(ui_values.dtype) / (1.0 - self.ig_drop_rate)

        relations = self.relation_embedding.weight
        new_entities = self._kg_entities(entities, relations, keep, full)
        new_users = self.user_item.matmul(ui_values, items)
        affinity = users @ relations.t()
        if self.user_rel_softmax:
            affinity = torch.softmax(affinity, dim=-1)  # float32 under autocast
        new_users = new_users + (affinity @ relations) * new_users

        if training and self.mess_drop_rate > 0.0:
            new_entities = _dropout(new_entities, self.mess_drop_rate)
            new_users = _dropout(new_users, self.mess_drop_rate)
        return _l2_normalize(new_users), _l2_normalize(new_entities)

    def views(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(IG users, IG items, KG users, KG items); dropout on when the module is training."""
        return self._views(self.entity_embedding.weight[: self.n_items])

    def _views(self, items0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n_items = self.n_items
        users0, entities0 = self.user_embedding.weight, self.entity_embedding.weight
        # entity tables are full (E rows) at layer 0 and slot tables after (see _build_kg);
        # each chain is (users, entity table, its item rows)
        fused_u, fused_e, fused_i = users0, entities0, items0  # the IG chain (fused layers)
        kg_u, kg_e, kg_i = users0, entities0, items0  # the KG chain's input
        ig_sum_u = ig_sum_i = None
        kg_sum_u, kg_sum_i = users0, items0
        for layer in range(self.n_layers):
            ig_u = self.user_item.matmul(self.ui_values, fused_i)
            ig_i = self.user_item.t_matmul(self.ui_values, fused_u)
            new_u, new_e = self._kg_forward(kg_u, kg_e, kg_i, full=layer == 0)
            new_i = new_e[:n_items]
            fused_u = new_u + ig_u
            fused_i = new_i + ig_i
            fused_e = torch.cat([fused_i, new_e[n_items:]])
            if self.kg_view == "fused":
                kg_u, kg_e, kg_i = fused_u, fused_e, fused_i
            else:
                kg_u, kg_e, kg_i = new_u, new_e, new_i
            ig_sum_u = fused_u if ig_sum_u is None else ig_sum_u + fused_u
            ig_sum_i = fused_i if ig_sum_i is None else ig_sum_i + fused_i
            kg_sum_u = kg_sum_u + kg_u
            kg_sum_i = kg_sum_i + kg_i
        assert ig_sum_u is not None and ig_sum_i is not None
        n = self.n_layers
        return ig_sum_u / n, ig_sum_i / n, kg_sum_u / (n + 1), kg_sum_i / (n + 1)

    # ------------------------------------------------------------------ losses

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        items0 = self.entity_embedding.weight[: self.n_items]
        ig_users, ig_items, kg_users, kg_items = self._views(items0)
        u = ig_users.index_select(0, users)
        pos_scores = (u * ig_items.index_select(0, pos_items)).sum(-1)
        neg_scores = (u * ig_items.index_select(0, neg_items)).sum(-1)
        bpr = -torch.log(BPR_GAMMA + torch.sigmoid(pos_scores - neg_scores)).sum()
        reg = (
            torch.linalg.vector_norm(self.user_embedding.weight.index_select(0, users))
            + torch.linalg.vector_norm(items0.index_select(0, pos_items))
            + torch.linalg.vector_norm(items0.index_select(0, neg_items))
        )
        unique_users = torch.unique(users)
        unique_items = torch.unique(pos_items)
        cl = info_nce(
            ig_users.index_select(0, unique_users), kg_users.index_select(0, unique_users), self.tau
        ) + info_nce(
            ig_items.index_select(0, unique_items), kg_items.index_select(0, unique_items), self.tau
        )
        return {"bpr_reg": bpr + self.reg_weight * reg, "cl": self.cl_rate * cl}

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        ig_users, ig_items, _, _ = self.views()
        return ig_users, ig_items


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _dropout(x: Tensor, rate: float) -> Tensor:
    """Inverted dropout; a uniform draw compared to ``rate`` is cheaper than ``bernoulli_`` on CPU."""
    scaled_mask = torch.rand_like(x).ge_(rate).mul_(1.0 / (1.0 - rate))
    return x * scaled_mask


def _l2_normalize(x: Tensor) -> Tensor:
    return F.normalize(x.to(_at_least_float32(x.dtype)), dim=1)


def info_nce(view1: Tensor, view2: Tensor, tau: float) -> Tensor:
    """Sum over rows of -log softmax of the matching row among all rows (cosine / tau)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = F.normalize(view1.to(_at_least_float32(view1.dtype)), dim=1)
        b = F.normalize(view2.to(a.dtype), dim=1)
        positive = (a * b).sum(1) / tau
        total = torch.logsumexp(a @ b.t() / tau, dim=1)
        return (total - positive).sum()
