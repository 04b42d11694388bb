"""The user-item interaction graph as normalised sparse matrices.

With ``A`` the symmetric bipartite adjacency over users and items (duplicate (user, item) pairs
collapse to one edge) and ``deg`` its degrees, the entry for an interaction (u, i) is

* ``symmetric``: ``(deg_u + 1e-7)^-1/2 (deg_i + 1e-7)^-1/2`` — ``D^-1/2 A D^-1/2``, the LightGCN
  recipe (RecBole's LightGCN, SimKGCL, SGL, SimGCL);
* ``mean``: ``1 / deg_u`` — ``D^-1 A`` restricted to the user rows, a mean over the user's items
  (RecBole's ``si`` normalisation of KGIN and MCCLK).

:func:`mean_adjacency` is ``D^-1 A`` over ``[users; items]``: a user row is the mean of the
user's items and an item row the mean of its users (RecBole's ``si`` graph, MCCLK's collaborative
view).

Every function takes explicit id tensors, so augmentations that redraw the graph (SGL's edge and
node dropout) build their matrices the same way from the kept interactions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.sparse import SparsePattern

DEGREE_EPS = 1e-7
NORMALISATIONS = ("symmetric", "mean")


def unique_interactions(users: Tensor, items: Tensor, n_items: int) -> tuple[Tensor, Tensor]:
    """Distinct (user, item) pairs (int64), sorted by user then item."""
    keys = torch.unique(users.long() * n_items + items.long())
    return keys // n_items, keys % n_items


def _inv_sqrt_degree(ids: Tensor, n: int, eps: float) -> Tensor:
    degree = torch.bincount(ids, minlength=n).double() + eps
    return degree.pow(-0.5)


def interaction_weights(
    users: Tensor,
    items: Tensor,
    n_users: int,
    n_items: int,
    norm: str = "symmetric",
    *,
    eps: float = DEGREE_EPS,
) -> Tensor:
    """float64 value of each distinct (user, item) pair in the normalised matrix ``norm``.

    ``users``, ``items``: from :func:`unique_interactions` (degrees count each pair once).
    ``eps``: added to the degrees of ``symmetric`` (RecBole's 1e-7; 0 gives the exact
    ``D^-1/2 A D^-1/2`` of LightGCN's original code, which KGCL's authors build).
    Kept in float64: :meth:`~simkgcl.models.ops.sparse.SparsePattern.matmul` casts the values to
    the dense operand's dtype, so a float32 model rounds them once per product (the same bits as
    float32 values rounded at build) and a float64 model computes in float64 throughout.
    """
    if norm == "symmetric":
        values = (_inv_sqrt_degree(users, n_users, eps)[users]
                  * _inv_sqrt_degree(items, n_items, eps)[items])
    elif norm == "mean":
        values = torch.bincount(users, minlength=n_users).double().reciprocal()[users]
    else:
        raise ValueError(f"norm must be one of {NORMALISATIONS}, got {norm!r}")
    return values


def bipartite_adjacency(
    users: Tensor, items: Tensor, values: Tensor, n_users: int, n_nodes: int
) -> tuple[SparsePattern, Tensor]:
    """``[[0, UI], [UI.T, 0]]`` over ``n_nodes`` rows: its pattern and entry values.

    ``UI[u, i] = values`` at the given pairs (sorted by user then item, as from
    :func:`unique_interactions`). Rows: users first, item i at row ``n_users + i``; rows past
    ``n_users + n_items`` (a longer node table, e.g. KG entities) are empty.
    """
    by_item = torch.sort(items, stable=True).indices
    pattern = SparsePattern(
        torch.cat([users, n_users + items[by_item]]),
        torch.cat([n_users + items, users[by_item]]),
        (n_nodes, n_nodes),
    )
    return pattern, torch.cat([values, values[by_item]])


def mean_adjacency(
    users: Tensor, items: Tensor, n_users: int, n_items: int
) -> tuple[SparsePattern, Tensor]:
    """``D^-1 A`` over ``[users; items]`` (entries ``1 / deg_u`` in user rows, ``1 / deg_i`` in
    item rows), from distinct pairs sorted by user then item (:func:`unique_interactions`)."""
    user_values = interaction_weights(users, items, n_users, n_items, "mean")
    pattern, values = bipartite_adjacency(users, items, user_values, n_users, n_users + n_items)
    item_mean = torch.bincount(items, minlength=n_items).double().reciprocal()
    by_item = torch.sort(items, stable=True).indices
    values[users.numel():] = item_mean[items[by_item]]
    return pattern, values


def normalized_adjacency(
    users: Tensor, items: Tensor, n_users: int, n_items: int
) -> tuple[SparsePattern, Tensor]:
    """``D^-1/2 A D^-1/2`` over ``[users; items]`` from raw (possibly repeated) interactions."""
    users, items = unique_interactions(users, items, n_items)
    values = interaction_weights(users, items, n_users, n_items)
    return bipartite_adjacency(users, items, values, n_users, n_users + n_items)
