"""`simkgcl compare` end to end on a tiny experiment: run folders, summary, significance, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SETTINGS, write_experiment

from simkgcl.cli import main
from simkgcl.config import Config
from simkgcl.experiments.runner import available_cores, execute, plan, run_experiment
from simkgcl.experiments.spec import load_experiment
from simkgcl.experiments.stats import holm, stars

HERE = Path(__file__).parent
RUNS = [(label, seed) for label in ("bpr", "lightgcn") for seed in (1, 2)]


def _run_dir(out: Path, label: str, seed: int) -> Path:
    found = [d for d in (out / "runs" / "tiny" / label / f"seed-{seed}").iterdir() if d.is_dir()]
    assert len(found) == 1, found
    return found[0]


def _results(out: Path, label: str, seed: int) -> dict:
    return json.loads((_run_dir(out, label, seed) / "results.json").read_text())


def test_every_run_is_a_run_folder_and_the_summary_is_computed_from_them(
        tiny_experiment: Path) -> None:
    out = tiny_experiment
    per_run = {key: _results(out, *key) for key in RUNS}
    for label, seed in per_run:
        config = Config.load(_run_dir(out, label, seed) / "config.yaml")
        assert (config["model"], config["seed"], config["epochs"]) == (label, seed, 3)
    assert config["n_layers"] == 2  # the model's own settings reached its runs
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], int(r["seed"]), r["status"]) for r in rows] == [
        (label, seed, "done") for label, seed in RUNS]
    for row in rows:
        res = per_run[row["model"], int(row["seed"])]
        assert float(row["test_NDCG@10"]) == res["test"]["NDCG@10"]
        assert int(row["epochs_run"]) == res["epochs_run"] == 3

    summary = json.loads((out / "summary.json").read_text())
    models = summary["datasets"]["tiny"]["models"]
    means = {}
    for label in ("bpr", "lightgcn"):
        values = [per_run[label, s]["test"]["Recall@10"] for s in (1, 2)]
        stats = models[label]["test"]["Recall@10"]
        assert stats["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
        assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        means[label] = statistics.mean(per_run[label, s]["test"]["NDCG@10"] for s in (1, 2))
    # summary.md: the better NDCG@10 mean is the bold one in its column
    best = max(means, key=means.get)
    table = (out / "summary.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith(f"| {best}"))
    assert f"**{means[best]:.4f}" in line
    other = next(x for x in table.splitlines() if x.startswith("| ") and best not in x
                 and ("bpr" in x or "lightgcn" in x))
    assert f"| {min(means.values()):.4f}" in other


def _per_user(run_dir: Path, metric: str) -> dict[str, float]:
    with np.load(run_dir / "test_per_user.npz", allow_pickle=False) as raw:
        return dict(zip(raw["user"].tolist(), raw[metric].tolist(), strict=True))


def test_significance_equals_scipy_on_the_per_user_files(tiny_experiment: Path) -> None:
    from scipy import stats as st

    out = tiny_experiment
    # independent pairing: each user's value averaged over the two seeds, per model
    means = {}
    for label in ("bpr", "lightgcn"):
        tables = [_per_user(_run_dir(out, label, s), "NDCG@10") for s in (1, 2)]
        users = sorted(tables[0])
        assert all(sorted(t) == users for t in tables)
        means[label] = np.array([(tables[0][u] + tables[1][u]) / 2 for u in users])
    wilcoxon = st.wilcoxon(means["lightgcn"], means["bpr"]).pvalue
    ttest = st.ttest_rel(means["lightgcn"], means["bpr"]).pvalue

    sig = json.loads((out / "summary.json").read_text())["datasets"]["tiny"]["significance"]
    got = sig["models"]["lightgcn"]
    assert (sig["baseline"], sig["metric"]) == ("bpr", "NDCG@10")
    assert got["n_users"] == len(means["bpr"]) == 40 and got["seeds"] == [1, 2]
    assert got["wilcoxon_p"] == pytest.approx(wilcoxon, rel=1e-12)
    assert got["ttest_p"] == pytest.approx(ttest, rel=1e-12)
    assert got["mean_difference"] == pytest.approx(float((means["lightgcn"]
                                                          - means["bpr"]).mean()))
    assert got["wilcoxon_p_holm"] == got["wilcoxon_p"]  # a family of one test
    assert got["stars"] == stars(got["wilcoxon_p_holm"])


def test_holm_and_stars_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.02, None, 0.5]) == [pytest.approx(0.04), None, 0.5]
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert [stars(p) for p in (0.0009, 0.009, 0.049, 0.05, None)] == ["***", "**", "*", "", ""]


def test_a_rerun_skips_every_finished_run(tiny_experiment: Path, capsys) -> None:
    out = tiny_experiment
    stamps = {key: (_run_dir(out, *key) / "results.json").stat().st_mtime_ns for key in RUNS}
    spec = out.parent / "experiment.yaml"
    assert main(["compare", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "4 runs: 4 skipped" in capsys.readouterr().out
    assert stamps == {key: (_run_dir(out, *key) / "results.json").stat().st_mtime_ns
                      for key in RUNS}
    session = run_experiment(load_experiment(spec), out, progress=True)  # the bar, drawn
    assert [o.status for o in session.outcomes] == ["skipped"] * 4
    err = capsys.readouterr().err
    assert "compare: 100%" in err and "4/4" in err


def test_a_run_made_with_other_settings_is_refused(tiny_experiment: Path, capsys) -> None:
    changed = tiny_experiment.parent / "changed" / "experiment.yaml"
    text = (tiny_experiment.parent / "experiment.yaml").read_text().replace("epochs: 3",
                                                                             "epochs: 4")
    changed.parent.mkdir()
    changed.write_text(text.replace("tiny: tiny", f"tiny: {tiny_experiment.parent / 'tiny'}"))
    code = main(["compare", str(changed), "--out", str(tiny_experiment), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "other settings" in err and "epochs: 3 -> 4" in err


BAD_FILES = [
    ("datasets: {tiny: tiny}\nmodels: {bpr: {}}\nseed: [1]\n", ":3:", "did you mean 'seeds'"),
    ("datasets: {tiny: tiny}\nmodels:\n  bpr: {}\n  mf: {}\nseeds: [1]\n", ":4:",
     "'mf' is not a model name"),
    ("datasets: {tiny: nowhere}\nmodels: {bpr: {}}\nseeds: [1]\n", ":1:", "folder not found"),
    ("datasets: {tiny: tiny}\nmodels:\n  bpr: {settings: {learning_rat: 0.1}}\nseeds: [1]\n",
     ":3:", "did you mean 'learning_rate'"),
    ("datasets: {tiny: tiny}\nmodels: {bpr: {config: nope.yaml}}\nseeds: [1]\n", ":2:",
     "config file not found"),
    ("datasets: {tiny: tiny}\nmodels: {bpr: {}}\nseeds: [1, 1]\n", ":3:", "given twice"),
    ("datasets: {tiny: tiny}\nmodels: {bpr: {}}\nseeds: [1]\nbaseline: mf\n", ":4:",
     "not one of the models"),
    ("datasets: {tiny: tiny}\nmodels: {bpr: {}}\nseeds: [1]\nbaseline: bpr\n"
     "significance_metric: MRR@10\n", ":5:", "not computed"),
    ("datasets: [tiny\n", ":2:", "not valid YAML"),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD_FILES)
def test_a_bad_experiment_file_is_one_line_with_file_line_and_reason(
        tmp_path: Path, capsys, body: str, line: str, message: str) -> None:
    spec = write_experiment(tmp_path, body)
    assert main(["compare", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {spec}{line}") and message in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_jobs_too_many_for_the_cores_are_refused(tmp_path: Path) -> None:
    from simkgcl.errors import ConfigError

    experiment = load_experiment(write_experiment(tmp_path))
    with pytest.raises(ConfigError, match="more than the 2 CPU cores"):
        plan(experiment, tmp_path / "out", jobs=3, cores=2)
    experiment.settings["threads"] = 2
    with pytest.raises(ConfigError, match="--jobs 2 × threads 2"):
        plan(experiment, tmp_path / "out", jobs=2, cores=3)
    experiment.settings.pop("threads")
    jobs = plan(experiment, tmp_path / "out", jobs=2, cores=5)
    assert {j.config["threads"] for j in jobs} == {2}  # 2 jobs × 2 threads <= 5 cores


@pytest.mark.skipif(available_cores() < 2, reason="--jobs 2 needs two CPU cores")
def test_two_jobs_at_once_give_the_same_results(tiny_experiment: Path, tmp_path: Path,
                                                capsys) -> None:
    spec = write_experiment(tmp_path)
    code = main(["compare", str(spec), "--out", str(tmp_path / "out"), "--jobs", "2",
                 "--no-progress"])  # two spawned worker processes
    assert code == 0 and "4 runs: 4 trained" in capsys.readouterr().out
    for key in RUNS:
        assert _results(tmp_path / "out", *key)["test"] == _results(tiny_experiment, *key)["test"]
        assert Config.load(_run_dir(tmp_path / "out", *key) / "config.yaml")["threads"] == 1


def _slow_experiment(folder: Path) -> Path:
    # a fast model, then a slow one (the test model sleeps 20 ms per batch): the kill lands in
    # the slow model's first run once both fast runs are done
    return write_experiment(folder, f"""
datasets: {{tiny: tiny}}
models:
  bpr: {{}}
  slow: {{model: tinymf, settings: {{batch_delay: 0.02, train_batch_size: 64}}}}
seeds: [1, 2]
settings: {SETTINGS.replace("epochs: 3", "epochs: 8")}
baseline: bpr
""")


@pytest.fixture
def slow_model(monkeypatch) -> None:
    """The test model (``tinymf``) known to this process's model registry for one test."""
    import simkgcl.models as registry

    monkeypatch.setitem(registry._MODELS, "tinymf", ("engine_fixtures", "TinyMF"))


def test_killed_then_rerun_finishes_without_redoing_finished_runs(tmp_path: Path, slow_model,
                                                                   capsys) -> None:
    spec = _slow_experiment(tmp_path / "killed")
    out = tmp_path / "killed" / "out"
    proc = subprocess.Popen([sys.executable, str(HERE / "compare_script.py"), str(spec),
                             "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slow_first = out / "runs" / "tiny" / "slow" / "seed-1"
    killed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = list(slow_first.glob("*/metrics.jsonl")) if slow_first.is_dir() else []
            if metrics and len(metrics[0].read_text().splitlines()) >= 2:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if not killed:
            proc.kill()
        proc.communicate(timeout=60)
    assert killed and proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert not list(slow_first.glob("*/results.json"))  # really died inside that run
    fast = {s: _run_dir(out, "bpr", s) for s in (1, 2)}
    fast_stamps = {s: (d / "results.json").stat().st_mtime_ns for s, d in fast.items()}
    interrupted = _run_dir(out, "slow", 1)

    assert main(["compare", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "4 runs: 2 skipped, 1 trained, 1 resumed" in capsys.readouterr().out
    assert {s: (d / "results.json").stat().st_mtime_ns for s, d in fast.items()} == fast_stamps
    assert _run_dir(out, "slow", 1) == interrupted  # continued in place, not started anew

    reference = tmp_path / "ref" / "out"  # the same experiment, never interrupted
    assert main(["compare", str(_slow_experiment(tmp_path / "ref")), "--out", str(reference),
                 "--no-progress"]) == 0
    for label, seed in [("bpr", 1), ("bpr", 2), ("slow", 1), ("slow", 2)]:
        mine, theirs = _run_dir(out, label, seed), _run_dir(reference, label, seed)
        for key in ("test", "best_valid", "best_epoch", "epochs_run"):
            assert _results(out, label, seed)[key] == _results(reference, label, seed)[key]
        assert _per_user(mine, "NDCG@10") == _per_user(theirs, "NDCG@10")
        assert _losses(mine) == _losses(theirs)


def _losses(run_dir: Path) -> list[dict]:
    return [json.loads(x)["losses"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path))
    job = plan(experiment, tmp_path / "out")[0]
    stale = Path(job.folder) / "bpr-tiny-20990101-000000"
    stale.mkdir(parents=True)
    (stale / "config.yaml").write_text(Config(job.config).to_yaml())
    (stale / "train.log").write_text("killed while reading the data\n")
    outcome = execute(job)
    assert outcome.status == "trained" and not stale.exists()
    assert Path(outcome.run_dir).parent == Path(job.folder)
    assert execute(job).status == "skipped"
    assert sorted(os.listdir(job.folder)) == sorted([Path(outcome.run_dir).name, ".lock"])


SHIPPED = sorted((HERE.parents[1] / "configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_experiment_file_loads(path: Path) -> None:
    if not (HERE.parents[2] / "shared" / "splits").is_dir():
        pytest.skip("../shared/splits is not beside this checkout")
    experiment = load_experiment(path)
    jobs = plan(experiment, Path("unused"))
    assert {d.label for d in experiment.datasets} <= {"lastfm-kg", "ml-100k"}
    assert len(jobs) == len(experiment.models) * len(experiment.datasets) * len(experiment.seeds)
    assert experiment.baseline in {m.label for m in experiment.models}  # it is run too
    assert experiment.significance_metric == "NDCG@20"


def test_a_label_takes_its_model_from_its_config_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("model: lightgcn\nn_layers: 1\n")
    spec = write_experiment(tmp_path, "datasets: {tiny: tiny}\nseeds: [3]\nmodels:\n"
                            "  mine: {config: mine.yaml, settings: {epochs: 2}}\n")
    (job,) = plan(load_experiment(spec), tmp_path / "out")
    assert (job.label, job.config["model"], job.config["n_layers"], job.config["epochs"],
            job.config["seed"]) == ("mine", "lightgcn", 1, 2, 3)
    assert job.folder == str(tmp_path / "out" / "runs" / "tiny" / "mine" / "seed-3")


def test_the_eta_counts_each_remaining_run_at_its_own_models_pace(tmp_path: Path) -> None:
    from simkgcl.experiments.runner import RunJob, RunOutcome, _Progress

    jobs = [RunJob("d", label, seed, str(tmp_path), {}) for label in ("fast", "slow")
            for seed in (1, 2, 3)]
    for workers, expected in ((1, 2 * 10 + 2 * 100), (2, (2 * 10 + 2 * 100) / 2)):
        bar = _Progress(jobs, total=8, enabled=False, workers=workers)  # 2 were done before
        assert bar.eta_seconds() is None  # nothing timed yet
        bar.done(RunOutcome(jobs[0], "trained", seconds=10.0))
        bar.done(RunOutcome(jobs[3], "trained", seconds=100.0))
        assert bar.finished == 4 and bar.eta_seconds() == pytest.approx(expected)
        bar.close()
