"""The popularity blend as one inner product, for indexes that can only rank by ``q . x``.

The blend (:mod:`simkgcl.calibration.blend`) of user row ``u`` over item rows ``v_i`` is

    b_ui = (s_ui - m_u) / (σ_u + eps) + β_u p_i,      s_ui = u . v_i,

with ``m_u``, ``σ_u`` the mean and population std of ``s_u·`` over *all* items. Both moments
are quadratic forms of ``u`` in the item table's moments, so no row has to be scored in full:

    m_u  = u . μ,                 μ   = (1/n) Σ_i v_i
    σ_u² = u^T C u,               C   = (1/n) Σ_i (v_i - μ)(v_i - μ)^T     (population, d x d)

(``σ_u² = (1/n) Σ_i (u . (v_i - μ))²`` expanded). ``μ`` and ``C`` are computed once per
catalogue in float64 (``O(n d²)``), each query's moments in ``O(d²)``.

For one user ``m_u`` is a constant and ``σ_u + eps > 0`` a positive factor, so

    (σ_u + eps) b_ui + m_u = s_ui + β_u (σ_u + eps) p_i = [v_i, p_i] . [u, β_u (σ_u + eps)]

ranks the items exactly as ``b_u·`` does. An inner-product index built over the augmented items
``[v_i, p_i]`` (``d + 1`` columns) and queried with ``[u, β_u (σ_u + eps)]`` therefore searches
the blended ranking, and each returned raw score ``r`` converts back to the blended score
``(r - m_u) / (σ_u + eps)``: the scores served equal the exact path's (up to float32 rounding of
the index's dot products), only which items the index visits is approximate. ``β_u = 0`` gives
the model's own ranking with standardised scores, as the exact path serves it.

The item rows are kept as they are (not centred), so the augmented index searches the same
vectors as the plain one plus one column. A zero user row (``σ_u = 0``) is queried with
``[0, β_u eps]``: it ranks by the prior and its scores convert back to ``β_u p_i``, as the exact
path gives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simkgcl.calibration.blend import EPS

MOMENT_CHUNK = 65536  # item rows per float64 block while accumulating C


@dataclass(frozen=True)
class ItemMoments:
    """``μ`` (d,) and the population covariance ``C`` (d, d) of the item rows, float64."""

    mean: Tensor
    cov: Tensor

    @classmethod
    def of(cls, items: Tensor, chunk: int = MOMENT_CHUNK) -> ItemMoments:
        """Moments of ``items`` (n x d), centred block by block (no n x d float64 copy)."""
        n, d = items.shape
        mean = torch.zeros(d, dtype=torch.float64)
        for start in range(0, n, chunk):
            mean += items[start : start + chunk].to(torch.float64).sum(0)
        mean /= n
        cov = torch.zeros(d, d, dtype=torch.float64)
        for start in range(0, n, chunk):
            centred = items[start : start + chunk].to(torch.float64) - mean
            cov += centred.T @ centred
        return cls(mean, cov / n)

    def row_moments(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(``m``, ``σ``) of each row's scores over every item, float64, without scoring them."""
        r = rows.to(torch.float64)
        variance = ((r @ self.cov) * r).sum(1).clamp(min=0.0)  # >= 0 up to rounding
        return r @ self.mean, variance.sqrt()


class InnerProductBlend:
    """The blend over one catalogue as augmented items, queries, and the score conversion.

    ``items`` (n x d) are the model's item rows, ``prior`` (n,) the popularity prior ``p``
    (:func:`~simkgcl.calibration.blend.popularity_prior`).
    """

    def __init__(self, items: Tensor, prior: Tensor) -> None:
        if prior.shape != (items.shape[0],):
            raise ValueError(f"prior has shape {tuple(prior.shape)}, expected ({items.shape[0]},)")
        self._items = items
        self.prior = prior

    @functools.cached_property
    def moments(self) -> ItemMoments:
        """The item table's moments, computed on first use (``O(n d²)``, not needed by
        :meth:`items`)."""
        return ItemMoments.of(self._items)

    @property
    def dim(self) -> int:
        """Columns of the augmented rows: the model's ``d`` plus the prior."""
        return int(self._items.shape[1]) + 1

    def items(self) -> Tensor:
        """``[v_i, p_i]`` (n x (d + 1), float32): what the inner-product index is built over."""
        return torch.cat([self._items.float(), self.prior.float().unsqueeze(1)], dim=1)

    def queries(self, rows: Tensor, betas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(``[u, β_u (σ_u + eps)]`` float32, ``m_u``, ``σ_u + eps``) for each row ``u``."""
        mean, std = self.moments.row_moments(rows)
        scale = std + EPS
        last = betas.to(torch.float64) * scale
        return torch.cat([rows.float(), last.float().unsqueeze(1)], dim=1), mean, scale

    @staticmethod
    def blended_scores(raw: np.ndarray, mean: Tensor, scale: Tensor) -> np.ndarray:
        """``(r - m_u) / (σ_u + eps)`` per row of raw augmented scores (float32; -inf kept)."""
        out = (raw.astype(np.float64) - mean.numpy()[:, None]) / scale.numpy()[:, None]
        return out.astype(np.float32)


__all__ = ["InnerProductBlend", "ItemMoments", "MOMENT_CHUNK"]
