"""KGIN's random parts (edge sampling, interaction dropout, message dropout): shares, freshness,
RecBole's coupling of the rates, reproducibility, and equality with the plain reference when it
replays the model's own draws."""

from __future__ import annotations

import torch

from tests.models.equivalence import TIGHT, assert_seeded_forward_repeats
from tests.models.kgin_cases import (
    BATCH,
    assert_terms_and_gradients_close,
    make_model,
    params_of,
    recorded_draws,
    recorded_forwards,
    reference_draws,
    reference_settings,
)
from tests.models.reference_kgin import reference_embeddings, reference_losses
from tests.models.toy_graph import toy_graph

N_PAIRS = 12  # distinct training interactions of the toy graph (13 rows, one duplicated)


def test_edge_sampling_keeps_the_rate_share_fresh_per_forward_and_reproducibly(monkeypatch):
    """RecBole's ``edge_sampling(rate)`` keeps ``int(n * rate)`` triples, once per forward
    (shared by its hops); a head's kept triples share its mean equally."""
    model = make_model(node_dropout_rate=0.7, context_hops=3)
    draws = recorded_forwards(model, monkeypatch, 30, seed=11)
    assert len(draws.values) == 30  # one draw per forward, not per hop
    n_triples = model.kg.n_triples
    heads = model.kg.triple_head_slots
    for values in draws.values:
        weights = values[N_PAIRS:]
        kept = weights > 0
        assert int(kept.sum()) == int(n_triples * 0.7)
        for head in heads[kept].unique().tolist():
            mine = weights[kept & (heads == head)]
            torch.testing.assert_close(mine, torch.full_like(mine, 1.0 / mine.numel()))
    kept_sets = [tuple(torch.nonzero(v[N_PAIRS:]).flatten().tolist()) for v in draws.values]
    assert len(set(kept_sets)) > 20  # C(13, 9) = 715 possible subsets
    counts = torch.stack([v[N_PAIRS:] > 0 for v in draws.values]).double().mean(0)
    assert counts.min() > 0.3  # every triple is drawn sometimes (expected share 9/13)

    assert_seeded_forward_repeats(model, BATCH, "bpr")


def test_interaction_dropout_uses_the_message_rate_and_needs_node_dropout(monkeypatch):
    """RecBole's ``SparseDropout(p=mess_dropout_rate)`` on the 1/deg(u) entries, drawn only in
    the node-dropout branch (``node_dropout_rate > 0``) and only when training."""
    full = make_model().ui_values
    model = make_model(node_dropout_rate=1.0, mess_dropout_rate=0.4)  # every triple kept
    draws = recorded_forwards(model, monkeypatch, 200, seed=2)
    ui = torch.stack([v[:N_PAIRS] for v in draws.values])
    kept = ui != 0
    torch.testing.assert_close(ui[kept], (full / 0.6).expand_as(ui)[kept])
    assert abs(kept.double().mean().item() - 0.6) < 0.03  # 2400 draws: sd ~ 0.01
    assert torch.all(torch.stack([v[N_PAIRS:] for v in draws.values]) ==
                     model.triple_weights)  # rate 1: every triple, no sampling

    for off in (make_model(node_dropout_rate=0.0, mess_dropout_rate=0.4),
                make_model(node_dropout_rate=0.5, mess_dropout_rate=0.0)):
        off.train()
        with recorded_draws(off, monkeypatch) as draws:
            off.final_embeddings()
        torch.testing.assert_close(draws.values[0][:N_PAIRS], full, atol=0, rtol=0)
    model.eval()
    with recorded_draws(model, monkeypatch) as draws:
        model.final_embeddings()
    torch.testing.assert_close(draws.values[0][:N_PAIRS], full, atol=0, rtol=0)


def test_message_dropout_share_and_freshness(monkeypatch):
    model = make_model(mess_dropout_rate=0.25, context_hops=2)
    draws = recorded_forwards(model, monkeypatch, 20, seed=3)
    masks = draws.message_masks
    assert len(masks) == 20 * 2  # one mask per hop, fresh in every hop of every call
    stacked = torch.stack(masks)
    assert set(stacked.unique().tolist()) == {0.0, 1.0}
    assert abs(1.0 - stacked.mean().item() - 0.25) < 0.03  # 40 x 21 x 6 draws: sd ~ 0.005
    assert all(not torch.equal(a, b) for a, b in zip(masks, masks[1:], strict=False))
    model.eval()
    with recorded_draws(model, monkeypatch) as draws:
        model.final_embeddings()
    assert draws.message_masks == []


def test_fast_model_with_every_random_part_matches_the_reference_replaying_its_draws(
        monkeypatch):
    hops, mess_rate = 2, 0.3
    model = make_model(node_dropout_rate=0.6, mess_dropout_rate=mess_rate, context_hops=hops,
                       ind="distance")
    model.train()
    params = params_of(model)
    torch.manual_seed(13)
    with recorded_draws(model, monkeypatch) as draws:
        users, items = model.final_embeddings()
        terms = model(*BATCH)
    # forward 0: final_embeddings; forward 1: the loss
    replays = [reference_draws(draws, forward, hops, mess_rate) for forward in (0, 1)]
    for replay in replays:
        assert 0 < len(replay.kept_triples) < model.kg.n_triples
        assert torch.count_nonzero(replay.ui) < N_PAIRS  # some interactions dropped
    assert replays[0].kept_triples != replays[1].kept_triples
    ref_users, ref_items = reference_embeddings(toy_graph(), params, hops, replays[0])
    torch.testing.assert_close(users, ref_users, atol=TIGHT, rtol=0)
    torch.testing.assert_close(items, ref_items, atol=TIGHT, rtol=0)
    ref_users, ref_items = reference_embeddings(toy_graph(), params, hops, replays[1])
    ref_terms = reference_losses(ref_users, ref_items, params, *BATCH,
                                 **reference_settings(model))
    assert_terms_and_gradients_close(terms, ref_terms, params)
