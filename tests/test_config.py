"""Config: precedence of the layers, overrides parsed as YAML, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from simkgcl.config import Config, parse_override
from simkgcl.errors import ConfigError
from simkgcl.models import available_models


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_seed_settings_except_simkgcls_chosen_ones() -> None:
    cfg = Config()
    assert cfg["model"] == "simkgcl" and cfg["dataset"] == "lastfm-kg"
    assert cfg["epochs"] == 300 and cfg["train_batch_size"] == 2048
    # SimKGCL's own step size (chosen on validation, issue 13); every other model: the seed's
    assert cfg["learner"] == "adam" and cfg["learning_rate"] == 6.05e-3
    assert Config({"model": "lightgcn"})["learning_rate"] == 1e-3
    assert cfg["neg_sampling"] == {"uniform": 1} and cfg["clip_grad_norm"] is None
    assert cfg["eval_args"] == {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                                "group_by": "user", "mode": "full"}
    assert cfg["metrics"] == ["Recall", "NDCG"] and cfg["topk"] == [10, 20, 50]
    assert cfg["valid_metric"] == "NDCG@20" and cfg["seed"] == 2020
    # the model's own defaults are merged in
    assert cfg["cl_rate"] == 0.119 and cfg["ig_drop_rate"] == 0.373 and cfg["tau"] == 0.2
    # the seed's values are one file away
    seed = Config(files=[Path(__file__).parents[1] / "configs" / "simkgcl.yaml"])
    assert (seed["learning_rate"], seed["cl_rate"], seed["ig_drop_rate"]) == (1e-3, 0.5, 0.5)
    # patience waits 25 epochs (measured choice); no time limit, torch's own thread count
    assert cfg["stopping_warmup"] == 25 and cfg["time_budget"] is None and cfg["threads"] is None
    # the seed's stopping rule is one setting away: the shipped seed configs state it
    for model in ("bpr", "lightgcn", "simkgcl"):
        seed_cfg = Config(files=[Path(__file__).parents[1] / "configs" / f"{model}.yaml"])
        assert seed_cfg["stopping_warmup"] == 0


def test_layers_in_order(tmp_path: Path) -> None:
    a = _yaml(tmp_path, "a.yaml", "model: lightgcn\nepochs: 7\nlearning_rate: 0.01\nn_layers: 2\n")
    b = _yaml(tmp_path, "b.yaml", "epochs: 9\n")
    cfg = Config(files=[a, b], overrides=["learning_rate=0.002"])
    assert cfg["model"] == "lightgcn"
    assert cfg["epochs"] == 9  # later file wins
    assert cfg["learning_rate"] == 0.002  # key=value beats files
    assert cfg["n_layers"] == 2  # file beats model default
    assert cfg["reg_weight"] == 1e-5  # model default where nobody said otherwise


def test_values_and_keywords_sit_between_files_and_overrides(tmp_path: Path) -> None:
    f = _yaml(tmp_path, "f.yaml", "epochs: 3\n")
    cfg = Config({"epochs": 4}, files=[f], model="bpr", overrides={"model": "bpr"})
    assert cfg["epochs"] == 4 and cfg["model"] == "bpr"
    assert Config({"epochs": 4}, overrides=["epochs=5"])["epochs"] == 5


def test_dotted_override_reaches_into_eval_args() -> None:
    cfg = Config(overrides=["eval_args.order=TO", "eval_args.split.RS=[0.7,0.1,0.2]"])
    assert cfg["eval_args"]["order"] == "TO"
    assert cfg["eval_args"]["split"] == {"RS": [0.7, 0.1, 0.2]}
    assert cfg["eval_args"]["group_by"] == "user"  # untouched sub-keys are kept


def test_partial_eval_args_in_a_file_keeps_the_rest(tmp_path: Path) -> None:
    f = _yaml(tmp_path, "f.yaml", "eval_args:\n  order: TO\n")
    assert Config(files=[f])["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]}


def test_override_values_are_yaml_never_code() -> None:
    assert parse_override("topk=[5, 10]") == ("topk", [5, 10])
    assert parse_override("clip_grad_norm={max_norm: 5}") == ("clip_grad_norm", {"max_norm": 5})
    assert parse_override("dataset=__import__('os')") == ("dataset", "__import__('os')")
    assert Config(overrides=["learning_rate=1e-3"])["learning_rate"] == 1e-3  # YAML reads a str
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("epochs")


def test_unknown_key_names_the_closest_valid_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        Config(overrides=["epoch=3"])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        Config({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match="'eval_args.orderr'.*did you mean 'eval_args.order'"):
        Config(overrides=["eval_args.orderr=TO"])


def test_unknown_key_from_a_file_names_the_file(tmp_path: Path) -> None:
    f = _yaml(tmp_path, "bad.yaml", "stoping_step: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*did you mean 'stopping_step'"):
        Config(files=[f])


def test_key_of_another_model_is_explained() -> None:
    # kg_view is SimKGCL's alone (cl_rate is KGCL's too since kgcl joined the registry)
    with pytest.raises(ConfigError, match="belongs to model 'simkgcl'.*'bpr'"):
        Config(model="bpr", kg_view="pure")
    # a key of several models names them all
    from simkgcl.models import available_models, get_model_class

    owners = [m for m in available_models() if "cl_rate" in get_model_class(m).keys]
    with pytest.raises(ConfigError, match="belongs to models .*'bpr'") as info:
        Config(model="bpr", cl_rate=0.1)
    assert len(owners) > 1 and all(repr(o) in str(info.value) for o in owners)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("epochs", -1, "an integer >= 0"),
        ("epochs", 2.5, "an integer"),
        ("learning_rate", 0, "a number > 0"),
        ("learning_rate", "fast", "a number"),
        ("learner", "lbfgs", "adam | adamw | sgd | adagrad | rmsprop"),
        ("metrics", ["Recall", "AUC"], "Recall, NDCG, MRR, Hit, Precision, MAP, ItemCoverage"),
        ("valid_metric", "NDCG", "METRIC@K"),
        ("device", "tpu", "auto | cpu | cuda | cuda:N"),
        ("neg_sampling", {"dynamic": 1}, "{uniform: N} or {popularity: N}"),
        ("clip_grad_norm", {"max_norm": -1}, "> 0"),
        ("show_progress", "yes", "true or false"),
        ("eval_args", {"mode": "uni100"}, "full"),
        ("eval_args", {"split": {"RS": [0.5, 0.1, 0.1]}}, "sum"),
        ("kg_id_space", "mixed", "shared | separate"),
        ("embedding_size", "big", "an integer"),  # a model key, with its own range
        ("embedding_size", 0, "an integer >= 1"),
        ("n_layers", -1, "an integer >= 1"),
        ("tau", 0, "a number > 0"),
        ("kg_drop_rate", 1.0, "a number in [0.0, 1.0)"),
        ("kg_view", "mixed", "fused | pure"),
        ("stopping_warmup", -1, "an integer >= 0"),
        ("time_budget", 0, "a number > 0"),
        ("threads", 0, "an integer >= 1"),
    ],
)
def test_bad_values_say_what_is_allowed(key: str, value, allowed: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        Config({key: value})
    assert allowed in str(info.value)


def test_valid_metric_must_use_a_computed_k() -> None:
    with pytest.raises(ConfigError, match="K=30.*not in topk"):
        Config(valid_metric="NDCG@30")
    assert Config(valid_metric="recall@10")["valid_metric"] == "Recall@10"


def test_unknown_model_lists_the_models() -> None:
    with pytest.raises(ConfigError, match="bpr | lightgcn | simkgcl"):
        Config(model="no-such-model")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = Config(model="lightgcn", epochs=3, overrides=["eval_args.order=TO"])
    cfg.save(tmp_path / "config.yaml")
    again = Config.load(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.replace(epochs=5)["epochs"] == 5 and again["epochs"] == 3


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Config(files=[tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config(files=[_yaml(tmp_path, "x.yaml", "epochs: [1,\n")])
    with pytest.raises(ConfigError, match="mapping"):
        Config(files=[_yaml(tmp_path, "y.yaml", "- 1\n- 2\n")])


def test_shipped_config_files_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("bpr", "lightgcn", "simkgcl"):
        cfg = Config(files=[root / f"{name}.yaml"])
        assert cfg["model"] == name and cfg["valid_metric"] == "NDCG@20"


def test_shipped_configs_load() -> None:
    """Every YAML under configs/ (seed and tuned) is a valid config for its model."""
    root = Path(__file__).parents[1] / "configs"
    files = sorted(root.glob("*.yaml")) + sorted((root / "tuned").glob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        cfg = Config(files=[path])
        assert cfg["model"] in available_models(), path
        assert cfg["model"] == path.stem.split("-")[0], path  # <model>[-<dataset>].yaml


@pytest.mark.parametrize(("model", "key", "value"),
                         [("lightgcn", "n_layers", -1), ("bpr", "embedding_size", 0),
                          ("lightgcn", "reg_weight", -1e-3), ("bpr", "embedding_size", True)])
def test_every_model_key_has_its_range(model: str, key: str, value) -> None:
    with pytest.raises(ConfigError, match=key):
        Config(model=model, **{key: value})


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "simkgcl"])
def test_every_key_says_what_it_allows(model: str) -> None:
    """--list-keys and the error messages state each key's range; none may be silent."""
    from simkgcl.config import available_keys

    silent = [key for key, spec in available_keys(model).items() if not spec.allowed]
    assert not silent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"epochs: 3\nlearner: \"adam\xe9\"\n",
         ":2: the config file is not UTF-8 text (byte 0xe9); save it as UTF-8"),
        (b"epochs: [1,\nx: 2\n", ":3: not valid YAML: while parsing a flow sequence, "
         "expected ',' or ']', but got '<stream end>' (opened on line 1)"),
        (b"epochs: 3\nx: \"\x01\"\n", ":2: not valid YAML: unacceptable character #x0001"),
        (b"a: 1\n a: 2\n", ":2: not valid YAML: mapping values are not allowed here"),
    ],
)
def test_an_unreadable_config_file_is_one_line_naming_file_and_line(tmp_path: Path, capsys,
                                                                     content: bytes,
                                                                     expected: str) -> None:
    from simkgcl.cli import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        Config(files=[path])
    assert str(info.value).startswith(f"{path}{expected}")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}{expected}") and err.count("\n") == 1


def test_a_folder_or_a_broken_override_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a config file, found a folder"):
        Config(files=[tmp_path])
    with pytest.raises(ConfigError) as info:
        Config(overrides=["epochs=[1,"])
    assert "\n" not in str(info.value) and "'epochs'" in str(info.value)


def test_a_search_space_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    from simkgcl.tuning.space import load_space

    path = tmp_path / "space.yaml"
    path.write_bytes(b"learning_rate: {type: float, low: 1e-4, high: 1e-2}  # \xff\n")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert str(info.value) == (f"{path}:1: the search space file is not UTF-8 text (byte 0xff); "
                               "save it as UTF-8")
