"""``simkgcl data``: stats and convert, and one clear line (exit code 2) for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simkgcl.cli import main

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one error line (log lines from the logging handler are ignored)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_stats_of_the_bundled_dataset(capsys):
    code, out, _ = run(capsys, "stats")
    assert code == 0
    for figure in ("1,872", "3,846", "21,173", "9,366", "15,518", "negative labels dropped"):
        assert figure in out
    assert "train 17,350 / valid 1,907 / test 1,916" in out


def test_stats_json(capsys):
    code, out, _ = run(capsys, "stats", "lastfm-kg", "--json", "--seed", "5")
    stats = json.loads(out)
    assert code == 0 and stats["relations"] == 60 and stats["linked_items"] == 3846
    assert stats["split"]["train"] + stats["split"]["valid"] + stats["split"]["test"] == 21173


@pytest.mark.skipif(not (SHARED / "datasets").is_dir(), reason=f"shared datasets not at {SHARED}")
def test_stats_on_ml100k_prints_the_readme_figures(capsys):
    code, out, _ = run(capsys, "stats", str(SHARED / "datasets" / "ml-100k"))
    assert code == 0
    for figure in ("943", "1,682", "100,000", "34,628", "24", "91,631", "1,598", "97,554"):
        assert figure in out


def test_convert_then_stats(capsys, tmp_path):
    code, out, _ = run(capsys, "convert", "lastfm-kg", str(tmp_path / "out"))
    assert code == 0 and "lastfm-kg.kg" in out
    code, out, _ = run(capsys, "stats", str(tmp_path / "out"))
    assert code == 0 and "atomic layout" in out and "15,518" in out


def test_console_entry_point_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "simkgcl", "data", "stats", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing" in result.stderr


BAD_CASES = {
    "missing folder": ({}, None, "dataset folder not found"),
    "unknown layout": ({"data.csv": "a,b\n"}, "", "unknown dataset layout; expected"),
    "missing test.txt": ({"train.txt": "0 1\n"}, "", "needs 'test.txt'"),
    "kg without link": (
        {"x.inter": "user_id:token\titem_id:token\n1\t2\n", "x.kg": "head_id:token\n"},
        "",
        "x.link",
    ),
    "wrong column count int": (
        {"ratings_final.txt": "0 1 1\n0 2 1\n0 3\n"},
        "ratings_final.txt:3",
        "expected 3",
    ),
    "wrong column count kg": (
        {"ratings_final.txt": "0 1 1\n", "kg_final.txt": "1 0 5\n1 0 6 7\n"},
        "kg_final.txt:2",
        "found 4",
    ),
    "wrong column count atomic": (
        {"x.inter": "user_id:token\titem_id:token\n1\t2\n1\t3\t4\n"},
        "x.inter:3",
        "found 3",
    ),
    "non-integer id kgat": (
        {"train.txt": "0 1 2\n1 3 x7\n", "test.txt": "0 4\n"},
        "train.txt:2",
        "'x7'",
    ),
    "non-integer id kgcn": (
        {"ratings_final.txt": "0 1 1\nu1 2 1\n"},
        "ratings_final.txt:2",
        "integer",
    ),
    "label not 0/1": ({"ratings_final.txt": "0 1 1\n\n0 2 3\n"}, "ratings_final.txt:3", "label"),
    "bad header": ({"x.inter": "user_id item_id\n1\t2\n"}, "x.inter:1", "name:type"),
    "header lacks item_id": (
        {"x.inter": "user_id:token\tthing:token\n1\t2\n"},
        "x.inter:1",
        "item_id",
    ),
    "float column not a number": (
        {"x.inter": "user_id:token\titem_id:token\trating:float\n1\t2\t5\n1\t3\tfive\n"},
        "x.inter:3",
        "'five'",
    ),
    "empty ratings file": ({"ratings_final.txt": ""}, "ratings_final.txt", "empty"),
    "empty test file": ({"train.txt": "0 1\n", "test.txt": "\n"}, "test.txt", "empty"),
    "empty atomic file": ({"x.inter": ""}, "x.inter:1", "empty"),
    "header only": ({"x.inter": "user_id:token\titem_id:token\n"}, "x.inter", "no rows"),
    "negative id": ({"ratings_final.txt": "0 1 1\n-1 2 1\n"}, "ratings_final.txt:2", "'-1'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_one_line_and_exit_2(capsys, tmp_path, case):
    files, where, message = BAD_CASES[case]
    folder = tmp_path / "bad"
    if files:
        write(folder, files)
    code, out, err = run(capsys, "stats", str(folder))
    assert code == 2
    line = error_line(err)
    assert message in line
    if where:
        assert f"{folder}/{where}" in line if ":" in where else where in line


def test_bad_split_ratios(capsys):
    code, _, err = run(capsys, "stats", "--split", "0.7", "0.1", "0.1")
    assert code == 2 and "sum to 1" in error_line(err)


def test_link_entity_absent_from_kg_is_a_warning(capsys, tmp_path):
    folder = write(
        tmp_path / "x",
        {
            "x.inter": "user_id:token\titem_id:token\n1\ta\n1\tb\n2\ta\n",
            "x.kg": "head_id:token\trelation_id:token\ttail_id:token\nE1\tr\tE9\n",
            "x.link": "item_id:token\tentity_id:token\na\tE1\nb\tE2\n",
        },
    )
    code, out, err = run(capsys, "stats", str(folder))
    assert code == 0
    assert "link entities absent from kg: 1" in out
    assert "do not occur in the .kg file" in out  # also logged as a WARNING


def test_test_user_and_item_unseen_in_training_are_reported(capsys, tmp_path):
    folder = write(tmp_path / "k", {"train.txt": "0 1 2 3\n1 2 3\n", "test.txt": "0 4\n7 1\n"})
    code, out, _ = run(capsys, "stats", str(folder))
    assert code == 0
    assert "test users unseen in train dropped: 1" in out
    assert "test items unseen in train kept: 1" in out


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(Exception, match="dataset folder not found"):
        main(["data", "stats", str(tmp_path / "nope"), "--debug"])
