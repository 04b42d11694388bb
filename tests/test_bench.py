"""bench/run.py measures what it claims: a real child-process run on the bundled dataset, and
the ours/reference arithmetic on a reference result of known figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def test_speed_run_on_bundled_dataset_writes_consistent_figures(bench, tmp_path):
    out, md = tmp_path / "r.json", tmp_path / "BENCH.md"
    argv = ["--model", "bpr", "--dataset", "lastfm-kg", "--epochs", "1", "--max-batches", "3",
            "--out", str(out), "--markdown", str(md), "--timeout", "120", "embedding_size=16"]
    bench.main(argv)
    report = json.loads(out.read_text())
    ours = report["ours"]
    assert ours["model"] == "bpr" and ours["torch_num_threads"] == 2
    assert ours["config_overrides"] == ["embedding_size=16"]
    # 3 of the epoch's batches were trained, so the epoch time is an extrapolation
    assert ours["measured_batches_per_epoch"] == [3]
    assert ours["batches_per_epoch"] > 3 and ours["extrapolated"] is True
    assert ours["train_s_per_batch"] == pytest.approx(ours["per_epoch_train_s"][0] / 3)
    assert ours["train_s_per_epoch"] == pytest.approx(
        ours["train_s_per_batch"] * ours["batches_per_epoch"])
    assert ours["interactions_per_s"] == pytest.approx(
        ours["batch_size"] / ours["train_s_per_batch"])
    assert 0 < ours["eval_s"] < 60
    # the child's own peak, not the test process's: above its post-import RSS
    assert ours["peak_rss_mb"] >= ours["rss_mb"]["after_imports"] > 50
    assert ours["peak_rss_mb_wait4"] >= ours["peak_rss_mb"] * 0.9
    text = md.read_text()
    assert "| ours | bpr | lastfm-kg | cpu | 2 |" in text
    assert "extrapolated from 3 batches" in text
    assert "Command: `python bench/run.py --model bpr --dataset lastfm-kg" in text


def test_reference_figures_drop_the_warmup_epoch_and_ratios_are_ours_over_theirs(bench):
    reference = {
        "dataset": "ml-100k", "torch_num_threads": 2, "peak_rss_mb": 2000.0,
        "peak_rss_mb_wait4": 2000.0, "mean_train_s": 30.0,
        "per_epoch_train_s": [40.0, 20.0, 30.0],
        "per_epoch_valid_eval_s": [0.5, 0.2, 0.4],
        "recbole_stats": {"train_batches_per_epoch": 40, "train_inter": 80_000},
    }
    ref = bench.reference_speed(reference)
    assert ref["train_s_per_epoch"] == pytest.approx(25.0)
    assert ref["eval_s"] == pytest.approx(0.3)
    assert ref["train_s_per_batch"] == pytest.approx(25.0 / 40)
    ours = {"train_s_per_epoch": 2.5, "eval_s": 0.06, "peak_rss_mb": 700.0,
            "peak_rss_mb_wait4": 500.0}
    ratios = bench.speed_ratios(ours, ref)
    assert ratios["train_s_per_epoch"] == pytest.approx(0.1)
    assert ratios["eval_s"] == pytest.approx(0.2)
    assert ratios["peak_rss_mb"] == pytest.approx(0.25)  # same method (wait4) for both


def test_reference_needs_a_shared_split_folder(bench, tmp_path):
    with pytest.raises(SystemExit, match="split folder"):
        bench.main(["--reference", "--dataset", str(tmp_path), "--out", str(tmp_path / "x.json")])


def _fake_reference(folder: Path) -> Path:
    """shared/reference/{run.sh, run_model.sh} stand-ins: write their arguments as the result
    JSON (run.sh: DATASET EPOCHS OUT ...; run_model.sh: MODEL DATASET EPOCHS OUT ...), or fail
    for model KGAT as the real one does without DGL."""
    reference = folder / "reference"
    reference.mkdir(parents=True)
    (reference / "run.sh").write_text(
        '#!/usr/bin/env bash\nprintf \'{"argv": "%s"}\' "$*" > "$3"\n')
    (reference / "run_model.sh").write_text(
        '#!/usr/bin/env bash\n[ "$1" = KGAT ] && { echo "No module named dgl"; exit 1; }\n'
        'printf \'{"argv": "%s"}\' "$*" > "$4"\n')
    return folder


def test_reference_runs_recboles_own_model_for_every_mapped_model(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHARED", _fake_reference(tmp_path / "shared"))
    assert bench.reference_model("simkgcl") is None
    assert bench.reference_model("KGIN") == "KGIN"
    assert bench.reference_model("lightgcn") == "LightGCN"
    with pytest.raises(SystemExit, match="no counterpart of 'kgcl'"):
        bench.reference_model("kgcl")

    work = tmp_path / "work"
    work.mkdir()
    result = bench.run_reference("lastfm-kg", 3, 1, work, 60, None, "KGIN")
    assert result["argv"].split()[:3] == ["KGIN", "lastfm-kg", "3"]
    assert "--threads 1" in result["argv"] and result["reference_label"] == "KGIN"
    assert "run_model.sh KGIN lastfm-kg 3" in result["command"]
    seed = bench.run_reference("ml-100k", 2, 2, work, 60, 10, None)
    assert seed["argv"].split()[:2] == ["ml-100k", "2"]
    assert "--stopping-step 10" in seed["argv"] and seed["reference_label"] == "SimKGCL (seed)"
    with pytest.raises(SystemExit, match="KGAT does not run in the reference environment: "
                                         "it needs DGL"):
        bench.run_reference("lastfm-kg", 2, 1, work, 60, None, "KGAT")


def test_reference_is_refused_up_front_for_a_model_recbole_lacks(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--reference", "--model", "kgcl", "--dataset", "lastfm-kg",
                    "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert "no counterpart of 'kgcl'" in capsys.readouterr().err
