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

A config file may hold fewer keys than the defaults (they fill the rest in): its values are
checked against the defaults' types by :func:`check_types`, and
:func:`with_default_keys` lets an override set a key the file leaves out.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import itertools
import numbers
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

__all__ = ["FREE_FORM_GROUPS", "apply_overrides", "check_types", "config_to_dict",
           "default_config_path", "flatten", "load_config", "parse_value", "with_default_keys"]


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


def _exited(exc: SystemExit, file: pathlib.Path, path: str | os.PathLike[str]) -> Exception:
    """A config file that called ``sys.exit()``: an error, never the command's own exit
    (``jaxdl train`` would end with that code having done nothing)."""
    return input_error(
        "--config",
        "a config file that returns its config without exiting",
        f"a call to sys.exit({exc.code!r}){_where(exc, file)}",
        f"remove the sys.exit() from {path}: a config file only defines get_config().",
    )


def _config_file(path: str | os.PathLike[str], expected: str) -> pathlib.Path:
    """``path`` resolved, once it is an existing ``.py`` file."""
    file = pathlib.Path(path)
    why = None
    if not file.exists():
        why = "which does not exist"
    elif file.is_dir():
        why = "a directory"
    elif file.suffix != ".py":
        why = "not a .py file"
    if why is not None:
        raise input_error("--config", expected, f"{str(path)!r}, {why}", _config_fix())
    return file.resolve()


def load_config(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
    """Imports a config file and returns what its ``get_config()`` builds.

    Args:
        path: a ``.py`` file defining ``get_config() -> ml_collections.ConfigDict``.

    Returns:
        The ``ConfigDict`` returned by ``get_config()``.

    Raises:
        InputError: naming ``--config`` when the file is missing, a directory or not ``.py``,
            when it fails to import, has no ``get_config``, when ``get_config()`` raises or
            calls ``sys.exit()`` (at import too), or when it returns something other than a
            ``ConfigDict``.

    Example:
        >>> config = load_config(default_config_path())
        >>> config.optimizer.name
        'adam'
    """
    expected = "a Python config file defining get_config()"
    file = _config_file(path, expected)

    name = f"jaxdl_config_{file.stem}_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise input_error(
            "--config", expected, f"{str(path)!r}, which cannot be imported", _config_fix()
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling in a config look their module up
    # The config's own folder is importable, as a script's is: its model can live next to
    # it (model.name = "nets:MyNet"). Appended, so it never shadows an installed module.
    if str(file.parent) not in sys.path:
        sys.path.append(str(file.parent))
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        sys.modules.pop(name, None)
        raise _exited(exc, file, path) from None
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
    except SystemExit as exc:
        raise _exited(exc, file, path) from None
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


_KIND_NAMES = {bool: "True or False", int: "an int", float: "a number", str: "a string",
               tuple: "a tuple or list", list: "a tuple or list"}


def _fits(value: Any, kind: Any) -> bool:
    """Whether ``value`` can stand where the defaults hold a value of type ``kind``."""
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        number = numbers.Integral if kind is int else numbers.Real
        return isinstance(value, number) and not isinstance(value, bool)
    if kind is str:  # a name, or what a name stands for (a loss, a metric function)
        return isinstance(value, str) or callable(value)
    if kind in (tuple, list):
        return isinstance(value, tuple | list)
    return True


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(dict.fromkeys(_kind_name(k) for k in kind))
    return _KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


def _wrong_type(key: str, expected: str, value: Any, source: str | None) -> Exception:
    shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return input_error(
        "--config" if source else "config",
        f"{key} as {expected}",
        describe(shown) + (f" in {source}" if source else ""),
        f"set {key} to {expected.split(' (')[0]} in "
        f"{f'get_config() of {source}' if source else 'the config'}, or leave it out for the "
        "default.",
    )


def _check_group(defaults: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                 prefix: str, source: str | None, whole: tuple[str, ...]) -> None:
    for key, default in defaults.items(preserve_field_references=True):
        if key not in config:
            continue
        value, path = config[key], f"{prefix}{key}"
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                keys = ", ".join(list(default)[:4])
                raise _wrong_type(path, f"a group of keys ({keys}, ...)", value, source)
            if path == "model" and "name" not in value:
                raise _wrong_type(path, "a group with a 'name' (a registered model) and the "
                                  "model's keywords", value, source)
            if path not in whole:
                _check_group(default, value, path + ".", source, whole)
            continue
        if isinstance(default, ml_collections.FieldReference):
            kind, default = default.get_type(), default.get()
        else:
            kind = type(default)
        if default is not None and not _fits(value, kind):
            raise _wrong_type(path, f"{_kind_name(kind)} (the default is {default!r})", value,
                              source)


def check_types(config: ml_collections.ConfigDict, source: str | None = None) -> None:
    """Checks each value of a config against the type of the default it replaces.

    Keys the config leaves out (the defaults fill them in) and keys the defaults lack are
    not checked; names, callables and the keys of ``model`` and ``population.hparams``
    (which are the user's) are left to the code that reads them; an int may stand for a
    float.

    Args:
        config: a config as loaded, or completed from the defaults.
        source: the config file it came from (named in the error), or None.

    Raises:
        InputError: naming ``--config`` (``config`` without ``source``), the key, the type
            expected and the value given, for the first value of the wrong type.
    """
    from jaxdl.experiment.default_config import get_config
    from jaxdl.experiment.settings import WHOLE_GROUPS

    _check_group(get_config(), config, "", source, WHOLE_GROUPS)


def with_default_keys(config: ml_collections.ConfigDict, keys: list[str]
                      ) -> ml_collections.ConfigDict:
    """A copy of ``config`` given, for each dotted key of ``keys`` it lacks, the defaults'
    entry there, so that ``--config.KEY`` can set a key a short config file leaves out.

    The keys inside a ``model`` the file defines are its constructor's: never filled in.
    """
    from jaxdl.experiment.default_config import get_config
    from jaxdl.experiment.settings import WHOLE_GROUPS

    new, defaults = copy.deepcopy(config), get_config()
    for key in keys:
        node, default, path = new, defaults, ""
        for part in key.split("."):
            if (not isinstance(default, ml_collections.ConfigDict) or part not in default
                    or not isinstance(node, ml_collections.ConfigDict) or path in WHOLE_GROUPS):
                break
            if part not in node:
                slot = dict(default.items(preserve_field_references=True))[part]
                with node.unlocked():
                    node[part] = copy.deepcopy(slot)
                break
            node, default, path = node[part], default[part], f"{path}{'.' * bool(path)}{part}"
    return new


# Last, not first: overrides.py uses parse_value and flatten from this module.
from jaxdl.experiment.overrides import FREE_FORM_GROUPS, apply_overrides  # noqa: E402
