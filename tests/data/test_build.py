"""Id mapping, entity table, de-duplication and inverse relations on small hand-made folders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from simkgcl.data import load_dataset
from simkgcl.errors import ConfigError, InputError, NotFoundError

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u10\tbook\t5\t100\n"
    "u2\tapple\t3\t200\n"
    "u2\tbook\t4\t300\n"
    "u2\tbook\t1\t400\n"  # duplicate pair: dropped, the first one (rating 4) kept
    "u10\tcar\t2\t500\n"
)
KG = (
    "head_id:token\trelation_id:token\ttail_id:token\n"
    "m.book\twritten_by\tm.author\n"
    "m.author\tborn_in\tm.city\n"  # touches no item: kept (multi-hop)
    "m.apple\tgenre\tm.fruit\n"
    "m.book\twritten_by\tm.author\n"  # duplicate triple
)
LINK = (
    "item_id:token\tentity_id:token\n"
    "book\tm.book\n"
    "apple\tm.apple\n"
    "car\tm.car\n"  # entity absent from the KG: warned and counted
    "ghost\tm.ghost\n"  # item without interactions
)


@pytest.fixture
def atomic(tmp_path, folder_of):
    return folder_of(tmp_path / "toy", {"toy.inter": INTER, "toy.kg": KG, "toy.link": LINK})


def test_atomic_ids_entities_and_counts(atomic):
    ds = load_dataset(atomic)
    # Natural token order: "u2" before "u10".
    assert list(ds.user_tokens) == ["u2", "u10"]
    assert list(ds.item_tokens) == ["apple", "book", "car"]
    assert len(ds.interactions) == 4
    assert ds.report["duplicate_interactions_removed"] == 1
    book = ds.item_ids(["book"])[0]
    row = np.flatnonzero((ds.interactions.users == 0) & (ds.interactions.items == book))[0]
    assert ds.interactions.ratings[row] == 4.0
    # Items are entities 0..2; KG-only entities follow in natural order.
    assert list(ds.entity_tokens) == ["m.apple", "m.book", "m.car", "m.author", "m.city", "m.fruit"]
    assert ds.n_triples == 3 and ds.report["duplicate_triples_removed"] == 1
    assert ds.report["kg_entities_in_file"] == 5
    assert ds.report["link_entities_absent_from_kg"] == 1
    assert any("do not occur in the .kg file" in w for w in ds.warnings)
    assert ds.report["link_rows_for_items_without_interactions"] == 1
    named = {
        (ds.entity_tokens[h], ds.relation_tokens[r], ds.entity_tokens[t]) for h, r, t in ds.triples
    }
    assert ("m.author", "born_in", "m.city") in named
    assert list(ds.item_linked) == [True, True, False]


def test_token_maps_round_trip(atomic):
    ds = load_dataset(atomic)
    assert list(ds.user_ids(ds.user_tokens)) == list(range(ds.n_users))
    assert list(ds.item_ids(ds.item_tokens)) == list(range(ds.n_items))
    assert list(ds.item_tokens[ds.item_ids(["car", "apple"])]) == ["car", "apple"]
    with pytest.raises(NotFoundError, match="ghost"):
        ds.item_ids(["ghost"])


def test_inverse_relations(atomic):
    ds = load_dataset(atomic, kg_reverse_r=True)
    assert ds.n_relations == 6 and ds.n_triples == 6
    assert list(ds.relation_tokens[3:]) == [t + "_inverse" for t in ds.relation_tokens[:3]]
    forward = {tuple(t) for t in ds.triples[ds.triples[:, 1] < 3]}
    backward = {(t, r - 3, h) for h, r, t in ds.triples[ds.triples[:, 1] >= 3]}
    assert forward == backward


def test_threshold_and_its_errors(atomic, tmp_path, folder_of):
    ds = load_dataset(atomic, threshold={"rating": 3})
    assert ds.interactions.ratings.min() >= 3
    # Rows below 3: car (2) and the repeated book row (1); the threshold runs before de-dup.
    assert ds.report["rows_below_rating_threshold_dropped"] == 2
    assert ds.report["duplicate_interactions_removed"] == 0
    assert list(ds.item_tokens) == ["apple", "book"]
    with pytest.raises(ConfigError, match="no rating column"):
        load_dataset(
            folder_of(tmp_path / "k", {"ratings_final.txt": "0 1 1\n"}), threshold={"rating": 4}
        )


def test_kgcn_shared_space_and_label_zero(tmp_path, folder_of):
    folder = folder_of(
        tmp_path / "kgcn",
        {
            "ratings_final.txt": "0\t0\t1\n0\t1\t0\n1\t1\t1\n1\t2\t1\n2\t5\t0\n",
            "kg_final.txt": "0\t0\t7\n2\t1\t7\n7\t0\t9\n",
        },
    )
    ds = load_dataset(folder)
    assert list(ds.user_tokens) == ["0", "1"]  # user 2 only has a negative label
    assert list(ds.item_tokens) == ["0", "1", "2"]
    assert ds.report["negative_labels_dropped"] == 2
    # Item 1 has no triple: it owns entity row 1 without a token. 7 and 9 are KG-only.
    assert list(ds.entity_tokens) == ["0", "", "2", "7", "9"]
    assert ds.triples.tolist() == [[0, 0, 3], [2, 1, 3], [3, 0, 4]]


def test_kgat_separate_tail_space(tmp_path, folder_of):
    folder = folder_of(
        tmp_path / "kgcl",
        {
            "train.txt": "0 0 1\n1 1 2\n",
            "test.txt": "0 2\n1\n",
            "kg.txt": "0 0 0\n1 0 0\n2 1 1\n9 1 0\n",
        },
    )
    shared = load_dataset(folder)
    # Shared space: tail 0 is item 0, tail 1 is item 1.
    assert shared.n_entities == 4 and shared.triples[0].tolist() == [0, 0, 0]
    separate = load_dataset(folder, kg_id_space="separate")
    assert list(separate.entity_tokens) == ["0", "1", "2", "9", "tail:0", "tail:1"]
    assert separate.triples.tolist() == [[0, 0, 4], [1, 0, 4], [2, 1, 5], [3, 1, 4]]
    assert separate.report["kg_heads_not_items"] == 1
    assert separate.report["user_lines_without_items"] == 1


def test_kgat_fixed_split_and_duplicates_across_files(tmp_path, folder_of):
    folder = folder_of(
        tmp_path / "kgat", {"train.txt": "0 1 2 2\n1 3\n", "test.txt": "0 1 4\n1 3\n"}
    )
    ds = load_dataset(folder)
    assert ds.report["duplicate_interactions_removed"] == 1  # 0-2 twice in train
    assert ds.report["eval_pairs_already_in_an_earlier_part_removed"] == 2  # 0-1 and 1-3
    split = ds.fixed_split
    assert split is not None and len(split.train) == 3 and len(split.test) == 1
    assert len(split.valid) == 0


def test_gzip_files_are_read_transparently(tmp_path):
    folder = tmp_path / "gz"
    folder.mkdir()
    with gzip.open(folder / "ratings_final.txt.gz", "wt") as handle:
        handle.write("0 0 1\n0 1 1\n1 1 1\n")
    ds = load_dataset(folder)
    assert len(ds.interactions) == 3 and ds.n_triples == 0


def test_path_on_disk_wins_over_bundled_name(tmp_path, monkeypatch, folder_of):
    folder_of(tmp_path / "lastfm-kg", {"ratings_final.txt": "0 0 1\n"})
    monkeypatch.chdir(tmp_path)
    assert load_dataset("lastfm-kg").n_users == 1
    assert load_dataset(None).n_users == 1872


def test_unknown_format_and_id_space_are_config_errors(atomic):
    with pytest.raises(ConfigError, match=r"data_format.*'csv'.*atomic \| kgat \| kgcn"):
        load_dataset(atomic, format="csv")
    with pytest.raises(ConfigError, match=r"kg_id_space.*'mixed'.*shared \| separate"):
        load_dataset(atomic, kg_id_space="mixed")


def test_forced_format_with_missing_files(atomic, tmp_path, folder_of):
    with pytest.raises(InputError, match="needs 'train.txt'"):
        load_dataset(atomic, format="kgat")
    kgcn = folder_of(tmp_path / "kgcn", {"ratings_final.txt": "0 1 1\n"})
    with pytest.raises(InputError, match="atomic layout needs '<name>.inter'"):
        load_dataset(kgcn, format="atomic")
