"""Independence penalties between the rows of a matrix (KGIN's intent independence, ``ind``).

For rows ``x_1 .. x_F``, each a vector over ``C`` channels (KGIN: each intent's logits over the
relations)::

    cosine:    sum_{i<j} cos(x_i, x_j)^2                      cos of x / max(|x|, 1e-12)
    distance:  sum_{i<j} dCor(x_i, x_j)                       the distance correlation:
               a_kl = sqrt(max(x_k^2 - 2 x_k x_l + x_l^2, 0) + 1e-8)    (C x C, per row)
               A = a - its row means - its column means + its mean       (double centring)
               dcov(i, j) = sqrt(max(sum(A_i * A_j) / C^2, 0) + 1e-8)
               dCor(i, j) = dcov(i, j) / sqrt(dcov(i, i) dcov(j, j) + 1e-8)
    mi:        sum_i -log softmax_j(cos(x_i, x_j) / tau)_i     InfoNCE of the rows with
                                                              themselves (:func:`info_nce`)

written as KGIN's code writes them (the epsilons and the expanded squared distance included).
The pairs are computed at once: one ``F x F`` similarity product (cosine) and one Gram product
of the ``F`` centred ``C x C`` matrices (distance), instead of ``F (F - 1) / 2`` pair calls.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.info_nce import info_nce
from simkgcl.models.ops.normalize import l2_normalize_rows

INDEPENDENCE_KINDS = ("cosine", "distance", "mi")
DCOR_EPS = 1e-8


def cosine_independence(rows: Tensor) -> Tensor:
    """``sum_{i<j} cos(x_i, x_j)^2`` over the rows."""
    unit = l2_normalize_rows(rows)
    return torch.triu(unit @ unit.t(), diagonal=1).pow(2).sum()


def distance_correlation_independence(rows: Tensor) -> Tensor:
    """``sum_{i<j} dCor(x_i, x_j)`` over the rows (each row: one sample of ``C`` scalars)."""
    n_rows, n_channels = rows.shape
    col = rows.unsqueeze(-1)  # F x C x 1
    squares = col * col
    distances = (squares - 2.0 * (col @ col.transpose(1, 2)) + squares.transpose(1, 2))
    distances = distances.clamp_min(0.0).add(DCOR_EPS).sqrt()  # F x C x C
    centred = (
        distances
        - distances.mean(dim=1, keepdim=True)
        - distances.mean(dim=2, keepdim=True)
        + distances.mean(dim=(1, 2), keepdim=True)
    )
    flat = centred.reshape(n_rows, n_channels * n_channels)
    dcov = (flat @ flat.t()).div(n_channels**2).clamp_min(0.0).add(DCOR_EPS).sqrt()  # F x F
    own = torch.diagonal(dcov)
    dcor = dcov / (own.unsqueeze(1) * own.unsqueeze(0) + DCOR_EPS).sqrt()
    return torch.triu(dcor, diagonal=1).sum()


def mutual_information_independence(rows: Tensor, tau: float) -> Tensor:
    """``sum_i -log softmax_j(cos(x_i, x_j) / tau)_i``: each row told apart from the others."""
    return info_nce(rows, rows, tau)


def independence_loss(rows: Tensor, kind: str, tau: float = 0.2) -> Tensor:
    """The penalty ``kind`` (one of :data:`INDEPENDENCE_KINDS`) of the module docstring."""
    if kind == "cosine":
        return cosine_independence(rows)
    if kind == "distance":
        return distance_correlation_independence(rows)
    if kind == "mi":
        return mutual_information_independence(rows, tau)
    raise ValueError(f"independence kind must be one of {INDEPENDENCE_KINDS}, got {kind!r}")
