"""The blend as one inner product over augmented rows equals the blend written out in float64:
z-score each user's full row of dot products, add β times the standardised log-popularity."""

from __future__ import annotations

import numpy as np
import torch

from simkgcl.calibration.inner_product import InnerProductBlend, ItemMoments


def _brute_blend(items: np.ndarray, rows: np.ndarray, prior: np.ndarray,
                 betas: np.ndarray) -> np.ndarray:
    """Every score, plainly: (s - mean) / (population std + 1e-12) + β p, row by row."""
    out = np.empty((len(rows), len(items)))
    for r, (row, beta) in enumerate(zip(rows.astype(np.float64), betas, strict=True)):
        s = items.astype(np.float64) @ row
        out[r] = (s - s.mean()) / (np.sqrt(((s - s.mean()) ** 2).mean()) + 1e-12) + beta * prior
    return out


def _prior(counts: np.ndarray) -> np.ndarray:
    logs = np.log(1.0 + counts.astype(np.float64))
    return (logs - logs.mean()) / logs.std()


def _served(items: np.ndarray, rows: np.ndarray, prior: np.ndarray,
            betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw augmented scores, converted scores): the index's part is a plain float64 matmul."""
    blend = InnerProductBlend(torch.from_numpy(items), torch.from_numpy(prior.astype(np.float32)))
    augmented = blend.items().numpy()
    assert augmented.shape == (len(items), items.shape[1] + 1) == (len(items), blend.dim)
    queries, mean, scale = blend.queries(torch.from_numpy(rows), torch.from_numpy(betas))
    raw = queries.numpy().astype(np.float64) @ augmented.astype(np.float64).T
    return raw, blend.blended_scores(raw, mean, scale)


def test_a_hand_made_table() -> None:
    # 4 items in 2-d, two users; user 1 is the zero row (every score 0: z = 0, only β p remains)
    items = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [3.0, -1.0]], dtype=np.float32)
    counts = np.array([0, 5, 1, 20])
    rows = np.array([[0.5, 1.0], [0.0, 0.0]], dtype=np.float32)
    betas = np.array([0.8, 2.0], dtype=np.float32)
    prior = _prior(counts)
    # user 0 by hand: s = (0.5, 2, 0.5, 0.5), mean 0.875, population std sqrt(0.421875)
    s = np.array([0.5, 2.0, 0.5, 0.5])
    want0 = (s - 0.875) / np.sqrt(0.421875) + 0.8 * prior
    raw, got = _served(items, rows, prior, betas)
    np.testing.assert_allclose(got[0], want0, atol=1e-5)
    np.testing.assert_allclose(got[1], 2.0 * prior, atol=1e-5)
    np.testing.assert_allclose(got, _brute_blend(items, rows, prior, betas), atol=1e-5)
    for r in range(2):  # the raw inner products already rank like the blend
        assert np.argsort(-raw[r], kind="stable").tolist() == \
            np.argsort(-want0 if r == 0 else -2.0 * prior, kind="stable").tolist()


def test_random_tables_rank_and_score_like_the_written_out_blend() -> None:
    rng = np.random.default_rng(3)
    for n_items, dim in ((40, 3), (200, 8), (500, 16)):
        items = rng.standard_normal((n_items, dim)).astype(np.float32)
        items += rng.standard_normal(dim).astype(np.float32)  # a common offset: m_u != 0
        counts = rng.poisson(3.0, n_items) * rng.integers(1, 30, n_items)
        rows = (rng.standard_normal((25, dim)) * rng.uniform(0.1, 10, (25, 1))).astype(np.float32)
        betas = rng.choice([0.0, 0.1, 0.5, 1.0, 3.0, 10.0], 25).astype(np.float32)
        betas[:3] = 0.0
        prior = _prior(counts)
        want = _brute_blend(items, rows, prior, betas)
        raw, got = _served(items, rows, prior, betas)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        for r in range(len(rows)):
            top = np.argsort(-want[r], kind="stable")[:20]
            assert np.argsort(-raw[r], kind="stable")[:20].tolist() == top.tolist()


def test_item_moments_are_the_population_mean_and_covariance_in_blocks() -> None:
    rng = np.random.default_rng(4)
    items = rng.standard_normal((103, 5)) * [1, 2, 3, 4, 5] + 7
    for chunk in (7, 103, 1000):  # blocks that do not divide n, one block, a larger block
        moments = ItemMoments.of(torch.from_numpy(items), chunk=chunk)
        np.testing.assert_allclose(moments.mean.numpy(), items.mean(0), rtol=1e-12)
        np.testing.assert_allclose(moments.cov.numpy(), np.cov(items.T, bias=True), rtol=1e-10,
                                   atol=1e-10)
    rows = rng.standard_normal((6, 5))
    mean, std = ItemMoments.of(torch.from_numpy(items)).row_moments(torch.from_numpy(rows))
    scores = rows @ items.T
    np.testing.assert_allclose(mean.numpy(), scores.mean(1), rtol=1e-10)
    np.testing.assert_allclose(std.numpy(), scores.std(1), rtol=1e-10)
