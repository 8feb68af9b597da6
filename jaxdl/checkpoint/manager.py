"""Orbax checkpoints that are verified on restore and never lost.

A checkpoint is ``DIR/<step>/`` written by an ``orbax.checkpoint.CheckpointManager``
(async by default) with two items: ``state``, any pytree of arrays (the driver
saves the TrainState, its PRNG key as raw key data, and the epoch's metric
accumulators), and ``meta``, JSON (data position, history, normalization
statistics, config) that also records each leaf's path, shape and dtype. Beside the
step, ``<step>.digest.json`` (:mod:`jaxdl.checkpoint.digests`) holds a checksum of every
leaf's bytes, computed on device while Orbax writes, and one of the meta's canonical
JSON, written by a background thread.

Orbax commits atomically but keeps no data checksum and has no fallback. On restore,
before a checkpoint is used: its digest must be well formed (only the newest step may
lack one: the process stopped right after saving it), its meta must match the digest
and the schema (:mod:`jaxdl.checkpoint.schema`), its structure the target's (a changed
model is an error listing the differing leaves, raised before anything is allocated),
and its bytes the checksums. A checkpoint that fails is renamed aside to
``<step>.corrupt-<utc>`` (kept, out of Orbax's step list) with a warning, and the next
older one is tried.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxdl import errors
from jaxdl.checkpoint import digests, disk, failures, telemetry
from jaxdl.checkpoint.cadence import Checkpointing, count
from jaxdl.checkpoint.disk import check_inside
from jaxdl.checkpoint.integrity import Damaged, checksums, structure, structure_mismatch
from jaxdl.checkpoint.targets import placed, storable, unstorable

# How a restore checks the arrays it read: every checksum, or none (meta and structure are
# always checked).
VERIFY = ("full", "none")

__all__ = ["Checkpointer", "Checkpointing", "check_inside", "storable", "unstorable"]


def _ranking(name: str, mode: str):
    """Orbax's key for keeping the best checkpoint: a missing or non-finite value (NaN loss,
    a hand-edited metrics file) ranks worst, never first and never as an error."""
    worst = math.inf if mode == "min" else -math.inf

    def value(metrics: Any) -> float:
        found = metrics.get(name) if isinstance(metrics, dict) else None
        if isinstance(found, int | float) and not isinstance(found, bool) and math.isfinite(
                found):
            return float(found)
        return worst

    return value


class Checkpointer:
    """Saves and restores ``(tree, meta)`` under one directory, verified.

    Args:
      directory: where the step directories go (created).
      keep: how many of the latest checkpoints to keep (an integer >= 1).
      best_metric: also keep the best checkpoint by this key of the ``metrics`` given
        to :meth:`save` (e.g. "val_loss"); it survives restarts (Orbax stores it per step).
      best_mode: "min" or "max" for ``best_metric``.
      async_save: write in the background (``save`` returns once the arrays are copied).
      root: when given, ``directory`` must resolve inside it (a run's workdir): a
        ``checkpoints`` link to another run's folder is refused.
      verify: "full" (default): a restore checks every array's checksum against the
        step's digest (a tenth of the read's time for a CPU state); "none":
        the meta, its digest and the structure are still checked, the arrays' bytes are
        trusted as Orbax reads them (for a state too large to checksum at restore).

    Raises:
      InputError: ``keep`` is not an integer >= 1, or ``verify`` is not "full"/"none".
      CheckpointError: ``directory`` cannot be used, or resolves outside ``root``.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "min", async_save: bool = True,
                 root: str | Path | None = None, verify: str = "full"):
        import orbax.checkpoint as ocp

        telemetry.turn_off_raw_bytes_telemetry()
        if verify not in VERIFY:
            raise errors.input_error("verify", f"one of {list(VERIFY)}", repr(verify),
                                     "pass verify='full' (check every array's checksum at "
                                     "restore) or verify='none'")
        self.verify = verify
        keep = count("keep", keep, 1, "an integer >= 1 (how many of the latest checkpoints "
                     "to keep)", "pass keep=3")
        self.directory = Path(directory).absolute()
        if root is not None:
            check_inside(self.directory, root)
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        ranking = _ranking(best_metric, best_mode) if best_metric else None
        if ranking is not None:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=ranking, reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        # best_fn makes Orbax write each step's metrics beside it and read them back when a
        # manager opens the directory; without it a restarted run forgot which was best.
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save, create=True, best_fn=ranking,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        self._ocp = ocp
        self._set_aside_unreadable_metrics()
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_names=("state", "meta"))
        except OSError as e:
            raise errors.CheckpointError(f"cannot use checkpoint directory {self.directory}: "
                                         f"{e}") from None
        self.best_metric, self.best_mode = best_metric, best_mode
        self._anchor = disk.Anchor(self.directory)
        self._digests = digests.Writer(self.directory)
        self._unconfirmed: int | None = None  # handed to Orbax, its commit not yet seen
        self._reported = False  # a failure was raised: the same one is not raised twice
        self._saved = False  # only a writer tidies the directory (a reader may share it)

    @property
    def steps(self) -> list[int]:
        """Steps on disk that Orbax sees (renamed-aside ones excluded), oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, meta: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Starts writing ``tree`` and ``meta`` as ``step``; returns without waiting.

        The checksums are dispatched to the device and written by a background
        thread to ``<step>.digest.json`` beside the step, with the meta's, so the training
        loop only waits for Orbax's own copy of the arrays. ``meta`` must not change until
        the next save or wait (Orbax serializes it in the background too). Raises
        :class:`jaxdl.errors.CheckpointError` if this or a previous background save failed
        (Orbax reports those at the next call), or if the directory was deleted.
        """
        ocp = self._ocp
        self._reported = False  # a new attempt
        self._check_directory()  # before Orbax would make a deleted directory again
        self._raise_digest_failure()
        meta = {**meta, "structure": structure(tree)}
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                metrics=self._retention(metrics), force=True)
        except Exception as e:
            raise self._failure(e, self._failed_step(step)) from None
        self._unconfirmed, self._saved = step, True
        # Dispatched after Orbax has its copy, so the two do not compete for the host; the
        # device runs it before any later dispatch that reuses (donates) these buffers.
        sums = checksums(tree)
        if jax.process_index() != 0:  # one writer for the files beside the steps
            return
        # Orbax has finished the previous save (and its deletions) by now: a digest whose
        # step is neither kept nor on disk belongs to a step Orbax deleted (tidied in the
        # digest's thread: listing the directory is not the training loop's business).
        self._digests.start(step, sums, meta, kept=self._manager.all_steps())

    def _retention(self, metrics: dict[str, Any] | None) -> dict[str, float] | None:
        """What Orbax stores to rank the step: only the best metric, as a float ({} when the
        step has none yet, e.g. before the first validation)."""
        if not self.best_metric:
            return None
        value = (metrics or {}).get(self.best_metric)
        try:
            return {self.best_metric: float(value)}
        except (TypeError, ValueError):
            return {}

    def _failed_step(self, step: int) -> int:
        """Which save an Orbax error at ``save(step)`` is about: the previous one, if it
        never committed (Orbax reports a background failure at the next call)."""
        previous = self._unconfirmed
        if previous is not None and not (self.directory / str(previous)).is_dir():
            return previous
        return step

    def _failure(self, error: Exception, step: int | None) -> errors.CheckpointError:
        gone = self._gone(step)
        self._settle()
        self._reported = True
        self._unconfirmed = None
        if gone:
            return failures.directory_gone(self.directory, error)
        return failures.write_failed(self.directory, step, error)

    def _settle(self) -> None:
        """Lets Orbax finish (and report, in its log) what it has in flight before the kit
        raises: else its wait, called again while the kit's error propagates, would log
        that error a second time inside its own."""
        with contextlib.suppress(Exception):
            self._manager.wait_until_finished()

    def _gone(self, failed: int | None = None) -> bool:
        """Whether the directory was deleted, replaced or emptied under this run: another
        folder at its path, or committed steps Orbax still keeps missing from it."""
        if not self._anchor.holds():
            return True
        kept = set(self._manager.all_steps()) - {failed, self._unconfirmed}
        return any(not (self.directory / str(s)).is_dir() for s in kept)

    def _check_directory(self) -> None:
        if not self._anchor.holds():
            self._settle()
            self._reported = True
            raise failures.directory_gone(self.directory)

    def _raise_digest_failure(self) -> None:
        failed = self._digests.join()
        if failed is not None:
            raise self._failure(failed[1], failed[0])

    def wait(self) -> None:
        """Blocks until every save has committed; raises CheckpointError if one failed (a
        failure already raised is not raised again: it is said once)."""
        already = self._reported
        try:
            self._wait()
        except errors.CheckpointError:
            if not already:
                raise

    def _wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            step = self._unconfirmed
            self._digests.join()  # its error, if any, is part of the same failure
            raise self._failure(e, step) from None
        self._raise_digest_failure()
        self._check_directory()
        self._unconfirmed = None
        if self._saved and jax.process_index() == 0:  # the digests of steps Orbax deleted
            self._digests.remove_orphans(self._manager.all_steps())

    def reached_preemption(self, step: int) -> bool:
        """Orbax's multi-host agreement on a preemption (False in single-process runs)."""
        return jax.process_count() > 1 and self._manager.reached_preemption(step)

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON item of ``step``, without reading any array, verified against the
        step's digest and the schema.

        Raises:
          CheckpointError: the step is unusable (its digest, its meta, or the files).
        """
        try:
            return self._checked_meta(step, disk.newest_step(self.directory, self.steps))[0]
        except Exception as e:
            raise errors.CheckpointError(
                f"checkpoint {step} under {self.directory} is unusable: {disk.why(e)}. Fix: "
                "restore from the checkpoints before it (restore() sets this one aside)."
            ) from None

    def _checked_meta(self, step: int, newest: int | None
                      ) -> tuple[dict[str, Any], dict[str, list[int]] | None]:
        ocp = self._ocp
        return disk.verified_meta(self.directory, step, newest, lambda s: self._manager.restore(
            s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def _set_aside(self, step: int, error: Exception) -> None:
        aside = disk.rename_aside(self.directory, step)
        self._manager.reload()
        reason = (str(error) if isinstance(error, Damaged) else
                  f"{type(error).__name__}: {errors.first_sentence(error)}")
        warnings.warn(f"checkpoint {step} under {self.directory} is unusable ({reason}); "
                      f"renamed it to {aside} and trying the previous one.", stacklevel=3)

    def _set_aside_unreadable_metrics(self) -> None:
        # Orbax reads every step's stored metrics when it opens the directory, and stops at
        # one that is not JSON: such a step is damaged, so it goes aside first.
        for step, error in disk.unreadable_metrics(self.directory):
            aside = disk.rename_aside(self.directory, step)
            warnings.warn(f"checkpoint {step} under {self.directory} is unusable (its stored "
                          f"metrics are not JSON: {error}); renamed it to {aside}.",
                          stacklevel=3)

    def restore(self, target: Any, partial: bool = False, required: tuple[str, ...] = (),
                prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                ) -> tuple[Any, dict[str, Any], int] | None:
        """The newest good checkpoint restored into ``target``'s structure.

        Args:
          target: a pytree of arrays or ``jax.ShapeDtypeStruct`` (abstract: nothing is
            allocated before the structure is checked); leaves' ``sharding``, when set,
            is where the arrays are placed (restore onto another mesh).
          partial: restore only the target's keys (e.g. just the state, for predict).
          required: meta keys the caller reads; a checkpoint without one is unusable.
          prepare: the caller's own reading of a step's checked meta (e.g. of a file the
            meta vouches for), returning the meta it uses; raising
            :class:`~jaxdl.checkpoint.integrity.Damaged` makes the step unusable.

        Returns:
          ``(tree, meta, step)``, or None when the directory holds no checkpoint.

        Raises:
          InputError: the newest usable checkpoint's structure differs from ``target``
            (the model or config changed); lists the differing leaves.
          CheckpointError: checkpoints exist but none is good; lists what was found.
        """
        self.wait()
        newest, tried = disk.newest_step(self.directory, self.steps), []
        for step in reversed(self.steps):
            try:
                meta, expected = self._checked_meta(step, newest)
                missing = [key for key in required if key not in meta]
                if missing:
                    raise Damaged(f"its meta lacks {', '.join(missing)}")
                if prepare is not None:
                    meta = prepare(meta)
            except Exception as e:
                tried.append(f"{step}: {disk.why(e)}")
                self._set_aside(step, e)
                continue
            mismatch = structure_mismatch(meta["structure"], target, partial)
            if mismatch:
                raise errors.input_error(
                    "checkpoint", f"a checkpoint of this model (step {step} under "
                    f"{self.directory})", "different leaves: " + "; ".join(mismatch[:20]),
                    "restore with the config the run was started with, or use a new "
                    "directory (--workdir on the command line) to start over")
            try:
                tree = self._read(step, placed(target), partial)
            except Exception as e:
                if self._placement_problem(step, target, partial):
                    raise errors.input_error(
                        "target shardings", "shardings this checkpoint can be placed on",
                        f"{type(e).__name__}: {str(e)[:300]}",
                        "check the mesh and partition rules of the restore target") from None
                tried.append(f"{step}: {disk.why(e)}")
                self._set_aside(step, e)
                continue
            bad = disk.bad_leaves(tree, expected) if self.verify == "full" else []
            if bad:
                tried.append(f"{step}: checksum mismatch")
                self._set_aside(step, Damaged(f"checksum mismatch in {', '.join(bad[:5])}"))
                continue
            if expected is None and self.verify == "full":
                warnings.warn(f"checkpoint {step} under {self.directory} has no digest (the "
                              "process stopped right after saving it); restored without "
                              "verifying its bytes.", stacklevel=2)
            return tree, meta, step
        if tried:
            raise errors.CheckpointError(
                f"no usable checkpoint under {self.directory}: tried {', '.join(tried)} "
                "(renamed aside as <step>.corrupt-<time>). Fix: use a new directory (--workdir "
                "on the command line) to start over, or restore a copy of a good checkpoint "
                "into that directory.")
        return None

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
        if plain == placed(target):
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
            self._anchor.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
