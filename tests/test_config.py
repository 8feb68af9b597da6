"""Tests for jaxdl.config: loading config files, literal overrides, JSON helpers."""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np
import pytest

from jaxdl.errors import InputError
from jaxdl.experiment import config as config_lib


@pytest.fixture
def base() -> ml_collections.ConfigDict:
    """A config shaped like the default experiment, fixed here so the tests do not follow it."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict({"name": "breast_cancer", "val_fraction": 0.15})
    c.model = ml_collections.ConfigDict({"name": "mlp", "features": (10, 10, 1)})
    c.model.dropout_rate = 0.0
    c.metrics = ("accuracy",)
    c.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3})
    c.optimizer.update(schedule="constant", warmup_steps=0, weight_decay=0.0, l2=0.0)
    c.optimizer.clip_norm = 0.0
    c.epochs = 10
    c.shuffle = True
    c.steps_per_dispatch = ml_collections.FieldReference("auto", field_type=(str, int))
    c.early_stopping = ml_collections.ConfigDict({"enabled": False, "patience": 5})
    return c


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- parse_value -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3e-4", 3e-4),
        ("10", 10),
        ("-1", -1),
        ("(64, 64, 1)", (64, 64, 1)),
        ("[1, 2]", [1, 2]),
        ("{'a': 1}", {"a": 1}),
        ("'123'", "123"),
        ("adam", "adam"),
        ("TRUE", True),
        ("false", False),
        ("None", None),
        ("none", None),
        ("", ""),
        ("[1, 2", "[1, 2"),
        ("__import__('os').getcwd()", "__import__('os').getcwd()"),  # never evaluated
        ("1 + 1", "1 + 1"),
    ],
)
def test_parse_value_literals_only(text, expected):
    value = config_lib.parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


# --- apply_overrides ---------------------------------------------------------------------------


def test_overrides_return_a_new_config(base):
    new = config_lib.apply_overrides(
        base,
        {
            "optimizer.learning_rate": "3e-4",
            "optimizer.name": "sgd",
            "epochs": "20",
            "model.features": "[64, 64, 1]",
            "shuffle": "False",
            "early_stopping.enabled": "true",
        },
    )
    assert new.optimizer.learning_rate == 3e-4
    assert new.optimizer.name == "sgd"
    assert new.epochs == 20
    assert new.model.features == (64, 64, 1)  # a list into a tuple field stays a tuple
    assert new.shuffle is False and new.early_stopping.enabled is True
    assert base.optimizer.learning_rate == 1e-3 and base.epochs == 10  # the input is untouched


def test_int_into_float_field_becomes_float(base):
    new = config_lib.apply_overrides(base, {"optimizer.learning_rate": "1"})
    assert new.optimizer.learning_rate == 1.0
    assert isinstance(new.optimizer.learning_rate, float)


def test_union_field_takes_each_declared_type(base):
    assert config_lib.apply_overrides(base, {"steps_per_dispatch": "8"}).steps_per_dispatch == 8
    assert config_lib.apply_overrides(base, {"steps_per_dispatch": "auto"}).steps_per_dispatch == (
        "auto"
    )
    with pytest.raises(InputError, match="a string or an int"):
        config_lib.apply_overrides(base, {"steps_per_dispatch": "1.5"})


def test_none_allowed_only_into_none_or_placeholder_fields():
    config = ml_collections.ConfigDict()
    config.limit = ml_collections.config_dict.placeholder(int)
    config.anything = None
    config.depth = 3
    new = config_lib.apply_overrides(config, {"limit": "5", "anything": "(1, 'a')"})
    assert new.limit == 5 and new.anything == (1, "a")
    assert config_lib.apply_overrides(new, {"limit": "none"}).limit is None
    with pytest.raises(InputError, match="an int"):
        config_lib.apply_overrides(config, {"limit": "fast"})
    with pytest.raises(InputError, match=r"'--config.depth'.*an int.*None"):
        config_lib.apply_overrides(config, {"depth": "None"})


def test_field_references_stay_linked():
    config = ml_collections.ConfigDict({"width": 8})
    config.head = ml_collections.ConfigDict({"width": config.get_ref("width")})
    new = config_lib.apply_overrides(config, {"width": "16"})
    assert new.head.width == 16 and config.head.width == 8


def test_frozen_and_unchecked_configs():
    frozen = ml_collections.FrozenConfigDict({"a": 1})
    assert config_lib.apply_overrides(frozen, {"a": "2"}).a == 2
    loose = ml_collections.ConfigDict({"a": 1}, type_safe=False)
    assert config_lib.apply_overrides(loose, {"a": "x"}).a == "x"


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("epoch", "'epochs'"),
        ("optimiser.name", "'optimizer.name'"),
        ("optimizer.lr", "'optimizer.learning_rate'"),
        ("optimizer.learning", "'optimizer.learning_rate'"),
        ("learning_rate", "'optimizer.learning_rate'"),
        ("model.feature", "'model.features'"),
    ],
)
def test_unknown_key_names_the_closest_key(base, key, suggestion):
    with pytest.raises(InputError) as info:
        config_lib.apply_overrides(base, {key: "1"})
    text = str(info.value)
    assert f"'--config.{key}'" in text
    assert f"did you mean {suggestion}" in text


def test_unknown_key_below_a_leaf_and_without_match(base):
    with pytest.raises(InputError, match=r"'--config.seed.x'.*did you mean 'seed'"):
        config_lib.apply_overrides(base, {"seed.x": "1"})
    with pytest.raises(InputError, match="the top-level keys are") as info:
        config_lib.apply_overrides(base, {"zzz": "1"})
    assert "did you mean" not in str(info.value)
    with pytest.raises(InputError, match="the keys under 'optimizer' are"):
        config_lib.apply_overrides(base, {"optimizer.zzzzzz": "1"})


@pytest.mark.parametrize(
    "key, text, expected, given",
    [
        ("epochs", "ten", "an int", "'ten' (str)"),
        ("epochs", "1.5", "an int", "1.5 (float)"),
        ("epochs", "true", "an int", "True (bool)"),
        ("shuffle", "1", "a bool", "1 (int)"),
        ("optimizer.learning_rate", "fast", "a float", "'fast' (str)"),
        ("model.features", "64", "a tuple", "64 (int)"),
        ("metrics", "accuracy", "a tuple", "'accuracy' (str)"),
        ("data.name", "123", "a string", "123 (int)"),
    ],
)
def test_type_mismatch_names_key_type_and_value(base, key, text, expected, given):
    with pytest.raises(InputError) as info:
        config_lib.apply_overrides(base, {key: text})
    message = str(info.value)
    assert f"'--config.{key}'" in message
    assert f"expected {expected}" in message
    assert f"got {given}" in message
    assert "Fix:" in message


def test_string_that_looks_like_a_number_can_be_quoted(base):
    with pytest.raises(InputError, match="quote a string"):
        config_lib.apply_overrides(base, {"data.name": "123"})
    assert config_lib.apply_overrides(base, {"data.name": "'123'"}).data.name == "123"


def test_a_group_cannot_be_set_to_a_value(base):
    with pytest.raises(InputError, match=r"'--config.optimizer'.*--config.optimizer\.\w+="):
        config_lib.apply_overrides(base, {"optimizer": "sgd"})


# --- load_config -------------------------------------------------------------------------------


def test_default_config_is_inside_the_package():
    path = config_lib.default_config_path()
    assert path.is_file() and path.parent == pathlib.Path(config_lib.__file__).parent
    assert isinstance(config_lib.load_config(path), ml_collections.ConfigDict)


def test_missing_config_lists_the_experiments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "experiments" / "tiny.py", "")
    with pytest.raises(InputError) as info:
        config_lib.load_config("nonexistent.py")
    text = str(info.value)
    assert "'--config'" in text and "nonexistent.py" in text and "does not exist" in text
    assert "experiments/tiny.py" in text


@pytest.mark.parametrize(
    "name, body, match",
    [
        ("conf.yaml", "a: 1", "not a .py file"),
        ("empty.py", "x = 1\n", "no get_config function"),
        ("broken.py", "def get_config(:\n", r"SyntaxError.*line 1"),
        ("raises.py", "def get_config():\n    return undefined_name\n", r"NameError.*line 2"),
        ("imports.py", "import not_a_module_xyz\n", "ModuleNotFoundError"),
        ("plain.py", "def get_config():\n    return {'a': 1}\n", "ml_collections.ConfigDict"),
    ],
)
def test_bad_config_files(tmp_path, name, body, match):
    path = write(tmp_path / name, body)
    with pytest.raises(InputError, match=match) as info:
        config_lib.load_config(path)
    assert "'--config'" in str(info.value)


def test_same_stem_files_load_independently(tmp_path):
    template = (
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict({{'a': {}}})\n"
    )
    first = write(tmp_path / "one" / "exp.py", template.format(1))
    second = write(tmp_path / "two" / "exp.py", template.format(2))
    assert config_lib.load_config(first).a == 1
    assert config_lib.load_config(str(second)).a == 2


# --- JSON helpers ------------------------------------------------------------------------------


def test_flatten_uses_dotted_keys(base):
    flat = config_lib.flatten(base)
    assert flat["optimizer.learning_rate"] == 1e-3
    assert flat["model.features"] == (10, 10, 1)
    assert flat["steps_per_dispatch"] == "auto"
    assert "optimizer" not in flat


def test_config_to_dict_is_json_safe(base):
    base.extra = ml_collections.ConfigDict({"scale": np.float32(0.5), "ids": {3, 1}})
    data = config_lib.config_to_dict(base)
    assert data["model"]["features"] == [10, 10, 1]
    assert data["metrics"] == ["accuracy"]
    assert data["extra"]["scale"] == 0.5 and type(data["extra"]["scale"]) is float
    assert json.loads(json.dumps(data)) == data


def test_population_hparams_is_a_free_form_group():
    from jaxdl.experiment import config as config_lib
    from jaxdl.experiment.default_config import get_config

    base = get_config()
    one = config_lib.apply_overrides(base, {
        "population.hparams.learning_rate": "{'log_grid': [1e-3, 1e-1]}",
        "population.hparams.b1": "[0.8, 0.9]"})
    assert one.population.hparams.learning_rate.log_grid == [1e-3, 1e-1]
    assert one.population.hparams.b1 == [0.8, 0.9]
    whole = config_lib.apply_overrides(
        base, {"population.hparams": "{'weight_decay': [0.0, 1e-4]}"})
    assert whole.population.hparams.to_dict() == {"weight_decay": [0.0, 1e-4]}
    with pytest.raises(InputError, match="a dict literal"):
        config_lib.apply_overrides(base, {"population.hparams": "[1, 2]"})


@pytest.mark.parametrize("path", sorted((pathlib.Path(__file__).parent.parent / "experiments")
                                        .glob("*.py")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path):
    config = config_lib.load_config(path)
    assert isinstance(config, ml_collections.ConfigDict) and config.epochs >= 1
    assert config.model.name and config.loss
