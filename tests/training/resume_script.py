"""Child process for the resume test: ``run CHECKPOINT_DIR DELAY`` or ``resume RUN_DIR``.

Prints one JSON line with the run's results. Kept out of pytest's collection (no test_ prefix).
"""

from __future__ import annotations

import json
import sys

from engine_fixtures import TINY_MODEL, make_tiny_data, register_tiny_model

from simkgcl.config import Config
from simkgcl.training.run import resume_run, train


def main() -> None:
    register_tiny_model()
    data = make_tiny_data()
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "run":
        cfg = Config(model=TINY_MODEL, epochs=12, stopping_step=3, show_progress=False,
                     checkpoint_dir=target, device="cpu", batch_delay=float(sys.argv[3]),
                     topk=[5, 10], valid_metric="NDCG@10", train_batch_size=64,
                     learning_rate=0.05)
        result = train(cfg, data=data)
    else:
        result = resume_run(target, data=data)
    print(json.dumps({"run_dir": str(result.run_dir), "best_valid": result.best_valid,
                      "test": result.test, "best_epoch": result.best_epoch,
                      "epochs_run": result.epochs_run,
                      "history": [{k: r[k] for k in ("epoch", "losses", "valid")}
                                  for r in result.history]}))


if __name__ == "__main__":
    main()
