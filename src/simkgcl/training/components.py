"""What a run is made of, built from its config: data, graph, model, sampler and evaluator.

Training, evaluation of a saved run, hyper-parameter search and the benchmarks all build their
parts here, so they train and score exactly the same things.

Data parallelism and the model's ``loss_reduction`` (see :class:`~simkgcl.training.Trainer`):

* ``"mean"`` / ``"sum"``: the loss is a mean / sum of per-row terms, so it splits over the rows.
  Each process gets its share of every optimiser step's rows (``train_batch_size`` rows per
  process, ``world_size x train_batch_size`` per step).
* ``"batch"``: the loss couples the rows of a step (SimKGCL's InfoNCE contrasts each of the
  step's unique users with all the others; its regulariser is the norm of the whole batch), so
  it does not split over rows. Every process gets the *whole* step (the same
  ``world_size x train_batch_size`` rows) and computes the same loss with the same dropout draws
  (every rank seeds its random streams alike): the update is the single process's with that
  batch. The processes share no work then; DDP's averaging of their equal gradients only keeps
  them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simkgcl.config import Config
from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.evaluation.evaluator import Evaluator
from simkgcl.graph import GraphData, build_graph
from simkgcl.models import get_model_class
from simkgcl.models.base import Recommender
from simkgcl.sampling.negative import NegativeSampler

LOSS_REDUCTIONS = ("mean", "sum", "batch")


def absolute_dataset(config: Config) -> Config:
    """``config`` with an existing dataset path made absolute, so a saved run works anywhere."""
    path = Path(config["dataset"]).expanduser()
    if path.exists() and str(path.resolve()) != config["dataset"]:
        return config.replace(dataset=str(path.resolve()))
    return config


def load_data(config: Mapping[str, Any]) -> tuple[KnowledgeDataset, Split]:
    """Read the config's dataset and split it as the config says (deterministic in ``seed``)."""
    from simkgcl.data import load_dataset, split_dataset

    dataset = load_dataset(
        config["dataset"],
        format=config["data_format"],
        kg_id_space=config["kg_id_space"],
        threshold=config["threshold"],
        kg_reverse_r=config["kg_reverse_r"],
        benchmark_filename=config["benchmark_filename"],
    )
    split = split_dataset(dataset, eval_args=config["eval_args"], seed=config["seed"],
                          valid_ratio=config["valid_ratio"], valid_on_test=config["valid_on_test"])
    return dataset, split


def loss_reduction(model: Recommender) -> str:
    """The model's ``loss_reduction`` ("mean" unless it says otherwise), checked."""
    reduction = getattr(model, "loss_reduction", "mean")
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"{type(model).__name__}.loss_reduction must be one of "
                         f"{', '.join(LOSS_REDUCTIONS)}, got {reduction!r}")
    return reduction


@dataclass
class Components:
    """The parts of a run, on its device."""

    graph: GraphData
    model: Recommender
    sampler: NegativeSampler
    evaluator: Evaluator


def build_components(config: Mapping[str, Any], dataset: KnowledgeDataset, split: Split,
                     device: torch.device, rank: int = 0, world_size: int = 1) -> Components:
    """Graph (training interactions + KG), model, sampler and evaluator for ``config``.

    ``rank`` / ``world_size`` place this process among the data-parallel ones: the evaluator
    takes its share of the users, the sampler its share of each step's rows (or the whole step,
    for a model whose loss does not split over rows; see the module docstring).
    """
    graph = build_graph(dataset, split).to(device)
    model = get_model_class(config["model"])(graph, config).to(device)
    batch_size = int(config["train_batch_size"])
    sampler_rank, sampler_world = rank, world_size
    if loss_reduction(model) == "batch" and world_size > 1:
        batch_size, sampler_rank, sampler_world = batch_size * world_size, 0, 1
    sampler = NegativeSampler(
        split.train.users, split.train.items, dataset.n_items,
        batch_size=batch_size, seed=config["seed"],
        num_negatives=next(iter(config["neg_sampling"].values())), device=device,
        rank=sampler_rank, world_size=sampler_world,
        popularity_alpha=(config["neg_popularity_alpha"]
                          if "popularity" in config["neg_sampling"] else None),
    )
    evaluator = Evaluator.from_config(config, dataset.n_users, dataset.n_items, device,
                                      rank=rank, world_size=world_size)
    return Components(graph, model, sampler, evaluator)


__all__ = ["Components", "LOSS_REDUCTIONS", "absolute_dataset", "build_components", "load_data",
           "loss_reduction"]
