"""Experiment configs: load a `get_config()` file, apply `--config.KEY=VALUE` overrides.

A config is a small Python file whose `get_config()` returns an
``ml_collections.ConfigDict`` (the flax-examples convention)::

    config = load_config("experiments/simplenet.py")
    config = apply_overrides(config, {"optimizer.learning_rate": "3e-4", "epochs": "20"})
    flatten(config)["optimizer.learning_rate"]  # 0.0003

Override values are parsed as Python literals only (``ast.literal_eval``, never ``eval``); a bare
word that is not a literal is a string, and ``true``/``false``/``none`` in any case are
``True``/``False``/``None``. Every override is checked against the config: an unknown key names
the closest existing ones, and a value of the wrong type names the expected type.

A field that accepts several types (say ``"auto"`` or a number of steps) is declared with a tuple
``field_type``: ``ml_collections.FieldReference("auto", field_type=(str, int))``; a field declared
with ``field_type=object`` accepts any literal.
"""

from __future__ import annotations

import ast
import copy
import difflib
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

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
_REPO_EXPERIMENTS = _PACKAGE_DIR.parent / "experiments"
_WORDS = {"true": True, "false": False, "none": None}
_module_ids = itertools.count()
_TYPE_NAMES = {bool: "a bool", int: "an int", float: "a float", str: "a string"}
_TYPE_NAMES |= {tuple: "a tuple", list: "a list", dict: "a dict"}
_EXAMPLES = {bool: True, int: 1, float: 0.1, str: "text", tuple: (1, 2), list: [1, 2]}


def default_config_path() -> pathlib.Path:
    """The config used when `jaxdl train` gets no ``--config``.

    It lives inside the package (``jaxdl/default_config.py``), so it exists in a non-editable
    install too; ``experiments/simplenet.py`` re-exports it.

    Returns:
        The absolute path of ``jaxdl/default_config.py``.
    """
    return _PACKAGE_DIR / "default_config.py"


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


def _type_name(field_type: Any) -> str:
    if isinstance(field_type, tuple):
        return " or ".join(_type_name(t) for t in field_type)
    return _TYPE_NAMES.get(field_type, getattr(field_type, "__name__", str(field_type)))


def _cast(value: Any, field_type: type) -> tuple[bool, Any]:
    """(accepted, converted value) for one field type; stricter than ConfigDict about bools."""
    if field_type is object:
        return True, value
    if field_type is bool:
        return isinstance(value, bool), value
    if field_type is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if field_type is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if field_type in (tuple, list):
        ok = isinstance(value, tuple | list)
        return ok, field_type(value) if ok else value
    if isinstance(field_type, type):
        return isinstance(value, field_type), value
    return False, value


def _example(field_type: Any, current: Any) -> str:
    """A literal of the field's type to show in a fix, quoted for a shell where needed."""
    if current is None:
        first = field_type[0] if isinstance(field_type, tuple) else field_type
        current = _EXAMPLES.get(first)
    if isinstance(current, str) and current.isidentifier():
        return current
    if isinstance(current, bool) or current is None:
        return str(current).lower()
    if isinstance(current, int | float):
        return repr(current)
    return f'"{current!r}"'  # tuples, lists, quoted strings: shell-quoted


def _check_value(key: str, slot: Any, value: Any) -> Any:
    """Checks ``value`` against the field currently at ``key``; returns it converted."""
    if isinstance(slot, ml_collections.FieldReference):
        field_type, current = slot.get_type(), slot.get()
    else:
        field_type, current = type(slot), slot
    if value is None:
        allowed = (
            current is None
            or isinstance(slot, ml_collections.FieldReference)  # placeholders are optional
            or field_type is object
            or (isinstance(field_type, tuple) and type(None) in field_type)
        )
        if allowed:
            return None
    elif current is None and not isinstance(slot, ml_collections.FieldReference):
        return value  # an untyped None field takes anything
    else:
        for candidate in field_type if isinstance(field_type, tuple) else (field_type,):
            ok, converted = _cast(value, candidate)
            if ok:
                return converted
    hint = ""
    if isinstance(value, int | float) and field_type is str:
        hint = f" (quote a string that looks like a number: --config.{key}=\"'{value}'\")"
    raise input_error(
        f"--config.{key}",
        f"{_type_name(field_type)}, like the config's {current!r}",
        describe(value),
        f"pass a value of that type, e.g. --config.{key}={_example(field_type, current)}{hint}.",
    )


def _initials(name: str) -> str:
    return "".join(word[:1] for word in name.split("_"))


def _unknown_key(key: str, config: ml_collections.ConfigDict, parent: str) -> Exception:
    keys = list(flatten(config))
    siblings = [k for k in keys if k.startswith(parent + ".")] if parent else []
    last = key.rsplit(".", 1)[-1]

    def abbreviates(candidate: str) -> bool:
        leaf = candidate.rsplit(".", 1)[-1]
        return leaf.startswith(last) or _initials(leaf) == last

    # Abbreviations (`optimizer.lr`, `learning`) and a forgotten group (`learning_rate`) first:
    # difflib alone ranks `optimizer.l2` above `optimizer.learning_rate` for `optimizer.lr`.
    if parent:
        close = [k for k in siblings if k.count(".") == key.count(".") and abbreviates(k)]
    elif "." not in key:
        close = [k for k in keys if abbreviates(k)]
    else:
        close = []
    for match in difflib.get_close_matches(key, keys, n=3, cutoff=0.5):
        if match not in close:
            close.append(match)
    hint = f"did you mean {' or '.join(repr(k) for k in close[:3])}? " if close else ""
    if parent:
        scope = f"the keys under '{parent}' are {siblings}"
    else:
        scope = f"the top-level keys are {sorted(config.keys())}"
    return input_error(
        f"--config.{key}",
        "a key that exists in the config",
        f"{key!r}, which is not in it",
        f"{hint}{scope}.",
    )


# Groups whose keys the user chooses (not a schema): a whole mapping can be given as a
# dict literal, and any key inside can be added.
FREE_FORM_GROUPS = ("population.hparams",)


def _set_free_form(new: ml_collections.ConfigDict, group: str, rest: list[str], text: str,
                   key: str) -> None:
    node = new
    for part in group.split(".")[:-1]:
        node = node[part]
    name = group.split(".")[-1]
    value = parse_value(text)
    if not rest:
        if not isinstance(value, dict):
            raise input_error(f"--config.{key}", "a dict literal, e.g. \"{'learning_rate': "
                              "[0.001, 0.01]}\"", describe(text),
                              f"or set one entry: --config.{group}.learning_rate=[0.001, 0.01]")
        node[name] = ml_collections.ConfigDict(value)
        return
    if len(rest) != 1:
        raise input_error(f"--config.{key}", f"one key inside {group}", describe(key),
                          f"use --config.{group}.NAME=VALUE")
    node[name][rest[0]] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def _has_group(config: ml_collections.ConfigDict, group: str) -> bool:
    node: Any = config
    for part in group.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, ml_collections.ConfigDict)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, str]
) -> ml_collections.ConfigDict:
    """Returns a copy of ``config`` with dotted-key overrides applied and type-checked.

    Args:
        config: the loaded config; it is not modified.
        overrides: ``{"optimizer.learning_rate": "3e-4", ...}``; each value is text parsed by
            :func:`parse_value`. An int may go into a float field, a list into a tuple field
            (and back), ``none`` only into a field that is ``None`` or a placeholder.

    Returns:
        A new ``ConfigDict`` (field references inside it still linked).

    Raises:
        InputError: naming ``--config.KEY`` for a key that is not in the config (with the
            closest existing keys), for a key that is a group rather than a value, and for a
            value whose type does not fit the field.

    Example:
        >>> base = ml_collections.ConfigDict({"optimizer": {"learning_rate": 1e-3}})
        >>> apply_overrides(base, {"optimizer.learning_rate": "3e-4"}).optimizer.learning_rate
        0.0003
    """
    if isinstance(config, ml_collections.FrozenConfigDict):
        config = ml_collections.ConfigDict(config)
    new = copy.deepcopy(config)
    for key, text in overrides.items():
        parts = key.split(".")
        group = next((g for g in FREE_FORM_GROUPS if key == g or key.startswith(g + ".")), None)
        if group is not None and _has_group(new, group):
            _set_free_form(new, group, parts[len(group.split(".")):], text, key)
            continue
        node = new
        for depth, part in enumerate(parts):
            parent = ".".join(parts[:depth])
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                if not isinstance(node, ml_collections.ConfigDict):
                    parent = ".".join(parts[: depth - 1])
                raise _unknown_key(key, new, parent)
            slots = dict(node.items(preserve_field_references=True))
            slot = slots[part]
            if depth < len(parts) - 1:
                node = slot.get() if isinstance(slot, ml_collections.FieldReference) else slot
                continue
            if isinstance(slot, ml_collections.ConfigDict):
                sub_keys = [f"{key}.{k}" for k in flatten(slot)]
                raise input_error(
                    f"--config.{key}",
                    f"a value for one of the group's keys {sub_keys}",
                    describe(text),
                    f"set a key inside the group, e.g. --config.{sub_keys[0]}=..."
                    if sub_keys
                    else "this group is empty; nothing can be set in it.",
                )
            value = parse_value(text)
            if node.is_type_safe:
                value = _check_value(key, slot, value)
            node[part] = value
    return new
