"""SGL: self-supervised graph learning on the user-item graph.

Wu et al., "Self-supervised Graph Learning for Recommendation", SIGIR 2021. Faithful to RecBole
1.2.1's ``general_recommender/sgl.py``, with its defaults (``properties/model/SGL.yaml``: type ED,
3 layers, ssl_tau 0.5, reg_weight 1e-5, ssl_weight 0.05, drop_ratio 0.1, embedding 64); the key
names are RecBole's. ``bench/faithful_sgl.py`` checks it against RecBole on a real split.

Notation: U users, I items, ``x`` the ``(U + I) x d`` table of layer-0 rows. Every view is
LightGCN's propagation (:mod:`~simkgcl.models.ops.propagation`), the mean of layers 0..L:

* main view on ``A = D^-1/2 A D^-1/2`` of the training interactions (scores and the BPR term);
* views 1 and 2 on thinned graphs, each renormalised on its own degrees (the same formula with
  ``1e-7`` added to every degree, so an isolated node's rows stay zero):

  - ``ed`` (edge dropout): exactly ``int(n (1 - drop_ratio))`` of the ``n`` interactions kept,
    drawn uniformly without replacement; one graph for every layer;
  - ``nd`` (node dropout): exactly ``int(U drop_ratio)`` users and ``int(I drop_ratio)`` items
    dropped, uniformly, with every interaction they touch; one graph for every layer;
  - ``rw`` (random walk): ``ed`` drawn afresh for each layer (L graphs per view).

  The two views are drawn once per epoch in :meth:`SGL.on_epoch_start` from the trainer's
  ``(seed, epoch)`` generator (view 1's graphs, then view 2's), as the paper does and as RecBole
  does at every ``model.train()``, i.e. at the start of each epoch.

Loss terms, with RecBole's reductions (``loss_reduction`` "sum"):

* ``bpr`` = sum over the batch of ``-log sigmoid(u.p - u.n)`` on the main view (RecBole's
  ``calc_bpr_loss``: a sum and ``logsigmoid``, not the mean of ``BPRLoss``);
* ``reg`` = ``reg_weight`` x RecBole's ``EmbLoss`` of the batch's layer-0 user, positive and
  negative rows (unsquared Frobenius norms summed, divided by the batch size);
* ``ssl`` = ``ssl_weight`` x (InfoNCE of the batch's users + of its positive items): each batch
  row (repeats included) of view 1 against every user (item) row of view 2, its own row the
  positive; cosine similarity, temperature ``ssl_tau``; summed over the batch rows
  (:func:`~simkgcl.models.ops.info_nce` with ``rows``).

Departures from RecBole, all outside the maths above:

* RecBole's tables have a ``[PAD]`` user and item (row 0, no interactions) that enter the
  InfoNCE denominators (every row of view 2) with their layer-0 rows / (L + 1); ours have no
  such rows. ``bench/faithful_sgl.py`` reports the difference with and without them.
* Random draws: RecBole samples with numpy's global RNG, ours with the per-epoch torch generator
  (same distributions, other draws). In ``nd``, RecBole's counts include its [PAD] rows
  (``int(1873 x 0.1)`` = ``int(1872 x 0.1)`` users on lastfm-kg).
* Repeated (user, item) pairs count once (RecBole would weigh them twice); the package's
  datasets have none after loading.
* Batches come from the engine's sampler, which is RecBole's: shuffled interactions, one
  uniform negative per positive outside the user's training items, batch 2048.
* Under DDP ``bpr`` and ``ssl`` are sums over rows, exact; ``reg`` (a norm of the whole batch over
  the batch size) is computed per process, so its weight is not that of one process.

Speed: the graphs are fixed CSR patterns (:class:`~simkgcl.models.ops.SparsePattern`) built
once per epoch, not per batch; the InfoNCE runs once per distinct id with its count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, choice, float_in, int_in
from simkgcl.models.bpr import emb_loss
from simkgcl.models.lightgcn import LightGCNEncoder
from simkgcl.models.ops import (
    Graph,
    bipartite_adjacency,
    info_nce,
    interaction_weights,
    layer_mean,
    propagate_layers,
    unique_interactions,
)

AUGMENTATIONS = ("ed", "nd", "rw")
Edges = tuple[Tensor, Tensor]
"""Kept interactions of one augmented graph: (users, items), int64, sorted by user then item."""


class SGL(LightGCNEncoder):
    """LightGCN + InfoNCE between two augmented graphs; see the module docstring for the maths."""

    name: ClassVar[str] = "sgl"
    loss_reduction: ClassVar[str] = "sum"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "n_layers": KeySpec(3, int_in(1), "propagation layers L"),
        "type": KeySpec("ed", choice(AUGMENTATIONS),
                        "augmentation: ed (edge dropout), nd (node dropout), rw (random walk: "
                        "edge dropout redrawn per layer)"),
        "drop_ratio": KeySpec(0.1, float_in(0.0, 1.0, hi_open=True),
                              "share of edges (ed, rw) or of users and items (nd) dropped"),
        "ssl_tau": KeySpec(0.5, float_in(0.0, lo_open=True), "InfoNCE temperature"),
        "ssl_weight": KeySpec(0.05, float_in(0.0), "weight of the InfoNCE term"),
        "reg_weight": KeySpec(1e-5, float_in(0.0), "weight of the L2 term on layer-0 rows"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        cfg = self.settings(config)
        super().__init__(graph, config, int(cfg["embedding_size"]))
        self.n_layers = int(cfg["n_layers"])
        self.augmentation = str(cfg["type"])
        self.drop_ratio = float(cfg["drop_ratio"])
        self.ssl_tau = float(cfg["ssl_tau"])
        self.ssl_weight = float(cfg["ssl_weight"])
        self.reg_weight = float(cfg["reg_weight"])
        host = graph.to("cpu")
        # the interactions the views are drawn from stay on the host, where the draws happen
        self.edges: Edges = unique_interactions(host.train_users, host.train_items, self.n_items)
        self.view_edges: list[list[Edges]] | None = None
        self._view_graphs: list[list[Graph]] = []

    # ------------------------------------------------------------------ augmentations

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Redraw both augmented graphs (see the module docstring) from ``generator``."""
        self.set_views(self.draw_views(generator))

    def draw_views(self, generator: torch.Generator) -> list[list[Edges]]:
        """Kept interactions of views 1 and 2: one graph each, or one per layer for ``rw``."""
        per_view = self.n_layers if self.augmentation == "rw" else 1
        return [[self._draw_graph(generator) for _ in range(per_view)] for _ in range(2)]

    def _draw_graph(self, generator: torch.Generator) -> Edges:
        users, items = self.edges
        if self.augmentation == "nd":
            kept_users = _survivors(self.n_users, self.drop_ratio, generator)
            kept_items = _survivors(self.n_items, self.drop_ratio, generator)
            keep = kept_users[users] & kept_items[items]
            return users[keep], items[keep]
        n = users.numel()
        keep = torch.randperm(n, generator=generator)[: int(n * (1.0 - self.drop_ratio))]
        keep = keep.sort().values  # keeps the edges sorted by user then item
        return users[keep], items[keep]

    def set_views(self, views: list[list[Edges]]) -> None:
        """Use these kept interactions (one list of graphs per view) until the next call."""
        if len(views) != 2 or any(len(v) not in (1, self.n_layers) for v in views):
            raise ValueError(f"need 2 views of 1 or {self.n_layers} graphs each")
        views = [[unique_interactions(u.cpu(), i.cpu(), self.n_items) for u, i in view]
                 for view in views]
        self.view_edges = views
        self._view_graphs = [[self._normalized_graph(edges) for edges in view] for view in views]

    def _normalized_graph(self, edges: Edges) -> Graph:
        users, items = edges
        values = interaction_weights(users, items, self.n_users, self.n_items)
        pattern, values = bipartite_adjacency(users, items, values, self.n_users,
                                              self.n_users + self.n_items)
        device = self.user_embedding.weight.device
        return pattern.to(device), values.to(device)

    # ------------------------------------------------------------------ propagation

    def _propagate(self, x: Tensor, graphs: list[Graph]) -> Tensor:
        if len(graphs) == 1:
            graphs = graphs * self.n_layers
        return layer_mean([x, *propagate_layers(x, graphs)])

    def views(self) -> tuple[Tensor, Tensor, Tensor]:
        """(main view, view 1, view 2), each ``(U + I) x d``: users first, then items."""
        if not self._view_graphs:
            raise RuntimeError("SGL draws its augmented graphs in on_epoch_start(epoch, "
                               "generator): call it before training")
        x = self.layer0()
        main = self._propagate(x, self.full_graph(1))
        return main, self._propagate(x, self._view_graphs[0]), \
            self._propagate(x, self._view_graphs[1])

    # ------------------------------------------------------------------ losses and scores

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        main, view1, view2 = self.views()
        n_users = self.n_users
        users, pos_items, neg_items = users.long(), pos_items.long(), neg_items.long()
        u = main.index_select(0, users)
        p = main.index_select(0, n_users + pos_items)
        n = main.index_select(0, n_users + neg_items)
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).sum()
        reg = emb_loss(
            self.user_embedding.weight.index_select(0, users),
            self.item_embedding.weight.index_select(0, pos_items),
            self.item_embedding.weight.index_select(0, neg_items),
        )
        ssl_users = info_nce(view1[:n_users], view2[:n_users], self.ssl_tau, rows=users)
        ssl_items = info_nce(view1[n_users:], view2[n_users:], self.ssl_tau, rows=pos_items)
        return {"bpr": bpr, "reg": self.reg_weight * reg,
                "ssl": self.ssl_weight * (ssl_items + ssl_users)}

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        main = self._propagate(self.layer0(), self.full_graph(1))
        return main[: self.n_users], main[self.n_users :]


def _survivors(n: int, rate: float, generator: torch.Generator) -> Tensor:
    """Boolean mask of ``n`` nodes with exactly ``int(n rate)`` of them, drawn uniformly, False."""
    kept = torch.ones(n, dtype=torch.bool)
    kept[torch.randperm(n, generator=generator)[: int(n * rate)]] = False
    return kept
