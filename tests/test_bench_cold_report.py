"""bench/cold_users_report.py: means over seeds and the Done-when checks, on hand-made results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cold_users_report.py"


@pytest.fixture(scope="module")
def cold():
    spec = importlib.util.spec_from_file_location("bench_cold_users_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cold_users_report"] = module
    spec.loader.exec_module(module)
    return module


def _groups(ndcg: dict[str, float]) -> dict:
    return {"edges": [{"label": k, "n_users": 5, "metrics": {"NDCG@20": v}}
                      for k, v in ndcg.items()]}


def _run(folder: Path, test: dict, groups: dict, unblended=None, betas=None) -> Path:
    folder.mkdir(parents=True)
    results = {"test": test, "test_groups": _groups(groups)}
    if unblended is not None:
        results["test_unblended"], model_groups = unblended
        results["test_groups_unblended"] = _groups(model_groups)
        results["popularity_blend"] = {"kept": True, "betas": betas,
                                       "groups": [{"label": k} for k in groups]}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_means_over_seeds_and_checks(cold, tmp_path: Path) -> None:
    pop = _run(tmp_path / "pop", {"NDCG@20": 0.1, "Recall@20": 0.2},
               {"≤1": 0.08, "11–20": 0.05})
    a = _run(tmp_path / "a", {"NDCG@20": 0.3, "Recall@20": 0.4}, {"≤1": 0.10, "11–20": 0.20},
             ({"NDCG@20": 0.25, "Recall@20": 0.35}, {"≤1": 0.02, "11–20": 0.20}), [2.0, 0.0])
    b = _run(tmp_path / "b", {"NDCG@20": 0.2, "Recall@20": 0.3}, {"≤1": 0.07, "11–20": 0.19},
             ({"NDCG@20": 0.22, "Recall@20": 0.32}, {"≤1": 0.04, "11–20": 0.22}), [1.0, 0.0])
    text, ok = cold.report(pop, [a, b])
    assert "| ≤1 | 5 | 0.0300 | 0.0800 | 0.0850 | 2, 1 |" in text  # (0.02+0.04)/2, (0.1+0.07)/2
    assert "| 11–20 | 5 | 0.2100 | 0.0500 | 0.1950 | 0, 0 |" in text
    assert "- [x] group ≤1: blended ≥ pop" in text
    assert "- [ ] group 11–20: blended loses ≤ 1% vs model (-7.14%)" in text  # 0.195/0.21 - 1
    assert "- [x] overall NDCG@20" in text  # 0.25 vs model 0.235 and pop 0.1
    assert "- [x] overall Recall@20" in text  # 0.35 vs 0.335 and 0.2
    assert not ok
