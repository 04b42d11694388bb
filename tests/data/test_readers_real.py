"""Each reader on the real shared datasets: the figures stated in shared/datasets/README.md."""

from __future__ import annotations

import numpy as np
import pytest

from simkgcl.data import load_dataset, split_dataset
from simkgcl.data.loader import BUNDLED_DIR


def test_kgcn_lastfm_matches_readme(real):
    ds = real("lastfm-kg")
    assert ds.layout == "kgcn"
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (1872, 3846, 21173)
    assert (ds.n_entities, ds.n_relations, ds.n_triples) == (9366, 60, 15518)
    assert ds.report["negative_labels_dropped"] == 21173
    assert ds.report["duplicate_interactions_removed"] == 0
    assert ds.report["duplicate_triples_removed"] == 0
    # Ids were already 0-based and contiguous: they keep their value, item i is entity i.
    assert list(ds.user_tokens[:3]) == ["0", "1", "2"]
    assert ds.item_tokens[3845] == "3845"
    assert ds.entity_tokens[9365] == "9365"
    assert ds.fixed_split is None


def test_bundled_gzip_copy_equals_shared_files(real):
    bundled = load_dataset()
    assert bundled.files[0].startswith(str(BUNDLED_DIR))
    assert bundled.files[0].endswith(".gz")
    plain = real("lastfm-kg")
    assert np.array_equal(bundled.interactions.users, plain.interactions.users)
    assert np.array_equal(bundled.interactions.items, plain.interactions.items)
    assert np.array_equal(bundled.triples, plain.triples)
    assert load_dataset("lastfm-kg").n_triples == plain.n_triples


def test_atomic_ml100k_matches_readme(real):
    ds = real("ml-100k")
    assert ds.layout == "atomic"
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert (ds.n_relations, ds.n_triples) == (24, 91_631)
    assert ds.report["kg_entities_in_file"] == 34_628
    # Entity table: every item owns a row (84 have no link), KG-only entities follow.
    assert ds.n_entities == 1682 + 34_628 - 1598
    assert int(ds.item_linked.sum()) == 1598
    assert int(ds.item_linked[ds.interactions.items].sum()) == 97_554
    assert ds.report["link_entities_absent_from_kg"] == 0
    assert ds.interactions.ratings is not None and ds.interactions.timestamps is not None
    # Heads are not only items: triples whose item is the tail are kept too.
    assert int((ds.triples[:, 0] >= ds.n_items).sum()) == 91_631 - 72_592
    # Unlinked items have an entity row without a token and without triples.
    unlinked = np.flatnonzero(~ds.item_linked)
    assert len(unlinked) == 84 and set(ds.entity_tokens[unlinked]) == {""}


def test_atomic_threshold_keeps_high_ratings(shared):
    ds = load_dataset(shared / "datasets" / "ml-100k", threshold={"rating": 4})
    assert ds.interactions.ratings.min() >= 4
    dropped = ds.report["rows_below_rating_threshold_dropped"]
    assert dropped + len(ds.interactions) == 100_000
    assert 40_000 < dropped < 50_000


def test_atomic_benchmark_files_give_the_fixed_split(shared):
    ds = load_dataset(shared / "splits" / "ml-100k")
    assert ds.fixed_split is not None
    folder = shared / "splits" / "ml-100k"
    sizes = [
        len((folder / f"ml-100k.{p}.inter").read_text().splitlines()) - 1
        for p in ("train", "valid", "test")
    ]
    split = ds.fixed_split
    assert [len(split.train), len(split.valid), len(split.test)] == sizes
    assert len(ds.interactions) == 100_000


def test_atomic_and_kgcn_copies_of_lastfm_get_the_same_ids(shared, real):
    """The benchmark files of lastfm-kg hold the same data as the KGCN files: same ids."""
    kgcn = real("lastfm-kg")
    atomic = load_dataset(shared / "splits" / "lastfm-kg")
    for attr in ("user_tokens", "item_tokens", "entity_tokens", "relation_tokens"):
        assert np.array_equal(getattr(kgcn, attr), getattr(atomic, attr)), attr
    assert set(map(tuple, kgcn.triples)) == set(map(tuple, atomic.triples))

    def pairs(d):
        return set(zip(d.interactions.users.tolist(), d.interactions.items.tolist(), strict=True))

    assert pairs(kgcn) == pairs(atomic)


def test_kgat_amazon_book_matches_readme(real):
    ds = real("amazon-book")
    assert ds.layout == "kgat"
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (70_679, 24_915, 846_434)
    assert ds.fixed_split is not None
    assert (len(ds.fixed_split.train), len(ds.fixed_split.test)) == (652_514, 193_920)
    assert ds.n_triples == 0 and ds.n_entities == ds.n_items
    assert any("no knowledge graph" in w for w in ds.warnings)
    split = split_dataset(ds, eval_args={"order": "RO"}, seed=1)
    assert len(split.test) == 193_920
    assert len(split.train) + len(split.valid) == 652_514
    assert split.notes["test_users_unseen_in_train_dropped"] == 0


def test_kgat_with_a_synthetic_kg(shared, tmp_path):
    """A kg_final.txt beside train/test is read in the shared id space (item i is entity i)."""
    folder = tmp_path / "ab"
    folder.mkdir()
    for name in ("train.txt", "test.txt"):
        (folder / name).symlink_to(shared / "datasets" / "amazon-book" / name)
    rng = np.random.default_rng(0)
    heads = rng.integers(0, 24_915, 5000)
    tails = rng.integers(24_915, 30_000, 5000)
    rels = rng.integers(0, 39, 5000)
    np.savetxt(folder / "kg_final.txt", np.stack([heads, rels, tails], 1), fmt="%d")
    ds = load_dataset(folder)
    expected = len(set(zip(heads.tolist(), rels.tolist(), tails.tolist(), strict=True)))
    assert ds.n_triples == expected
    assert ds.report["duplicate_triples_removed"] == 5000 - expected
    assert ds.n_entities == ds.n_items + len(np.unique(tails))
    assert np.array_equal(
        ds.item_tokens[ds.triples[:, 0]], heads.astype(str)[~_dup_mask(heads, rels, tails)]
    )


def _dup_mask(*columns: np.ndarray) -> np.ndarray:
    seen: set = set()
    mask = []
    for row in zip(*(c.tolist() for c in columns), strict=True):
        mask.append(row in seen)
        seen.add(row)
    return np.array(mask)


@pytest.mark.parametrize("folder", ["lastfm-kg", "ml-100k", "amazon-book"])
def test_same_seed_same_split_bytes(real, folder):
    ds = real(folder)
    a = split_dataset(ds, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}}, seed=7)
    b = split_dataset(ds, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}}, seed=7)
    for part in ("train", "valid", "test"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.users.tobytes() == y.users.tobytes()
        assert x.items.tobytes() == y.items.tobytes()


def test_amazon_book_loads_in_seconds(shared):
    """846k interactions in the line-per-user layout: about 0.6 s here; 20 s is a loose guard."""
    import time

    start = time.perf_counter()
    ds = load_dataset(shared / "datasets" / "amazon-book")
    assert time.perf_counter() - start < 20
    assert len(ds.interactions) == 846_434
