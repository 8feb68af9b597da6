"""Data: bundled sets, cleaning, normalization, on-device augmentation, batch plans.

    data = jdl.data.load("breast_cancer", seed=0)
    x, y, report = jdl.data.clean(x, y)
    scaler = jdl.data.Standardizer.fit(x_train)
    records = jdl.data.open_records("/data/digits/train")      # on disk, memory-mapped
    pipe = jdl.data.Pipeline(records, batch_size=32, seed=0)   # grain, same order as arrays
"""

from jaxdl.data import arrays, augment, text, trees, validate
from jaxdl.data.datasets import Dataset, load
from jaxdl.data.pipeline import Pipeline
from jaxdl.data.records import Records, RecordWriter, open_records, write_records
from jaxdl.data.transforms import Cleaned, MinMaxScaler, Standardizer, clean, scaler_from_dict

__all__ = ["Cleaned", "Dataset", "MinMaxScaler", "Pipeline", "RecordWriter", "Records",
           "Standardizer", "arrays", "augment", "clean", "load", "open_records",
           "scaler_from_dict", "text", "trees", "validate", "write_records"]
