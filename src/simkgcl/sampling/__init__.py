"""Training samples: uniform negatives outside each user's training items, a whole epoch at once."""

from simkgcl.sampling.negative import (
    EpochBatches,
    EpochSource,
    NegativeSampler,
    epoch_generator,
    rank_share,
)

__all__ = ["EpochBatches", "EpochSource", "NegativeSampler", "epoch_generator", "rank_share"]
