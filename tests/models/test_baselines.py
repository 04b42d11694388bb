"""Graph utilities, BPR and LightGCN against plain dense references."""

from __future__ import annotations

import torch

from simkgcl.models import get_model_class
from simkgcl.models.ops import (
    SparsePattern,
    bipartite_adjacency,
    interaction_weights,
    normalized_adjacency,
    segment_softmax,
    unique_interactions,
)
from tests.models.toy_graph import dense_norm_adjacency, toy_graph


def test_normalized_adjacency_matches_dense_and_collapses_duplicates():
    graph = toy_graph()
    n_users, n_items = graph.n_users, graph.n_items
    pattern, values = normalized_adjacency(graph.train_users, graph.train_items, n_users, n_items)
    expected = dense_norm_adjacency(graph)
    assert torch.allclose(pattern.to_dense(values), expected, atol=1e-12, rtol=0)
    users, items = unique_interactions(graph.train_users, graph.train_items, n_items)
    assert users.numel() == 12  # 13 rows, one duplicate
    ui_values = interaction_weights(users, items, n_users, n_items)
    # a longer node table (e.g. KG entities after the items): the extra rows stay empty
    longer, longer_values = bipartite_adjacency(users, items, ui_values, n_users, n_users + 9)
    dense = longer.to_dense(longer_values)
    block = dense[: n_users + n_items, : n_users + n_items]
    assert torch.allclose(block, expected, atol=1e-12, rtol=0)
    assert torch.count_nonzero(dense[n_users + n_items :]) == 0


def test_pattern_matmul_gradients_match_dense():
    torch.manual_seed(0)
    rows = torch.tensor([0, 0, 1, 3, 3, 3])
    cols = torch.tensor([1, 4, 0, 0, 2, 4])
    pattern = SparsePattern(rows, cols, (4, 5))
    values = torch.randn(6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 3, dtype=torch.float64)
    out = (pattern.matmul(values, x) * weights).sum() + pattern.t_matmul(values, y).pow(2).sum()
    grads = torch.autograd.grad(out, (values, x, y))
    vals2 = values.detach().clone().requires_grad_(True)
    x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    dense = torch.zeros(4, 5, dtype=torch.float64).index_put((rows, cols), vals2)
    ref = ((dense @ x2) * weights).sum() + (dense.t() @ y2).pow(2).sum()
    ref_grads = torch.autograd.grad(ref, (vals2, x2, y2))
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10)


def test_segment_softmax_masks_and_normalises():
    logits = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 2, 2])
    mask = torch.tensor([True, False, True, False, False])
    w = segment_softmax(logits, ids, 4, mask)
    assert w[1] == 0 and w[3] == 0 and w[4] == 0  # dropped, and a fully dropped segment
    expected = torch.softmax(torch.tensor([1.0, 3.0], dtype=torch.float64), 0)
    assert torch.allclose(w[[0, 2]], expected)
    full = segment_softmax(logits, ids, 4)
    assert torch.allclose(full[3:], torch.softmax(logits[3:], 0))


def test_lightgcn_matches_dense_propagation():
    torch.manual_seed(1)
    graph = toy_graph()
    model = get_model_class("lightgcn")(graph, {"n_layers": 2}).double()
    adj = dense_norm_adjacency(graph)
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    layers = [x, adj @ x, adj @ adj @ x]
    expected = torch.stack(layers).mean(0)
    users, items = model.final_embeddings()
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-10, rtol=0)
    terms = model(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([5, 3]))
    assert set(terms) == {"bpr", "reg"}
    u, i = expected[: graph.n_users], expected[graph.n_users :]
    diff = (u[[0, 1]] * i[[0, 2]]).sum(1) - (u[[0, 1]] * i[[5, 3]]).sum(1)
    assert torch.allclose(terms["bpr"], -torch.log(1e-10 + torch.sigmoid(diff)).mean())


def test_bpr_loss_decreases_on_toy_problem():
    torch.manual_seed(2)
    graph = toy_graph()
    model = get_model_class("bpr")(graph, {"embedding_size": 8})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users, pos, neg = (
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([0, 2, 3, 0]),
        torch.tensor([5, 5, 4, 4]),
    )
    losses = []
    for _ in range(20):
        terms = model(users, pos, neg)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    u, i = model.final_embeddings()
    assert u.shape == (5, 8) and i.shape == (6, 8)


def test_pattern_matmul_ignores_uninitialised_output_memory():
    """The product writes into fresh uninitialised memory (beta=0): no stale NaN may leak."""
    rows = torch.tensor([0, 0, 2, 3])
    cols = torch.tensor([1, 3, 0, 3])
    pattern = SparsePattern(rows, cols, (5, 4))  # row 1 and row 4 are empty
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    dense = torch.arange(12.0).reshape(4, 3)
    expected = pattern.to_dense(values) @ dense
    for _ in range(20):  # freed NaN blocks of the same size are what the allocator hands out
        del_me = torch.full((5, 3), float("nan"))
        del del_me
        assert torch.equal(pattern.matmul(values, dense), expected)
        assert torch.equal(
            pattern.t_matmul(values, torch.ones(5, 3)),
            pattern.to_dense(values).t() @ torch.ones(5, 3),
        )


def test_segment_softmax_gradients_match_autograd_reference():
    torch.manual_seed(4)
    logits = torch.randn(9, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 0, 1, 3, 3, 3, 3, 4])
    mask = torch.tensor([True, False, True, True, True, True, False, True, False])
    upstream = torch.randn(9, dtype=torch.float64)
    for use_mask in (False, True):
        for mean in (False, True):
            m = mask if use_mask else torch.ones(9, dtype=torch.bool)
            got = segment_softmax(logits, ids, 5, mask if use_mask else None, mean=mean)
            parts = []
            for seg in range(5):
                sel = (ids == seg) & m
                w = torch.zeros(9, dtype=torch.float64)
                if sel.any():
                    soft = torch.softmax(logits[sel], 0)
                    w = w.index_put((sel.nonzero().flatten(),), soft / (sel.sum() if mean else 1))
                parts.append(w)
            want = torch.stack(parts).sum(0)
            assert torch.allclose(got, want, atol=1e-12)
            (g_got,) = torch.autograd.grad((got * upstream).sum(), logits)
            (g_want,) = torch.autograd.grad((want * upstream).sum(), logits)
            assert torch.allclose(g_got, g_want, atol=1e-12)
            assert torch.all(g_got[~m] == 0)
