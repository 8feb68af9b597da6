"""Where a run's numbers go: console, metrics.jsonl, TensorBoard, CSV, plots, traces.

Each writer is a :class:`jaxdl.Callback` that only reads the logs it is given:
it never changes the state and does not need to run between epochs
(``needs_every_epoch = False``), so it does not stop the driver from fusing
several epochs into one dispatch; its lines then arrive together when that
dispatch ends.
"""

from jaxdl.writers.console import ConsoleLogger, format_logs, format_perf
from jaxdl.writers.csv import CsvWriter
from jaxdl.writers.jsonl import JsonlWriter, jsonable
from jaxdl.writers.tensorboard import TensorBoardWriter

__all__ = ["ConsoleLogger", "CsvWriter", "JsonlWriter", "TensorBoardWriter", "format_logs",
           "format_perf", "jsonable"]
