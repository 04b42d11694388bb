"""SGL: equality with the plain reference (views, losses, gradients), its augmentations' draws,
and training through the engine."""

from __future__ import annotations

import pytest
import torch

import simkgcl.models.sgl as sgl_module
from simkgcl.graph import build_graph
from simkgcl.models import get_model_class
from simkgcl.sampling.negative import MODEL_EPOCH_STREAM, epoch_generator
from tests.models.plaincl_cases import BATCH, assert_close_terms_and_grads, ranks_training_items
from tests.models.reference_sgl import reference_losses, reference_views
from tests.models.toy_graph import toy_graph
from tests.training.engine_fixtures import make_tiny_data


def make_sgl(graph=None, **overrides):
    torch.manual_seed(5)
    config = {"embedding_size": 6, "n_layers": 3, **overrides}
    return get_model_class("sgl")(graph or toy_graph(), config).double()


def pairs(edges) -> set[tuple[int, int]]:
    users, items = edges
    return set(zip(users.tolist(), items.tolist(), strict=True))


@pytest.mark.parametrize("augmentation", ["ed", "nd", "rw"])
def test_fast_model_matches_plain_reference_on_its_own_draws(augmentation):
    graph = toy_graph()
    model = make_sgl(type=augmentation, drop_ratio=0.3, ssl_tau=0.4, ssl_weight=0.3,
                     reg_weight=0.01)
    model.on_epoch_start(0, torch.Generator().manual_seed(3))
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    train_pairs = list(zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True))
    view_pairs = [[sorted(pairs(edges)) for edges in view] for view in model.view_edges]
    expected_graphs = 3 if augmentation == "rw" else 1
    assert [len(v) for v in view_pairs] == [expected_graphs, expected_graphs]
    ref_views = reference_views(x, 5, 6, train_pairs, view_pairs, 3)
    for got, want in zip(model.views(), ref_views, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    terms = model(*BATCH)
    ref_terms = reference_losses(ref_views, x, 5, *BATCH, 0.01, 0.3, 0.4)
    params = [model.user_embedding.weight, model.item_embedding.weight]
    assert_close_terms_and_grads(terms, ref_terms, params, {"bpr", "reg", "ssl"})


def test_edge_dropout_keeps_an_exact_share_fresh_per_epoch_and_reproducible():
    dataset, split = make_tiny_data(n_users=40, n_items=30, per_user=10)
    graph = build_graph(dataset, split)
    model = make_sgl(graph, type="ed", drop_ratio=0.25)
    everything = pairs((graph.train_users, graph.train_items))
    n = len(everything)
    seen = []
    for epoch in range(30):
        model.on_epoch_start(epoch, epoch_generator(2020, epoch, MODEL_EPOCH_STREAM))
        for view in model.view_edges:
            (edges,) = view
            kept = pairs(edges)
            assert len(kept) == int(n * 0.75) and kept <= everything
            seen.append(kept)
    assert seen[0] != seen[1]  # the two views differ
    assert seen[0] != seen[2]  # and are redrawn every epoch
    per_edge = [sum(e in s for s in seen) / len(seen) for e in everything]
    assert min(per_edge) > 0.45 and max(per_edge) <= 1.0  # every edge is dropped sometimes
    assert sum(p < 1.0 for p in per_edge) > 0.9 * n
    # the same (seed, epoch) stream gives the same graphs: a resumed run redraws them exactly
    model.on_epoch_start(7, epoch_generator(2020, 7, MODEL_EPOCH_STREAM))
    again = [pairs(v[0]) for v in model.view_edges]
    assert again == seen[14:16]


def test_node_dropout_drops_exact_node_counts_and_all_their_edges(monkeypatch):
    dataset, split = make_tiny_data(n_users=40, n_items=30, per_user=10)
    graph = build_graph(dataset, split)
    model = make_sgl(graph, type="nd", drop_ratio=0.2)
    masks = []
    survivors = sgl_module._survivors

    def spy(n, rate, generator):
        masks.append(survivors(n, rate, generator))
        return masks[-1]

    monkeypatch.setattr(sgl_module, "_survivors", spy)
    model.on_epoch_start(0, torch.Generator().manual_seed(1))
    assert len(masks) == 4  # users and items of each view
    everything = pairs((graph.train_users, graph.train_items))
    for v, view in enumerate(model.view_edges):
        kept_users, kept_items = masks[2 * v], masks[2 * v + 1]
        assert int((~kept_users).sum()) == 8 and int((~kept_items).sum()) == 6
        expected = {(u, i) for u, i in everything if kept_users[u] and kept_items[i]}
        assert pairs(view[0]) == expected
    assert not torch.equal(masks[0], masks[2])


def test_random_walk_draws_one_graph_per_layer():
    model = make_sgl(type="rw", drop_ratio=0.3)
    model.on_epoch_start(0, torch.Generator().manual_seed(2))
    for view in model.view_edges:
        graphs = [pairs(g) for g in view]
        assert len(graphs) == 3 and all(len(g) == int(12 * 0.7) for g in graphs)
        assert len({frozenset(g) for g in graphs}) > 1


def test_forward_needs_the_epoch_draws_and_scores_with_the_full_graph():
    model = make_sgl()
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        model(*BATCH)
    model.eval()
    with torch.no_grad():  # scoring works without draws: it uses the full graph only
        users, items = model.final_embeddings()
    assert users.shape == (5, 6) and items.shape == (6, 6)


def test_trains_through_the_engine_and_ranks_training_items_first(tmp_path):
    ranks_training_items("sgl", tmp_path)
