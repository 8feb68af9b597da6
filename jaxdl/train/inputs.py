"""The drivers' checks of user data against the model: at the boundary, before compiling."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl.data import trees
from jaxdl.data import validate as check
from jaxdl.state import TrainState
from jaxdl.train.programs import Programs

# Rows of streamed records whose labels are checked before training (a whole huge set
# would be read for it).
RECORDS_CHECKED_ROWS = 4096


def output_shape(programs: Programs, state: TrainState, x: Any,
                 argument: str = "x") -> Any:
    """The model's per-example output shape for inputs like ``x`` (an array or a pytree of
    arrays; a pytree of shapes for a model with several outputs); a clear error if the
    model rejects them."""
    spec = trees.spec(x, 1)
    try:
        outputs = programs.abstract("outputs", programs.outputs, programs.member_spec(state),
                                    spec)
    except Exception as e:  # flax/XLA shape errors: restate them in the user's terms
        raise errors.input_error(
            argument, "examples whose shape the model accepts (the shape it was initialized "
            "with)",
            f"examples of shape {_shapes(x)} (the model said: {errors.first_sentence(e)})",
            "pass data with the same feature count as the sample given to init(), or "
            "re-initialize the model on this data") from None
    # A model may return a pytree (a VAE's (reconstruction, mean, logvar)): one shape each.
    return jax.tree.map(lambda leaf: tuple(leaf.shape[1:]), outputs)


def _shapes(x: Any) -> Any:
    shapes = trees.shapes(x)
    return tuple(shapes) if trees.is_shape(shapes) else shapes


def checked(programs: Programs, state: TrainState, x: Any, y: Any, x_arg: str = "x",
            y_arg: str = "y") -> tuple[Any, Any]:
    """(x, y) as arrays (or pytrees of arrays) the model and the loss accept, or an error
    naming the argument (``y['a']`` for a leaf)."""
    x = check.as_features(x, x_arg)
    y = check.as_labels(y, trees.rows(x), y_arg, x_arg)
    out_shape = output_shape(programs, state, x, x_arg)
    try:
        programs.loss.check_labels(y, out_shape)
    except errors.InputError as e:
        if e.argument is not None and (e.argument == "y" or e.argument.startswith("y[")):
            raise e.renamed(y_arg + e.argument[1:]) from None
        raise
    return x, y


def example_weights(programs: Programs, y: Any, records: Any, sample_weight: Any,
                    class_weight: Any) -> np.ndarray | None:
    """fit's per-example weights [n] float32 from ``sample_weight`` and ``class_weight``
    (checked against the labels ``y``), or None when neither is given."""
    from jaxdl import weights

    for name, value in (("sample_weight", sample_weight), ("class_weight", class_weight)):
        if records is not None and value is not None:
            raise errors.input_error(name, "None with records (weights are not read from "
                                     "disk)", errors.describe(value),
                                     f"train on arrays to weight examples, or drop {name}")
    return weights.combined(y, programs.loss, checked_weights(
        sample_weight, trees.rows(y)), class_weight)


def checked_weights(weight: Any, num_examples: int, argument: str = "sample_weight"
                    ) -> np.ndarray | None:
    """Per-example weights as float32 [n] (finite, >= 0), or None when not given."""
    from jaxdl import weights

    return None if weight is None else weights.check_sample_weight(weight, num_examples,
                                                                   argument)


def is_records(x: Any) -> bool:
    """Whether ``x`` is on-disk records (:func:`jaxdl.data.open_records`)."""
    from jaxdl.data.records import Records

    return isinstance(x, Records)


def in_memory(x: Any, y: Any, x_arg: str = "x", y_arg: str = "y", rows: int | None = None
              ) -> tuple[Any, Any]:
    """On-disk records as (x, y) arrays (the first ``rows`` only, if given); arrays as they are."""
    if not is_records(x):
        return x, y
    if y is not None:
        raise errors.input_error(y_arg, f"None when {x_arg} is records (their 'y' field holds "
                                 "the labels)", errors.describe(y), f"drop {y_arg}")
    missing = [f for f in ("x", "y") if f not in x.fields]
    if missing:
        raise errors.input_error(x_arg, "records with fields 'x' and 'y'",
                                 f"{x!r}", "write them with jdl.data.write_records(dir, "
                                 "{'x': x, 'y': y}) or jaxdl data prepare")
    if rows is None:
        return np.asarray(x.arrays["x"]), np.asarray(x.arrays["y"])
    return np.asarray(x.arrays["x"][:rows]), np.asarray(x.arrays["y"][:rows])


def validation_set(programs: Programs, state: TrainState, x: Any, y: Any,
                   validation_data: Any, validation_split: float, records: Any,
                   weight: np.ndarray | None = None) -> tuple[Any, Any, Any, Any]:
    """(x, y, weight) for training and the checked validation ``(x_val, y_val, w_val)``
    (``w_val`` None: unweighted), or None. ``validation_split`` cuts the weights too."""
    if records is not None and validation_data is None and validation_split:
        raise errors.input_error("validation_split", "0 with records (they are not held in "
                                 "memory to cut)", repr(validation_split),
                                 "pass validation_data=open_records(<val folder>)")
    if validation_data is None and check.fraction(validation_split, "validation_split"):
        cut = len(x) - int(len(x) * validation_split)
        if cut <= 0 or cut == len(x):
            raise errors.input_error("validation_split", "a fraction leaving examples on both "
                                     "sides", f"{validation_split} of {len(x)} examples",
                                     "use a larger data set or another fraction")
        head, tail = slice(None, cut), slice(cut, None)
        validation_data = (trees.take(x, tail), trees.take(y, tail),
                           None if weight is None else weight[tail])
        x, y = trees.take(x, head), trees.take(y, head)
        weight = None if weight is None else weight[head]
    if validation_data is None:
        return x, y, weight, None
    if is_records(validation_data):  # evaluated from memory: validation sets are small
        validation_data = in_memory(validation_data, None, "validation_data")
    if not (isinstance(validation_data, tuple | list) and len(validation_data) in (2, 3)):
        raise errors.type_error("validation_data", "a pair (x_val, y_val), a triple (x_val, "
                                "y_val, sample_weight_val) or records",
                                errors.describe(validation_data),
                                "pass validation_data=(x_val, y_val)")
    x_val, y_val = checked(programs, state, *validation_data[:2], "validation_data[0]",
                           "validation_data[1]")
    w_val = checked_weights(validation_data[2] if len(validation_data) == 3 else None,
                            trees.rows(x_val), "validation_data[2]")
    return x, y, weight, (x_val, y_val, w_val)
