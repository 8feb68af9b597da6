"""Data: bundled sets, cleaning, normalization, on-device augmentation, batch plans.

    data = jdl.data.load("breast_cancer", seed=0)
    x, y, report = jdl.data.clean(x, y)
    scaler = jdl.data.Standardizer.fit(x_train)
"""

from jaxdl.data import arrays, augment, validate
from jaxdl.data.datasets import Dataset, load
from jaxdl.data.transforms import Cleaned, MinMaxScaler, Standardizer, clean, scaler_from_dict

__all__ = ["Cleaned", "Dataset", "MinMaxScaler", "Standardizer", "arrays", "augment", "clean",
           "load", "scaler_from_dict", "validate"]
