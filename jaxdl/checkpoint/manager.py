"""Orbax checkpoints that are verified on restore and never lost.

A checkpoint is ``DIR/<step>/`` written by an ``orbax.checkpoint.CheckpointManager``
(async by default) with two items: ``state``, any pytree of arrays (the driver
saves the TrainState, its PRNG key as raw key data, and the epoch's metric
accumulators), and ``meta``, JSON (data position, history, normalization
statistics, config) that also records each leaf's path, shape and dtype. A
position-weighted checksum of every leaf's bytes is computed on device while
Orbax writes, and stored beside the step as ``<step>.digest.json`` (both from
:mod:`jaxdl.checkpoint.integrity`).

Orbax commits atomically but keeps no data checksum and has no fallback: on
restore the recorded structure is checked first against the target's (a changed
model is an error listing the differing leaves, raised before anything is
allocated), then the checksums against the restored bytes. A checkpoint that fails to load or
verify is renamed aside to ``<step>.corrupt-<utc>`` (kept, out of Orbax's step
list) with a warning, and the next older one is tried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxdl import errors
from jaxdl.checkpoint.integrity import checksums, fetch_checksums, structure, structure_mismatch
from jaxdl.state import TrainState


def storable(state: TrainState) -> TrainState:
    """The state with its PRNG key as raw key data (what Orbax writes)."""
    return state.replace(rng=jax.random.key_data(state.rng))


def unstorable(state: TrainState) -> TrainState:
    """Inverse of :func:`storable`."""
    return state.replace(rng=jax.random.wrap_key_data(state.rng))


def _placed(target: Any) -> Any:
    """Abstract leaves with a concrete sharding, so Orbax restores onto *this* topology.

    Arrays and ``ShapeDtypeStruct`` leaves keep their sharding; others get device 0.
    """
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def place(leaf):
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(place, target)


class Checkpointer:
    """Saves and restores ``(tree, meta)`` under one directory, verified.

    Args:
      directory: where the step directories go (created).
      keep: how many of the latest checkpoints to keep.
      best_metric: also keep the best checkpoint by this key of the ``metrics`` given
        to :meth:`save` (e.g. "val_loss").
      best_mode: "min" or "max" for ``best_metric``.
      async_save: write in the background (``save`` returns once the arrays are copied).
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "min", async_save: bool = True):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise errors.input_error("keep", "an integer >= 1", repr(keep), "pass keep=3")
        self.directory = Path(directory).absolute()
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save, create=True,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_names=("state", "meta"))
        except OSError as e:
            raise errors.CheckpointError(f"cannot use checkpoint directory {self.directory}: "
                                         f"{e}") from None
        self._ocp = ocp
        self.best_metric, self.best_mode = best_metric, best_mode
        self._thread: threading.Thread | None = None
        self._thread_error: Exception | None = None

    @property
    def steps(self) -> list[int]:
        """Steps on disk that Orbax sees (renamed-aside ones excluded), oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, meta: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Starts writing ``tree`` and ``meta`` as ``step``; returns without waiting.

        The checksums are dispatched to the device and written by a background
        thread to ``<step>.digest.json`` beside the step, so the training loop
        only waits for Orbax's own copy of the arrays. Raises
        :class:`jaxdl.errors.CheckpointError` if this or a previous background
        save failed (Orbax reports those at the next call).
        """
        ocp = self._ocp
        self._join()
        meta = {**meta, "structure": structure(tree)}
        if self.best_metric and (metrics is None or self.best_metric not in metrics):
            metrics = None
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                metrics=metrics, force=True)
        except Exception as e:
            raise self._failed(step, e) from None
        # Dispatched after Orbax has its copy, so the two do not compete for the host; the
        # device runs it before any later dispatch that reuses (donates) these buffers.
        sums = checksums(tree)
        if jax.process_index() != 0:  # one writer for the files beside the steps
            return
        self._thread = threading.Thread(target=self._write_digest, args=(step, sums),
                                        name=f"jaxdl-digest-{step}", daemon=True)
        self._thread.start()

    def _saving(self, step: int) -> bool:
        return self._thread is not None and self._thread.name == f"jaxdl-digest-{step}"

    def _digest_file(self, step: int) -> Path:
        return self.directory / f"{step}.digest.json"

    def _write_digest(self, step: int, sums: Any) -> None:
        try:
            path = self._digest_file(step)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(fetch_checksums(sums)))
            os.replace(temporary, path)  # atomic: a digest file is whole or absent
        except Exception as e:  # reported by the next save() or wait()
            self._thread_error = e

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._thread_error = self._thread_error, None
        if error is not None:
            raise self._failed(None, error)
        for digest_file in self.directory.glob("*.digest.json"):  # of steps Orbax deleted
            step = digest_file.name.split(".")[0]
            if step.isdigit() and digest_file.name == f"{step}.digest.json" and not (
                    self.directory / step).exists() and not self._saving(int(step)):
                digest_file.unlink(missing_ok=True)

    def wait(self) -> None:
        """Blocks until every save has committed; raises CheckpointError if one failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            with contextlib.suppress(errors.CheckpointError):  # report Orbax's error, once
                self._join()
            raise self._failed(None, e) from None
        self._join()

    def _failed(self, step: int | None, error: Exception) -> errors.CheckpointError:
        which = f"checkpoint {step}" if step is not None else "a checkpoint"
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        return errors.CheckpointError(
            f"writing {which} under {self.directory} failed: {type(cause).__name__}: {cause}. "
            f"The checkpoints committed before it are intact: {self.steps or 'none'}. "
            "Fix: free disk space or make the directory writable, then run again to resume.")

    def reached_preemption(self, step: int) -> bool:
        """Orbax's multi-host agreement on a preemption (False in single-process runs)."""
        return jax.process_count() > 1 and self._manager.reached_preemption(step)

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON item of ``step``, without reading any array."""
        ocp = self._ocp
        restored = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def _set_aside(self, step: int, error: Exception) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        source = self.directory / str(step)
        aside = self.directory / f"{step}.corrupt-{stamp}"
        if source.exists() and jax.process_index() == 0:
            source.rename(aside)
        if self._digest_file(step).exists() and jax.process_index() == 0:
            self._digest_file(step).rename(self.directory / f"{aside.name}.digest.json")
        self._manager.reload()
        warnings.warn(f"checkpoint {step} under {self.directory} is unusable "
                      f"({type(error).__name__}: {errors.first_sentence(error)}); renamed it to "
                      f"{aside.name} and trying the previous one.", stacklevel=3)

    def restore(self, target: Any, partial: bool = False
                ) -> tuple[Any, dict[str, Any], int] | None:
        """The newest good checkpoint restored into ``target``'s structure.

        Args:
          target: a pytree of arrays or ``jax.ShapeDtypeStruct`` (abstract: nothing is
            allocated before the structure is checked); leaves' ``sharding``, when set,
            is where the arrays are placed (restore onto another mesh).
          partial: restore only the target's keys (e.g. just the state, for predict).

        Returns:
          ``(tree, meta, step)``, or None when the directory holds no checkpoint.

        Raises:
          InputError: the newest readable checkpoint's structure differs from
            ``target`` (the model or config changed); lists the differing leaves.
          CheckpointError: checkpoints exist but none is good; lists what was found.
        """
        self.wait()
        tried: list[str] = []
        for step in reversed(self.steps):
            try:
                meta = self.read_meta(step)
                saved = meta["structure"]
            except Exception as e:
                tried.append(f"{step}: {type(e).__name__} ({errors.first_sentence(e, 80)})")
                self._set_aside(step, e)
                continue
            mismatch = structure_mismatch(saved, target, partial)
            if mismatch:
                raise errors.input_error(
                    "checkpoint", f"a checkpoint of this model (step {step} under "
                    f"{self.directory})", "different leaves: " + "; ".join(mismatch[:20]),
                    "restore with the config the run was started with, or use a new "
                    "directory (--workdir on the command line) to start over")
            try:
                tree = self._read(step, _placed(target), partial)
            except Exception as e:
                if self._placement_problem(step, target, partial):
                    raise errors.input_error(
                        "target shardings", "shardings this checkpoint can be placed on",
                        f"{type(e).__name__}: {str(e)[:300]}",
                        "check the mesh and partition rules of the restore target") from None
                tried.append(f"{step}: {type(e).__name__} ({errors.first_sentence(e, 80)})")
                self._set_aside(step, e)
                continue
            bad = self._bad_leaves(step, tree)
            if bad is None:
                warnings.warn(f"checkpoint {step} under {self.directory} has no digest (the "
                              "process stopped right after saving it); restored without "
                              "verifying its bytes.", stacklevel=2)
                return tree, meta, step
            if bad:
                error = ValueError(f"checksum mismatch in {', '.join(bad[:5])}")
                tried.append(f"{step}: checksum mismatch")
                self._set_aside(step, error)
                continue
            return tree, meta, step
        if tried:
            raise errors.CheckpointError(
                f"no usable checkpoint under {self.directory}: tried {', '.join(tried)} "
                "(renamed aside as <step>.corrupt-<time>). Fix: use a new directory (--workdir "
                "on the command line) to start over, or restore a copy of a good checkpoint "
                "into that directory.")
        return None

    def _bad_leaves(self, step: int, tree: Any) -> list[str] | None:
        """Paths of ``tree`` whose bytes differ from ``step``'s digest (None: no digest)."""
        path = self._digest_file(step)
        if not path.exists():
            return None
        try:
            expected = json.loads(path.read_text())
        except ValueError:  # a damaged digest file: the bytes cannot be vouched for
            expected = {}
        actual = fetch_checksums(checksums(tree))
        return [leaf for leaf, value in actual.items() if expected.get(leaf) != value]

    def _read(self, step: int, placed: Any, partial: bool) -> Any:
        ocp = self._ocp
        if partial:
            how = ocp.args.PyTreeRestore(
                item=placed, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args(placed))
        else:
            how = ocp.args.StandardRestore(placed)
        return self._manager.restore(step, args=ocp.args.Composite(state=how))["state"]

    def _placement_problem(self, step: int, target: Any, partial: bool) -> bool:
        """Whether ``step`` reads fine onto one device (then the target's placement failed,
        not the data: never set a good checkpoint aside for that)."""
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        plain = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                               sharding=one), target)
        if plain == _placed(target):
            return False
        try:
            self._read(step, plain, partial)
        except Exception:
            return False
        return True

    def close(self) -> None:
        """Waits for pending saves (raising their errors) and releases Orbax's threads."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclasses.dataclass
class Checkpointing:
    """How ``fit`` checkpoints: where, how often, and what else to save.

    Attributes:
      checkpointer: the :class:`Checkpointer` (its directory holds the step dirs).
      every_epochs: save after every this many epochs (None or 0: not by epochs).
      every_steps: save at the first dispatch boundary after every this many steps
        (None or 0: not by steps).
      resume: start from the newest good checkpoint when there is one.
      meta: JSON-safe extras saved with every checkpoint (config, normalization stats).
      stop_requested: returns a signal number once the run should checkpoint and stop.

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
        self.every_epochs = self.every_epochs or None
        self.every_steps = self.every_steps or None

    def reached_preemption(self, step: int) -> bool:
        """The checkpointer's :meth:`Checkpointer.reached_preemption`."""
        return self.checkpointer.reached_preemption(step)
