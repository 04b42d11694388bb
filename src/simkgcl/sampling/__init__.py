"""Training samples: uniform negatives outside each user's training items, a whole epoch at once."""

from simkgcl.sampling.negative import (
    MODEL_EPOCH_STREAM,
    EpochBatches,
    EpochSource,
    NegativeSampler,
    epoch_generator,
    rank_share,
)

__all__ = ["MODEL_EPOCH_STREAM", "EpochBatches", "EpochSource", "NegativeSampler",
           "epoch_generator", "rank_share"]
