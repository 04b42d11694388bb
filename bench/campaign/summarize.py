"""Markdown tables for an issue-7 campaign folder (bench/campaign/run.sh DATASET OUT).

    python bench/campaign/summarize.py OUT DATASET_PATH

Prints, per model: seed defaults vs tuned (3 seeds, mean ± sample std of test Recall@20 and
NDCG@20, epochs to the early stop), the tuned values, and the most-popular baseline (items
ranked by training count, evaluated by the same full-ranking evaluator on the same split).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from simkgcl.config import Config
from simkgcl.evaluation.evaluator import Evaluator
from simkgcl.training.components import load_data


def most_popular(dataset_path: str) -> dict[str, float]:
    config = Config(dataset=dataset_path)
    dataset, split = load_data(config)
    counts = np.bincount(split.train.items, minlength=dataset.n_items).astype(np.float32)
    evaluator = Evaluator.from_config(config, dataset.n_users, dataset.n_items, "cpu")
    task = evaluator.task(split.test, exclude=split.test_exclusions())
    users = torch.ones(dataset.n_users, 1)
    items = torch.from_numpy(counts).unsqueeze(1)
    return evaluator.evaluate_embeddings(users, items, task)


def cell(summary: dict, metric: str) -> str:
    m = summary["test"][metric]
    return f"{m['mean']:.4f} ± {m['std']:.4f}"


def epochs(summary: dict) -> str:
    runs = summary["runs"]
    return ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in runs)


def main() -> None:
    out, dataset_path = Path(sys.argv[1]), sys.argv[2]
    rows = []
    for label, name in [("BPR", "bpr"), ("LightGCN", "lightgcn"), ("SimKGCL", "simkgcl"),
                        ("SimKGCL kg_view=pure", "simkgcl-pure")]:
        for kind in ("default", "tuned"):
            path = out / f"{kind}-{name}.json"
            if not path.is_file() or path.stat().st_size == 0:  # missing or still running
                continue
            s = json.loads(path.read_text())
            rows.append(f"| {label} | {'seed defaults' if kind == 'default' else 'tuned'} | "
                        f"{cell(s, 'Recall@20')} | {cell(s, 'NDCG@20')} | {epochs(s)} |")
    print("| model | config | test Recall@20 | test NDCG@20 | epochs run (best) per seed |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    pop = most_popular(dataset_path)
    print(f"| most popular | — | {pop['Recall@20']:.4f} | {pop['NDCG@20']:.4f} | — |")
    print()
    for name in ("bpr", "lightgcn", "simkgcl"):
        path = out / f"tune-{name}" / "summary.json"
        if path.is_file():
            s = json.loads(path.read_text())
            best = {k: (round(v, 6) if isinstance(v, float) else v)
                    for k, v in (s.get("best_params") or {}).items()}
            print(f"- {name}: best valid {s.get('valid_metric', 'NDCG@20')} = "
                  f"{s.get('best_valid_score', float('nan')):.4f} with {best}; trials: {s.get('trials')}")


if __name__ == "__main__":
    main()
