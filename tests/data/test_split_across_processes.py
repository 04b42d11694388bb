"""The same seed gives byte-identical split files in two separate interpreters.

Each interpreter loads the data, splits it and writes every part as ``user<TAB>item`` lines in
the users' own tokens. The two runs get different ``PYTHONHASHSEED`` values, so any dependence
on set or dict order of strings (token numbering, de-duplication) would show up as a difference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from pathlib import Path
from simkgcl.data import load_dataset, split_dataset

data, seed, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
ds = load_dataset(None if data == "bundled" else data)
split = split_dataset(ds, seed=seed, eval_args={"split": {"RS": [0.7, 0.1, 0.2]}})
out.mkdir(parents=True)
for name in ("train", "valid", "test"):
    part = getattr(split, name)
    lines = [f"{ds.user_tokens[u]}\\t{ds.item_tokens[i]}\\n" for u, i in zip(part.users, part.items)]
    (out / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
"""


def _split_files(data: str, seed: int, out: Path, hash_seed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", SCRIPT, data, str(seed), str(out)], env=env,
                   check=True, capture_output=True, timeout=300)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _string_token_folder(root: Path) -> Path:
    """Atomic files with string tokens in scrambled order (ids come from sorting them)."""
    root.mkdir()
    rows = [f"u{(7 * k) % 23}\tbook-{(11 * k) % 37}\n" for k in range(400)]
    (root / "s.inter").write_text("user_id:token\titem_id:token\n" + "".join(rows))
    return root


@pytest.mark.parametrize("data", ["bundled", "strings"])
def test_same_seed_same_bytes_in_two_interpreters(tmp_path: Path, data: str) -> None:
    source = str(_string_token_folder(tmp_path / "s")) if data == "strings" else data
    first = _split_files(source, 11, tmp_path / "a", hash_seed="1")
    second = _split_files(source, 11, tmp_path / "b", hash_seed="2")
    assert set(first) == {"train.txt", "valid.txt", "test.txt"}
    assert all(first[name] for name in first)  # no empty part
    assert first == second
    other = _split_files(source, 12, tmp_path / "c", hash_seed="1")
    assert other["train.txt"] != first["train.txt"] and other["test.txt"] != first["test.txt"]
    # a different seed reshuffles who goes where, not what is there
    assert sorted(b"".join(other.values()).splitlines()) == sorted(
        b"".join(first.values()).splitlines())
