"""The operators added for the plain contrastive models (propagation, noise, InfoNCE of batch
anchors against every row) against plain formulas."""

from __future__ import annotations

import pytest
import torch

from simkgcl.models.ops import (
    SparsePattern,
    add_sign_aligned,
    info_nce,
    layer_mean,
    propagate_layers,
)

F64 = torch.float64


def random_graph(n: int, generator: torch.Generator) -> tuple[SparsePattern, torch.Tensor,
                                                             torch.Tensor]:
    dense = torch.rand(n, n, generator=generator, dtype=F64)
    dense[dense < 0.6] = 0.0
    rows, cols = dense.nonzero(as_tuple=True)
    return SparsePattern(rows, cols, (n, n)), dense[rows, cols], dense


def test_propagation_with_a_graph_per_layer_and_a_perturbation_matches_dense_products():
    gen = torch.Generator().manual_seed(0)
    graphs = [random_graph(7, gen) for _ in range(3)]
    x = torch.randn(7, 4, dtype=F64, generator=gen)
    shift = torch.randn(7, 4, dtype=F64, generator=gen)
    outputs = propagate_layers(x, [(p, v) for p, v, _ in graphs], lambda e: e * 2 + shift)
    expected, e = [], x
    for _, _, dense in graphs:
        e = (dense @ e) * 2 + shift  # the perturbed output is what the next layer reads
        expected.append(e)
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer_mean([x, *outputs]), (x + sum(expected)) / 4,
                               atol=1e-12, rtol=0)


def test_sign_aligned_noise_formula():
    x = torch.tensor([[1.5, -2.0, 0.0], [-0.1, 0.2, 3.0]], dtype=F64)
    d = torch.tensor([[0.6, 0.8, 0.5], [0.0, 0.6, 0.8]], dtype=F64)
    want = torch.tensor([[1.5 + 0.06, -2.0 - 0.08, 0.0], [-0.1, 0.2 + 0.06, 3.0 + 0.08]],
                        dtype=F64)
    torch.testing.assert_close(add_sign_aligned(x, d, 0.1), want, atol=1e-15, rtol=0)


@pytest.mark.parametrize("tau", [0.5, 0.01])  # 0.01: the max-shifted path
@pytest.mark.parametrize("n_anchors", [9, 300])  # 300 ids: several blocks of anchors
def test_info_nce_of_batch_anchors_against_every_row(tau, n_anchors):
    gen = torch.Generator().manual_seed(1)
    view1 = torch.randn(320, 5, dtype=F64, generator=gen, requires_grad=True)
    view2 = torch.randn(320, 5, dtype=F64, generator=gen, requires_grad=True)
    rows = torch.randint(0, 320, (n_anchors,), generator=gen)
    rows[1] = rows[0]  # repeated ids count as often as they occur
    got = info_nce(view1, view2, tau, rows=rows)
    a = view1 / view1.norm(dim=1, keepdim=True)
    b = view2 / view2.norm(dim=1, keepdim=True)
    want = 0.0
    for r in rows.tolist():
        logits = (b @ a[r]) / tau
        want = want - torch.log_softmax(logits, 0)[r]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    for g, w in zip(torch.autograd.grad(3.0 * got, (view1, view2)),
                    torch.autograd.grad(3.0 * want, (view1, view2)), strict=True):
        torch.testing.assert_close(g, w, atol=1e-9, rtol=0)


def test_info_nce_gradient_for_one_view_only_and_without_grad():
    gen = torch.Generator().manual_seed(2)
    view1 = torch.randn(20, 3, generator=gen)
    view2 = torch.randn(20, 3, generator=gen, requires_grad=True)
    rows = torch.tensor([3, 3, 7])
    (grad,) = torch.autograd.grad(info_nce(view1, view2, 0.2, rows=rows), view2)
    b = view2.detach().clone().requires_grad_(True)
    an = view1[rows] / view1[rows].norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    logits = an @ bn.t() / 0.2
    plain = -(logits.gather(1, rows[:, None]).squeeze(1) - torch.logsumexp(logits, 1)).sum()
    torch.testing.assert_close(grad, torch.autograd.grad(plain, b)[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(info_nce(view1, view2, 0.2, rows=rows), plain.detach())
    with pytest.raises(ValueError, match="rows"):
        info_nce(view1, view2[:5], 0.2)
