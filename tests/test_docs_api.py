"""docs/api.md's signatures are the code's own (issue 16), so the page cannot drift.

Each ``<!-- docs-test: signatures -->`` block of the page holds one signature per
statement, ``dotted.name(params) [-> what]``; ``jdl.`` is ``jaxdl.``, and a method is
written ``Class.method(...)`` without ``self``. Each is compared with
``inspect.signature`` of the real object: parameter names, order, kinds and defaults
(a literal must equal the real default, of the same type; ``...`` stands for a default
that is not a literal, such as a function).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import docs_runner
import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
NO_DEFAULT = inspect.Parameter.empty
ANY_DEFAULT = Ellipsis  # what "..." on the page reads as
KINDS = {"posonlyargs": inspect.Parameter.POSITIONAL_ONLY,
         "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
         "kwonlyargs": inspect.Parameter.KEYWORD_ONLY}


def _closing(text: str) -> int:
    """Where the parenthesis opened just before ``text`` closes."""
    depth = 1
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return i
    raise ValueError(f"unclosed: {text}")


def documented_signatures(text: str) -> list[tuple[str, str]]:
    """``(dotted name, parameter list)`` of every signature in the page's signature blocks."""
    found = []
    for block in docs_runner.parse_blocks(text):
        if block.kind != "signatures":
            continue
        statement = ""
        for line in block.code.splitlines():
            statement += " " + line.strip()
            if statement.count("(") == statement.count(")") and statement.strip():
                head, _, rest = statement.strip().partition("(")
                found.append((head, rest[:_closing(rest)]))
                statement = ""
        assert not statement.strip(), f"unbalanced signature in api.md: {statement}"
    return found


def resolve(name: str) -> tuple[Any, bool]:
    """The object ``name`` names, and whether it is a method written without ``self``."""
    parts = name.replace("jdl.", "jaxdl.", 1).split(".")
    obj, owner = importlib.import_module(parts[0]), None
    for i, part in enumerate(parts[1:], start=1):
        try:
            owner, obj = obj, getattr(obj, part)
        except AttributeError:
            owner, obj = obj, importlib.import_module(".".join(parts[:i + 1]))
    return obj, inspect.isclass(owner) and inspect.isfunction(obj)


def page_parameters(params: str) -> list[tuple[str, Any, Any]]:
    """``(name, kind, default)`` of a written parameter list."""
    args = ast.parse(f"def _({params}): pass").body[0].args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [NO_DEFAULT] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults, strict=True):
        kind = KINDS["posonlyargs" if arg in args.posonlyargs else "args"]
        out.append((arg.arg, kind, default))
    if args.vararg:
        out.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, NO_DEFAULT))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append((arg.arg, KINDS["kwonlyargs"], NO_DEFAULT if default is None else default))
    if args.kwarg:
        out.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, NO_DEFAULT))
    return [(n, k, d if d is NO_DEFAULT else ast.literal_eval(d)) for n, k, d in out]


def differences(written: list[tuple[str, Any, Any]], real: inspect.Signature) -> list[str]:
    """What the written parameters get wrong about ``real``."""
    actual = list(real.parameters.values())
    if [w[0] for w in written] != [p.name for p in actual]:
        return [f"parameters {[w[0] for w in written]} on the page, "
                f"{[p.name for p in actual]} in the code"]
    problems = []
    for (name, kind, default), param in zip(written, actual, strict=True):
        if kind != param.kind:
            problems.append(f"{name}: {kind.description} on the page, {param.kind.description}")
        if default is ANY_DEFAULT:
            ok = param.default is not NO_DEFAULT
        elif default is NO_DEFAULT or param.default is NO_DEFAULT:
            ok = default is param.default
        else:
            ok = type(default) is type(param.default) and default == param.default
        if not ok:
            problems.append(f"{name}: default {default!r} on the page, {param.default!r}")
    return problems


def real_signature(name: str) -> inspect.Signature:
    obj, method = resolve(name)
    signature = inspect.signature(obj)
    if method:  # documented without self
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return signature


SIGNATURES = documented_signatures(PAGE.read_text())


@pytest.mark.parametrize(("name", "params"), SIGNATURES, ids=[n for n, _ in SIGNATURES])
def test_documented_signature_is_the_code(name: str, params: str) -> None:
    problems = differences(page_parameters(params), real_signature(name))
    assert not problems, f"docs/api.md, {name}: " + "; ".join(problems)


def test_every_public_trainer_method_is_documented() -> None:
    import jaxdl

    public = {n for n, v in vars(jaxdl.Trainer).items()
              if not n.startswith("_") and inspect.isfunction(v)}
    listed = {n.rsplit(".", 1)[1] for n, _ in SIGNATURES if n.startswith("jdl.Trainer.")}
    assert public <= listed, f"Trainer methods missing from docs/api.md: {public - listed}"
    assert {"jdl.Trainer", "jdl.make_train_step"} <= {n for n, _ in SIGNATURES}


def _example(a, b=1, *, c=(), d=print, **kw):  # the checker's own test subject
    del a, b, c, d, kw


@pytest.mark.parametrize(("written", "problem"), [
    ("a, b=1, *, c=(), d=..., **kw", None),
    ("a, b=2, *, c=(), d=..., **kw", "b: default 2"),
    ("a, b=1.0, *, c=(), d=..., **kw", "b: default 1.0"),  # the type counts
    ("a, *, b=1, c=(), d=..., **kw", "b: keyword-only"),
    ("a, b=1, *, d=..., c=(), **kw", "parameters"),  # order
    ("a, b=1, *, c=(), d=...", "parameters"),  # a missing **kw
    ("a=..., b=1, *, c=(), d=..., **kw", "a: default Ellipsis"),
])
def test_checker_finds_each_kind_of_drift(written: str, problem: str | None) -> None:
    found = differences(page_parameters(written), inspect.signature(_example))
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(problem), found
