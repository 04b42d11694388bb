"""SimKGCL's three dropouts (triples, UI entries, messages): shares, freshness, reproducibility,
and equality with the plain reference when the reference replays the model's own draws."""

from __future__ import annotations

import pytest
import torch

from tests.models.equivalence import assert_seeded_forward_repeats
from tests.models.reference_simkgcl import reference_losses, reference_views
from tests.models.simkgcl_cases import (
    BATCH,
    assert_terms_and_gradients_close,
    assert_views_close,
    make_model,
    params_of,
    recorded_draws,
    reference_steps,
)
from tests.models.toy_graph import toy_graph

ALL_DROPOUTS = {"kg_drop_rate": 0.3, "ig_drop_rate": 0.5, "mess_drop_rate": 0.4}


def test_triple_and_ui_dropout_shares_rescaling_freshness_and_reproducibility(monkeypatch):
    model = make_model(kg_drop_rate=0.3, ig_drop_rate=0.5, mess_drop_rate=0.0)
    model.train()
    torch.manual_seed(11)
    with recorded_draws(model, monkeypatch) as draws:
        for _ in range(40):
            model.views()
    masks, ui_values = draws.keeps, draws.ui_values
    n_triples = model.kg.n_triples
    assert len(masks) == 40 * 3  # a fresh draw in every layer of every call
    assert all(int(m.sum()) == int(n_triples * 0.7) for m in masks)
    assert not all(torch.equal(masks[0], m) for m in masks[1:])
    assert draws.message_masks == []  # rate 0: no message dropout drawn
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

    assert_seeded_forward_repeats(model, BATCH, "bpr_reg")


def test_message_dropout_share_freshness_zeroed_entries_and_reproducibility(monkeypatch):
    model = make_model(mess_drop_rate=0.25)
    model.train()
    torch.manual_seed(3)
    with recorded_draws(model, monkeypatch) as draws:
        views = [model.views() for _ in range(20)]
    masks = draws.message_masks
    n_rows = model.n_users + model.kg.n_slots
    assert len(masks) == 20 * 3  # one mask per KG step, fresh in every layer of every call
    assert all(m.shape == (n_rows, 6) for m in masks)
    stacked = torch.stack(masks)
    assert set(stacked.unique().tolist()) == {0.0, 1.0}
    dropped = 1.0 - stacked.mean().item()
    assert abs(dropped - 0.25) < 0.03  # 16,800 draws: sd ~ 0.0033
    assert all(not torch.equal(a, b) for a, b in zip(masks, masks[1:], strict=False))
    assert not torch.equal(views[0][0], views[1][0])

    # a dropped entry of a KG step's output is exactly zero after the L2 normalisation
    with recorded_draws(model, monkeypatch) as draws:
        new = model._kg_step(model._layer0_table(), model._relation_terms(), layer0=True)
    (mask,) = draws.message_masks
    assert torch.all(new[mask == 0] == 0)
    assert torch.count_nonzero(new[mask == 1]) > 0

    # same seed, same draws, same views; evaluation draws nothing and is deterministic
    torch.manual_seed(8)
    first = model.views()
    torch.manual_seed(8)
    second = model.views()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    model.eval()
    with recorded_draws(model, monkeypatch) as draws:
        model.views()
    assert draws.message_masks == [] and all(k is None for k in draws.keeps)


@pytest.mark.parametrize("kg_view", ["fused", "pure"])
def test_training_forward_equals_reference_replaying_the_same_draws(kg_view, monkeypatch):
    """All three dropouts on: views, both losses and every gradient equal the plain reference
    fed with the model's own draws (message dropout with its 1/(1 - rate) scale there)."""
    model = make_model(kg_view=kg_view, **ALL_DROPOUTS)
    model.train()
    params = params_of(model)
    torch.manual_seed(13)
    with recorded_draws(model, monkeypatch) as draws:
        views = model.views()
    steps = reference_steps(draws, ALL_DROPOUTS["mess_drop_rate"])
    assert len(steps) == 3
    assert all(len(step.kept_triples) == int(model.kg.n_triples * 0.7) for step in steps)
    assert all(bool((step.user_mask == 0).any()) for step in steps)
    assert_views_close(views, reference_views(toy_graph(), params, 3, kg_view, True, steps))

    with recorded_draws(model, monkeypatch) as draws:
        terms = model(*BATCH)
    steps = reference_steps(draws, ALL_DROPOUTS["mess_drop_rate"])
    ref_views = reference_views(toy_graph(), params, 3, kg_view, True, steps)
    ref_terms = reference_losses(ref_views, params, *BATCH, 1e-4, 0.5, 0.2)
    assert_terms_and_gradients_close(terms, ref_terms, params)
