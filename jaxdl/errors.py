"""The kit's error types and the one message shape they all use.

Every error a user can cause names the argument, what was expected, what was
given and how to fix it, so the message alone is enough to act on::

    argument 'batch_size': expected an integer >= 1, got 0. Fix: pass batch_size=32.
"""

from __future__ import annotations

import re
from typing import Any


class JaxdlError(Exception):
    """Base of the kit's own errors (the CLI turns them into exit code 2)."""


class _ArgumentError(JaxdlError):
    """An error about one argument, with its parts kept as data.

    ``argument``, ``expected``, ``given`` and ``fix`` are None for an error raised with a
    free-form message; :meth:`renamed` lets a caller (the CLI, a wrapper) restate the
    argument in its own terms without parsing the message.
    """

    def __init__(self, text: str, *, argument: str | None = None, expected: str | None = None,
                 given: str | None = None, fix: str | None = None):
        super().__init__(text)
        self.argument, self.expected, self.given, self.fix = argument, expected, given, fix

    @classmethod
    def of(cls, argument: str, expected: str, given: str, fix: str) -> _ArgumentError:
        return cls(message(argument, expected, given, fix), argument=argument,
                   expected=expected, given=given, fix=fix)

    def renamed(self, argument: str) -> _ArgumentError:
        """The same error about ``argument`` (itself when it has no parts to restate)."""
        if self.argument is None:
            return self
        # A fix that shows the old argument being set ("pass features=(64, 1)") shows the
        # new one instead ("pass --config.model.features=(64, 1)").
        fix = re.sub(rf"(?<![\w.'-]){re.escape(self.argument)}=", f"{argument}=", self.fix)
        return type(self).of(argument, self.expected, self.given, fix)


class InputError(_ArgumentError, ValueError):
    """A value is unusable: wrong shape, range, content or name."""


class InputTypeError(_ArgumentError, TypeError):
    """A value has the wrong type."""


def describe(value: Any, limit: int = 80) -> str:
    """A short, readable rendering of ``value`` for an error message."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def first_sentence(error: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's text, for quoting a library inside our message."""
    text = " ".join(str(error).split()) or type(error).__name__
    for end in (". ", "; "):
        if end in text[:limit]:
            text = text[: text.index(end)]
            break
    return text if len(text) <= limit else text[: limit - 3] + "..."


def message(argument: str, expected: str, given: str, fix: str) -> str:
    """Formats the kit's one error shape: argument, expected, given, fix."""
    return f"argument '{argument}': expected {expected}, got {given}. Fix: {fix}"


def input_error(argument: str, expected: str, given: str, fix: str) -> InputError:
    """Builds (does not raise) an :class:`InputError` in the kit's message shape."""
    return InputError.of(argument, expected, given, fix)


def type_error(argument: str, expected: str, given: str, fix: str) -> InputTypeError:
    """Builds (does not raise) an :class:`InputTypeError` in the kit's message shape."""
    return InputTypeError.of(argument, expected, given, fix)


def unknown_name(argument: str, kind: str, name: Any, known: list[str],
                 callable_ok: bool = False) -> InputError:
    """Error for a registry miss: lists the known names and the closest one."""
    import difflib

    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return input_error(
        argument,
        f"one of the known {kind} names {sorted(known)}",
        repr(name),
        f"{hint}pass a known name{' or a callable' if callable_ok else ''}.",
    )


class CheckpointError(JaxdlError):
    """A checkpoint could not be written or none could be restored (path and cause named)."""


class Preempted(JaxdlError):  # noqa: N818 - a signal, not a failure
    """Training stopped on a signal after writing a checkpoint; exit with ``exit_code``."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        super().__init__(f"stopped by signal {signum} at step {step} after committing a "
                         "checkpoint; run the same command again to resume")


class NonFiniteError(JaxdlError):
    """A training step produced NaN/inf (nan_policy="raise")."""
