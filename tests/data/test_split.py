"""Splits: per-user ratios, disjointness, seeds, time order, fixed and carved validation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from simkgcl.data import load_dataset, split_dataset
from simkgcl.data.split import per_user_counts
from simkgcl.errors import ConfigError

RS = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user"}


def _pairs(part) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist(), strict=True))


def test_documented_per_user_counts():
    counts = per_user_counts(np.array([1, 2, 3, 10, 15, 30]), [0.8, 0.1, 0.1])
    assert counts.tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 1], [8, 1, 1], [13, 1, 1], [24, 3, 3]]
    assert per_user_counts(np.array([5]), [0.5, 0.5]).tolist() == [[3, 2]]


def test_rs_split_is_disjoint_complete_and_per_user(real):
    ds = real("lastfm-kg")
    split = split_dataset(ds, eval_args=RS, seed=2020)
    train, valid, test = _pairs(split.train), _pairs(split.valid), _pairs(split.test)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == _pairs(ds.interactions)
    sizes = np.bincount(ds.interactions.users, minlength=ds.n_users)
    expected = per_user_counts(sizes, [0.8, 0.1, 0.1])
    got = np.stack(
        [
            np.bincount(p.users, minlength=ds.n_users)
            for p in (split.train, split.valid, split.test)
        ],
        axis=1,
    )
    assert np.array_equal(got, expected)
    # Same sizes as the RecBole benchmark files made from the same data.
    assert (len(split.train), len(split.valid), len(split.test)) == (17_350, 1_907, 1_916)


def test_seed_changes_the_split_but_repeats_exactly(real):
    ds = real("lastfm-kg")
    a = split_dataset(ds, eval_args=RS, seed=1)
    b = split_dataset(ds, eval_args=RS, seed=1)
    c = split_dataset(ds, eval_args=RS, seed=2)
    assert a.test.items.tobytes() == b.test.items.tobytes()
    assert a.train.items.tobytes() == b.train.items.tobytes()
    assert a.test.items.tobytes() != c.test.items.tobytes()


def test_time_order_puts_the_latest_interactions_in_test(real):
    ds = real("ml-100k")
    split = split_dataset(ds, eval_args={**RS, "order": "TO"}, seed=0)
    last_train = np.full(ds.n_users, -np.inf)
    np.maximum.at(last_train, split.train.users, split.train.timestamps)
    first_test = np.full(ds.n_users, np.inf)
    np.minimum.at(first_test, split.test.users, split.test.timestamps)
    assert np.all(last_train <= first_test)


def test_time_order_needs_timestamps(real):
    with pytest.raises(ConfigError, match="needs timestamps"):
        split_dataset(real("lastfm-kg"), eval_args={**RS, "order": "TO"}, seed=0)


@pytest.mark.parametrize(
    "ratios, message",
    [
        ([0.8, 0.1], "sum to 1"),
        ([0.5, 0.2, 0.2, 0.1], "2 or 3"),
        ([0.0, 0.5, 0.5], "positive"),
        ([0.9, -0.1, 0.2], ">= 0"),
    ],
)
def test_bad_ratios(real, ratios, message):
    with pytest.raises(ConfigError, match=message):
        split_dataset(real("lastfm-kg"), eval_args={"split": {"RS": ratios}}, seed=0)


def test_fixed_split_wins_over_rs(real, caplog):
    ds = real("ml-100k", "splits")
    with caplog.at_level(logging.INFO):
        split = split_dataset(ds, eval_args={"split": {"RS": [0.5, 0.5]}}, seed=0)
    assert len(split.train) == len(ds.fixed_split.train)
    assert "eval_args.split is ignored" in caplog.text


def _kgat(folder_of, root):
    return load_dataset(
        folder_of(
            root,
            {
                "train.txt": "0 " + " ".join(map(str, range(20))) + "\n1 1 2 3\n2 4\n",
                "test.txt": "0 20 21\n1 5\n3 6\n",  # user 3 never trains; item 21 only in test
            },
        )
    )


def test_validation_carved_from_training(tmp_path, folder_of):
    ds = _kgat(folder_of, tmp_path / "k")
    split = split_dataset(ds, eval_args=RS, seed=3, valid_ratio=0.1)
    assert np.bincount(split.valid.users, minlength=3).tolist() == [2, 1, 0]
    assert not (_pairs(split.valid) & _pairs(split.train))
    assert len(split.train) + len(split.valid) == 24
    assert split.notes["test_users_unseen_in_train_dropped"] == 1
    assert split.notes["test_rows_of_unseen_users_dropped"] == 1
    assert split.notes["test_items_unseen_in_train_kept"] >= 2  # 20, 21 (and maybe carved ones)
    assert 3 not in split.test.users.tolist()
    again = split_dataset(ds, eval_args=RS, seed=3, valid_ratio=0.1)
    assert again.valid.items.tobytes() == split.valid.items.tobytes()


def test_valid_on_test_is_explicit_and_warned(tmp_path, folder_of, caplog):
    ds = _kgat(folder_of, tmp_path / "k")
    with caplog.at_level(logging.WARNING):
        split = split_dataset(ds, eval_args=RS, seed=3, valid_on_test=True)
    assert _pairs(split.valid) == _pairs(split.test)
    assert len(split.train) == 24
    assert "model selection" in caplog.text and "test set" in caplog.text
    with pytest.raises(ConfigError, match="already has a validation part"):
        split_dataset(_three_part(tmp_path, folder_of), eval_args=RS, seed=0, valid_on_test=True)


def _three_part(tmp_path, folder_of):
    return load_dataset(
        folder_of(
            tmp_path / "three",
            {
                "x.train.inter": "user_id:token\titem_id:token\n1\t1\n1\t2\n",
                "x.valid.inter": "user_id:token\titem_id:token\n1\t3\n",
                "x.test.inter": "user_id:token\titem_id:token\n1\t4\n",
            },
        )
    )


def test_benchmark_train_test_test(tmp_path, folder_of, caplog):
    _kgat(folder_of, tmp_path / "k")
    ds = load_dataset(tmp_path / "k", benchmark_filename=["train", "test", "test"])
    assert any("model selection then sees the test set" in w for w in ds.warnings)
    with caplog.at_level(logging.WARNING):
        split = split_dataset(ds, eval_args=RS, seed=0)
    assert _pairs(split.valid) == _pairs(split.test) and len(split.train) == 24
    assert "test set" in caplog.text
