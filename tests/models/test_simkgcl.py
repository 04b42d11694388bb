"""SimKGCL: equivalence with the plain reference, dropout behaviour, reproducibility."""

from __future__ import annotations

import pytest
import torch

from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from tests.models.reference_simkgcl import reference_losses, reference_views
from tests.models.toy_graph import toy_graph

NO_DROPOUT = {"kg_drop_rate": 0.0, "ig_drop_rate": 0.0, "mess_drop_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1]),
    torch.tensor([0, 3, 5, 1, 2]),
    torch.tensor([4, 1, 0, 2, 5]),
)


def _model(**overrides):
    torch.manual_seed(7)
    config = {"embedding_size": 6, "n_layers": 3, **NO_DROPOUT, **overrides}
    model = get_model_class("simkgcl")(toy_graph(), config).double()
    with torch.no_grad():  # larger relation rows make the attention weights far from uniform
        model.relation_embedding.weight.mul_(4.0)
    return model


@pytest.mark.parametrize("kg_view", ["fused", "pure"])
@pytest.mark.parametrize("user_rel_softmax", [True, False])
def test_fast_model_matches_plain_reference(kg_view, user_rel_softmax):
    model = _model(kg_view=kg_view, user_rel_softmax=user_rel_softmax)
    model.train()  # dropout rates are 0, so training mode must equal the reference exactly
    params = {
        "user": model.user_embedding.weight,
        "entity": model.entity_embedding.weight,
        "relation": model.relation_embedding.weight,
    }
    users, pos, neg = BATCH
    ref_views = reference_views(toy_graph(), params, 3, kg_view, user_rel_softmax)
    fast_views = model.views()
    for got, want in zip(fast_views, ref_views, strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0)

    terms = model(users, pos, neg)
    ref_terms = reference_losses(ref_views, params, users, pos, neg, 1e-4, 0.5, 0.2)
    assert set(terms) == {"bpr_reg", "cl"}
    weights = list(params.values())
    for name in terms:
        assert torch.allclose(terms[name], ref_terms[name], atol=1e-5, rtol=0)
        grads = torch.autograd.grad(terms[name], weights, retain_graph=True)
        ref_grads = torch.autograd.grad(ref_terms[name], weights, retain_graph=True)
        for got, want in zip(grads, ref_grads, strict=True):
            assert torch.allclose(got, want, atol=1e-5, rtol=0), name


def test_kg_views_differ_between_modes():
    fused = _model(kg_view="fused").views()
    pure = _model(kg_view="pure").views()
    assert not torch.allclose(fused[1], pure[1])  # IG chain differs from layer 2 on
    assert not torch.allclose(fused[2], pure[2])


def test_items_without_triples_get_zero_kg_message_and_unit_rows():
    model = _model()
    model.eval()
    entities = model.entity_embedding.weight
    new = model._kg_step(model._layer0_table(), model._relation_terms(), layer0=True)
    new_users, slots = new[:5], new[5:]
    new_entities = torch.zeros_like(entities)
    new_entities[model.kg.active_entities] = slots[:-1]
    assert torch.count_nonzero(slots[-1]) == 0  # the shared zero slot of inactive entities
    assert torch.count_nonzero(new_entities[[4, 5, 8]]) == 0  # no outgoing triples
    norms = new_entities[[0, 1, 2, 3, 6, 7, 9]].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms))
    assert torch.allclose(new_users.norm(dim=1), torch.ones(5, dtype=torch.float64))


def _dropout_masks(model, calls):
    """Capture the (triple keep mask, dropped UI values) the model draws in each KG step."""
    seen, ui_seen = [], []
    original = model._draw_kg_dropout

    def spy(device):
        keep, ui_values = original(device)
        seen.append(keep.clone())
        ui_seen.append(ui_values.detach().clone())
        return keep, ui_values

    model._draw_kg_dropout = spy
    for _ in range(calls):
        model.views()
    return seen, ui_seen


def test_dropout_shares_rescaling_freshness_and_reproducibility():
    model = _model(kg_drop_rate=0.3, ig_drop_rate=0.5, mess_drop_rate=0.0)
    model.train()
    torch.manual_seed(11)
    masks, ui_values = _dropout_masks(model, calls=40)
    n_triples = model.kg.n_triples
    assert len(masks) == 40 * 3  # a fresh draw in every layer of every call
    assert all(int(m.sum()) == int(n_triples * 0.7) for m in masks)
    assert not all(torch.equal(masks[0], m) for m in masks[1:])
    # the KG step's UI values are dropped (the IG step's are not: they are other buffers)
    full = model.ui_values
    dropped = [v for v in ui_values if not torch.equal(v, full)]
    assert len(dropped) == 40 * 3
    stacked = torch.stack(dropped)
    kept = stacked != 0
    assert torch.allclose(stacked[kept], (full.expand_as(stacked) / 0.5)[kept])
    share = kept.double().mean().item()
    assert abs(share - 0.5) < 0.06  # 1440 Bernoulli draws: sd ~ 0.013
    assert not torch.equal(kept[0], kept[1])

    torch.manual_seed(5)
    first = model(*BATCH)
    torch.manual_seed(5)
    second = model(*BATCH)
    third = model(*BATCH)
    assert torch.equal(first["bpr_reg"], second["bpr_reg"])
    assert not torch.equal(second["bpr_reg"], third["bpr_reg"])


def test_final_embeddings_are_deterministic_in_eval_mode():
    model = _model(kg_drop_rate=0.1, ig_drop_rate=0.5, mess_drop_rate=0.1)
    model.eval()
    with torch.no_grad():
        a = model.final_embeddings()
        b = model.final_embeddings()
    assert a[0].shape == (5, 6) and a[1].shape == (6, 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="kg_view"):
        _model(kg_view="sideways")
    with pytest.raises(ConfigError, match="ig_drop_rate"):
        _model(ig_drop_rate=1.0)


def test_training_reduces_loss_with_default_dropout():
    torch.manual_seed(3)
    model = get_model_class("simkgcl")(toy_graph(), {"embedding_size": 8})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    users, pos, neg = BATCH
    first = last = None
    for step in range(30):
        terms = model(users, pos, neg)
        loss = terms["bpr_reg"] + terms["cl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    assert last < first


def test_graph_without_triples_still_trains():
    from dataclasses import replace

    empty = torch.zeros(0, dtype=torch.long)
    graph = replace(toy_graph(), kg_heads=empty, kg_relations=empty, kg_tails=empty)
    model = get_model_class("simkgcl")(graph, {"embedding_size": 4})
    terms = model(*BATCH)
    (terms["bpr_reg"] + terms["cl"]).backward()
    assert model.entity_embedding.weight.grad is not None
    assert all(torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize("tau", [0.2, 0.01])
def test_info_nce_matches_plain_formula_and_gradients(tau):
    """The fused InfoNCE (with and without its max shift) equals the textbook expression."""
    from simkgcl.models.ops import info_nce

    torch.manual_seed(2)
    a = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    got = info_nce(a, b, tau)
    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    sim = an @ bn.t() / tau
    want = -(torch.diagonal(sim) - torch.logsumexp(sim, dim=1)).sum()
    assert torch.allclose(got, want, atol=1e-10)
    for g, w in zip(
        torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b)), strict=True
    ):
        assert torch.allclose(g, w, atol=1e-8)
