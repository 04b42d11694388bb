"""Sparse-user score calibration: the activity-aware popularity blend fitted on validation."""

from simkgcl.calibration.blend import BlendTable, ScoreBlend, popularity_prior
from simkgcl.calibration.fit import DEFAULT_GRID, fit_blend
from simkgcl.calibration.inner_product import InnerProductBlend

__all__ = ["DEFAULT_GRID", "BlendTable", "InnerProductBlend", "ScoreBlend", "fit_blend",
           "popularity_prior"]
