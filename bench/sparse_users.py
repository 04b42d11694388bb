"""Derive a sparse-user benchmark from a fixed split: a random share of users keep only 1–3
training interactions; validation, test and the KG are unchanged (issue 17).

    python bench/sparse_users.py ../shared/splits/ml-100k ../shared/splits/ml-100k-sparse \
        --share 0.5 --keep 1 3 --seed 2020

Input: a folder of RecBole atomic files with a fixed split, ``<name>.{train,valid,test}.inter``
plus ``<name>.kg`` / ``<name>.link`` (the layout of ``../shared/splits/*``). Output: the same
layout under the output folder's name, ``<out>.{train,valid,test}.inter``, ``.kg``, ``.link``,
and ``sparse_users.json`` (what was done: parameters, counts, SHA-256 of every file).

What is drawn (``numpy.random.default_rng(seed)``, so the same arguments give the same files
byte for byte): the users of the training file in sorted token order are permuted and the first
``round(share x n_users)`` become *sparse*; each sparse user draws ``k`` uniformly from
``keep_min..keep_max`` and keeps ``k`` of its training rows drawn without replacement (all of them
if it has ``k`` or fewer). Kept rows stay in their original order and byte-identical; every other
file is copied unchanged, so a sparse user's validation and test items are those of the source.
An item whose every training row was dropped stays in the catalogue (through the other files) with
no training interaction, as the loader allows for fixed splits.

Writing is atomic: everything goes into a temporary folder beside ``out`` that is renamed into
place only when complete; an existing ``out`` is refused unless ``--overwrite``.
Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("train", "valid", "test")
OTHER = ("kg", "link")


class BenchInputError(Exception):
    """Bad input: reported as one line, exit 2."""


def _source_files(src: Path) -> tuple[str, dict[str, Path]]:
    """The split's name and its files (``train``/``valid``/``test`` required, kg/link optional)."""
    trains = sorted(src.glob("*.train.inter"))
    if len(trains) != 1:
        raise BenchInputError(f"{src}: expected exactly one <name>.train.inter file, found "
                              f"{len(trains)}")
    name = trains[0].name.removesuffix(".train.inter")
    files = {p: src / f"{name}.{p}.inter" for p in PARTS}
    files.update({k: src / f"{name}.{k}" for k in OTHER if (src / f"{name}.{k}").is_file()})
    for part in PARTS:
        if not files[part].is_file():
            raise BenchInputError(f"{files[part]}: missing (a fixed split needs train, valid "
                                  "and test files)")
    return name, files


def _user_column(path: Path, header: str) -> int:
    fields = header.rstrip("\r\n").split("\t")
    for j, field in enumerate(fields):
        if field.split(":", 1)[0] == "user_id":
            return j
    raise BenchInputError(f"{path}:1: expected a 'user_id:token' column in the header, got "
                          f"{header.strip()!r}")


def sparsify_rows(users: list[str], *, share: float, keep_min: int, keep_max: int,
                  seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """Which training rows survive (a boolean mask over ``users``, one entry per row), and the
    number of training rows each sparse user kept (by user token). See the module docstring."""
    rng = np.random.default_rng(seed)
    tokens = np.asarray(users, dtype=str)
    unique = np.unique(tokens)  # sorted: the draw does not depend on the file's row order
    n_sparse = int(round(share * len(unique)))
    sparse = unique[rng.permutation(len(unique))[:n_sparse]]
    keep = np.ones(len(tokens), dtype=bool)
    kept: dict[str, int] = {}
    order = np.argsort(tokens, kind="stable")
    starts = np.searchsorted(tokens[order], sparse, side="left")
    ends = np.searchsorted(tokens[order], sparse, side="right")
    for user, lo, hi in zip(sparse, starts, ends, strict=True):
        k = int(rng.integers(keep_min, keep_max + 1))
        rows = order[lo:hi]
        if len(rows) > k:
            keep[rows] = False
            keep[rng.choice(rows, size=k, replace=False)] = True
        kept[str(user)] = min(k, len(rows))
    return keep, kept


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(src: Path, out: Path, *, share: float, keep_min: int, keep_max: int, seed: int,
          overwrite: bool = False) -> dict[str, Any]:
    """Write the sparse split of ``src`` to ``out``; returns the manifest it also writes."""
    if not 0.0 <= share <= 1.0:
        raise BenchInputError(f"--share must lie in [0, 1], got {share}")
    if not 1 <= keep_min <= keep_max:
        raise BenchInputError(f"--keep needs 1 <= MIN <= MAX, got {keep_min} {keep_max}")
    if not src.is_dir():
        raise BenchInputError(f"{src}: not a folder")
    if out.exists() and not overwrite:
        raise BenchInputError(f"{out}: exists (use --overwrite to replace it)")
    name, files = _source_files(src)
    lines = files["train"].read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        raise BenchInputError(f"{files['train']}: empty file")
    column = _user_column(files["train"], lines[0])
    users = []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) <= column:
            raise BenchInputError(f"{files['train']}:{n}: expected at least {column + 1} "
                                  f"tab-separated fields, got {len(fields)}")
        users.append(fields[column])
    keep, kept = sparsify_rows(users, share=share, keep_min=keep_min, keep_max=keep_max,
                               seed=seed)
    new = out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{new}.tmp-", dir=out.parent))
    try:
        train = lines[0] + "".join(line for line, k in zip(lines[1:], keep, strict=True) if k)
        (stage / f"{new}.train.inter").write_text(train, encoding="utf-8")
        for part, path in files.items():
            if part != "train":
                suffix = f"{part}.inter" if part in PARTS else part
                shutil.copyfile(path, stage / f"{new}.{suffix}")
        by_k = {str(k): sum(1 for v in kept.values() if v == k)
                for k in range(1, keep_max + 1)}
        manifest = {
            "source": str(src.resolve()), "source_name": name, "name": new,
            "seed": seed, "share": share, "keep": [keep_min, keep_max],
            "users": len(set(users)), "sparse_users": len(kept),
            "sparse_users_by_kept_rows": by_k,
            "train_rows": {"source": len(users), "kept": int(keep.sum())},
            "command": (f"python bench/sparse_users.py {src} {out} --share {share} "
                        f"--keep {keep_min} {keep_max} --seed {seed}"),
            "sha256": {p.name: _sha256(p) for p in sorted(stage.iterdir())},
        }
        (stage / "sparse_users.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                                 encoding="utf-8")
        for p in stage.iterdir():  # durable before the rename makes the folder visible
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            old = out.with_name(f".{new}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder of a fixed atomic split")
    parser.add_argument("out", type=Path, help="output folder (its name names the files)")
    parser.add_argument("--share", type=float, default=0.5,
                        help="share of the training users made sparse (default 0.5)")
    parser.add_argument("--keep", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"),
                        help="training rows a sparse user keeps, drawn uniformly (default 1 3)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.source, args.out, share=args.share, keep_min=args.keep[0],
                         keep_max=args.keep[1], seed=args.seed, overwrite=args.overwrite)
    except (BenchInputError, OSError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("name", "users", "sparse_users",
                                               "sparse_users_by_kept_rows", "train_rows")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
