"""bench/sparse_users.py: which rows survive, what stays byte-identical, the same bytes for the
same seed, atomic refusal of an existing folder (checked on the files, independently)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "sparse_users.py"


@pytest.fixture(scope="module")
def sparse():
    spec = importlib.util.spec_from_file_location("bench_sparse_users", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sparse_users"] = module
    spec.loader.exec_module(module)
    return module


def _source(folder: Path) -> Path:
    folder.mkdir(parents=True)
    head = "user_id:token\titem_id:token\trating:float\n"
    train = "".join(f"u{u}\ti{(u * 3 + j) % 11}\t{j}\n" for j in range(6) for u in range(10))
    (folder / "toy.train.inter").write_text(head + train)
    (folder / "toy.valid.inter").write_text(head + "u0\ti9\t1\nu1\ti8\t1\n")
    (folder / "toy.test.inter").write_text(head + "u0\ti10\t1\nu3\ti2\t5\n")
    (folder / "toy.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\ne1\tr\te2\n")
    (folder / "toy.link").write_text("item_id:token\tentity_id:token\ni1\te1\n")
    return folder


def _rows_by_user(path: Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines()[1:]:
        rows[line.split("\t")[0]].append(line)
    return rows


def test_a_share_of_users_keeps_one_to_two_rows_and_the_rest_is_untouched(sparse, tmp_path):
    src = _source(tmp_path / "toy")
    out = tmp_path / "out" / "toy-sparse"
    manifest = sparse.build(src, out, share=0.4, keep_min=1, keep_max=2, seed=7)
    before = _rows_by_user(src / "toy.train.inter")
    after = _rows_by_user(out / "toy-sparse.train.inter")
    changed = {u for u in before if after.get(u) != before[u]}
    assert len(changed) == 4 == manifest["sparse_users"]  # round(0.4 * 10), all had 6 rows
    for user in changed:
        kept = after[user]
        assert 1 <= len(kept) <= 2
        positions = [before[user].index(r) for r in kept]
        assert positions == sorted(positions)  # a subsequence, in the source order
    assert sum(len(v) for v in after.values()) == manifest["train_rows"]["kept"]
    assert sum(manifest["sparse_users_by_kept_rows"].values()) == 4
    for suffix in ("valid.inter", "test.inter", "kg", "link"):
        assert (out / f"toy-sparse.{suffix}").read_bytes() == (src / f"toy.{suffix}").read_bytes()
    assert (out / "toy-sparse.train.inter").read_text().splitlines()[0] == \
        "user_id:token\titem_id:token\trating:float"
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy-sparse"]  # no staging left


def test_same_seed_same_bytes_other_seed_other_users(sparse, tmp_path):
    src = _source(tmp_path / "toy")
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    sparse.build(src, a, share=0.5, keep_min=1, keep_max=3, seed=1)
    sparse.build(src, b, share=0.5, keep_min=1, keep_max=3, seed=1)
    sparse.build(src, c, share=0.5, keep_min=1, keep_max=3, seed=2)
    assert (a / "a.train.inter").read_bytes() == (b / "b.train.inter").read_bytes()
    assert (a / "a.train.inter").read_bytes() != (c / "c.train.inter").read_bytes()


def test_bad_input_is_one_line_and_exit_2(sparse, tmp_path, capsys):
    src = _source(tmp_path / "toy")
    out = tmp_path / "done"
    assert sparse.main([str(src), str(out), "--seed", "3"]) == 0
    manifest = json.loads((out / "sparse_users.json").read_text())
    assert manifest["seed"] == 3 and manifest["keep"] == [1, 3]
    capsys.readouterr()
    assert sparse.main([str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists" in err
    assert sparse.main([str(src), str(tmp_path / "x"), "--keep", "3", "1"]) == 2
    (tmp_path / "empty").mkdir()
    assert sparse.main([str(tmp_path / "empty"), str(tmp_path / "y")]) == 2
    assert "train.inter" in capsys.readouterr().err
