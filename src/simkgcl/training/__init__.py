"""Training: the loop (early stopping, checkpoints, resume) and whole runs (``run.train``)."""

from simkgcl.training.optim import build_optimizer
from simkgcl.training.trainer import Trainer, TrainingDiverged, TrainState

__all__ = ["TrainState", "Trainer", "TrainingDiverged", "build_optimizer"]
