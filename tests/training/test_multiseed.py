"""Multi-seed runs: one run folder per seed and a summary that matches the runs' own files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.training.multiseed import (
    format_summary,
    mean_std,
    parse_seeds,
    read_summary,
    train_seeds,
)
from simkgcl.training.run_folder import RunFolder


def test_summary_equals_mean_and_sample_std_of_each_runs_results(tmp_path: Path) -> None:
    config = Config(model="bpr", epochs=2, embedding_size=8, learning_rate=0.02, topk=[10, 20],
                    show_progress=False, device="cpu", checkpoint_dir=str(tmp_path / "runs"))
    result = train_seeds(config, "11,12,13")

    run_dirs = [r.run_dir for r in result.runs]
    assert len(set(run_dirs)) == 3 and all(d.parent == result.summary_dir for d in run_dirs)
    assert result.summary_dir.parent == tmp_path / "runs"
    assert [Config.load(d / "config.yaml")["seed"] for d in run_dirs] == [11, 12, 13]

    per_run = [RunFolder(d).read_results()["test"] for d in run_dirs]
    assert len({json.dumps(t, sort_keys=True) for t in per_run}) == 3  # the seed changed things
    summary = read_summary(result.summary_dir)
    assert summary["std"] == "sample (ddof=1)"
    assert summary["seeds"] == [11, 12, 13]
    assert [r["test"] for r in summary["runs"]] == per_run
    assert set(summary["test"]) == set(per_run[0]) == {f"{m}@{k}" for m in ("Recall", "NDCG")
                                                       for k in (10, 20)}
    for metric, stats in summary["test"].items():
        values = [t[metric] for t in per_run]
        assert stats["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
        assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert stats["n"] == 3
    for metric, stats in summary["best_valid"].items():
        values = [RunFolder(d).read_results()["best_valid"][metric] for d in run_dirs]
        assert stats["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)

    table = format_summary(result)
    ndcg = summary["test"]["NDCG@20"]
    row = next(line for line in table.splitlines() if line.startswith("NDCG@20"))
    assert f"{ndcg['mean']:.4f} ± {ndcg['std']:.4f}" in row
    assert row.split()[-3:] == [f"{t['NDCG@20']:.4f}" for t in per_run]
    assert "seed 11" in table and "sample (ddof=1)" in table


def test_one_seed_has_no_std_and_bad_seed_lists_are_refused() -> None:
    assert mean_std([0.25]).std is None and mean_std([0.25]).mean == 0.25
    assert mean_std([1.0, 3.0]).std == pytest.approx(2 ** 0.5)
    assert parse_seeds(" 2020, 2021,2022") == [2020, 2021, 2022]
    assert parse_seeds([5, 6]) == [5, 6]
    with pytest.raises(ConfigError, match="'x' is not an integer"):
        parse_seeds("1,x")
    with pytest.raises(ConfigError, match="given twice"):
        parse_seeds("1,2,1")
    with pytest.raises(ConfigError, match="at least one seed"):
        parse_seeds([])


def test_format_summary_of_a_single_seed_says_the_std_is_undefined(tmp_path: Path) -> None:
    from simkgcl.training.multiseed import MultiSeedResult, summarize
    from simkgcl.training.run import RunResult

    run = RunResult(run_dir=tmp_path / "r", best_valid={"NDCG@20": 0.2},
                    test={"NDCG@20": 0.3125}, best_epoch=1, epochs_run=2, stopped_early=False,
                    valid_metric="NDCG@20")
    result = MultiSeedResult([7], [run], summarize([run.test]), summarize([run.best_valid]),
                             tmp_path)
    lines = format_summary(result, include_valid=True).splitlines()
    assert lines[0].split()[:2] == ["valid", "(best)"]
    assert next(x for x in lines if x.startswith("NDCG@20") and "0.3125" in x).split() == \
        ["NDCG@20", "0.3125", "±", "n/a", "0.3125"]
