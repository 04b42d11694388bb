"""Training: the loop (early stopping, checkpoints, resume) and whole runs (``run.train``)."""

from simkgcl.training.trainer import Trainer, TrainingDiverged, TrainState, build_optimizer

__all__ = ["TrainState", "Trainer", "TrainingDiverged", "build_optimizer"]
