"""Run under torchrun by the distributed tests: ``failing_rank_script.py CHECKPOINT_DIR``.

Trains the tiny engine model data-parallel; rank 1 raises from its epoch callback after epoch 1
while rank 0 carries on. Kept out of pytest's collection (no test_ prefix).
"""

from __future__ import annotations

import os
import sys

from engine_fixtures import TINY_MODEL, make_tiny_data, register_tiny_model

from simkgcl.config import Config
from simkgcl.training.run import train


class GiveUp(RuntimeError):
    pass


def main() -> None:
    register_tiny_model()
    rank = int(os.environ["RANK"])

    def fail_on_rank_1(record: dict) -> None:
        if rank == 1 and record["epoch"] == 1:
            raise GiveUp("rank 1 gives up after epoch 1")

    config = Config(model=TINY_MODEL, epochs=50, stopping_step=100, show_progress=False,
                    checkpoint_dir=sys.argv[1], device="cpu", topk=[5, 10],
                    valid_metric="NDCG@10", train_batch_size=16, threads=1)
    train(config, data=make_tiny_data(), callbacks=[fail_on_rank_1])


if __name__ == "__main__":
    main()
