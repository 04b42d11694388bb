"""Training samples: uniform negatives outside each user's training items, a whole epoch at once."""

from simkgcl.sampling.negative import EpochBatches, NegativeSampler, epoch_generator

__all__ = ["EpochBatches", "NegativeSampler", "epoch_generator"]
