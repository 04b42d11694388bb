"""KGCL: equivalence with the plain reference (encoder, propagations, augmented views, losses,
gradients; with dropout off and with the model's own dropout draws replayed), the per-epoch
augmentation (shares, consistency-guided keep probabilities, reproducibility), TransE batches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

import simkgcl.models.kgcl as kgcl_module
import simkgcl.models.ops.dropout as dropout_module
from simkgcl.models import get_model_class
from simkgcl.sampling.negative import MODEL_EPOCH_STREAM, epoch_generator
from tests.models.reference_kgcl import (
    EncoderDraws,
    reference_adjacency,
    reference_cosine,
    reference_item_kg,
    reference_keep_probability,
    reference_losses,
    reference_neighbours,
    reference_propagate,
    reference_transe,
)
from tests.models.toy_graph import toy_graph

BATCH = (
    torch.tensor([0, 2, 2, 4, 1, 3]),
    torch.tensor([0, 3, 5, 1, 2, 2]),
    torch.tensor([4, 1, 0, 2, 5, 3]),
)
NO_DROPOUT = {"gat_dropout": 0.0, "graph_drop_rate": 0.0}
TIGHT = 1e-10  # float64: the fast model and the reference agree to ~1e-15


def kgcl_graph():
    """The toy graph with a repeated triple (read once) and a 4th triple on item 0 (past a
    width of 2: the truncation keeps the first two in file order)."""
    graph = toy_graph()
    extra = torch.tensor([[0, 2, 8], [1, 0, 6], [0, 1, 7]])  # (1, 0, 6), (0, 1, 7) repeat
    return replace(
        graph,
        kg_heads=torch.cat([graph.kg_heads, extra[:, 0]]),
        kg_relations=torch.cat([graph.kg_relations, extra[:, 1]]),
        kg_tails=torch.cat([graph.kg_tails, extra[:, 2]]),
    )


def make_model(**overrides):
    torch.manual_seed(7)
    config = {"embedding_size": 6, "neighbours_per_item": 2, **NO_DROPOUT, **overrides}
    model = get_model_class("kgcl")(kgcl_graph(), config).double()
    with torch.no_grad():  # larger relation and fc rows: attention weights far from uniform
        model.relation_embedding.weight.mul_(8.0)
        model.attention.weight.mul_(3.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    return {
        "user": model.user_embedding.weight,
        "item": model.item_embedding.weight,
        "entity": model.entity_embedding.weight,
        "relation": model.relation_embedding.weight,
        "fc_weight": model.attention.weight,
        "fc_bias": model.attention.bias,
    }


def start_epoch(model, epoch: int = 0, seed: int = 2020):
    model.on_epoch_start(epoch, epoch_generator(seed, epoch, MODEL_EPOCH_STREAM))
    return model.epoch_views()


def view_matrices(model, views) -> list[torch.Tensor]:
    """The two augmented graphs in the reference's terms (kept items, or kept pairs)."""
    graph = kgcl_graph()
    if views.item_keep is not None:
        return [reference_adjacency(graph, kept_items=set(
            torch.nonzero(views.item_keep[v]).flatten().tolist())) for v in range(2)]
    nnz = model.interaction_users.numel()
    pairs = list(zip(model.interaction_users.tolist(), model.interaction_items.tolist(),
                     strict=True))
    return [reference_adjacency(graph, kept_pairs={
        pairs[k] for k in range(nnz) if views.ui_values[v, k] != 0}) for v in range(2)]


def assert_close(got, want, what: str) -> None:
    torch.testing.assert_close(got, want, atol=TIGHT, rtol=0, msg=lambda m: f"{what}: {m}")


def assert_terms_and_gradients_close(terms, ref_terms, params) -> None:
    assert terms.keys() == ref_terms.keys()
    for name in terms:
        assert_close(terms[name], ref_terms[name], name)
        got = torch.autograd.grad(terms[name], list(params.values()), retain_graph=True,
                                  allow_unused=True)
        want = torch.autograd.grad(ref_terms[name], list(params.values()), retain_graph=True,
                                   allow_unused=True)
        for table, g, w in zip(params, got, want, strict=True):
            g = torch.zeros_like(params[table]) if g is None else g
            w = torch.zeros_like(params[table]) if w is None else w
            assert_close(g, w, f"d {name} / d {table}")


def test_neighbour_table_is_each_items_first_distinct_triples_in_file_order():
    graph = kgcl_graph()
    for width in (1, 2, 10):
        model = make_model(neighbours_per_item=width)
        want = reference_neighbours(graph, width)
        for i in range(graph.n_items):
            n = len(want[i])
            assert model.kg.neighbour_valid[i].tolist() == [True] * n + [False] * (width - n)
            got = list(zip(model.kg.neighbour_relations[i, :n].tolist(),
                           model.kg.neighbour_tails[i, :n].tolist(), strict=True))
            assert got == want[i]
            assert model.kg.neighbour_tails[i, n:].tolist() == [graph.n_entities] * (width - n)
    # heads 6, 7, 9 are not items: their 4 triples are counted, not used
    assert make_model().kg.n_other_head_triples == 4


@pytest.mark.parametrize("ui_augmentation", ["weighted", "random"])
def test_fast_model_matches_plain_reference_without_dropout(ui_augmentation):
    model = make_model(ui_augmentation=ui_augmentation)
    model.train()  # dropout rates are 0, so training mode must equal the reference exactly
    params = params_of(model)
    views = start_epoch(model)
    graph = kgcl_graph()
    neighbours = reference_neighbours(graph, 2)
    everything = torch.ones(graph.n_items, 2, dtype=torch.bool)
    main_items = reference_item_kg(params, neighbours, 2, everything)
    want_main = reference_propagate(params, main_items, reference_adjacency(graph), 3)
    for got, want in zip(model.main_views(), want_main, strict=True):
        assert_close(got, want, "main propagation")
    view_items = [reference_item_kg(params, neighbours, 2, views.kg_keep[v]) for v in range(2)]
    want_views = [reference_propagate(params, view_items[v], matrix, 3)
                  for v, matrix in enumerate(view_matrices(model, views))]
    for (got_u, got_i), (want_u, want_i) in zip(model.contrast_views(), want_views, strict=True):
        assert_close(got_u, want_u, "view users")
        assert_close(got_i, want_i, "view items")
    if ui_augmentation == "weighted":
        assert_close(views.stability, reference_cosine(view_items[0], view_items[1]).detach(),
                     "consistency")
    terms = model(*BATCH)
    ref_terms = reference_losses(params, want_main, *want_views, *BATCH, reg_weight=1e-4,
                                 cl_rate=0.1, tau=0.2)
    assert_terms_and_gradients_close(terms, ref_terms, params)


@contextlib.contextmanager
def recorded_masks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """Every keep-mask the model draws per forward, in order (graph dropout, then encoder)."""
    masks: list[torch.Tensor] = []
    keep_mask = dropout_module.keep_mask

    def spy(*args, **kwargs):
        mask = keep_mask(*args, **kwargs)
        masks.append(mask.clone())
        return mask

    with monkeypatch.context() as patch:
        patch.setattr(kgcl_module, "keep_mask", spy)
        patch.setattr(dropout_module, "keep_mask", spy)
        yield masks


def test_fast_model_matches_reference_replaying_its_dropout(monkeypatch):
    model = make_model(gat_dropout=0.4, graph_drop_rate=0.3, neighbours_per_item=3)
    model.train()
    params = params_of(model)
    views = start_epoch(model)
    torch.manual_seed(5)
    with recorded_masks(monkeypatch) as masks:
        terms = model(*BATCH)
    assert len(masks) == 1 + 3 * 4  # graph entries, then 4 encoder masks per encoder call
    graph = kgcl_graph()
    pattern = model.adjacency
    kept_entries = torch.zeros(pattern.shape, dtype=torch.float64)
    kept_entries[pattern.rows(), pattern.col.long()] = masks[0]
    assert 0.4 < float(masks[0].mean()) < 0.95
    main_matrix = reference_adjacency(graph) * kept_entries / 0.7
    encoder = [EncoderDraws(*masks[1 + 4 * c : 5 + 4 * c], rate=0.4) for c in range(3)]
    assert all(0.0 < float(d.neighbours.mean()) < 1.0 for d in encoder)
    neighbours = reference_neighbours(graph, 3)
    everything = torch.ones(graph.n_items, 3, dtype=torch.bool)
    want_main = reference_propagate(
        params, reference_item_kg(params, neighbours, 3, everything, encoder[0]), main_matrix, 3)
    want_views = [
        reference_propagate(params, reference_item_kg(params, neighbours, 3, views.kg_keep[v],
                                                      encoder[1 + v]), matrix, 3)
        for v, matrix in enumerate(view_matrices(model, views))
    ]
    ref_terms = reference_losses(params, want_main, *want_views, *BATCH, reg_weight=1e-4,
                                 cl_rate=0.1, tau=0.2)
    assert_terms_and_gradients_close(terms, ref_terms, params)
    torch.manual_seed(5)
    again = model(*BATCH)
    fresh = model(*BATCH)
    assert torch.equal(again["bpr"], terms["bpr"]) and torch.equal(again["cl"], terms["cl"])
    assert not torch.equal(fresh["bpr"], terms["bpr"])


def test_item_keep_probability_follows_the_authors_formula():
    model = make_model(ui_drop_rate=0.2)
    torch.manual_seed(1)
    for stability in (torch.rand(50, dtype=torch.float64) * 2 - 1,
                      torch.tensor([0.9, 0.1, 0.85, -0.3, 1.0], dtype=torch.float64)):
        got = model.item_keep_probability(stability)
        assert_close(got, reference_keep_probability(stability, 0.2), "keep probability")
        assert float(got.max()) <= 0.95
    flat = model.item_keep_probability(torch.full((6,), 0.7, dtype=torch.float64))
    assert torch.allclose(flat, torch.full((6,), 0.8, dtype=torch.float64))


def test_epoch_views_shares_draws_and_reproducibility():
    model = make_model(kg_drop_rate=0.3, ui_drop_rate=0.1)
    model.train()
    slot_shares = []
    item_counts = torch.zeros(kgcl_graph().n_items, dtype=torch.float64)
    expected = torch.zeros_like(item_counts)
    epochs = 250
    for epoch in range(epochs):
        views = start_epoch(model, epoch)
        slot_shares.append(float(views.kg_keep.double().mean()))
        item_counts += views.item_keep.double().sum(0)
        # the scores follow this epoch's KG views; each view keeps item i with probability q_i
        expected += 2 * model.item_keep_probability(views.stability)
        # items kept in a view keep every one of their interactions; the others none
        kept_items = views.item_keep[:, model.interaction_items]
        nnz = model.interaction_users.numel()
        assert torch.equal(views.ui_values[:, :nnz] != 0, kept_items)
    share = sum(slot_shares) / epochs
    assert abs(share - 0.7) < 0.02  # 6k Bernoulli draws: sd 0.006
    # 500 draws per item: sd of the kept share <= 0.023
    assert torch.allclose(item_counts / (2 * epochs), expected / (2 * epochs), atol=0.07)
    assert float(expected.min()) < 0.7 * float(expected.max())  # the scores do matter
    a, b = start_epoch(model, 3), start_epoch(model, 3)
    assert torch.equal(a.kg_keep, b.kg_keep) and torch.equal(a.ui_values, b.ui_values)
    c = start_epoch(model, 4)
    assert not torch.equal(a.kg_keep, c.kg_keep)
    d = start_epoch(model, 3, seed=7)
    assert not torch.equal(a.kg_keep, d.kg_keep)


def test_random_interaction_views_keep_the_exact_share():
    model = make_model(ui_augmentation="random", ui_drop_rate=0.25)
    views = start_epoch(model)
    nnz = model.interaction_users.numel()
    kept = views.ui_values[:, :nnz] != 0
    assert kept.sum(1).tolist() == [int(nnz * 0.75)] * 2
    assert not torch.equal(kept[0], kept[1])


def test_transe_batches_are_true_and_corrupted_triples_of_each_head():
    graph = kgcl_graph()
    triples = set(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                      graph.kg_tails.tolist(), strict=True))
    item_triples = {t for t in triples if t[0] < graph.n_items}
    model = make_model()
    generator = torch.Generator().manual_seed(3)
    heads_in_order = [0, 1, 2, 3]  # first appearance in the file
    for _ in range(20):
        (batch,) = model.kg.transe_batches(4096, generator)  # fewer heads than a batch: one
        heads, relations, pos, neg = (t.tolist() for t in batch)
        assert heads == heads_in_order
        for h, r, p, n in zip(heads, relations, pos, neg, strict=True):
            assert (h, r, p) in item_triples
            assert (h, r, n) not in triples
            assert n in {t for _, _, t in item_triples}
    batches = model.kg.transe_batches(3, generator)  # drop_last: one batch of 3 heads
    assert len(batches) == 1 and batches[0][0].tolist() == [0, 1, 2]
    assert len(model.kg.transe_batches(2, generator)) == 2


def test_transe_loss_and_gradients_match_reference():
    model = make_model()
    params = params_of(model)
    model.on_epoch_start(0, torch.Generator().manual_seed(4))
    steps = model.extra_steps()
    assert len(steps) == 1
    batch = model._transe_batches[0]
    terms = steps[0]()
    ref = {"kg": reference_transe(params, *batch, reg_weight=1e-3)}
    assert_terms_and_gradients_close(terms, ref, params)
    assert make_model(kg_trans=False).extra_steps() == []


@pytest.mark.parametrize("tau", [0.2, 0.01])
def test_grace_loss_matches_plain_formula_and_gradients(tau):
    """The fused GRACE loss (and its logsumexp form for small temperatures) equals the
    authors' expression, value and gradients."""
    from simkgcl.models.ops import grace_loss
    from tests.models.reference_kgcl import reference_grace

    torch.manual_seed(2)
    a = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 3, 3, 6, 1])  # repeated rows stay (the batch's rows as they come)
    got = grace_loss(a[rows], b[rows], tau)
    want = reference_grace(a[rows], b[rows], tau)
    assert_close(got, want, "grace")
    for g, w in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b)),
                    strict=True):
        assert_close(g, w, "grace gradient")


def test_items_without_kept_neighbours_get_the_padding_row():
    """An item whose slots are all masked reads the mean of its K padding slots (the authors'
    uniform softmax over -9e15 logits), i.e. the padding row: a trained row."""
    model = make_model(neighbours_per_item=3)
    model.eval()
    none_kept = torch.zeros(6, 3, dtype=torch.bool)
    rows = model.item_kg_embeddings(none_kept)
    pad = model.entity_embedding.weight[-1]
    assert torch.allclose(rows, model.item_embedding.weight + pad, atol=1e-12)
    (grad,) = torch.autograd.grad(rows.sum(), model.entity_embedding.weight)
    assert torch.count_nonzero(grad[:-1]) == 0 and torch.count_nonzero(grad[-1]) > 0


def test_trains_through_the_engine_and_ranks_training_items_first(tmp_path):
    from simkgcl.artifact import load_artifact
    from simkgcl.config import Config
    from simkgcl.training.run import train
    from tests.training.engine_fixtures import make_tiny_data

    data = make_tiny_data()
    result = train(Config(model="kgcl", checkpoint_dir=str(tmp_path), overrides=[
        "epochs=20", "embedding_size=16", "show_progress=false", "device=cpu", "threads=1",
        "topk=[5,10]", "valid_metric=NDCG@10", "learning_rate=0.01", "kg_batch_size=8",
        "train_batch_size=32",
        "stopping_step=100"]), data=data)
    history = result.history
    assert set(history[0]["losses"]) == {"bpr", "reg", "cl", "kg"}
    assert history[-1]["losses"]["bpr"] < 0.95 * history[0]["losses"]["bpr"]
    assert history[-1]["losses"]["kg"] < history[0]["losses"]["kg"]
    artifact = load_artifact(result.run_dir)
    scores = artifact.user_embeddings @ artifact.item_embeddings.t()
    _, split = data
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen[torch.as_tensor(split.train.users), torch.as_tensor(split.train.items)] = True
    # after training, a user's training items mostly score above the items they did not
    # interact with (per-user AUC; 0.5 = chance, the untrained model's level)
    aucs = [(scores[u, seen[u]][:, None] > scores[u, ~seen[u]][None, :]).double().mean()
            for u in range(scores.shape[0])]
    assert float(torch.stack(aucs).mean()) > 0.9


def test_final_embeddings_are_deterministic_in_eval_mode():
    model = make_model(gat_dropout=0.4, graph_drop_rate=0.3)
    model.eval()
    with torch.no_grad():
        a, b = model.final_embeddings(), model.final_embeddings()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
