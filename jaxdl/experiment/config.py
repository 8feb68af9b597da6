"""Experiment configs: load a `get_config()` file, apply `--config.KEY=VALUE` overrides.

A config is a small Python file whose `get_config()` returns an
``ml_collections.ConfigDict`` (the flax-examples convention)::

    config = load_config("experiments/simplenet.py")
    config = apply_overrides(config, {"optimizer.learning_rate": "3e-4", "epochs": "20"})
    flatten(config)["optimizer.learning_rate"]  # 0.0003

Override values are parsed as Python literals only (``ast.literal_eval``, never ``eval``); a bare
word that is not a literal is a string, and ``true``/``false``/``none`` in any case are
``True``/``False``/``None``. Checking overrides against the config lives in
:mod:`jaxdl.experiment.overrides`; :func:`apply_overrides` and
:data:`FREE_FORM_GROUPS` are re-exported here.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import pathlib
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxdl.errors import describe, input_error

_EXPERIMENT_DIR = pathlib.Path(__file__).resolve().parent
_REPO_EXPERIMENTS = _EXPERIMENT_DIR.parents[1] / "experiments"
_WORDS = {"true": True, "false": False, "none": None}
_module_ids = itertools.count()

__all__ = ["FREE_FORM_GROUPS", "apply_overrides", "config_to_dict", "default_config_path",
           "flatten", "load_config", "parse_value"]


def default_config_path() -> pathlib.Path:
    """The config used when `jaxdl train` gets no ``--config``.

    It lives inside the package (``jaxdl/experiment/default_config.py``), so it exists in a
    non-editable install too; ``experiments/simplenet.py`` re-exports it.

    Returns:
        The absolute path of ``jaxdl/experiment/default_config.py``.
    """
    return _EXPERIMENT_DIR / "default_config.py"


def _known_configs() -> list[str]:
    """Config files a user can pass: ``./experiments/*.py`` and the repository's experiments."""
    found: list[str] = []
    for folder in (pathlib.Path("experiments").resolve(), _REPO_EXPERIMENTS):
        for file in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            try:
                shown = str(file.relative_to(pathlib.Path.cwd()))
            except ValueError:
                shown = str(file)
            if not file.name.startswith("_") and shown not in found:
                found.append(shown)
    return found


def _config_fix() -> str:
    known = _known_configs()
    listing = f"one of {known}" if known else f"e.g. {default_config_path()}"
    return (
        f"pass --config with an existing experiment file, {listing}, "
        "or leave --config out to run the default experiment."
    )


def _where(exc: BaseException, path: pathlib.Path) -> str:
    """The innermost line of ``path`` in ``exc``'s traceback, as ' (file, line N)'."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f" ({path}, line {exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return f" ({path}, line {frames[-1].lineno})" if frames else ""


def load_config(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
    """Imports a config file and returns what its ``get_config()`` builds.

    Args:
        path: a ``.py`` file defining ``get_config() -> ml_collections.ConfigDict``.

    Returns:
        The ``ConfigDict`` returned by ``get_config()``.

    Raises:
        InputError: naming ``--config`` when the file is missing or not ``.py``, when it fails
            to import, has no ``get_config``, when ``get_config()`` raises, or when it returns
            something other than a ``ConfigDict``.

    Example:
        >>> config = load_config(default_config_path())
        >>> config.optimizer.name
        'adam'
    """
    file = pathlib.Path(path)
    expected = "a Python config file defining get_config()"
    if not file.exists():
        raise input_error(
            "--config", expected, f"{str(path)!r}, which does not exist", _config_fix()
        )
    if file.is_dir() or file.suffix != ".py":
        raise input_error("--config", expected, f"{str(path)!r}, not a .py file", _config_fix())
    file = file.resolve()

    name = f"jaxdl_config_{file.stem}_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise input_error(
            "--config", expected, f"{str(path)!r}, which cannot be imported", _config_fix()
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling in a config look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise input_error(
            "--config",
            "a config file that imports cleanly",
            f"{type(exc).__name__}: {exc}{_where(exc, file)}",
            f"fix the error in {path}.",
        ) from exc

    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise input_error(
            "--config",
            expected,
            f"{str(path)!r}, which has no get_config function",
            "define `def get_config(): return ml_collections.ConfigDict(...)` in it.",
        )
    try:
        config = get_config()
    except Exception as exc:
        raise input_error(
            "--config",
            "get_config() to return a config",
            f"{type(exc).__name__}: {exc}{_where(exc, file)}",
            f"fix get_config() in {path}.",
        ) from exc
    if not isinstance(config, ml_collections.ConfigDict):
        raise input_error(
            "--config",
            "get_config() to return an ml_collections.ConfigDict",
            describe(config),
            f"return ml_collections.ConfigDict(...) from get_config() in {path}.",
        )
    return config


def parse_value(text: str) -> Any:
    """Parses one override value: a Python literal, else the bare string.

    Args:
        text: the text after ``--config.KEY=``.

    Returns:
        ``True``/``False``/``None`` for ``true``/``false``/``none`` in any case; the value of a
        Python literal (numbers, quoted strings, tuples, lists, dicts, sets); otherwise ``text``.

    Example:
        >>> parse_value("3e-4"), parse_value("(64, 64)"), parse_value("adam"), parse_value("TRUE")
        (0.0003, (64, 64), 'adam', True)
    """
    stripped = text.strip()
    if stripped.lower() in _WORDS:
        return _WORDS[stripped.lower()]
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _items(config: Mapping[str, Any] | ml_collections.ConfigDict) -> list[tuple[str, Any]]:
    if isinstance(config, ml_collections.ConfigDict):
        return list(config.items(preserve_field_references=True))
    return list(config.items())


def flatten(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
    """The config's leaves under dotted keys, in the config's key order.

    Args:
        config: a ``ConfigDict`` (or nested mapping).

    Returns:
        ``{"optimizer.learning_rate": 0.001, ...}``; field references are resolved.

    Example:
        >>> flatten(ml_collections.ConfigDict({"a": 1, "b": {"c": (2, 3)}}))
        {'a': 1, 'b.c': (2, 3)}
    """
    flat: dict[str, Any] = {}
    for key, value in _items(config):
        if isinstance(value, ml_collections.FieldReference):
            value = value.get()
        if isinstance(value, ml_collections.ConfigDict | Mapping):
            for sub_key, sub_value in flatten(value).items():
                flat[f"{key}.{sub_key}"] = sub_value
        else:
            flat[str(key)] = value
    return flat


def _json_safe(value: Any) -> Any:
    if isinstance(value, ml_collections.FieldReference):
        value = value.get()
    if isinstance(value, ml_collections.ConfigDict | Mapping):
        return {str(k): _json_safe(v) for k, v in _items(value)}
    if isinstance(value, tuple | list | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "tolist"):  # NumPy scalars and arrays, without importing NumPy
        return _json_safe(value.tolist())
    return repr(value)


def config_to_dict(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-safe nested dict of the config, for writing ``config.json``.

    Tuples and sets become lists, NumPy values become Python values, anything else that JSON
    cannot hold becomes its ``repr``.

    Args:
        config: a ``ConfigDict`` (or nested mapping).

    Returns:
        A nested ``dict`` that ``json.dumps`` accepts.

    Example:
        >>> config_to_dict(ml_collections.ConfigDict({"model": {"features": (10, 1)}}))
        {'model': {'features': [10, 1]}}
    """
    return _json_safe(config)


# Last, not first: overrides.py uses parse_value and flatten from this module.
from jaxdl.experiment.overrides import FREE_FORM_GROUPS, apply_overrides  # noqa: E402
