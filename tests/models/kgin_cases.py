"""Shared set-up of the KGIN tests: the toy model, a batch, and replaying the fast model's
random draws in the plain reference's terms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

import simkgcl.models.kgin as kgin_module
from simkgcl.models import get_model_class
from tests.models.equivalence import assert_terms_and_gradients_close as assert_close_to_reference
from tests.models.equivalence import kg_params, spy, toy_index
from tests.models.reference_kgin import KGINDraws
from tests.models.toy_graph import toy_graph

NO_DROPOUT = {"node_dropout_rate": 0.0, "mess_dropout_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1]),
    torch.tensor([0, 3, 5, 1, 2]),
    torch.tensor([4, 1, 0, 2, 5]),
)
TERMS = ("bpr", "reg", "ind")


def make_model(**overrides):
    """KGIN on the toy graph in float64, dropout off unless overridden; the regularisers'
    weights are raised so that their gradients are far above the comparison's tolerance."""
    torch.manual_seed(7)
    config = {"embedding_size": 6, "context_hops": 2, "reg_weight": 0.1,
              "sim_regularity": 0.5, **NO_DROPOUT, **overrides}
    model = get_model_class("kgin")(toy_graph(), config).double()
    with torch.no_grad():  # larger rows: intent attention far from uniform
        model.relation_embedding.weight.mul_(3.0)
        model.intent_embedding.weight.mul_(4.0)
        model.intent_relation_logits.mul_(3.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    return {
        **kg_params(model),
        "intent": model.intent_embedding.weight,
        "intent_logits": model.intent_relation_logits,
    }


def reference_settings(model) -> dict:
    return {"reg_weight": model.reg_weight, "sim_regularity": model.sim_regularity,
            "ind": model.ind, "tau": model.temperature}


def assert_terms_and_gradients_close(terms, ref_terms, params) -> None:
    """Equal loss terms and equal gradients of each term for every parameter table."""
    assert set(terms) == set(ref_terms) == set(TERMS)
    assert_close_to_reference(terms, ref_terms, params)


@dataclass
class Draws:
    """Per forward: ``G``'s entries (UI values, then triple weights in sorted order); per hop:
    the message-dropout mask over ``[users; slots]``."""

    values: list[torch.Tensor] = field(default_factory=list)
    message_masks: list[torch.Tensor] = field(default_factory=list)


@contextlib.contextmanager
def recorded_draws(model, monkeypatch: pytest.MonkeyPatch) -> Iterator[Draws]:
    """Record every random draw the model makes (triples, UI entries, message dropout)."""
    draws = Draws()
    with monkeypatch.context() as patch:
        spy(patch, model, "_draw_values", lambda values: draws.values.append(
            values.detach().clone()))
        spy(patch, kgin_module, "keep_mask", lambda mask: draws.message_masks.append(
            mask.clone()))
        yield draws


def recorded_forwards(model, monkeypatch: pytest.MonkeyPatch, n: int, seed: int) -> Draws:
    """The draws of ``n`` training-mode forwards (final embeddings) from torch seed ``seed``."""
    model.train()
    torch.manual_seed(seed)
    with recorded_draws(model, monkeypatch) as draws:
        for _ in range(n):
            model.final_embeddings()
    return draws


def reference_draws(draws: Draws, forward: int, hops: int, mess_rate: float) -> KGINDraws:
    """Forward number ``forward``'s recorded draws in the reference's terms: original triple
    indices, a dense UI block, message masks by entity id (an active entity's slot)."""
    graph = toy_graph()
    index = toy_index(graph)
    values = draws.values[forward]
    n_pairs = len(index.pairs)
    masks = draws.message_masks[forward * hops:(forward + 1) * hops]
    return KGINDraws(
        kept_triples=index.kept_triples(values[n_pairs:]),
        ui=index.dense_ui(values[:n_pairs]),
        user_masks=[m[: graph.n_users] for m in masks],
        entity_masks=[index.entity_rows(m) for m in masks],
        mess_rate=mess_rate,
    )
