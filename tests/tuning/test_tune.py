"""Hyper-parameter search end to end on the bundled dataset (tiny models, a few epochs)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from simkgcl.cli.tune import register  # noqa: E402
from simkgcl.config import Config  # noqa: E402
from simkgcl.errors import ConfigError  # noqa: E402
from simkgcl.training.run import evaluate_run, resume_run, train  # noqa: E402
from simkgcl.training.run_folder import RunFolder  # noqa: E402
from simkgcl.tuning import parse_space, tune  # noqa: E402
from simkgcl.tuning.search import RUN_SPECIFIC_KEYS  # noqa: E402

LR_SPACE = {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


def tiny_base(tmp_path: Path, **changes) -> Config:
    """BPR on the bundled lastfm-kg, 8-dim embeddings, 2 epochs: under a second per run."""
    values = dict(model="bpr", epochs=2, embedding_size=8, topk=[10, 20],
                  valid_metric="NDCG@20", show_progress=False, device="cpu",
                  checkpoint_dir=str(tmp_path / "runs"))
    values.update(changes)
    return Config(values)


def test_search_beats_a_bad_start_and_writes_a_usable_best_config(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, learning_rate=1e-6)  # far too small to learn in 2 epochs
    start = train(base).best_valid_score
    space = {"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-1, "log": True}}
    result = tune(base, parse_space(space), n_trials=3, out_dir=tmp_path / "tune", prune=False)

    assert result.best_value > 5 * start
    # Chosen on validation only: the best trial is the top valid score of the study.
    complete = [r for r in result.rows if r["state"] == "complete"]
    assert len(complete) == 3 and [r["rank"] for r in complete] == [1, 2, 3]
    assert result.best_value == max(r["valid"] for r in complete)
    assert complete[0]["trial"] == result.best_trial
    # Test metrics come from the best trial's checkpoint (and reproduce its own results.json).
    assert result.test == evaluate_run(result.best_run_dir, split="test")
    assert result.test == RunFolder(result.best_run_dir).read_results()["test"]
    summary = json.loads((tmp_path / "tune" / "summary.json").read_text())
    assert summary["test_of_best_trial"] == result.test
    assert summary["best_valid_score"] == result.best_value

    # best.yaml is the trial's full config minus run-specific keys, ready for `train --config`.
    best = Config(files=[tmp_path / "tune" / "best.yaml"])
    trial_cfg = Config.load(result.best_run_dir / "config.yaml")
    assert {k: v for k, v in best.items() if k not in RUN_SPECIFIC_KEYS} == \
        {k: v for k, v in trial_cfg.items() if k not in RUN_SPECIFIC_KEYS}
    assert best["learning_rate"] == result.best_params["learning_rate"]
    assert not set(RUN_SPECIFIC_KEYS) & set(yaml.safe_load(
        (tmp_path / "tune" / "best.yaml").read_text()))

    with open(tmp_path / "tune" / "trials.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["trial"]) for r in table] == [r["trial"] for r in result.rows]
    assert float(table[0]["valid"]) == result.best_value
    assert not (tmp_path / "tune" / "history.png").exists() or \
        (tmp_path / "tune" / "history.png").stat().st_size > 0


def test_a_resumed_study_continues_its_trial_count(tmp_path: Path) -> None:
    base = tiny_base(tmp_path)
    space = parse_space(LR_SPACE, "lr.yaml")
    out = tmp_path / "tune"
    first = tune(base, space, n_trials=2, out_dir=out, prune=False)
    assert first.trials_this_session == 2

    again = tune(base, space, n_trials=3, out_dir=out, prune=False)  # "interrupted" at 2 of 3
    assert again.trials_this_session == 1
    assert sorted(r["trial"] for r in again.rows) == [0, 1, 2]
    by_trial = {r["trial"]: r for r in again.rows}
    # The resumed sampler does not replay the first session's random suggestions.
    assert by_trial[2]["learning_rate"] not in (by_trial[0]["learning_rate"],
                                               by_trial[1]["learning_rate"])
    assert Path(by_trial[2]["run_dir"]).parent == out / "trials" / "0002"

    done = tune(base, space, n_trials=3, out_dir=out, prune=False)  # nothing left to do
    assert done.trials_this_session == 0 and len(done.rows) == 3

    with pytest.raises(ConfigError, match="another space"):
        tune(base, parse_space({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1}},
                               "lr.yaml"), n_trials=4, out_dir=out)
    with pytest.raises(ConfigError, match=r"another base config \(differs in: embedding_size\)"):
        tune(tiny_base(tmp_path, embedding_size=16), space, n_trials=4, out_dir=out)


def test_pruning_fires_on_a_hopeless_trial_and_leaves_a_resumable_run(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, epochs=3)  # pruned at epoch 1, so one epoch is left to resume
    out = tmp_path / "tune"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    # Three good trials first, then one that cannot learn (lr 1e-7).
    seeded = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    for lr in (0.05, 0.05, 0.05, 1e-7):
        seeded.enqueue_trial({"learning_rate": lr})
    space = {"learning_rate": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True}}
    result = tune(base, parse_space(space), n_trials=4, study_name="prune", storage=storage,
                  out_dir=out, prune_warmup=1, prune_startup_trials=3)

    states = {r["trial"]: r["state"] for r in result.rows}
    assert states == {0: "complete", 1: "complete", 2: "complete", 3: "pruned"}
    hopeless = next(r for r in result.rows if r["trial"] == 3)
    assert hopeless["pruned_epoch"] == 1  # the first epoch after the warm-up
    assert result.best_trial in (0, 1, 2)

    # The pruned run folder is a consistent, resumable state: history and last.pt agree.
    run_dir = Path(hopeless["run_dir"])
    # Callbacks run after the epoch is written, so the pruned epoch is part of the history.
    assert [r["epoch"] for r in RunFolder(run_dir).read_history()] == [0, 1]
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert not (run_dir / "results.json").exists()
    resumed = resume_run(run_dir)
    assert resumed.epochs_run == 3
    assert [r["epoch"] for r in RunFolder(run_dir).read_history()] == [0, 1, 2]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="simkgcl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_tune_prints_the_ranked_table_and_rejects_typos(tmp_path: Path, capsys) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(dict(tiny_base(tmp_path).items())))
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 1e-3, high: 1e-1, log: true}\n"
                     "train_batch_size: [1024, 4096]\n")
    out = tmp_path / "tune"
    code = _cli(["tune", "--config", str(base), "--space", str(space), "--trials", "2",
                 "--out", str(out), "--no-prune", "seed=7"])
    text = capsys.readouterr().out
    assert code == 0
    header = text.splitlines()[0].split()
    assert header[:5] == ["rank", "trial", "state", "valid", "NDCG@20"]
    assert header[-2:] == ["learning_rate", "train_batch_size"]
    assert "study 'bpr-lastfm-kg-space': 2 complete (2 this session)" in text
    assert f"best config: {out / 'best.yaml'}" in text
    assert Config(files=[out / "best.yaml"])["seed"] == 7

    typo = tmp_path / "typo.yaml"
    typo.write_text("learnig_rate: {type: float, low: 1e-3, high: 1e-1}\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        _cli(["tune", "--config", str(base), "--space", str(typo), "--out", str(out)])


def test_space_files_are_checked_before_any_training(tmp_path: Path) -> None:
    base = tiny_base(tmp_path)

    def check(spec: dict) -> None:
        parse_space(spec, "s.yaml").validate(base)

    with pytest.raises(ConfigError, match="low .* is above high"):
        check({"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}})
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        check({"weight_decay": {"type": "float", "low": 0, "high": 0.1, "log": True}})
    with pytest.raises(ConfigError, match="learning_rate = 0.0 is not a valid value"):
        check({"learning_rate": {"type": "float", "low": 0, "high": 0.1}})
    with pytest.raises(ConfigError, match="'model' cannot be searched"):
        check({"model": ["bpr", "lightgcn"]})
    with pytest.raises(ConfigError, match="unknown config key 'n_layers' for model 'bpr'"):
        check({"n_layers": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(ConfigError, match="type must be one of"):
        check({"learning_rate": {"low": 0.1, "high": 0.2}})
    with pytest.raises(ConfigError, match="unknown field.*hgih"):
        check({"learning_rate": {"type": "float", "low": 0.1, "hgih": 0.2}})
    with pytest.raises(ConfigError, match=r"neg_sampling.uniform = 0 is not a valid value"):
        check({"neg_sampling.uniform": {"type": "int", "low": 0, "high": 4}})

    # Dotted keys, YAML-1.1 "1e-4" strings, and structured choices (stored as JSON text).
    space = parse_space({"neg_sampling.uniform": {"type": "int", "low": 1, "high": 4},
                         "learning_rate": {"type": "float", "low": "1e-4", "high": "1e-2"},
                         "topk": [[10, 20], [5, 10, 20]]})
    space.validate(base)
    fixed = optuna.trial.FixedTrial({"neg_sampling.uniform": 3, "learning_rate": 1e-3,
                                     "topk": "[5, 10, 20]"})
    values = space.suggest(fixed)
    assert values == {"neg_sampling.uniform": 3, "learning_rate": 1e-3, "topk": [5, 10, 20]}
    cfg = Config(base.to_dict(), overrides=values)
    assert cfg["neg_sampling"] == {"uniform": 3} and cfg["topk"] == [5, 10, 20]


def test_a_missing_optuna_is_a_clear_config_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"pip install 'simkgcl\[tune\]'"):
        tune(tiny_base(tmp_path), parse_space(LR_SPACE), n_trials=1, out_dir=tmp_path)


SPACES = sorted((Path(__file__).parents[2] / "configs" / "spaces").glob("*.yaml"))


@pytest.mark.parametrize("space_file", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_search_spaces_fit_their_model_configs(space_file: Path) -> None:
    from simkgcl.tuning import load_space

    model = space_file.stem.split("-")[0]  # simkgcl-focused.yaml searches around simkgcl.yaml
    base = Config(files=[space_file.parents[1] / f"{model}.yaml"])
    load_space(space_file).validate(base)
