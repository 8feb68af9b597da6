"""Writes the kit's data sets as records: the bundled sets and the text corpus.

What ``jaxdl data prepare`` runs: one records folder per split, ``OUT/train``,
``OUT/val``, ``OUT/test``, each readable by :func:`jaxdl.data.open_records` and
fed by :class:`jaxdl.data.pipeline.Pipeline`.

    prepare("digits", "/data/digits", seed=0)          # x float32 [n, 64], y int32 [n]
    prepare("text", "/data/pystdlib", seq_len=128)     # x, y int32 [n, 128], y = x shifted
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from jaxdl import errors
from jaxdl.data import datasets, text
from jaxdl.data.records import Records, RecordWriter, write_records

DATASETS = (*datasets.TASKS, "text")


@contextlib.contextmanager
def _writing(out: str | os.PathLike) -> Iterator[None]:
    """An OS error while writing under ``out`` (a read-only place, a path under a file) as
    the kit's error about ``out``, not a traceback."""
    try:
        yield
    except OSError as e:
        raise errors.input_error("out", "a folder that can be created and written",
                                 f"{out} ({e.strerror or type(e).__name__})",
                                 "pick a writable location, e.g. out='./data/records'") from None


def _splits(splits: Sequence[str]) -> list[str]:
    splits = list(splits)
    bad = [s for s in splits if s not in text.SPLITS]
    if bad or not splits:
        raise errors.unknown_name("split", "split", bad[0] if bad else splits, list(text.SPLITS))
    return splits


def prepare_dataset(name: str, out: str | os.PathLike, splits: Sequence[str] = text.SPLITS, *,
                    seed: int = 0, images: bool = False, overwrite: bool = False
                    ) -> dict[str, Records]:
    """A bundled set as records, split and standardized as :func:`jaxdl.data.load` does.

    Each folder's info holds the dataset, split, seed, task, class count and the
    training split's scaler (``Standardizer.to_dict()``), so the model's inputs can be
    reproduced without the records.
    """
    data = datasets.load(name, seed=seed, images=images)
    info = {"dataset": name, "seed": seed, "task": data.task, "num_classes": data.num_classes,
            "images": bool(images), "scaler": data.scaler.to_dict() if data.scaler else None}
    written = {}
    for split in _splits(splits):
        x, y = data.splits[split]
        if not len(x):
            continue  # e.g. val_fraction=0: nothing to write
        with _writing(out):
            written[split] = write_records(Path(out) / split, {"x": x, "y": y},
                                           {**info, "split": split}, overwrite=overwrite)
    return written


def prepare_text(out: str | os.PathLike, splits: Sequence[str] = text.SPLITS, *,
                 seq_len: int = 128, stride: int | None = None, max_bytes: int | None = None,
                 root: str | os.PathLike | None = None, overwrite: bool = False,
                 chunk_windows: int = 8192) -> dict[str, Records]:
    """The text corpus as next-byte windows (:func:`jaxdl.data.text.windows`), written
    in chunks so the int32 windows never sit in memory whole.

    Args:
      out: the parent folder of the split folders.
      splits: which of "train", "val", "test".
      seq_len, stride: the window length and the step between windows (default seq_len).
      max_bytes: cap on the *train* split's bytes (val and test stay whole).
      root: the source folder (default: the standard library's).
      overwrite: replace existing records.
      chunk_windows: windows per write.

    Each folder's info holds the corpus facts
    (:func:`jaxdl.data.text.load_corpus_with_info`), the window settings,
    ``vocab_size`` 256, and for val/test the unigram bits per byte under the train split's
    byte frequencies (the baseline a model must beat).
    """
    splits = _splits(splits)
    train, train_info = text.load_corpus_with_info("train", max_bytes, root)
    written = {}
    for split in splits:
        data, info = (train, train_info) if split == "train" else \
            text.load_corpus_with_info(split, None, root)
        info = {**info, "seq_len": seq_len, "stride": stride or seq_len,
                "vocab_size": text.VOCAB_SIZE}
        if split != "train":
            info["unigram_bits_per_byte"] = text.unigram_bits_per_byte(train, data)
        total = text.num_windows(len(data), seq_len, stride or seq_len)
        with _writing(out), RecordWriter(Path(out) / split, info, num_examples=total,
                                         overwrite=overwrite) as writer:
            for start in range(0, max(total, 1), chunk_windows):
                x, y = text.windows(data, seq_len, stride, start=start, count=chunk_windows)
                writer.append({"x": x, "y": y})
        with _writing(out):
            written[split] = writer.close()
    return written


def prepare(dataset: str, out: str | os.PathLike, splits: Sequence[str] = text.SPLITS,
            **options) -> dict[str, Records]:
    """Writes ``dataset`` ("text" or a bundled set's name) as records under ``out``.

    ``options`` go to :func:`prepare_text` (seq_len, stride, max_bytes, root, overwrite)
    or :func:`prepare_dataset` (seed, images, overwrite).

    Returns:
      ``{split: Records}`` of the folders written.

    Raises:
      InputError: naming ``out`` when it cannot be created or written (a path under a
        file, a read-only location), as well as for an unknown dataset or split.
    """
    if dataset not in DATASETS:
        raise errors.unknown_name("dataset", "dataset", dataset, list(DATASETS))
    if dataset == "text":
        return prepare_text(out, splits, **options)
    return prepare_dataset(dataset, out, splits, **options)
