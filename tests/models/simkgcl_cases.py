"""Shared set-up of the SimKGCL tests: the toy model, a batch, and replaying the fast model's
random draws in the plain reference's terms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

import simkgcl.models.simkgcl as simkgcl_module
from simkgcl.models import get_model_class
from tests.models.equivalence import TIGHT, kg_params, spy, toy_index
from tests.models.equivalence import assert_terms_and_gradients_close as assert_close_to_reference
from tests.models.reference_simkgcl import StepDraws
from tests.models.toy_graph import toy_graph

NO_DROPOUT = {"kg_drop_rate": 0.0, "ig_drop_rate": 0.0, "mess_drop_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1]),
    torch.tensor([0, 3, 5, 1, 2]),
    torch.tensor([4, 1, 0, 2, 5]),
)


def make_model(**overrides):
    """SimKGCL on the toy graph in float64, dropout off unless overridden."""
    torch.manual_seed(7)
    # the loss weights the tests' references use (the seed's; package defaults may move)
    config = {"embedding_size": 6, "n_layers": 3, "reg_weight": 1e-4, "cl_rate": 0.5, "tau": 0.2,
              **NO_DROPOUT, **overrides}
    model = get_model_class("simkgcl")(toy_graph(), config).double()
    with torch.no_grad():  # larger relation rows make the attention weights far from uniform
        model.relation_embedding.weight.mul_(4.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    return kg_params(model)


def assert_views_close(got, want) -> None:
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=TIGHT, rtol=0)


def assert_terms_and_gradients_close(terms, ref_terms, params) -> None:
    """Equal loss terms and equal gradients of each term for every parameter table."""
    assert set(terms) == set(ref_terms) == {"bpr_reg", "cl"}
    assert_close_to_reference(terms, ref_terms, params)


@dataclass
class Draws:
    """Per KG step: kept-triple mask (sorted-triple order) or None, UI values, message mask."""

    keeps: list[torch.Tensor | None] = field(default_factory=list)
    ui_values: list[torch.Tensor] = field(default_factory=list)
    message_masks: list[torch.Tensor] = field(default_factory=list)


@contextlib.contextmanager
def recorded_draws(model, monkeypatch: pytest.MonkeyPatch) -> Iterator[Draws]:
    """Record every random draw the model makes (triples, UI entries, message dropout)."""
    draws = Draws()

    def record_kg(result):
        keep, ui_values = result
        draws.keeps.append(None if keep is None else keep.clone())
        draws.ui_values.append(ui_values.detach().clone())

    with monkeypatch.context() as patch:
        spy(patch, model, "_draw_kg_dropout", record_kg)
        spy(patch, simkgcl_module, "keep_mask", lambda mask: draws.message_masks.append(
            mask.clone()))
        yield draws


def reference_steps(draws: Draws, mess_rate: float) -> list[StepDraws]:
    """The recorded draws in the reference's terms: original triple indices, a dense UI block,
    message masks by entity id (a slot's mask for an active entity; inactive rows are zero)."""
    graph = toy_graph()
    index = toy_index(graph)
    steps = []
    for keep, ui_values, mask in zip(draws.keeps, draws.ui_values, draws.message_masks,
                                     strict=True):
        n_triples = graph.kg_heads.numel()
        kept = set(range(n_triples)) if keep is None else index.kept_triples(keep)
        steps.append(StepDraws(kept, index.dense_ui(ui_values), mask[: graph.n_users],
                               index.entity_rows(mask), mess_rate))
    return steps
