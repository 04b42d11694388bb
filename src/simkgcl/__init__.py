"""simkgcl: knowledge-aware recommendation (SimKGCL and baselines) in plain PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
