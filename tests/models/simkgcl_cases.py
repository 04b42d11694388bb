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
from tests.models.reference_simkgcl import StepDraws
from tests.models.toy_graph import toy_graph

NO_DROPOUT = {"kg_drop_rate": 0.0, "ig_drop_rate": 0.0, "mess_drop_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1]),
    torch.tensor([0, 3, 5, 1, 2]),
    torch.tensor([4, 1, 0, 2, 5]),
)
TIGHT = 1e-10  # float64: the fast model and the reference agree to ~1e-14


def make_model(**overrides):
    """SimKGCL on the toy graph in float64, dropout off unless overridden."""
    torch.manual_seed(7)
    config = {"embedding_size": 6, "n_layers": 3, **NO_DROPOUT, **overrides}
    model = get_model_class("simkgcl")(toy_graph(), config).double()
    with torch.no_grad():  # larger relation rows make the attention weights far from uniform
        model.relation_embedding.weight.mul_(4.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    return {
        "user": model.user_embedding.weight,
        "entity": model.entity_embedding.weight,
        "relation": model.relation_embedding.weight,
    }


def assert_views_close(got, want) -> None:
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=TIGHT, rtol=0)


def assert_terms_and_gradients_close(terms, ref_terms, params) -> None:
    """Equal loss terms and equal gradients of each term for every parameter table."""
    assert set(terms) == set(ref_terms) == {"bpr_reg", "cl"}
    weights = list(params.values())
    for name in terms:
        torch.testing.assert_close(terms[name], ref_terms[name], atol=TIGHT, rtol=0)
        grads = torch.autograd.grad(terms[name], weights, retain_graph=True)
        ref_grads = torch.autograd.grad(ref_terms[name], weights, retain_graph=True)
        for table, got, want in zip(params, grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, atol=TIGHT, rtol=0,
                                       msg=lambda m, t=table, n=name: f"{n} / {t}: {m}")


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
    draw_kg_dropout = model._draw_kg_dropout
    keep_mask = simkgcl_module.keep_mask

    def spy_kg(table):
        keep, ui_values = draw_kg_dropout(table)
        draws.keeps.append(None if keep is None else keep.clone())
        draws.ui_values.append(ui_values.detach().clone())
        return keep, ui_values

    def spy_mask(*args, **kwargs):
        mask = keep_mask(*args, **kwargs)
        draws.message_masks.append(mask.clone())
        return mask

    with monkeypatch.context() as patch:
        patch.setattr(model, "_draw_kg_dropout", spy_kg)
        patch.setattr(simkgcl_module, "keep_mask", spy_mask)
        yield draws


def reference_steps(draws: Draws, mess_rate: float) -> list[StepDraws]:
    """The recorded draws in the reference's terms: original triple indices, a dense UI block,
    message masks by entity id (a slot's mask for an active entity; inactive rows are zero)."""
    graph = toy_graph()
    n_users, n_items, n_entities = graph.n_users, graph.n_items, graph.n_entities
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    sorted_triples = sorted(range(len(triples)), key=lambda k: triples[k])
    pairs = sorted(set(zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True)))
    active = sorted(set(range(n_items)) | {h for h, _, _ in triples})
    slot = {e: active.index(e) if e in active else len(active) for e in range(n_entities)}
    steps = []
    for keep, ui_values, mask in zip(draws.keeps, draws.ui_values, draws.message_masks,
                                     strict=True):
        kept = set(range(len(triples))) if keep is None else {
            sorted_triples[j] for j in torch.nonzero(keep).flatten().tolist()}
        ui = torch.zeros(n_users, n_items, dtype=torch.float64)
        for (u, i), value in zip(pairs, ui_values.tolist(), strict=True):
            ui[u, i] = value
        entity_mask = torch.stack([mask[n_users + slot[e]] for e in range(n_entities)])
        steps.append(StepDraws(kept, ui, mask[:n_users], entity_mask, mess_rate))
    return steps
