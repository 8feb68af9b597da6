"""Apply ``--config.KEY=VALUE`` overrides to a loaded config, type-checked against it.

Every override is checked against the config: an unknown key names the closest existing ones, and
a value of the wrong type names the expected type::

    config = apply_overrides(load_config("experiments/simplenet.py"), {"epochs": "20"})

A field that accepts several types (say ``"auto"`` or a number of steps) is declared with a tuple
``field_type``: ``ml_collections.FieldReference("auto", field_type=(str, int))``; a field declared
with ``field_type=object`` accepts any literal. The groups in :data:`FREE_FORM_GROUPS` take keys
the user chooses.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxdl.errors import describe, input_error

_TYPE_NAMES = {bool: "a bool", int: "an int", float: "a float", str: "a string"}
_TYPE_NAMES |= {tuple: "a tuple", list: "a list", dict: "a dict"}
_EXAMPLES = {bool: True, int: 1, float: 0.1, str: "text", tuple: (1, 2), list: [1, 2]}


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


# Last, not first: config.py re-exports apply_overrides from this module, and either of the two
# may be imported first.
from jaxdl.experiment.config import flatten, parse_value  # noqa: E402
