"""Child process for the resume test: ``run CHECKPOINT_DIR DELAY MODEL`` or ``resume RUN_DIR``.

MODEL is ``tiny`` (the engine's tiny model, slowed by ``batch_delay``) or ``simkgcl`` (with
all its random draws on: triple dropout, 16-bit user-item masks, message dropout; an epoch
callback sleeps DELAY seconds so that the parent can kill it mid-run). Prints one JSON line with
the run's results. Kept out of pytest's collection (no test_ prefix).
"""

from __future__ import annotations

import json
import sys
import time

from engine_fixtures import TINY_MODEL, make_tiny_data, register_tiny_model

from simkgcl.config import Config
from simkgcl.training.run import resume_run, train

COMMON = {"epochs": 12, "stopping_step": 3, "show_progress": False, "device": "cpu",
          "topk": [5, 10], "valid_metric": "NDCG@10", "threads": 1}
MODELS = {
    "tiny": {"model": TINY_MODEL, "train_batch_size": 64, "learning_rate": 0.05},
    "simkgcl": {"model": "simkgcl", "train_batch_size": 16, "learning_rate": 0.01,
                "embedding_size": 8, "n_layers": 2, "kg_drop_rate": 0.2, "ig_drop_rate": 0.5,
                "mess_drop_rate": 0.3, "stopping_warmup": 0},
}


def main() -> None:
    register_tiny_model()
    data = make_tiny_data()
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "run":
        delay, model = float(sys.argv[3]), sys.argv[4]
        values = {**COMMON, **MODELS[model], "checkpoint_dir": target}
        callbacks = []
        if model == "tiny":
            values["batch_delay"] = delay
        else:
            callbacks.append(lambda record: time.sleep(delay))
        result = train(Config(values), data=data, callbacks=callbacks)
    else:
        result = resume_run(target, data=data)
    print(json.dumps({"run_dir": str(result.run_dir), "best_valid": result.best_valid,
                      "test": result.test, "best_epoch": result.best_epoch,
                      "epochs_run": result.epochs_run,
                      "history": [{k: r[k] for k in ("epoch", "losses", "valid")}
                                  for r in result.history]}))


if __name__ == "__main__":
    main()
