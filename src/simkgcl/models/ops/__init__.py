"""Operators shared by the models, as functions of explicit tensors (plain PyTorch, CPU + CUDA).

One idea per module, its formula in the module docstring:

* :mod:`~.sparse` — :class:`SparsePattern`: a fixed CSR structure; ``pattern.matmul(values, x)``
  differentiates in the entry values and in ``x``.
* :mod:`~.adjacency` — the user-item graph: distinct interactions, normalised weights
  (symmetric / mean), ``[[0, UI], [UI.T, 0]]``.
* :mod:`~.knn` — kNN cosine graphs over a table's rows, normalised by their row sums (MCCLK).
* :mod:`~.segment` — softmax or mean weights of one scalar per entry within segments (e.g. a
  head's triples).
* :mod:`~.normalize` — row-wise L2 normalisation.
* :mod:`~.propagation` — LightGCN's layers on normalised graphs and their mean.
* :mod:`~.noise` — SimGCL's sign-aligned uniform noise.
* :mod:`~.info_nce` — InfoNCE between two views (positives on the diagonal or at given rows).
* :mod:`~.grace` — GRACE's symmetric loss: InfoNCE with intra-view negatives too (KGCL).
* :mod:`~.dropout` — keep-masks (16-bit draws), sparse dropout, exact-size subsets.
* :mod:`~.independence` — penalties that push the rows of a matrix apart (cosine, distance
  correlation, InfoNCE; KGIN's intents).
* :mod:`~.relation_attention` — attention logits ``|x_h * w_r|^2 |x_t * w_r|^2`` per triple.
* :mod:`~.relational_aggregation` — ``sum a (x_t * w_r)`` per head, interaction rows alongside;
  the users' scales ``1 + softmax(u K^T) V``.
* :mod:`~.precision` — operators run in at least float32.
* :mod:`~.translation` — TransE's BPR loss on (head, relation, true tail, corrupted tail) rows;
  TransR's projections, distances and attention logits per relation (KGAT).
"""

from simkgcl.models.ops.adjacency import (
    bipartite_adjacency,
    interaction_weights,
    mean_adjacency,
    normalized_adjacency,
    unique_interactions,
)
from simkgcl.models.ops.dropout import (
    keep_mask,
    kept_subset,
    sampled_subset,
    scaled_dropout,
    sparse_dropout,
)
from simkgcl.models.ops.grace import grace_loss
from simkgcl.models.ops.independence import INDEPENDENCE_KINDS, independence_loss
from simkgcl.models.ops.info_nce import info_nce
from simkgcl.models.ops.knn import (
    fixed_width_matmul,
    knn_select,
    mixed_knn_graph,
    normalized_knn_values,
)
from simkgcl.models.ops.noise import add_sign_aligned, random_directions
from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.precision import at_least_float32, to_at_least_float32
from simkgcl.models.ops.propagation import Graph, layer_mean, propagate_layers
from simkgcl.models.ops.relation_attention import TripleFactors, attention_logits
from simkgcl.models.ops.relational_aggregation import (
    intent_scale,
    relational_aggregate,
    user_attention_scale,
    user_relation_scale,
)
from simkgcl.models.ops.segment import segment_mean_weights, segment_softmax
from simkgcl.models.ops.sparse import SparsePattern
from simkgcl.models.ops.translation import (
    RelationGroups,
    transe_bpr_loss,
    translation_distance,
    transr_attention_logits,
    transr_project,
)

__all__ = [
    "INDEPENDENCE_KINDS",
    "Graph",
    "RelationGroups",
    "SparsePattern",
    "TripleFactors",
    "add_sign_aligned",
    "at_least_float32",
    "attention_logits",
    "bipartite_adjacency",
    "grace_loss",
    "independence_loss",
    "fixed_width_matmul",
    "info_nce",
    "intent_scale",
    "interaction_weights",
    "keep_mask",
    "kept_subset",
    "knn_select",
    "mixed_knn_graph",
    "l2_normalize_rows",
    "layer_mean",
    "mean_adjacency",
    "normalized_adjacency",
    "normalized_knn_values",
    "propagate_layers",
    "random_directions",
    "relational_aggregate",
    "sampled_subset",
    "scaled_dropout",
    "segment_mean_weights",
    "segment_softmax",
    "sparse_dropout",
    "to_at_least_float32",
    "transe_bpr_loss",
    "transr_attention_logits",
    "transr_project",
    "translation_distance",
    "unique_interactions",
    "user_attention_scale",
    "user_relation_scale",
]
