"""The data settings have one rule each: the config and the data layer agree on every value."""

from __future__ import annotations

import re

import numpy as np
import pytest

from simkgcl.config import Config
from simkgcl.data import load_dataset, split_dataset
from simkgcl.errors import ConfigError

INTER = "user_id:token\titem_id:token\trating:float\n" + "".join(
    f"u{u}\ti{i}\t{(u + i) % 5 + 1}\n" for u in range(4) for i in range(10)
)


@pytest.fixture
def atomic(tmp_path, folder_of):
    return folder_of(tmp_path / "toy", {"toy.inter": INTER})


def _config_error(key, value) -> str:
    """The config's message, less the note that says where the value was set."""
    with pytest.raises(ConfigError) as info:
        Config({key: value})
    message = str(info.value)
    assert message.endswith(" (from the values given)")
    return message.removesuffix(" (from the values given)")


def _data_error(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("valid_ratio", 1.0, r"\[0.0, 1.0\)"),
        ("valid_ratio", -0.1, r"\[0.0, 1.0\)"),
        ("eval_args", {"mode": "uni100"}, "full"),
        ("eval_args", {"ordr": "TO"}, "did you mean 'eval_args.order'"),
        ("eval_args", {"order": "XO"}, "RO .* TO"),
        ("eval_args", {"group_by": "item"}, "user | none"),
        ("eval_args", {"split": {"RS": [0.5, 0.1, 0.1]}}, "sum to 1"),
        ("eval_args", {"split": {"RS": [0.0, 0.5, 0.5]}}, "positive training ratio"),
        ("eval_args", {"split": {"RS": [0.9, float("nan"), 0.1]}}, ">= 0"),
    ],
)
def test_split_settings_have_one_rule(atomic, key, value, expected) -> None:
    """Config and split_dataset refuse the same values with the same message."""
    ds = load_dataset(atomic)
    from_config = _config_error(key, value)
    from_data = _data_error(lambda: split_dataset(ds, **{key: value}))
    assert from_config == from_data
    assert key in from_config
    assert re.search(expected, from_config), from_config


@pytest.mark.parametrize(
    ("key", "argument", "value"),
    [
        ("threshold", "threshold", {"price": 3}),
        ("threshold", "threshold", {"rating": 3, "timestamp": 1}),
        ("threshold", "threshold", {"rating": "high"}),
        ("benchmark_filename", "benchmark_filename", ["train", "train"]),
        ("benchmark_filename", "benchmark_filename", ["train", "valid", "test", "x"]),
        ("data_format", "format", "csv"),
        ("kg_id_space", "kg_id_space", "mixed"),
    ],
)
def test_reading_settings_have_one_rule(atomic, key, argument, value) -> None:
    """A value the reader refuses is refused by the config too, before any file is read."""
    from_config = _config_error(key, value)
    from_data = _data_error(lambda: load_dataset(atomic, **{argument: value}))
    assert from_config == from_data
    assert key in from_config


def test_valid_ratio_zero_means_no_validation_part(tmp_path, folder_of) -> None:
    """0 is allowed everywhere: the split then has no validation part (the trainer keeps the
    last model); before, the config refused what the split accepted."""
    assert Config(valid_ratio=0)["valid_ratio"] == 0.0
    ds = load_dataset(folder_of(tmp_path / "k", {"train.txt": "0 1 2 3 4\n1 2 3 4\n",
                                                 "test.txt": "0 5\n1 5\n"}))
    split = split_dataset(ds, seed=0, valid_ratio=0)
    assert len(split.valid) == 0 and len(split.train) == 7  # 4 + 3 items
    carved = split_dataset(ds, seed=0, valid_ratio=0.5)
    assert len(carved.valid) == 3 and len(carved.train) == 4  # floor(0.5 * 4) + floor(0.5 * 3)


def test_partial_eval_args_take_the_same_defaults(atomic) -> None:
    """From Python, missing eval_args sub-keys take the config's defaults (lower-case order
    too): the same split as the full default mapping."""
    ds = load_dataset(atomic)
    full = split_dataset(ds, eval_args=Config()["eval_args"], seed=5)
    partial = split_dataset(ds, eval_args={"order": "ro"}, seed=5)
    for a, b in ((full.train, partial.train), (full.valid, partial.valid),
                 (full.test, partial.test)):
        assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
