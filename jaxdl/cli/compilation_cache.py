"""JAX's persistent compilation cache, on by default for the `jaxdl` command.

A second run of the same experiment then loads its compiled programs from disk instead of
compiling them again. The folder is, in order:

1. the ``path`` argument of :func:`enable_compilation_cache`;
2. ``$JAXDL_CACHE_DIR`` — set it to ``""`` or ``off`` to turn the cache off;
3. ``$XDG_CACHE_HOME/jaxdl/xla``, else ``~/.cache/jaxdl/xla``.

A cache folder already chosen through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is kept.
JAX is imported only when the cache is enabled, so importing this module stays cheap.

The cache is bounded: past ``$JAXDL_CACHE_MAX_BYTES`` (default 2 GiB; ``-1`` for no
limit) JAX evicts the least recently used programs, so a machine that runs many
experiments does not fill its disk.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Mapping

ENV_VAR = "JAXDL_CACHE_DIR"
MAX_BYTES_VAR = "JAXDL_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 * 2**30
_OFF = ("", "off")


def max_bytes(env: Mapping[str, str] | None = None) -> int:
    """The cache's size limit in bytes from ``$JAXDL_CACHE_MAX_BYTES`` (-1: no limit)."""
    text = (os.environ if env is None else env).get(MAX_BYTES_VAR, "")
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == -1 or value > 0:
        return value
    warnings.warn(f"jaxdl: {MAX_BYTES_VAR}={text!r} is not a positive number of bytes or -1; "
                  f"the cache keeps its default limit of {DEFAULT_MAX_BYTES} bytes.",
                  RuntimeWarning, stacklevel=3)
    return DEFAULT_MAX_BYTES


def resolve_cache_dir(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> pathlib.Path | None:
    """The cache folder to use, or ``None`` when the cache is turned off.

    Args:
        path: an explicit folder; ``""`` or ``"off"`` turns the cache off.
        environ: the environment to read (default ``os.environ``).

    Returns:
        An absolute folder, or ``None``.

    Example:
        >>> resolve_cache_dir(environ={"JAXDL_CACHE_DIR": "off"}) is None
        True
        >>> resolve_cache_dir(environ={"XDG_CACHE_HOME": "/c"}).as_posix()
        '/c/jaxdl/xla'
    """
    env = os.environ if environ is None else environ
    chosen = os.fspath(path) if path is not None else env.get(ENV_VAR)
    if chosen is not None:
        if chosen.strip().lower() in _OFF:
            return None
        return pathlib.Path(chosen).expanduser().absolute()
    xdg = env.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return (base / "jaxdl" / "xla").absolute()


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache; call it before anything compiles.

    Every compiled program is cached (no minimum compile time or size). A folder that cannot be
    created gives a warning and no cache: the cache only saves time, it never stops a run.

    Args:
        path: the cache folder; default from :func:`resolve_cache_dir`.

    Returns:
        The cache folder in use, or ``None`` when the cache is off.
    """
    jax_own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if path is None and jax_own and ENV_VAR not in os.environ:
        return jax_own  # chosen through JAX's own variable, which JAX reads itself; keep it
    folder = resolve_cache_dir(path)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(
            f"jaxdl: compilation cache off, cannot create {folder}: {exc}. "
            f"Set {ENV_VAR} to a writable folder, or to 'off'.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    import jax  # here, not at module import: importing JAX takes most of a second

    if max_bytes() > 0:
        backfill_access_times(folder)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", max_bytes())
    return str(folder)


def backfill_access_times(folder: pathlib.Path) -> int:
    """Gives every cache entry without its access-time file one (its own mtime).

    A bounded cache ranks entries by ``<key>-atime`` files, which JAX writes only when a
    size limit is set: entries from a process without one (a script that enabled the
    cache itself, an older jaxdl) have none, and JAX's eviction then fails on them at
    every write, so nothing new is cached. Done under JAX's own lock of the folder.
    Returns how many were added.
    """
    import filelock

    added = 0
    try:
        with filelock.FileLock(folder / ".lockfile", timeout=10):
            for entry in folder.glob("*-cache"):
                atime = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
                if not atime.exists():
                    stamp = entry.stat().st_mtime_ns
                    atime.write_bytes(stamp.to_bytes(8, "little"))
                    added += 1
    except (OSError, filelock.Timeout):  # the cache only saves time: never stop a run
        pass
    return added
