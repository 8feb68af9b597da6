"""The data of an experiment: ``config.data`` -> train/val/test splits.

One of three sources, chosen by the data group: prepared records
(``data.records``, from ``jaxdl data prepare``), next-byte windows of the
standard library's source (``data.name = "text"``), or a bundled data set
(cleaned, split and standardized on the training split only).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxdl import errors
from jaxdl.experiment.settings import config_errors

# data.pipeline="auto" streams training records larger than this from disk (grain);
# smaller ones are read into memory and gathered on device.
PIPELINE_AUTO_BYTES = 2 * 2**30
PIPELINES = ("auto", "memory", "grain")


@dataclasses.dataclass
class RunData:
    """The splits of a run: arrays, except a streamed training set (then ``x_train`` is
    :class:`jaxdl.data.records.Records` and ``y_train`` None)."""

    x_train: Any
    y_train: Any
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scaler: Any = None
    # The training split as loaded, before cleaning: what `jaxdl evaluate --split train` reads.
    loaded_train: tuple[Any, Any] | None = None

    @property
    def splits(self) -> dict[str, tuple[Any, Any]]:
        return {"train": self.loaded_train or (self.x_train, self.y_train),
                "val": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)}

    @property
    def streamed(self) -> bool:
        """Whether the training split is read from disk during the fit."""
        return self.y_train is None

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the first training example, [1, ...] each."""
        if self.streamed:
            first = self.x_train[np.arange(1)]
            return first["x"], first["y"]
        return self.x_train[:1], self.y_train[:1]

    def train_bytes(self) -> int:
        if self.streamed:
            return sum(a.nbytes for a in self.x_train.arrays.values())
        return self.x_train.nbytes + self.y_train.nbytes


def _open_split(folder: Path, split: str) -> Any:
    from jaxdl.data import open_records

    try:
        return open_records(folder / split)
    except errors.InputError as e:
        raise errors.input_error("--config.data.records", "a folder written by `jaxdl data "
                                 "prepare --out DIR` (DIR/train, DIR/val, DIR/test)",
                                 f"{folder}: {errors.first_sentence(e)}",
                                 "run `jaxdl data prepare` first") from None


def _load_records(data_cfg: ml_collections.ConfigDict) -> RunData:
    from jaxdl.data import transforms

    folder = Path(data_cfg.records)
    splits = {split: _open_split(folder, split) if split == "train" or (folder / split).exists()
              else None for split in ("train", "val", "test")}
    train = splits["train"]
    if data_cfg.pipeline not in PIPELINES:
        raise errors.unknown_name("--config.data.pipeline", "data pipeline", data_cfg.pipeline,
                                  list(PIPELINES))
    size = sum(a.nbytes for a in train.arrays.values())
    stream = data_cfg.pipeline == "grain" or (data_cfg.pipeline == "auto"
                                              and size > PIPELINE_AUTO_BYTES)
    if stream:
        x_train, y_train = train, None
    else:
        x_train, y_train = np.asarray(train.arrays["x"]), np.asarray(train.arrays["y"])

    def in_memory(records):
        if records is None:
            return (np.zeros((0, *train.fields["x"].shape), train.fields["x"].dtype),
                    np.zeros((0, *train.fields["y"].shape), train.fields["y"].dtype))
        return np.asarray(records.arrays["x"]), np.asarray(records.arrays["y"])

    scaler = train.info.get("scaler")
    return RunData(x_train, y_train, *in_memory(splits["val"]), *in_memory(splits["test"]),
                   transforms.scaler_from_dict(scaler) if scaler else None)


def _load_text(data_cfg: ml_collections.ConfigDict) -> RunData:
    """Next-byte windows of the standard library's source (:mod:`jaxdl.data.text`)."""
    from jaxdl.data import text

    seq_len = data_cfg.seq_len
    splits = []
    for split in ("train", "val", "test"):
        corpus = text.load_corpus(split)
        cap = data_cfg.max_bytes if split == "train" else data_cfg.eval_bytes
        stride = (data_cfg.stride or None) if split == "train" else None
        if cap:  # that many bytes of windows, spread evenly over every file of the split
            count = max(1, cap // seq_len)
            stride = max(seq_len, (len(corpus) - 1 - seq_len) // count)
            splits += list(text.windows(corpus, seq_len, stride, count=min(
                count, text.num_windows(len(corpus), seq_len, stride))))
        else:
            splits += list(text.windows(corpus, seq_len, stride))
    return RunData(*splits)


def source(data_cfg: ml_collections.ConfigDict) -> str:
    """Which source ``config.data`` names: "records", "text" or "dataset"."""
    if data_cfg.records:
        return "records"
    return "text" if data_cfg.name == "text" else "dataset"


def peek(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray, int]:
    """One example (x [1, ...], y [1, ...]) of the training inputs and the data set's bytes
    (0 where it is streamed or generated), without loading or splitting the data."""
    from jaxdl.data import datasets, open_records

    data_cfg = config.data
    kind = source(data_cfg)
    if kind == "records":
        rows = open_records(Path(data_cfg.records) / "train")[np.arange(1)]
        return rows["x"], rows["y"], 0
    if kind == "text":  # byte tokens: only the window shape matters
        tokens = np.zeros((1, data_cfg.seq_len), np.int32)
        return tokens, tokens, 0
    with config_errors(config, "data"):
        x, y = datasets.raw_arrays(data_cfg.name)
    images = x.reshape(len(x), 8, 8, 1) if data_cfg.images else x
    return images[:1], y[:1], int(x.nbytes + y.nbytes)


def load(config: ml_collections.ConfigDict, quiet: bool = True) -> RunData:
    """The splits ``config.data`` describes (cleaned training rows for a data set)."""
    from jaxdl.data import datasets, transforms

    data_cfg = config.data
    kind = source(data_cfg)
    if kind == "records":
        return _load_records(data_cfg)
    if kind == "text":
        return _load_text(data_cfg)
    with config_errors(config, "data"):
        data = datasets.load(data_cfg.name, seed=config.seed, val_fraction=data_cfg.val_fraction,
                             test_fraction=data_cfg.test_fraction,
                             standardize=data_cfg.standardize, images=data_cfg.images)
    x_train, y_train = data.x_train, data.y_train
    if data_cfg.clean:
        x_train, y_train, report = transforms.clean(x_train, y_train)
        if not quiet and report["rows_out"] != report["rows_in"]:
            print(f"clean: {report}", file=sys.stderr)
    return RunData(x_train, y_train, data.x_val, data.y_val, data.x_test, data.y_test,
                   data.scaler, loaded_train=(data.x_train, data.y_train))
