"""Constructor checks shared by the models: a width of 0 or a dropout rate of 1.5 would
build a model that trains nothing; say so when the module is made.

Only the kit's error helpers are imported: models stay free of training code.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def rate(value: Any, argument: str = "dropout_rate") -> None:
    """Raises unless ``value`` is a dropout rate in [0, 1) (1 would drop every unit)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        from jaxdl import errors

        raise errors.input_error(argument, "a rate in [0, 1) (the fraction of units dropped "
                                 "in training)", repr(value),
                                 f"pass e.g. {argument}=0.1, or 0 for no dropout")


def widths(values: Any, argument: str, allow_empty: bool = False) -> None:
    """Raises unless ``values`` is a sequence of ints >= 1 (non-empty unless allowed)."""
    ok = isinstance(values, Sequence) and not isinstance(values, str) and all(
        _is_int(v) and v >= 1 for v in values) and (allow_empty or len(values) > 0)
    if not ok:
        from jaxdl import errors

        expected = "a sequence of layer widths, each an int >= 1" + (
            "" if allow_empty else " (at least one: the last is the output width)")
        raise errors.input_error(argument, expected, repr(values),
                                 f"pass e.g. {argument}=(64, 64, 1)" if not allow_empty
                                 else f"pass e.g. {argument}=(64,) or ()")


def positive(value: Any, argument: str) -> None:
    """Raises unless ``value`` is an int >= 1."""
    if not (_is_int(value) and value >= 1):
        from jaxdl import errors

        raise errors.input_error(argument, "an integer >= 1", repr(value),
                                 f"pass e.g. {argument}=10")
