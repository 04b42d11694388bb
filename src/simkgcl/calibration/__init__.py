"""Sparse-user score calibration: the activity-aware popularity blend fitted on validation."""

from simkgcl.calibration.blend import BlendTable, ScoreBlend, popularity_prior
from simkgcl.calibration.fit import DEFAULT_GRID, fit_blend

__all__ = ["DEFAULT_GRID", "BlendTable", "ScoreBlend", "fit_blend", "popularity_prior"]
