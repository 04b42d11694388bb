"""``write_atomic`` output reads back into the very same dataset."""

from __future__ import annotations

import numpy as np
import pytest

from simkgcl.data import load_dataset, write_atomic


def assert_same(a, b):
    for attr in ("user_tokens", "item_tokens", "entity_tokens", "relation_tokens"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    assert np.array_equal(a.triples, b.triples)
    for col in ("users", "items", "ratings", "timestamps"):
        x, y = getattr(a.interactions, col), getattr(b.interactions, col)
        assert (x is None and y is None) or np.array_equal(x, y), col
    assert (a.fixed_split is None) == (b.fixed_split is None)
    if a.fixed_split is not None:
        for part in ("train", "valid", "test"):
            x, y = getattr(a.fixed_split, part), getattr(b.fixed_split, part)
            assert np.array_equal(x.users, y.users) and np.array_equal(x.items, y.items), part


@pytest.mark.parametrize("name", ["lastfm-kg", "ml-100k"])
def test_real_datasets_round_trip(real, tmp_path, name):
    ds = real(name)
    written = write_atomic(ds, tmp_path / name)
    assert {p.suffix for p in written} == {".inter", ".kg", ".link"}
    assert_same(ds, load_dataset(tmp_path / name))


def test_fixed_split_and_separate_space_round_trip(tmp_path, folder_of):
    folder = folder_of(
        tmp_path / "kgcl",
        {
            "train.txt": "0 0 1\n1 1 2\n2 3\n",
            "test.txt": "0 2\n1 3\n",
            "kg.txt": "0 0 10\n1 0 2\n2 1 1\n",
        },
    )
    ds = load_dataset(folder, kg_id_space="separate")
    written = write_atomic(ds, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["kgcl.inter", "kgcl.kg", "kgcl.link", "kgcl.test.inter", "kgcl.train.inter"]
    back = load_dataset(tmp_path / "out")
    assert_same(ds, back)
    assert back.layout == "atomic"


def test_inverse_relations_are_not_written(tmp_path):
    ds = load_dataset(None, kg_reverse_r=True)
    write_atomic(ds, tmp_path / "inv")
    assert_same(load_dataset(None), load_dataset(tmp_path / "inv"))
