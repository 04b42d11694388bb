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
from tests.models.reference_kgin import KGINDraws
from tests.models.toy_graph import toy_graph

NO_DROPOUT = {"node_dropout_rate": 0.0, "mess_dropout_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1]),
    torch.tensor([0, 3, 5, 1, 2]),
    torch.tensor([4, 1, 0, 2, 5]),
)
TIGHT = 1e-10  # float64: the fast model and the reference agree to ~1e-15
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
        "user": model.user_embedding.weight,
        "entity": model.entity_embedding.weight,
        "relation": model.relation_embedding.weight,
        "intent": model.intent_embedding.weight,
        "intent_logits": model.intent_relation_logits,
    }


def reference_settings(model) -> dict:
    return {"reg_weight": model.reg_weight, "sim_regularity": model.sim_regularity,
            "ind": model.ind, "tau": model.temperature}


def assert_terms_and_gradients_close(terms, ref_terms, params) -> None:
    """Equal loss terms and equal gradients of each term for every parameter table."""
    assert set(terms) == set(ref_terms) == set(TERMS)
    weights = list(params.values())
    for name in TERMS:
        torch.testing.assert_close(terms[name], ref_terms[name], atol=TIGHT, rtol=0)
        grads = torch.autograd.grad(terms[name], weights, retain_graph=True, allow_unused=True)
        ref_grads = torch.autograd.grad(ref_terms[name], weights, retain_graph=True,
                                        allow_unused=True)
        for table, got, want, weight in zip(params, grads, ref_grads, weights, strict=True):
            got = torch.zeros_like(weight) if got is None else got
            want = torch.zeros_like(weight) if want is None else want
            torch.testing.assert_close(got, want, atol=TIGHT, rtol=0,
                                       msg=lambda m, t=table, n=name: f"{n} / {t}: {m}")


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
    draw_values = model._draw_values
    keep_mask = kgin_module.keep_mask

    def spy_values(dtype):
        values = draw_values(dtype)
        draws.values.append(values.detach().clone())
        return values

    def spy_mask(*args, **kwargs):
        mask = keep_mask(*args, **kwargs)
        draws.message_masks.append(mask.clone())
        return mask

    with monkeypatch.context() as patch:
        patch.setattr(model, "_draw_values", spy_values)
        patch.setattr(kgin_module, "keep_mask", spy_mask)
        yield draws


def reference_draws(draws: Draws, forward: int, hops: int, mess_rate: float) -> KGINDraws:
    """Forward number ``forward``'s recorded draws in the reference's terms: original triple
    indices, a dense UI block, message masks by entity id (an active entity's slot)."""
    graph = toy_graph()
    n_users, n_items, n_entities = graph.n_users, graph.n_items, graph.n_entities
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    sorted_triples = sorted(range(len(triples)), key=lambda k: triples[k])
    pairs = sorted(set(zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True)))
    values = draws.values[forward]
    ui_values, weights = values[: len(pairs)], values[len(pairs):]
    kept = {sorted_triples[j] for j in torch.nonzero(weights).flatten().tolist()}
    ui = torch.zeros(n_users, n_items, dtype=torch.float64)
    for (u, i), value in zip(pairs, ui_values.tolist(), strict=True):
        ui[u, i] = value
    active = sorted(set(range(n_items)) | {h for h, _, _ in triples})
    slot = {e: active.index(e) if e in active else len(active) for e in range(n_entities)}
    masks = draws.message_masks[forward * hops:(forward + 1) * hops]
    return KGINDraws(
        kept_triples=kept,
        ui=ui,
        user_masks=[m[:n_users] for m in masks],
        entity_masks=[torch.stack([m[n_users + slot[e]] for e in range(n_entities)])
                      for m in masks],
        mess_rate=mess_rate,
    )
