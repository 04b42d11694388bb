"""XSimGCL: SimGCL with one perturbed propagation and a cross-layer contrast.

Yu et al., "XSimGCL: Towards Extremely Simple Graph Contrastive Learning for Recommendation",
IEEE TKDE 2023. Faithful to SELFRec's ``model/graph/XSimGCL.py`` (with ``util/loss_torch.py``);
written from reading it, nothing copied. The encoder, noise, BPR and L2 terms are SimGCL's
(:mod:`~simkgcl.models.simgcl`, which this model extends); what differs:

* per batch a *single* perturbed propagation (``e^(l+1) = A e^(l) + eps sign(.) u / |u|``);
  its mean of layers 1..L is the recommendation view: BPR and L2 are computed on it (SimGCL
  uses a clean propagation for them);
* the contrast is cross-layer: between that final view and the perturbed output of layer
  ``l*`` (``cl_layer``; 0 = the layer-0 table), over the batch's distinct users and distinct
  positive items, each InfoNCE the mean over its rows, temperature ``tau``;
* scores (:meth:`final_embeddings`) come from a clean propagation, layers 1..L.

Loss terms: ``bpr`` (mean, ``-log(1e-5 + sigmoid)``), ``reg`` (``reg_weight`` x the Frobenius
norms of the propagated user and positive rows / batch size), ``cl`` = ``cl_rate`` x (users +
items); ``loss_reduction`` "mean".

Defaults: SELFRec's ``conf/XSimGCL.yaml``, the paper's Yelp2018 settings: 2 layers, ``cl_layer``
(l*) 1, ``cl_rate`` (lambda) 0.2, ``eps`` 0.2, ``tau`` 0.15, ``reg_weight`` 1e-4, embedding 64,
lr 1e-3, batch 2048.

Departures from SELFRec: those of SimGCL (the engine's RecBole-style sampler, nodes without
training interactions kept with zero rows, ``1e-7`` added to the degrees, the RNG stream,
DDP weighting). SELFRec lets ``l*`` exceed the number of layers (the contrast then silently uses
layer 0); here ``cl_layer`` must lie in ``0..n_layers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, float_in, int_in
from simkgcl.models.ops import layer_mean
from simkgcl.models.simgcl import SimGCL


class XSimGCL(SimGCL):
    """One perturbed LightGCN pass; InfoNCE between its final view and layer ``cl_layer``."""

    name: ClassVar[str] = "xsimgcl"
    keys: ClassVar[dict[str, KeySpec]] = {
        **SimGCL.keys,
        "cl_rate": KeySpec(0.2, float_in(0.0), "weight of the InfoNCE term (SELFRec's lambda)"),
        "eps": KeySpec(0.2, float_in(0.0), "norm of the noise added to every row at each layer"),
        "tau": KeySpec(0.15, float_in(0.0, lo_open=True), "InfoNCE temperature"),
        "cl_layer": KeySpec(1, int_in(0), "layer l* contrasted with the final view "
                            "(0 = the layer-0 table; at most n_layers)"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        self.cl_layer = int(self.settings(config)["cl_layer"])
        if self.cl_layer > self.n_layers:
            raise ConfigError(f"config key 'cl_layer': got {self.cl_layer}; allowed: at most "
                              f"n_layers ({self.n_layers})")

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        users, pos_items, neg_items = users.long(), pos_items.long(), neg_items.long()
        layers = self.layers(perturbed=True)
        final = layer_mean(layers)
        cross = self.layer0() if self.cl_layer == 0 else layers[self.cl_layer - 1]
        terms = self.rec_terms(final, users, pos_items, neg_items)
        terms["cl"] = self.contrast(final, cross, users, pos_items)
        return terms
