"""Each metric against values worked out by hand (RecBole's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from simkgcl.evaluation.metrics import per_user_metrics

# User A: 2 held-out items, hits at ranks 1 and 3 of the top-5.
# User B: 3 held-out items, hits at ranks 2 and 5.
HITS = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
N_POS = torch.tensor([2, 3])
L2 = math.log2

EXPECTED = {
    # Recall = hits@K / n_pos
    "Recall@1": [1 / 2, 0.0],
    "Recall@3": [2 / 2, 1 / 3],
    "Recall@5": [2 / 2, 2 / 3],
    # Precision = hits@K / K
    "Precision@1": [1.0, 0.0],
    "Precision@3": [2 / 3, 1 / 3],
    "Precision@5": [2 / 5, 2 / 5],
    # Hit = any hit within K
    "Hit@1": [1.0, 0.0],
    "Hit@3": [1.0, 1.0],
    "Hit@5": [1.0, 1.0],
    # MRR = 1 / rank of the first hit within K
    "MRR@1": [1.0, 0.0],
    "MRR@3": [1.0, 1 / 2],
    "MRR@5": [1.0, 1 / 2],
    # NDCG: DCG = sum 1/log2(rank+1) over hits; IDCG over min(n_pos, K) leading ranks
    "NDCG@1": [1.0, 0.0],
    "NDCG@3": [(1 + 1 / L2(4)) / (1 + 1 / L2(3)),
               (1 / L2(3)) / (1 + 1 / L2(3) + 1 / L2(4))],
    "NDCG@5": [(1 + 1 / L2(4)) / (1 + 1 / L2(3)),
               (1 / L2(3) + 1 / L2(6)) / (1 + 1 / L2(3) + 1 / L2(4))],
    # MAP: sum of precision@rank over hit ranks within K, over min(n_pos, K)
    "MAP@1": [1.0, 0.0],
    "MAP@3": [(1 / 1 + 2 / 3) / 2, (1 / 2) / 3],
    "MAP@5": [(1 / 1 + 2 / 3) / 2, (1 / 2 + 2 / 5) / 3],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metric_matches_hand_computation(name: str) -> None:
    metric, k = name.split("@")
    got = per_user_metrics(HITS, N_POS, [metric], [int(k)])[name]
    assert got.tolist() == pytest.approx(EXPECTED[name], abs=1e-12)


def test_numbers_spelled_out() -> None:
    # A few of the formulas above as plain decimals, so a wrong formula in the table shows up.
    values = per_user_metrics(HITS, N_POS, ["NDCG", "MAP"], [3, 5])
    assert values["NDCG@3"][0].item() == pytest.approx(0.919720, abs=1e-6)
    assert values["NDCG@5"][1].item() == pytest.approx(0.477624, abs=1e-6)
    assert values["MAP@5"][1].item() == pytest.approx(0.3, abs=1e-12)


def test_ndcg_is_one_for_a_perfect_ranking_even_when_k_exceeds_n_pos() -> None:
    hits = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    values = per_user_metrics(hits, torch.tensor([2]), ["NDCG", "MAP", "Recall"], [2, 4])
    assert values["NDCG@2"].item() == pytest.approx(1.0)
    assert values["NDCG@4"].item() == pytest.approx(1.0)
    assert values["MAP@4"].item() == pytest.approx(1.0)
    assert values["Recall@4"].item() == pytest.approx(1.0)


def test_ideal_dcg_is_capped_at_k_when_a_user_has_more_items_than_k() -> None:
    # 10 held-out items, top-2 both hits: a perfect list of length 2 -> NDCG@2 = MAP@2 = 1,
    # while Recall@2 = 2/10.
    hits = torch.tensor([[1, 1]], dtype=torch.bool)
    values = per_user_metrics(hits, torch.tensor([10]), ["NDCG", "MAP", "Recall"], [2])
    assert values["NDCG@2"].item() == pytest.approx(1.0)
    assert values["MAP@2"].item() == pytest.approx(1.0)
    assert values["Recall@2"].item() == pytest.approx(0.2)


def test_no_hits_gives_zero_everywhere() -> None:
    hits = torch.zeros(1, 3, dtype=torch.bool)
    values = per_user_metrics(hits, torch.tensor([1]), ["Recall", "NDCG", "MRR", "Hit",
                                                        "Precision", "MAP"], [1, 3])
    assert all(v.item() == 0.0 for v in values.values())
