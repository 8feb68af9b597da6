"""An offline byte-level text corpus: the Python standard library's own source.

Every machine that runs the kit has it, so character-level language models can be
trained and compared without a download. The corpus is the raw bytes of the
``*.py`` files under ``sysconfig.get_paths()["stdlib"]`` — test folders
(``test``, ``tests``, ``idle_test``), ``site-packages``/``dist-packages`` and
``__pycache__`` left out — with vocabulary the 256 byte values.

The split is fixed **by file**: a file's relative path (``json/decoder.py``) is
hashed (SHA-256), and the hash alone sends it to train (90%), val (5%) or test
(5%). So the split does not depend on the order files are found in, and a file
added or removed by another Python release moves no other file. Within a split the
files are concatenated in sorted path order. The bytes themselves are those of the
installed Python (CPython 3.11.7 here: 734 files, 12.1 MB); :func:`load_corpus_with_info`
gives a fingerprint to record next to results.

    train = load_corpus("train", max_bytes=2_000_000)   # uint8 [2_000_000]
    x, y = windows(train, seq_len=128)                  # int32 [N, 128] each, y = x shifted
    unigram_bits_per_byte(train, load_corpus("val"))    # the baseline a model must beat
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

import numpy as np

from jaxdl import errors

VOCAB_SIZE = 256
SPLITS = ("train", "val", "test")
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                           "__pycache__"})
# Per-mille of the path hash: [0, 900) train, [900, 950) val, [950, 1000) test.
_BOUNDS = {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}


def stdlib_root() -> Path:
    """The folder of the standard library's source (``sysconfig``'s "stdlib" path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """The split of a file, from its '/'-separated path relative to the library root."""
    bucket = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") % 1000
    return next(s for s, (lo, hi) in _BOUNDS.items() if lo <= bucket < hi)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise errors.unknown_name("split", "split", split, list(SPLITS))
    return split


def corpus_files(split: str, root: str | os.PathLike | None = None) -> list[str]:
    """The sorted relative paths of the ``*.py`` files of ``split`` under ``root``
    (default: :func:`stdlib_root`)."""
    _check_split(split)
    root = stdlib_root() if root is None else Path(root)
    if not root.is_dir():
        raise errors.input_error("root", "a folder of Python source files", repr(str(root)),
                                 "pass the standard library folder, or leave root out")
    paths = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(rel.parts[:-1]) and path.is_file():
            paths.append(rel.as_posix())
    return sorted(p for p in paths if split_of(p) == split)


def load_corpus(split: str, max_bytes: int | None = None,
                root: str | os.PathLike | None = None) -> np.ndarray:
    """The bytes of one split, files concatenated in sorted path order.

    Args:
      split: "train", "val" or "test".
      max_bytes: keep only the first ``max_bytes`` bytes (whole files, the last one cut).
      root: the source folder (default: the standard library's).

    Returns:
      uint8 [num_bytes].
    """
    return load_corpus_with_info(split, max_bytes, root)[0]


def load_corpus_with_info(split: str, max_bytes: int | None = None,
                          root: str | os.PathLike | None = None
                          ) -> tuple[np.ndarray, dict[str, object]]:
    """:func:`load_corpus` and facts identifying its bytes, from one read.

    Returns:
      ``(data, info)``: data uint8 [num_bytes]; info ``{"source", "python", "split",
      "files" (files read), "bytes", "max_bytes", "sha256"}`` to record next to results.
    """
    import platform

    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes < 1):
        raise errors.input_error("max_bytes", "an integer >= 1 or None", repr(max_bytes),
                                 "pass e.g. max_bytes=2_000_000")
    root = stdlib_root() if root is None else Path(root)
    parts, total = [], 0
    for rel in corpus_files(split, root):
        data = (root / rel).read_bytes()
        parts.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    corpus = np.frombuffer(b"".join(parts)[:max_bytes], np.uint8).copy()
    if not len(corpus):
        raise errors.input_error("split", "a split with at least one file",
                                 f"{split!r}, empty under {str(root)!r}",
                                 "use another split or a folder with more .py files")
    info = {"source": "python-stdlib", "python": platform.python_version(), "split": split,
            "files": len(parts), "bytes": int(len(corpus)), "max_bytes": max_bytes,
            "sha256": hashlib.sha256(corpus.tobytes()).hexdigest()}
    return corpus, info


def num_windows(num_bytes: int, seq_len: int, stride: int | None = None) -> int:
    """How many windows :func:`windows` cuts from ``num_bytes`` bytes."""
    stride = seq_len if stride is None else stride
    return max(0, (num_bytes - 1 - seq_len) // stride + 1)


def windows(data: np.ndarray, seq_len: int, stride: int | None = None, start: int = 0,
            count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-byte examples: ``x[i] = data[s:s+T]``, ``y[i] = data[s+1:s+T+1]``, ``s = i*stride``.

    Args:
      data: uint8 [num_bytes] (e.g. from :func:`load_corpus`).
      seq_len: the window length ``T``.
      stride: the step between window starts; default ``T`` (windows that do not
        overlap: each byte is a target once). The bytes after the last whole
        window are left out.
      start, count: windows ``[start, start + count)`` only (for writing in chunks).

    Returns:
      ``(x, y)``, int32 [N, T] each.
    """
    data = np.asarray(data)
    if data.ndim != 1:
        raise errors.input_error("data", "a 1-D array of bytes", errors.describe(data),
                                 "pass load_corpus(...)")
    for name, value in (("seq_len", seq_len), ("stride", stride if stride is not None else 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise errors.input_error(name, "an integer >= 1", repr(value),
                                     f"pass e.g. {name}=128")
    stride = seq_len if stride is None else stride
    total = num_windows(len(data), seq_len, stride)
    if total == 0:
        raise errors.input_error("seq_len", f"a window shorter than the data ({len(data)} "
                                 "bytes, one more needed for the last target)", str(seq_len),
                                 "use a shorter seq_len or more data")
    stop = total if count is None else min(total, start + count)
    view = np.lib.stride_tricks.sliding_window_view(data, seq_len + 1)[::stride][start:stop]
    view = view.astype(np.int32)
    return view[:, :-1].copy(), view[:, 1:].copy()


def unigram_bits_per_byte(train: np.ndarray, eval_data: np.ndarray) -> float:
    """Bits per byte of ``eval_data`` under ``train``'s byte frequencies (add-one smoothed).

    The baseline of a character-level model: ``-mean(log2 p(b))`` with
    ``p(b) = (count_train(b) + 1) / (len(train) + 256)``.
    """
    counts = np.bincount(np.asarray(train, np.uint8), minlength=VOCAB_SIZE) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[np.asarray(eval_data, np.uint8)].mean())
