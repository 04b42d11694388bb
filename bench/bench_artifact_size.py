"""Size and load time of a serving artifact with its KG and fold-in table (issue 15).

The artifact's size does not depend on the embedding values, so no model is trained: the
dataset is loaded and split as a run would, and an artifact is written with seeded random
embeddings (d = 64) of the right shapes, the KG triples and tokens, and a fold-in table (what a
LightGCN run stores). Reports each file's size and the time to load it back.

    nice .venv/bin/python bench/bench_artifact_size.py --synthetic-kg   # amazon-book + 686k triples
    nice .venv/bin/python bench/bench_artifact_size.py --dataset ../shared/splits/lastfm-kg
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from simkgcl.artifact import ARTIFACT_DIR, load_artifact, save_artifact
from simkgcl.config import Config
from simkgcl.training.components import load_data

REPO = Path(__file__).resolve().parents[1]


def measure(dataset_path: str, dim: int, out: Path) -> dict[str, object]:
    dataset, split = load_data(Config(dataset=dataset_path))
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.standard_normal((dataset.n_users, dim), dtype=np.float32))
    items = torch.from_numpy(rng.standard_normal((dataset.n_items, dim), dtype=np.float32))
    kg = (dataset.triples, list(dataset.entity_tokens), list(dataset.relation_tokens))
    save_artifact(out, model="lightgcn", dataset=dataset.name, config={}, metrics={},
                  user_tokens=dataset.user_tokens, item_tokens=dataset.item_tokens,
                  user_embeddings=users, item_embeddings=items, train_users=split.train.users,
                  train_items=split.train.items, kg=kg, foldin_items=items.clone(),
                  foldin={"method": "propagation", "user_layer0_weight": 0.25})
    start = time.perf_counter()
    load_artifact(out)
    load_s = time.perf_counter() - start
    files = {f.name: f.stat().st_size for f in (out / ARTIFACT_DIR).iterdir()}
    return {"dataset": dataset.name, "users": dataset.n_users, "items": dataset.n_items,
            "entities": dataset.n_entities, "triples": dataset.n_triples,
            "train_interactions": len(split.train), "dim": dim,
            "files_mb": {name: round(size / 1e6, 1) for name, size in files.items()},
            "total_mb": round(sum(files.values()) / 1e6, 1), "load_s": round(load_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a dataset folder")
    parser.add_argument("--synthetic-kg", action="store_true",
                        help="amazon-book with bench_load.py's synthetic 686,516-triple KG")
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset
        if args.synthetic_kg:
            sys.path.insert(0, str(REPO / "bench"))
            from bench_load import make_synthetic

            path = str(make_synthetic(Path(tmp) / "amazon-book-synthetic-kg"))
        if path is None:
            parser.error("give --dataset or --synthetic-kg")
        print(json.dumps(measure(path, args.dim, Path(tmp) / "run")))


if __name__ == "__main__":
    main()
