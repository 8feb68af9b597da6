"""Mixed precision at the step level: float32 master state, bfloat16 compute.

With ``precision="bfloat16"`` the steps apply the model to a bfloat16 copy of the
float32 parameters and to bfloat16 inputs, and cast its outputs back to float32
before the loss and the metrics. The copy is made inside the differentiated
function, so gradients arrive in float32 with respect to the float32 master
parameters, and the optimizer state stays float32::

    apply = policy_apply(apply, "bfloat16")
    outputs, model_state = apply(params, model_state, x, True, key)  # outputs float32

What is cast: floating leaves only (integer token ids and labels pass as they are).
What is not: the model state (BatchNorm statistics stay float32). Flax layers
compute in the type their inputs and parameters promote to unless their ``dtype``
says otherwise, so a layer that mixes in float32 values (BatchNorm's statistics)
computes in float32 from there on: give such models ``dtype=jnp.bfloat16``, and a
model built with ``dtype=jnp.float32`` keeps computing in float32.

float16 is refused: its narrow range needs loss scaling, which the kit does not
do; bfloat16 has float32's range and the same memory and speed benefits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import errors

PRECISIONS: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str) -> Any:
    """The compute dtype of a precision name ("float32" or "bfloat16")."""
    if precision == "float16":
        raise errors.input_error(
            "precision", "'float32' or 'bfloat16'", repr(precision),
            "use precision='bfloat16' (float16 needs loss scaling, which jaxdl does not do; "
            "bfloat16 has float32's range)")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise errors.unknown_name("precision", "precision", precision, list(PRECISIONS))
    return PRECISIONS[precision]


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating leaves as ``dtype``; integer and bool leaves unchanged."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
        tree)


def policy_apply(apply: Callable[..., tuple[Any, Any]], precision: str
                 ) -> Callable[..., tuple[Any, Any]]:
    """Wraps ``apply(params, model_state, x, *args) -> (outputs, model_state)``.

    For "bfloat16": params and x are cast to bfloat16, outputs back to float32,
    and the returned model state keeps the dtypes it came in with (so it can be a
    ``lax.scan`` carry). For "float32": ``apply`` itself, unchanged.
    """
    dtype = compute_dtype(precision)
    if dtype == jnp.float32:
        return apply

    def mixed(params, model_state, x, *args, **kwargs):
        outputs, new_state = apply(cast_floating(params, dtype), model_state,
                                   cast_floating(x, dtype), *args, **kwargs)
        if jax.tree.structure(new_state) == jax.tree.structure(model_state):
            new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state,
                                     model_state)
        return cast_floating(outputs, jnp.float32), new_state

    return mixed
