"""SimKGCL: equivalence with the plain reference, dropout behaviour, reproducibility."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from tests.models.reference_simkgcl import reference_losses, reference_views
from tests.models.simkgcl_cases import (
    BATCH,
    assert_terms_and_gradients_close,
    assert_views_close,
    make_model,
    params_of,
)
from tests.models.toy_graph import toy_graph

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("kg_view", "user_rel_softmax", "extra_relation_rows"), [
    ("fused", True, 1), ("fused", False, 1), ("pure", True, 1), ("pure", False, 1),
    ("fused", True, 3), ("pure", True, 0),
])
def test_fast_model_matches_plain_reference(kg_view, user_rel_softmax, extra_relation_rows):
    model = make_model(kg_view=kg_view, user_rel_softmax=user_rel_softmax,
                       extra_relation_rows=extra_relation_rows)
    model.train()  # dropout rates are 0, so training mode must equal the reference exactly
    params = params_of(model)
    ref_views = reference_views(toy_graph(), params, 3, kg_view, user_rel_softmax)
    assert_views_close(model.views(), ref_views)
    terms = model(*BATCH)
    ref_terms = reference_losses(ref_views, params, *BATCH, 1e-4, 0.5, 0.2)
    assert_terms_and_gradients_close(terms, ref_terms, params)


def test_kg_views_differ_between_modes():
    fused = make_model(kg_view="fused").views()
    pure = make_model(kg_view="pure").views()
    assert not torch.allclose(fused[1], pure[1])  # IG chain differs from layer 2 on
    assert not torch.allclose(fused[2], pure[2])


def test_items_without_triples_get_zero_kg_message_and_unit_rows():
    model = make_model()
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


def test_final_embeddings_are_deterministic_in_eval_mode():
    model = make_model(kg_drop_rate=0.1, ig_drop_rate=0.5, mess_drop_rate=0.1)
    model.eval()
    with torch.no_grad():
        a = model.final_embeddings()
        b = model.final_embeddings()
    assert a[0].shape == (5, 6) and a[1].shape == (6, 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="kg_view"):
        make_model(kg_view="sideways")
    with pytest.raises(ConfigError, match="ig_drop_rate"):
        make_model(ig_drop_rate=1.0)


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


def test_relation_table_rows_default_and_seed_configuration():
    r = toy_graph().n_relations
    assert make_model().relation_embedding.weight.shape[0] == r + 1  # the package default
    assert make_model(extra_relation_rows=0).relation_embedding.weight.shape[0] == r
    # the seed configuration reproduces the seed's table: R + [PAD] + [UI-Relation] + 1
    config = Config(files=[str(CONFIGS / "simkgcl.yaml")])
    assert config["extra_relation_rows"] == 3
    model = get_model_class("simkgcl")(toy_graph(), config)
    assert model.relation_embedding.weight.shape == (r + 3, 64)
    with pytest.raises(ConfigError, match="extra_relation_rows"):
        make_model(extra_relation_rows=-1)


def test_extra_relation_rows_enter_the_user_branch_only():
    """No triple uses an extra row; it moves the users' rows (softmax(u W^T) W, as the seed)
    and receives its gradient from them, and leaves every entity row of a KG step unchanged."""
    model = make_model(extra_relation_rows=3)
    model.eval()
    n_users, extra = model.n_users, toy_graph().n_relations + 2  # the last of the 3 extra rows

    def kg_step():
        return model._kg_step(model._layer0_table(), model._relation_terms(), layer0=True)

    before = kg_step()
    (grad,) = torch.autograd.grad(before[:n_users].sum(), model.relation_embedding.weight,
                                  retain_graph=True)
    assert torch.count_nonzero(grad[extra]) > 0
    (grad,) = torch.autograd.grad(before[n_users:].sum(), model.relation_embedding.weight)
    assert torch.count_nonzero(grad[extra]) == 0
    with torch.no_grad():
        model.relation_embedding.weight[extra] += 1.0
        after = kg_step()
    assert not torch.allclose(after[:n_users], before[:n_users])
    assert torch.equal(after[n_users:], before[n_users:])
