"""Hyper-parameter search on validation scores (Optuna, an optional extra: simkgcl[tune]).

Importing this package does not need optuna; running a search does (a ConfigError says so).
"""

from simkgcl.tuning.report import TuneResult
from simkgcl.tuning.search import tune
from simkgcl.tuning.space import SearchSpace, load_space, parse_space

__all__ = ["SearchSpace", "TuneResult", "load_space", "parse_space", "tune"]
