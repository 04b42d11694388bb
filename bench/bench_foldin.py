"""Fold-in vs trained user rows on a run's test split (issue 15, part 2).

For every test user, a row is folded in from the user's own training items (the artifact's seen
index, which is the training split) with :class:`simkgcl.serving.foldin.FoldIn`, and the test
metrics of those rows are computed with the project's evaluator beside the metrics of the
trained rows (same items, same exclusions). Target: fold-in >= 0.9 x trained.

    nice .venv/bin/python bench/bench_foldin.py runs/lightgcn-lastfm-kg-... [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from simkgcl.artifact import load_artifact
from simkgcl.evaluation.evaluator import Evaluator
from simkgcl.serving.foldin import FoldIn
from simkgcl.training.components import load_data
from simkgcl.training.run_folder import RunFolder

METRICS = ("Recall@20", "NDCG@20")


def bench(run_dir: str, method: str | None = None) -> dict[str, object]:
    config = RunFolder(run_dir).read_config()
    artifact = load_artifact(run_dir)
    dataset, split = load_data(config)
    evaluator = Evaluator(dataset.n_users, dataset.n_items, metrics=["Recall", "NDCG"],
                          topk=[20], eval_batch_size=config["eval_batch_size"])
    task = evaluator.task(split.test, split.test_exclusions())
    trained = evaluator.evaluate_embeddings(artifact.user_embeddings, artifact.item_embeddings,
                                            task)
    fold = FoldIn(artifact, method)
    rows = torch.zeros_like(artifact.user_embeddings)
    start = time.perf_counter()
    users = torch.unique(task.users).tolist()
    for user in users:
        items = artifact.seen_items(user).numpy()
        if len(items):
            rows[user] = fold.user_row_from_ids(items)
    seconds = time.perf_counter() - start
    folded = evaluator.evaluate_embeddings(rows, artifact.item_embeddings, task)
    return {
        "run": run_dir, "model": artifact.model, "dataset": artifact.dataset,
        "method": fold.method, "test_users": len(users),
        "ms_per_user": 1000 * seconds / max(1, len(users)),
        **{f"trained {m}": round(trained[m], 4) for m in METRICS},
        **{f"fold-in {m}": round(folded[m], 4) for m in METRICS},
        **{f"ratio {m}": round(folded[m] / trained[m], 3) for m in METRICS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        print(json.dumps(bench(run)))
        if load_artifact(run).foldin_items is None:  # the alternative to the default mean
            print(json.dumps(bench(run, "least_squares")))


if __name__ == "__main__":
    main()
