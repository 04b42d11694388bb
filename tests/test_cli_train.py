"""`simkgcl train` / `simkgcl evaluate` end to end on a tiny dataset written to disk; parsing of
the command line (key=value anywhere, --list-keys) and messages for model keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "training"))
from engine_fixtures import write_kgcn_folder  # noqa: E402

from simkgcl.cli import main, parse_command_line  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "tiny"
    write_kgcn_folder(folder)
    return folder


def _train(tiny_folder: Path, runs: Path, capsys, *extra: str) -> tuple[dict, str]:
    code = main(["train", "--dataset", str(tiny_folder), "--model", "bpr", "--json",
                 "epochs=3", "show_progress=false", "topk=[5,10]", "valid_metric=NDCG@10",
                 f"checkpoint_dir={runs}", "device=cpu", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out), out


def test_train_then_evaluate_reproduces_test_metrics(tiny_folder: Path, tmp_path: Path,
                                                     capsys) -> None:
    result, _ = _train(tiny_folder, tmp_path / "runs", capsys)
    run = Path(result["run_dir"])
    assert run.parent == tmp_path / "runs" and run.name.startswith("bpr-tiny-")
    assert set(result["test"]) == {f"{m}@{k}" for m in ("Recall", "NDCG") for k in (5, 10)}

    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result["test"]
    assert main(["evaluate", str(run), "--split", "valid", "--json"]) == 0
    valid = json.loads(capsys.readouterr().out)
    # best_valid is the model alone; evaluate scores as the artifact serves, through the
    # popularity blend it kept, whose validation NDCG@10 the fit recombined per user
    blend = json.loads((run / "results.json").read_text())["popularity_blend"]
    assert blend["kept"] and blend["fitted_on"] == "valid"
    assert valid["NDCG@10"] == pytest.approx(blend["report"]["blended"], rel=1e-9)
    assert main(["evaluate", str(run)]) == 0
    assert "reproduces the test metrics in results.json exactly" in capsys.readouterr().out


def test_without_the_blend_evaluate_reproduces_best_valid(tiny_folder: Path, tmp_path: Path,
                                                          capsys) -> None:
    result, _ = _train(tiny_folder, tmp_path / "runs", capsys, "popularity_blend=off")
    assert main(["evaluate", result["run_dir"], "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result["best_valid"]


def test_train_prints_a_metrics_table_and_the_run_folder(tiny_folder: Path, tmp_path: Path,
                                                         capsys) -> None:
    code = main(["train", "--dataset", str(tiny_folder), "--model", "bpr", "epochs=2",
                 "show_progress=false", "topk=[5,10]", "valid_metric=NDCG@10",
                 f"checkpoint_dir={tmp_path}", "device=cpu"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    results = json.loads(next(tmp_path.glob("bpr-*/results.json")).read_text())
    if results["popularity_blend"]["kept"]:  # the model alone beside what is served
        assert lines[0].split() == ["metric", "valid", "(best)", "test", "(model)", "test",
                                    "(blended)"]
        row = next(line for line in lines if line.startswith("NDCG@10")).split()
        assert [float(v) for v in row[2:]] == pytest.approx(
            [results["test_unblended"]["NDCG@10"], results["test"]["NDCG@10"]], abs=5e-5)
    else:
        assert lines[0].split() == ["metric", "valid", "(best)", "test"]
        assert any(line.startswith("NDCG@10") and len(line.split()) == 3 for line in lines)
    assert f"run folder: {tmp_path}" in out


def test_config_file_and_resume_of_a_finished_run(tiny_folder: Path, tmp_path: Path,
                                                  capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.01\nembedding_size: 16\n")
    result, _ = _train(tiny_folder, tmp_path / "runs", capsys, "--config", str(cfg))
    run = Path(result["run_dir"])
    saved = (run / "config.yaml").read_text()
    assert "learning_rate: 0.01" in saved and "embedding_size: 16" in saved
    # resuming with more epochs continues from epoch 3 and keeps the history
    assert main(["train", "--resume", str(run), "--json", "epochs=5"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["epochs_run"] == 5
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3, 4]


def test_user_errors_are_one_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    assert main(["train", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'epoch'") and "'epochs'" in err
    assert len(err.strip().splitlines()) == 1

    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a resumable run folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_resume_refuses_changes_that_break_exactness(tiny_folder: Path, tmp_path: Path,
                                                     capsys) -> None:
    result, _ = _train(tiny_folder, tmp_path / "runs", capsys)
    assert main(["train", "--resume", result["run_dir"], "learning_rate=0.1"]) == 2
    assert "cannot change learning_rate when resuming" in capsys.readouterr().err


def test_seeds_train_one_run_each_and_print_mean_and_std(tiny_folder: Path, tmp_path: Path,
                                                         capsys) -> None:
    argv = ["train", "--dataset", str(tiny_folder), "--model", "bpr", "--seeds", "7,8",
            "epochs=2", "show_progress=false", "topk=[5,10]", "valid_metric=NDCG@10",
            f"checkpoint_dir={tmp_path}", "device=cpu"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    runs = [Path(r["run_dir"]) for r in summary["runs"]]
    assert summary["seeds"] == [7, 8] and len(set(runs)) == 2
    for name, stats in summary["test"].items():
        per_run = [json.loads((run / "results.json").read_text())["test"][name] for run in runs]
        assert stats["mean"] == pytest.approx(sum(per_run) / 2)
        assert stats["std"] == pytest.approx(abs(per_run[0] - per_run[1]) / 2 ** 0.5)

    assert main(argv) == 0
    out = capsys.readouterr().out
    ndcg = next(line for line in out.splitlines() if line.startswith("NDCG@10 "))
    assert "±" in ndcg and len(ndcg.split()) == 6  # name, mean ± std, one value per seed
    folder = Path(out.strip().splitlines()[-1].split(" in ")[-1])
    assert (folder / "summary.json").is_file() and folder.parent == tmp_path

    assert main([*argv[:-5], "--seeds", "7,x"]) == 2
    assert "not an integer" in capsys.readouterr().err


def test_mixed_precision_on_cpu_is_a_clear_error(tmp_path, capsys):
    from simkgcl.cli import main

    code = main(["train", "mixed_precision=bf16", "device=cpu", "epochs=1",
                 f"checkpoint_dir={tmp_path}", "show_progress=false", "embedding_size=8"])
    err = capsys.readouterr().err
    assert code == 2
    assert "mixed_precision" in err and "CUDA" in err
    assert "Traceback" not in err


def test_model_key_out_of_range_is_refused_before_any_data_is_read(tmp_path: Path,
                                                                     capsys) -> None:
    missing = tmp_path / "no-such-dataset"
    code = main(["train", "--dataset", str(missing), "--model", "lightgcn", "n_layers=-1",
                 f"checkpoint_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "n_layers" in err and "no-such-dataset" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "overrides", "model", "dataset"),
    [
        # the two lines of issue 10 that failed with "unrecognized arguments"
        (["train", "show_progress=false", "--model", "lightgcn", "epochs=1"],
         ["show_progress=false", "epochs=1"], "lightgcn", None),
        (["train", "--model", "simkgcl", "kg_view=pure", "--dataset", "D", "epochs=10"],
         ["kg_view=pure", "epochs=10"], "simkgcl", "D"),
        (["train", "a=1", "--json", "eval_args.order=TO", "--model", "bpr", "a=2", "--debug"],
         ["a=1", "eval_args.order=TO", "a=2"], "bpr", None),
        (["tune", "lr=1", "--space", "s.yaml", "epochs=3", "--trials", "2", "x_y=[1, 2]"],
         ["lr=1", "epochs=3", "x_y=[1, 2]"], None, None),
    ],
)
def test_overrides_are_taken_anywhere_in_command_line_order(argv, overrides, model,
                                                            dataset) -> None:
    args = parse_command_line(argv)
    assert args.overrides == overrides  # order kept: a later value of a key wins
    assert args.model == model and args.dataset == dataset


def test_resume_takes_overrides_before_and_after_the_option() -> None:
    args = parse_command_line(["train", "epochs=9", "--resume", "RUN", "show_progress=false"])
    assert args.resume == "RUN" and args.overrides == ["epochs=9", "show_progress=false"]


def test_words_that_are_not_overrides_are_still_refused(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_command_line(["train", "--model", "bpr", "epochs=1", "--modle", "x"])
    assert info.value.code == 2
    assert "unrecognized arguments: --modle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_command_line(["data", "stats", "folder", "epochs=1"])  # data takes no overrides


def test_interleaved_overrides_reach_the_run(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    code = main(["train", "show_progress=false", "--model", "lightgcn", "epochs=1",
                 "--dataset", str(tiny_folder), "embedding_size=8", "--json", "topk=[5,10]",
                 "valid_metric=NDCG@10",
                 f"checkpoint_dir={tmp_path}", "device=cpu", "epochs=2", "n_layers=1"])
    assert code == 0
    run = next(tmp_path.iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "lightgcn" and saved["show_progress"] is False
    assert saved["epochs"] == 2 and saved["n_layers"] == 1  # the later epochs=2 won
    assert Path(saved["dataset"]).name == "tiny"
    capsys.readouterr()


def test_simkgcl_line_of_the_issue_trains(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    code = main(["train", "--model", "simkgcl", "kg_view=pure", "--dataset", str(tiny_folder),
                 "epochs=1", "embedding_size=8", f"checkpoint_dir={tmp_path}", "device=cpu",
                 "show_progress=false", "--json", "topk=[5,10]", "valid_metric=NDCG@10"])
    assert code == 0, capsys.readouterr().err
    saved = yaml.safe_load((next(tmp_path.iterdir()) / "config.yaml").read_text())
    assert saved["kg_view"] == "pure" and saved["epochs"] == 1


def test_list_keys_shows_the_model_keys_with_their_ranges(capsys) -> None:
    assert main(["train", "--model", "lightgcn", "--list-keys", "n_layers=2"]) == 0
    out = capsys.readouterr().out
    model_part, run_part = out.split("keys of every run:")
    assert model_part.startswith("keys of model 'lightgcn':")
    lines = model_part.splitlines()
    at = lines.index("  n_layers = 2")  # the value after the overrides
    assert "allowed: an integer >= 1" in lines[at + 1]
    assert "  embedding_size = 64" in lines and "  kg_view" not in model_part
    assert "  epochs = 300" in run_part.splitlines()
    assert "allowed: a number in [0.0, 1.0)" in run_part  # valid_ratio, a data rule
    assert main(["tune", "--model", "bpr", "--list-keys", "--space", "none.yaml"]) == 0
    assert "keys of model 'bpr':" in capsys.readouterr().out


def test_a_key_of_other_models_names_them_all(capsys) -> None:
    assert main(["train", "--model", "bpr", "n_layers=2"]) == 2
    err = capsys.readouterr().err
    from simkgcl.models import available_models, get_model_class

    owners = [repr(m) for m in available_models() if "n_layers" in get_model_class(m).keys]
    assert len(owners) > 2
    listed = ", ".join(owners[:-1]) + " and " + owners[-1]
    assert err == (f"error: config key 'n_layers' (from key=value overrides) belongs to models "
                   f"{listed}; this run uses model 'bpr', which does not take it\n")


def test_a_bad_model_value_names_where_it_was_set(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text("model: lightgcn\nembedding_size: 0\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: config key 'embedding_size': got 0; allowed: an integer >= 1 "
                   f"(from {cfg})\n")
