"""`simkgcl recommend` and `simkgcl export` end to end, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_fixtures import ToyRun


def simkgcl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simkgcl", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_recommend_table_and_json(toy_run: ToyRun) -> None:
    user = toy_run.user_tokens[3]  # contains '/' and a space
    expected = toy_run.brute_force(user, 4)
    table = simkgcl("recommend", toy_run.run_dir, "--user", user, "--k", "4")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["rank", "item", "score"]
    assert [ln.split()[1] for ln in lines[1:]] == [item for item, _ in expected]

    as_json = simkgcl("recommend", toy_run.run_dir, "--user", user, "--k", "4", "--json",
                      "--include-seen")
    payload = json.loads(as_json.stdout)
    expected_all = toy_run.brute_force(user, 4, include_seen=True)
    assert payload["user"] == user and payload["include_seen"] is True
    assert [r["item"] for r in payload["items"]] == [item for item, _ in expected_all]
    np.testing.assert_allclose([r["score"] for r in payload["items"]],
                               [s for _, s in expected_all], rtol=1e-5)


def test_unknown_user_is_one_line_and_exit_2(toy_run: ToyRun) -> None:
    result = simkgcl("recommend", toy_run.run_dir, "--user", "nobody")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown user 'nobody'" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_export_csv_and_parquet_for_listed_users(toy_run: ToyRun, tmp_path: Path) -> None:
    users = [toy_run.user_tokens[i] for i in (12, 0, 3)]
    listed = tmp_path / "users.txt"
    listed.write_text("\n".join(users) + "\n")
    frames = {}
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"recs{suffix}"
        result = simkgcl("export", toy_run.run_dir, "--out", out, "--k", "6", "--users", listed,
                         "--batch-size", "2")
        assert result.returncode == 0, result.stderr
        assert "wrote 18 rows (3 users, k=6)" in result.stderr
        frames[suffix] = (pd.read_csv(out, dtype={"user": str, "item": str}) if suffix == ".csv"
                          else pd.read_parquet(out))
    for frame in frames.values():
        assert frame["user"].tolist() == [u for u in users for _ in range(6)]
        for user in users:
            rows = frame[frame["user"] == user]
            assert rows["rank"].tolist() == list(range(1, 7))
            assert rows["item"].tolist() == [item for item, _ in toy_run.brute_force(user, 6)]

    listed.write_text(f"{users[0]}\nghost\n")
    bad = simkgcl("export", toy_run.run_dir, "--out", tmp_path / "x.csv", "--users", listed)
    assert bad.returncode == 2 and f"{listed}:2: unknown user 'ghost'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.csv").exists()


def test_serve_refuses_missing_run_and_missing_fastapi(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    from simkgcl.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'simkgcl[serve]'" in capsys.readouterr().err


def test_damaged_artifact_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    import torch
    from serving_fixtures import make_toy_run

    run = make_toy_run(tmp_path / "run")
    torch.save({"user_embeddings": print}, run.run_dir / "artifact" / "tensors.pt")
    result = simkgcl("recommend", run.run_dir, "--user", run.user_tokens[0])
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tensors.pt: cannot be loaded safely" in lines[0]
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
    from simkgcl.cli import main
    from simkgcl.errors import ArtifactError

    with pytest.raises(ArtifactError):  # --debug lets the error through: a traceback
        main(["--debug", "recommend", str(run.run_dir), "--user", run.user_tokens[0]])
