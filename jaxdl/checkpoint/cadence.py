"""How often a fit checkpoints (:class:`Checkpointing`), and the checks of the counts that
say it: a cadence is a whole number of steps or epochs, 0 for off; a retention at least 1."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jaxdl import errors

if TYPE_CHECKING:  # the manager imports Orbax; this module does not need it
    from jaxdl.checkpoint.manager import Checkpointer


def count(argument: str, value: Any, low: int, expected: str, fix: str) -> int:
    """``value`` as an int >= ``low``, else an InputError naming ``argument``.

    Args:
      argument: the parameter's name, as the caller spells it (e.g. "every_steps").
      value: what was given; an integral number (numpy ones too), never a bool.
      low: the smallest value allowed.
      expected: what the message says was expected, e.g. "an integer >= 1".
      fix: the message's fix.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low:
        return int(value)
    given = repr(value) if isinstance(value, numbers.Integral) and not isinstance(
        value, bool) else errors.describe(value)
    raise errors.input_error(argument, expected, given, fix)


def _cadence(argument: str, value: Any, unit: str) -> int | None:
    """A save cadence: None or 0 is off (None); otherwise a positive whole number."""
    if value is None:
        return None
    return count(argument, value, 0, "an integer >= 0 (0: off)",
                 f"pass {argument}=N to save every N {unit}, or 0 for not by {unit}") or None


@dataclasses.dataclass
class Checkpointing:
    """How ``fit`` checkpoints: where, how often, and what else to save.

    Attributes:
      checkpointer: the :class:`~jaxdl.checkpoint.Checkpointer` (its directory holds the
        step dirs).
      every_epochs: save after every this many epochs (None or 0: not by epochs).
      every_steps: save at the first dispatch boundary after every this many steps
        (None or 0: not by steps).
      resume: start from the newest good checkpoint when there is one.
      meta: JSON-safe extras saved with every checkpoint (config, normalization stats).
      stop_requested: returns a signal number once the run should checkpoint and stop.

    Raises:
      InputError: ``every_epochs`` or ``every_steps`` is not a whole number >= 0 (a
        negative one would save at every dispatch, or plan no training at all).

    Example::

        Checkpointing(Checkpointer("runs/a/checkpoints"), every_epochs=0, every_steps=500)
    """

    checkpointer: Checkpointer
    every_epochs: int | None = 1
    every_steps: int | None = None
    resume: bool = True
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    stop_requested: Callable[[], int | None] = lambda: None

    def __post_init__(self) -> None:
        # A config spells "off" as 0 (checkpoint.every_steps=0); one spelling for the driver.
        self.every_epochs = _cadence("every_epochs", self.every_epochs, "epochs")
        self.every_steps = _cadence("every_steps", self.every_steps, "steps")

    def reached_preemption(self, step: int) -> bool:
        """The checkpointer's :meth:`~jaxdl.checkpoint.Checkpointer.reached_preemption`."""
        return self.checkpointer.reached_preemption(step)
