"""Per-user metrics and user groups: hand-computed values, the file format, a run's results."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.evaluation import Evaluator
from simkgcl.evaluation.groups import (
    breakdown,
    group_metrics,
    groups_from_edges,
    quantile_edges,
    quantile_groups,
)
from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.training.run import train
from simkgcl.training.run_folder import PER_USER_FILE

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluator import ITEM_EMB, TEST, TRAIN, USER_EMB, VALID  # noqa: E402


def test_per_user_values_are_the_hand_values_behind_the_averages() -> None:
    ev = Evaluator(3, 5, metrics=["Recall", "NDCG", "MRR"], topk=[1, 3], eval_batch_size=5)
    task = ev.task(TEST, [TRAIN, VALID])  # one user per batch: values come from two batches
    metrics, per_user = ev.evaluate_embeddings_per_user(USER_EMB, ITEM_EMB, task)
    # user 0 ranks [1, 3, 4], held out {1, 3}; user 1 ranks [2, 1, 0], held out {0} (see
    # test_evaluator); user 2 has no held-out item and is not a row
    assert per_user.users.tolist() == [0, 1]
    assert per_user.n_heldout.tolist() == [2, 1]
    assert per_user.values["Recall@1"].tolist() == [0.5, 0.0]
    assert per_user.values["Recall@3"].tolist() == [1.0, 1.0]
    assert per_user.values["MRR@3"].tolist() == pytest.approx([1.0, 1 / 3])
    assert per_user.values["NDCG@3"].tolist() == pytest.approx([1.0, 1 / math.log2(4)])
    assert per_user.means() == pytest.approx(metrics)
    assert metrics == ev.evaluate_embeddings(USER_EMB, ITEM_EMB, task)


def test_edge_groups_and_their_means_by_hand() -> None:
    groups = groups_from_edges([1, 3])
    assert [(g.label, g.lo, g.hi) for g in groups] == [("≤1", 0, 1), ("2–3", 2, 3),
                                                       (">3", 4, None)]
    table = PerUserMetrics(users=np.array(["a", "b", "c", "d", "e", "f"]),
                           n_heldout=np.ones(6, dtype=np.int64),
                           values={"NDCG@2": np.array([0.0, 1.0, 0.5, 0.25, 1.0, 0.0]),
                                   "Recall@2": np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])},
                           n_train=np.array([0, 1, 2, 3, 4, 9]))
    rows = group_metrics(table, groups)
    assert [r["n_users"] for r in rows] == [2, 2, 2]
    assert rows[0]["metrics"] == {"NDCG@2": 0.5, "Recall@2": 0.5}        # users a, b
    assert rows[1]["metrics"] == {"NDCG@2": 0.375, "Recall@2": 0.5}      # users c, d
    assert rows[2]["metrics"] == {"NDCG@2": 0.5, "Recall@2": 1.0}        # users e, f
    empty = group_metrics(table, groups_from_edges([20]))
    assert empty[1] == {"label": ">20", "lo": 21, "hi": None, "n_users": 0, "metrics": {}}
    with pytest.raises(ValueError):
        groups_from_edges([3, 3])


def test_quantile_groups_by_hand() -> None:
    # 10 users: the 1/5..4/5 quantiles (smallest count with at least that share at or below it)
    counts = np.array([8, 1, 20, 2, 3, 1, 4, 5, 6, 7])
    assert quantile_edges(counts, 5) == [1, 3, 5, 7]
    assert [g.label for g in quantile_groups(counts, 5)] == ["1", "2–3", "4–5", "6–7", ">7"]
    # ties stay together: six users with one interaction fill the first three quintiles
    tied = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5])
    assert quantile_edges(tied, 5) == [1, 3]
    groups = quantile_groups(tied, 5)
    assert [(g.label, int(g.contains(tied).sum())) for g in groups] == [("1", 6), ("2–3", 2),
                                                                        (">3", 2)]
    assert quantile_edges(tied, 1) == [] and quantile_edges(np.array([4, 4]), 5) == []


def test_per_user_file_round_trip_without_pickle(tmp_path: Path) -> None:
    table = PerUserMetrics(users=np.array([2, 0]), n_heldout=np.array([1, 3]),
                           values={"NDCG@10": np.array([0.25, 1.0])})
    labelled = table.labelled(np.array(["u0", "u1", "u2"]), train_users=np.array([0, 0, 2, 1]),
                              n_users=3)
    labelled.save(tmp_path / "x.npz")
    with np.load(tmp_path / "x.npz", allow_pickle=False) as raw:  # plain arrays only
        assert raw["user"].tolist() == ["u2", "u0"]
        assert raw["n_train"].tolist() == [1, 2]
        assert raw["metrics"].tolist() == ["NDCG@10"]
        assert raw["NDCG@10"].tolist() == [0.25, 1.0]
    back = PerUserMetrics.load(tmp_path / "x.npz")
    assert back.users.tolist() == ["u2", "u0"] and back.n_heldout.tolist() == [1, 3]


def test_config_rejects_bad_group_edges() -> None:
    with pytest.raises(ConfigError, match="user_groups"):
        Config(user_groups=[5, 3])
    with pytest.raises(ConfigError, match="user_group_quantiles"):
        Config(user_group_quantiles=-1)
    assert Config(user_groups=[])["user_groups"] == []


def test_a_run_reports_its_test_users_by_group(tmp_path: Path, monkeypatch) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from engine_fixtures import write_kgcn_folder

    calls: list[int] = []
    original = Evaluator.evaluate_embeddings_per_user

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(Evaluator, "evaluate_embeddings_per_user", counting)

    data = tmp_path / "tiny"
    write_kgcn_folder(data, n_users=30, n_items=40, per_user=12)
    result = train(Config(model="bpr", dataset=str(data), epochs=2, topk=[5, 10],
                          valid_metric="NDCG@10", show_progress=False, device="cpu",
                          checkpoint_dir=str(tmp_path / "runs"), user_groups=[8, 9],
                          user_group_quantiles=2, popularity_blend="off"))
    results = json.loads((result.run_dir / "results.json").read_text())
    with np.load(result.run_dir / PER_USER_FILE, allow_pickle=False) as raw:
        users, n_train = raw["user"], raw["n_train"]
        ndcg = raw["NDCG@10"]
        test_mean = {m: float(raw[m].mean()) for m in raw["metrics"]}
    assert test_mean == pytest.approx(results["test"], rel=1e-12)
    assert sorted(users.tolist(), key=int) == [str(u) for u in range(30)]
    # the tiny data's 12 interactions per user split 80/10/10 -> 10 or so training items each;
    # the groups come from the edges in the config, with plain numpy as the reference
    rows = results["test_groups"]["edges"]
    assert [r["label"] for r in rows] == ["≤8", "9", ">9"]
    for row, inside in zip(rows, [n_train <= 8, n_train == 9, n_train > 9], strict=True):
        assert row["n_users"] == int(inside.sum())
        if inside.any():
            assert row["metrics"]["NDCG@10"] == pytest.approx(float(ndcg[inside].mean()))
    assert sum(r["n_users"] for r in results["test_groups"]["quantiles"]) == 30
    assert breakdown(PerUserMetrics.load(result.run_dir / PER_USER_FILE), [8, 9],
                     2) == results["test_groups"]
    # validation (every epoch) never asked for per-user values: only the test did (the
    # popularity blend, off here, would fit on per-user validation values after training)
    assert calls == [1]
