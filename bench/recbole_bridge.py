"""RecBole's model and ours on the same split, with rows matched by original token.

The faithfulness scripts (``bench/faithful_*.py``) build a RecBole 1.2.1 built-in model on a
fixed split folder (``../shared/splits/<name>``), copy its initial weights into our model row by
row, matched by the original tokens of users, items, entities and relations, and compare what
both compute. RecBole's id spaces differ from ours in three ways that matter here:

* every token field has a ``[PAD]`` row 0, so RecBole's tables have one more row;
* knowledge-aware models put items first in the entity table (an item's entity id is its item
  id; the ``.link`` file names which KG entity an item is), then the other entities;
* the relation field counts ``[PAD]`` and, in most KG models, an extra ``[UI-Relation]``.

Runs only with the reference environment's python (``shared/reference/setup.sh`` builds it),
which has RecBole; ``simkgcl`` is imported from this checkout's ``src/``:

    PYTHONPATH=src $(../shared/reference/setup.sh) bench/faithful_kgin.py
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def recbole_settings(seed: int, knowledge: bool, work_dir: str) -> dict[str, Any]:
    """The seed protocol in RecBole's keys (fixed split files, full ranking, batch 2048)."""
    settings: dict[str, Any] = {
        "use_gpu": False, "seed": seed, "reproducibility": True, "state": "WARNING",
        "checkpoint_dir": work_dir, "show_progress": False, "save_dataset": False,
        "save_dataloaders": False, "worker": 0, "epochs": 1, "train_batch_size": 2048,
        "learner": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "eval_step": 1,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                  "dynamic": False, "candidate_num": 0},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO",
                      "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [10, 20, 50], "valid_metric": "NDCG@20",
        "field_separator": "\t", "load_col": {"inter": ["user_id", "item_id"]},
        "benchmark_filename": ["train", "valid", "test"], "embedding_size": 64,
        "filter_inter_by_user_or_item": True, "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
    }
    if knowledge:
        settings["load_col"] = {"inter": ["user_id", "item_id"],
                                "kg": ["head_id", "relation_id", "tail_id"],
                                "link": ["item_id", "entity_id"]}
        settings.update({"kg_reverse_r": False, "entity_kg_num_interval": "[0,inf)",
                         "relation_kg_num_interval": "[0,inf)"})
    return settings


@dataclass
class RecBoleSide:
    config: Any
    dataset: Any
    train_data: Any
    model: torch.nn.Module

    def field_ids(self, field: str, tokens: np.ndarray) -> torch.Tensor:
        """RecBole's internal ids of ``tokens`` in ``field`` (KeyError on an unknown token)."""
        lookup = self.dataset.field2token_id[field]
        return torch.as_tensor([lookup[str(t)] for t in tokens], dtype=torch.long)


def build_recbole(model_name: str, split: str, seed: int = 2020,
                  params: dict[str, Any] | None = None) -> RecBoleSide:
    """RecBole's ``model_name`` initialised as its trainer would (same seed handling)."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import ModelType, get_model, init_seed

    model_cls = get_model(model_name)
    knowledge = model_cls.type == ModelType.KNOWLEDGE
    work = tempfile.mkdtemp(prefix="recbole-bridge-")
    settings = recbole_settings(seed, knowledge, work)
    settings.update(params or {})
    here = os.getcwd()
    os.chdir(work)  # RecBole writes log folders into the working directory
    try:
        config = Config(model=model_name, dataset=split, config_dict=settings)
        config["data_path"] = str((SHARED / "splits" / split).resolve())
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = model_cls(config, train_data._dataset)
    finally:
        os.chdir(here)
    return RecBoleSide(config, dataset, train_data, model)


def ours_dataset(split: str):
    """Our dataset and split of the same folder (the fixed train/valid/test files)."""
    from simkgcl.data import load_dataset, split_dataset

    dataset = load_dataset(str((SHARED / "splits" / split).resolve()),
                           benchmark_filename=["train", "valid", "test"])
    return dataset, split_dataset(dataset, seed=2020)


def entity_rows(rb: RecBoleSide, ours) -> torch.Tensor:
    """For each of our entities (items first, then KG-only ones): its row in RecBole's entity
    table. Our item i is entity i; RecBole's item with the same token has entity id = its item
    id; a KG-only entity is found by its token in RecBole's entity field."""
    item_rows = rb.field_ids(rb.dataset.iid_field, ours.item_tokens)
    others = ours.entity_tokens[ours.n_items:]
    other_rows = rb.field_ids(rb.dataset.entity_field, others) if len(others) else item_rows[:0]
    return torch.cat([item_rows, other_rows])


def copy_rows(target: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> None:
    """``target[i] = source[rows[i]]`` in place (a parameter's data)."""
    with torch.no_grad():
        target.copy_(source.detach().index_select(0, rows).to(target.dtype))


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs| (0 when both are zero)."""
    ours, theirs = ours.detach().double(), theirs.detach().double()
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    diff = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
    return diff / scale if scale > 0 else diff
