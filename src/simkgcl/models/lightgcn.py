"""LightGCN: linear propagation on the normalised user-item graph, mean of the layers.

Conventions are RecBole's LightGCN: ``e^(l+1) = D^-1/2 A D^-1/2 e^(l)``, final embedding = mean
of layers 0..L; loss ``bpr`` = batch mean of ``-log(1e-10 + sigmoid(pos - neg))`` and ``reg`` =
``reg_weight`` x EmbLoss of the batch's layer-0 rows (``require_pow`` False, RecBole's default:
unsquared L2 norms summed / batch size). Defaults follow RecBole's LightGCN.yaml (embedding 64,
reg_weight 1e-5) except ``n_layers`` = 3 (RecBole: 2), the depth SimKGCL uses, so the two compare
like for like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, boolean, float_in, int_in
from simkgcl.models.base import Recommender, user_item_tables
from simkgcl.models.bpr import bpr_mean, emb_loss
from simkgcl.models.ops import Graph, layer_mean, normalized_adjacency, propagate_layers


class LightGCNEncoder(Recommender):
    """What LightGCN, SGL, SimGCL and XSimGCL share: Xavier-uniform user and item tables and
    the symmetric-normalised interaction graph (``adjacency``, ``adjacency_values``)."""

    mean_has_layer0: ClassVar[bool] = True  # the final rows average layers 0..L

    def __init__(self, graph: GraphData, config: Mapping[str, Any], dim: int):
        super().__init__(graph, config)
        self.user_embedding, self.item_embedding = user_item_tables(
            self.n_users, self.n_items, dim
        )
        self.adjacency, values = normalized_adjacency(
            graph.train_users, graph.train_items, self.n_users, self.n_items
        )
        self.register_buffer("adjacency_values", values, persistent=False)

    def layer0(self) -> Tensor:
        """The ``(U + I) x d`` table: user rows, then item rows."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def full_graph(self, n_layers: int) -> list[Graph]:
        """The interaction graph for each of ``n_layers`` layers."""
        return [(self.adjacency, self.adjacency_values)] * n_layers

    def layer_fold_in(self, inputs: list[Tensor], n_mean: int) -> Tensor:
        """Fold-in table of a layer mean over ``n_mean`` layers whose user layers ``1..L`` read
        ``inputs`` (layers ``0..L-1``): a user's layer ``l`` is ``sum_i e_i^(l-1) /
        sqrt(d_u d_i)``, so its final row is ``sum_i F_i / sqrt(d_u d_i)`` with ``F`` the item
        rows of ``sum(inputs) / n_mean`` (plus its own layer 0 where the mean has it)."""
        return layer_mean(inputs)[self.n_users :] * (len(inputs) / n_mean)

    def fold_in_items(self) -> tuple[Tensor, float]:
        """Layers 0..L-1 feed the user's layers 1..L. Scores average layers 0..L (LightGCN,
        SGL: the user's own layer 0 enters with weight 1/(L+1)) or 1..L (SimGCL, XSimGCL:
        ``mean_has_layer0`` False, nothing is left out)."""
        n_layers = int(self.n_layers)  # type: ignore[attr-defined]  # every subclass sets it
        x = self.layer0()
        inputs = [x, *propagate_layers(x, self.full_graph(n_layers - 1))]
        n_mean = n_layers + 1 if self.mean_has_layer0 else n_layers
        return self.layer_fold_in(inputs, n_mean), (1.0 / n_mean if self.mean_has_layer0 else 0.0)


class LightGCN(LightGCNEncoder):
    """Users and items embedded, propagated ``n_layers`` times, layers averaged."""

    name: ClassVar[str] = "lightgcn"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_layers": KeySpec(3, int_in(1), "propagation layers L"),
        "reg_weight": KeySpec(1e-5, float_in(0.0), "weight of the L2 term on layer-0 rows"),
        "require_pow": KeySpec(False, boolean, "squared norms in the L2 term (RecBole's option)"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        cfg = self.settings(config)
        super().__init__(graph, config, int(cfg["embedding_size"]))
        self.n_layers = int(cfg["n_layers"])
        self.reg_weight = float(cfg["reg_weight"])
        self.require_pow = bool(cfg["require_pow"])

    def propagate(self) -> tuple[Tensor, Tensor]:
        """Mean of layer embeddings 0..L, split into (users, items)."""
        x = self.layer0()
        final = layer_mean([x, *propagate_layers(x, self.full_graph(self.n_layers))])
        return final[: self.n_users], final[self.n_users :]

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        user_all, item_all = self.propagate()
        u = user_all.index_select(0, users)
        p = item_all.index_select(0, pos_items)
        n = item_all.index_select(0, neg_items)
        loss = bpr_mean((u * p).sum(-1), (u * n).sum(-1))
        reg = emb_loss(
            self.user_embedding.weight.index_select(0, users),
            self.item_embedding.weight.index_select(0, pos_items),
            self.item_embedding.weight.index_select(0, neg_items),
            require_pow=self.require_pow,
        )
        return {"bpr": loss, "reg": self.reg_weight * reg}

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.propagate()
