"""Bundled real data sets: scikit-learn's, read from its install, split and standardized.

    data = jdl.data.load("breast_cancer", seed=0)
    data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test

Nothing is downloaded. Importing scikit-learn takes over a second, so the
arrays are read straight from the data files scikit-learn ships (located
without importing it); its loaders are the fallback when the files move.
Splits are stratified for classification and depend only on the seed (a small
numpy split, so scikit-learn is not imported on this path either); the
standardizer is fit on the training split only.

"diabetes" is the raw table (``load_diabetes(scaled=False)``: age in years, sex
as 1/2, ...), not scikit-learn's default pre-scaled copy, whose scaling used
every row; :func:`load` standardizes it from the training rows like the others.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import numbers
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxdl import errors
from jaxdl.data.transforms import Standardizer


def _breast_cancer_names() -> tuple[str, ...]:
    base = ("radius", "texture", "perimeter", "area", "smoothness", "compactness",
            "concavity", "concave points", "symmetry", "fractal dimension")
    return (tuple(f"mean {b}" for b in base) + tuple(f"{b} error" for b in base)
            + tuple(f"worst {b}" for b in base))


FEATURE_NAMES: dict[str, tuple[str, ...]] = {
    "breast_cancer": _breast_cancer_names(),
    "iris": ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"),
    "wine": ("alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
             "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
             "od280/od315_of_diluted_wines", "proline"),
    "diabetes": ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"),
    "digits": tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
}
TASKS = {"breast_cancer": "binary", "iris": "multiclass", "wine": "multiclass",
         "digits": "multiclass", "diabetes": "regression"}


def _sklearn_data_dir() -> Path | None:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _read_labelled_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn's format (as its load_csv_data parses it): a header
    # "n_samples,n_features,<class names>", then rows of features, integer class last.
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1].astype(np.int32)


def _read_files(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    if name in ("breast_cancer", "iris"):
        return _read_labelled_csv(folder / f"{name}.csv")
    if name == "wine":
        return _read_labelled_csv(folder / "wine_data.csv")
    if name == "digits":
        with gzip.open(folder / "digits.csv.gz") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int32)
    # Space-separated, no header; load_diabetes reads them with np.loadtxt too.
    with gzip.open(folder / "diabetes_data_raw.csv.gz") as f:
        x = np.loadtxt(f)
    with gzip.open(folder / "diabetes_target.csv.gz") as f:
        y = np.loadtxt(f)
    return x, y


def _read_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as sk

    loaders: dict[str, Callable] = {
        "breast_cancer": sk.load_breast_cancer, "iris": sk.load_iris, "wine": sk.load_wine,
        "digits": sk.load_digits, "diabetes": lambda: sk.load_diabetes(scaled=False)}
    bunch = loaders[name]()
    return bunch.data, bunch.target


def raw_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole of a bundled set, unsplit and unscaled, equal to scikit-learn's loader.

    Args:
      name: one of :data:`TASKS`.

    Returns:
      ``(x, y)``: x float32 [n, features]; y int32 class labels [n], or float32
      targets [n] for "diabetes".
    """
    if not isinstance(name, str) or name not in TASKS:
        raise errors.unknown_name("name", "dataset", name, list(TASKS))
    folder = _sklearn_data_dir()
    try:
        if folder is None:
            raise FileNotFoundError(name)
        x, y = _read_files(name, folder)
    except (OSError, ValueError):
        x, y = _read_sklearn(name)
    y = y.astype(np.float32) if TASKS[name] == "regression" else y.astype(np.int32)
    return x.astype(np.float32), y


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                  stratify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, val, test) row indices covering all rows, from ``seed`` only.

    Args:
      y: labels or targets [n].
      val_fraction, test_fraction: shares of the rows for val and test.
      seed: seeds ``np.random.default_rng``; the same seed gives the same split.
      stratify: shuffle and cut each class of ``y`` separately in the same
        proportions (each split's class shares are within about one row of the whole's).

    Returns:
      Three int64 index arrays (train, val, test), each in shuffled order.
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    parts: tuple[list, list, list] = ([], [], [])
    for rows in groups:
        rows = rng.permutation(rows)
        n_test = int(round(len(rows) * test_fraction))
        n_val = int(round(len(rows) * val_fraction))
        parts[2].append(rows[:n_test])
        parts[1].append(rows[n_test:n_test + n_val])
        parts[0].append(rows[n_test + n_val:])
    return tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A bundled data set, split into train, val and test (numpy arrays).

    Attributes:
      name: the name given to :func:`load`.
      x_train, x_val, x_test: float32 [n_split, features], or [n_split, 8, 8, 1] for
        digits with ``images=True``; ``x_val`` has 0 rows when ``val_fraction=0``.
      y_train, y_val, y_test: int32 class labels [n_split], or float32 targets [n_split]
        for regression.
      task: "binary", "multiclass" or "regression".
      num_classes: the number of classes, or None for regression.
      feature_names: one name per feature (per pixel for digits).
      scaler: the :class:`Standardizer` fit on ``x_train`` and applied to every split,
        or None (``standardize=False`` or ``images=True``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None
    feature_names: tuple[str, ...]
    scaler: Standardizer | None

    @property
    def num_features(self) -> int:
        """Values per example (64 for digits, as images or not)."""
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}


def _fraction(value: float, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise errors.input_error(argument, "a float in [0, 1)", repr(value),
                                 f"pass e.g. {argument}=0.2")
    return float(value)


def load(name: str, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2,
         standardize: bool = True, images: bool = False) -> Dataset:
    """Loads a bundled set: "breast_cancer", "iris", "wine", "digits" or "diabetes".

    Args:
      name: the data set; the first four are classification, "diabetes" regression.
      seed: an integer >= 0 that alone decides the split (stratified for classification).
      val_fraction, test_fraction: shares of the rows held out, each in [0, 1), their
        sum < 1.
      standardize: fit a :class:`Standardizer` on the training split and apply it to
        every split (targets are never scaled).
      images: "digits" only: x as [n, 8, 8, 1] pixels in [0, 1] for CNNs
        (``standardize`` is then ignored).

    Returns:
      A :class:`Dataset`.

    Example::

        data = load("iris", seed=1)
        data.x_train.shape, data.y_train.dtype   # (96, 4), int32
    """
    if not isinstance(name, str) or name not in TASKS:
        raise errors.unknown_name("name", "dataset", name, list(TASKS))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise errors.input_error("seed", "an integer >= 0", repr(seed), "pass e.g. seed=0")
    val_fraction = _fraction(val_fraction, "val_fraction")
    test_fraction = _fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1:
        raise errors.input_error("val_fraction + test_fraction", "a sum below 1",
                                 f"{val_fraction} + {test_fraction}",
                                 "leave rows for training, e.g. 0.15 and 0.2")
    if images and name != "digits":
        raise errors.input_error("images", "images=True only with name='digits'",
                                 f"name={name!r}", "drop images=True for tabular sets")
    x, y = raw_arrays(name)
    task = TASKS[name]
    train, val, test = split_indices(y, val_fraction, test_fraction, seed,
                                     stratify=task != "regression")
    scaler = None
    if images:
        x = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    elif standardize:
        scaler = Standardizer.fit(x[train])
        x = np.asarray(scaler(x), np.float32)
    return Dataset(name, x[train], y[train], x[val], y[val], x[test], y[test], task,
                   None if task == "regression" else int(y.max()) + 1, FEATURE_NAMES[name],
                   scaler)
