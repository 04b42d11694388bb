"""SimGCL: graph contrastive learning with noise instead of graph augmentations.

Yu et al., "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for
Recommendation", SIGIR 2022. Faithful to SELFRec's PyTorch ``model/graph/SimGCL.py`` (with
``util/loss_torch.py``); written from reading it, nothing copied.

Notation: U users, I items, ``x`` the ``(U + I) x d`` layer-0 table, ``A`` the symmetric-
normalised user-item graph (:mod:`~simkgcl.models.ops.adjacency`). A view is LightGCN's
propagation (:mod:`~simkgcl.models.ops.propagation`) *without the input layer*: the mean of
layers 1..L. A perturbed view adds, after every layer, noise of norm ``eps`` in the orthant of
each entry (:mod:`~simkgcl.models.ops.noise`), and the next layer reads the perturbed rows:

    e^(l+1) = A e^(l) + eps sign(A e^(l)) u / |u|,   u ~ U[0, 1)^d per row, fresh per call

Per batch: the clean view (BPR, scores) and two perturbed views (drawn from the torch global RNG,
so a resumed run continues the same stream). Loss terms, SELFRec's reductions (batch means,
``loss_reduction`` "mean"):

* ``bpr`` = mean over the batch of ``-log(1e-5 + sigmoid(u.p - u.n))`` on the clean view
  (SELFRec's ``bpr_loss``, its ``10e-6``);
* ``reg`` = ``reg_weight`` x (``|U_b|_F + |P_b|_F``) / batch size on the clean view's
  *propagated* user and positive rows (SELFRec's ``l2_reg_loss(reg, user_emb, pos_item_emb)``:
  no negative rows, not the layer-0 rows as in RecBole's models);
* ``cl`` = ``cl_rate`` x (InfoNCE over the batch's distinct users + over its distinct positive
  items) between the two perturbed views, each the *mean* over its rows (SELFRec's ``InfoNCE``),
  cosine similarity, temperature ``tau``.

Defaults: SELFRec's ``conf/SimGCL.yaml``, which are the paper's Yelp2018 settings: 2 layers,
``cl_rate`` (SELFRec's lambda) 0.5, ``eps`` 0.1, ``tau`` 0.2 (fixed in SELFRec's code, a key here),
``reg_weight`` (``reg.lambda``) 1e-4, embedding 64, lr 1e-3, batch 2048. The paper reports other
lambdas for its other datasets (e.g. 2.0 on Amazon-Book): tune ``cl_rate`` per dataset.

Departures from SELFRec:

* Batches come from the engine's sampler (RecBole-style: shuffled interactions, one uniform
  negative per positive outside the user's training items, batch 2048). SELFRec's own
  ``next_batch_pairwise`` does the same with Python's ``random``; the draws differ.
* SELFRec's nodes are the users and items of its training file; ours are every user and item
  of the dataset (one without training interactions keeps zero rows in every layer, so it never
  moves and scores 0). Degrees get ``1e-7`` added (SELFRec: 0 for an isolated node); rows of
  nodes with interactions are unchanged by it up to float32 rounding.
* The noise comes from ``torch.rand`` on the model's device, as SELFRec's ``rand_like``; only
  the RNG stream differs.
* Under DDP every process averages over its own rows and its own distinct ids; the trainer
  weighs the processes by their shares, exact for ``bpr`` and approximate for ``reg``/``cl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, float_in, int_in
from simkgcl.models.bpr import bpr_mean, emb_loss
from simkgcl.models.lightgcn import LightGCNEncoder
from simkgcl.models.ops import (
    add_sign_aligned,
    info_nce,
    layer_mean,
    propagate_layers,
    random_directions,
)

SELFREC_BPR_GAMMA = 1e-5  # SELFRec's bpr_loss: -log(10e-6 + sigmoid(.))


class SimGCL(LightGCNEncoder):
    """LightGCN (layers 1..L) + InfoNCE between two noise-perturbed views; see the docstring."""

    name: ClassVar[str] = "simgcl"
    loss_reduction: ClassVar[str] = "mean"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_layers": KeySpec(2, int_in(1), "propagation layers L"),
        "cl_rate": KeySpec(0.5, float_in(0.0), "weight of the InfoNCE term (SELFRec's lambda)"),
        "eps": KeySpec(0.1, float_in(0.0), "norm of the noise added to every row at each layer"),
        "tau": KeySpec(0.2, float_in(0.0, lo_open=True), "InfoNCE temperature"),
        "reg_weight": KeySpec(1e-4, float_in(0.0),
                              "weight of the L2 term on the propagated user and positive rows"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        cfg = self.settings(config)
        super().__init__(graph, config, int(cfg["embedding_size"]))
        self.n_layers = int(cfg["n_layers"])
        self.cl_rate = float(cfg["cl_rate"])
        self.eps = float(cfg["eps"])
        self.tau = float(cfg["tau"])
        self.reg_weight = float(cfg["reg_weight"])

    def perturb(self, x: Tensor) -> Tensor:
        """``x`` plus sign-aligned noise of norm ``eps`` per row (a fresh draw)."""
        return add_sign_aligned(x, random_directions(x.shape, x.dtype, x.device), self.eps)

    def layers(self, perturbed: bool) -> list[Tensor]:
        """Layers 1..L over ``[users; items]``, perturbed after each layer or not."""
        return propagate_layers(self.layer0(), self.full_graph(self.n_layers),
                                self.perturb if perturbed else None)

    def contrast(self, view1: Tensor, view2: Tensor, users: Tensor, pos_items: Tensor) -> Tensor:
        """``cl_rate`` x (mean InfoNCE over the batch's distinct users + distinct items)."""
        total = view1.new_zeros(())
        for ids, offset in ((torch.unique(users), 0), (torch.unique(pos_items), self.n_users)):
            rows = ids + offset
            total = total + info_nce(view1[rows], view2[rows], self.tau) / ids.numel()
        return self.cl_rate * total

    def rec_terms(self, final: Tensor, users: Tensor, pos_items: Tensor,
                  neg_items: Tensor) -> dict[str, Tensor]:
        """SELFRec's BPR (mean, 1e-5 inside the log) and L2 on the propagated batch rows."""
        u = final.index_select(0, users)
        p = final.index_select(0, self.n_users + pos_items)
        n = final.index_select(0, self.n_users + neg_items)
        bpr = bpr_mean((u * p).sum(-1), (u * n).sum(-1), gamma=SELFREC_BPR_GAMMA)
        return {"bpr": bpr, "reg": self.reg_weight * emb_loss(u, p)}

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        users, pos_items, neg_items = users.long(), pos_items.long(), neg_items.long()
        terms = self.rec_terms(layer_mean(self.layers(perturbed=False)), users, pos_items,
                               neg_items)
        view1 = layer_mean(self.layers(perturbed=True))
        view2 = layer_mean(self.layers(perturbed=True))
        terms["cl"] = self.contrast(view1, view2, users, pos_items)
        return terms

    mean_has_layer0: ClassVar[bool] = False  # scores average layers 1..L (fold-in is exact)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        final = layer_mean(self.layers(perturbed=False))
        return final[: self.n_users], final[self.n_users :]
