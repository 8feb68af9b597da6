"""A device mesh from config: axes ``population``, ``data``, ``fsdp``, ``tensor`` (``-1``: all
remaining).

    mesh = make_mesh({"data": -1})                      # pure data parallel
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})

Axes are always all four, in that order, so partition rules can name any of
them; unused axes have size 1. ``population`` splits the members of a population
(:mod:`jaxdl.population`); it is outermost, so members spread over hosts first and
a member's own data/FSDP/tensor traffic stays within its group of devices. Built
with ``jax.make_mesh`` (Auto axis types: the compiler propagates shardings from
the rules and the batch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from jaxdl import errors

MESH_AXES = ("population", "data", "fsdp", "tensor")


def _sizes(spec: Mapping[str, Any], count: int) -> tuple[int, ...]:
    unknown = sorted(set(spec) - set(MESH_AXES))
    if unknown:
        raise errors.unknown_name("mesh", "mesh axis", unknown[0], list(MESH_AXES))
    sizes = []
    for axis in MESH_AXES:
        value = spec.get(axis, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -1:
            raise errors.input_error(f"mesh.{axis}", "a positive integer, or -1 for all "
                                     "remaining devices", repr(value), f"pass e.g. {axis}=2")
        sizes.append(value)
    if sizes.count(-1) > 1:
        raise errors.input_error("mesh", "at most one axis of size -1", repr(dict(spec)),
                                 "give explicit sizes to all but one axis")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if count % known:
            raise errors.input_error(
                "mesh", f"axis sizes whose product divides the {count} devices",
                f"{dict(spec)} (the fixed axes need {known})",
                "pick sizes that divide the device count")
        sizes[sizes.index(-1)] = count // known
    return tuple(sizes)


def _shown(sizes: Sequence[int]) -> dict[str, int]:
    # The population axis only when used: most meshes train one model.
    return {axis: size for axis, size in zip(MESH_AXES, sizes, strict=True)
            if axis != "population" or size != 1}


def make_mesh(spec: Mapping[str, Any] | None = None,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """The mesh over ``devices`` (default: all) with axes (population, data, fsdp, tensor).

    Args:
      spec: axis sizes, e.g. ``{"data": 2, "fsdp": -1}``; default ``{"data": -1}``.
      devices: the devices to use (default ``jax.devices()``).

    Raises:
      InputError: an unknown axis, a bad size, or sizes whose product does not match the
        device count (the message lists the devices found).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = _sizes(dict(spec or {"data": -1}), len(devices))
    if math.prod(sizes) != len(devices):
        found = ", ".join(f"{d.platform}:{d.id}" for d in devices[:16])
        more = f" and {len(devices) - 16} more" if len(devices) > 16 else ""
        raise errors.input_error(
            "mesh", f"axis sizes whose product is the device count ({len(devices)}: {found}"
            f"{more})", f"{_shown(sizes)} = {math.prod(sizes)}",
            "make the sizes multiply to the device count, or use -1 for one axis")
    return jax.make_mesh(sizes, MESH_AXES, devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def from_user_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """A user's own ``jax.sharding.Mesh`` as the kit runs on it: the same devices, its axes
    made Auto, and each kit axis it lacks (``data``, ``fsdp``, ``tensor``) added with size 1.

    Auto: the kit places batches and parameters with sharding constraints the compiler
    propagates; under Explicit axes (``jax.make_mesh``'s default) those would have to be
    typed by hand. A missing ``population`` axis is not added: every device then holds
    every member.

    Raises:
      InputError: an axis the kit does not know (it could not be given a meaning).
    """
    unknown = [name for name in mesh.axis_names if name not in MESH_AXES]
    if unknown:
        raise errors.input_error(
            "mesh", f"a jax.sharding.Mesh whose axes are among {list(MESH_AXES)}",
            f"axes {list(mesh.axis_names)}", f"rename {unknown[0]!r} to the kit axis it "
            "plays (e.g. 'data' for batch splitting), or pass mesh={'data': -1}")
    names = list(mesh.axis_names)
    devices = mesh.devices
    for axis in ("data", "fsdp", "tensor"):
        if axis not in names:
            names.append(axis)
            devices = devices[..., None]
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    if tuple(names) == tuple(mesh.axis_names) and tuple(mesh.axis_types) == auto:
        return mesh
    return jax.sharding.Mesh(devices, tuple(names), axis_types=auto)
