"""Command-line parsing: key=value anywhere, --list-keys, messages for model keys."""

from __future__ import annotations

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
    assert err == ("error: config key 'n_layers' (from key=value overrides) belongs to models "
                   "'lightgcn' and 'simkgcl'; this run uses model 'bpr', which does not take "
                   "it\n")


def test_a_bad_model_value_names_where_it_was_set(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text("model: lightgcn\nembedding_size: 0\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: config key 'embedding_size': got 0; allowed: an integer >= 1 "
                   f"(from {cfg})\n")
