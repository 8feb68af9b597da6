"""A run's hyper-parameters as records of TensorBoard's hparams plugin.

The plugin reads three kinds of record: one *experiment* (which hyper-parameters
and metrics the table has, written once at the top of the log folder), and per
training run (a *session*: a folder) its *start info* (that run's values) and
*end info* (its status). A metric is a scalar ``(group, tag)`` read from the
session's folder (``group ""``) or a sub-folder (``group "validation"``): the
table shows its last value.

The records are built with tensorboardX's copies of the plugin's protos, so
writing them needs neither TensorFlow nor the ``tensorboard`` package.

Example::

    start, end = session_summaries({"optimizer.name": "adam", "batch_size": 32})
    experiment = experiment_summary([{"optimizer.name": "adam", "batch_size": 32}],
                                    [("", "test/loss")])
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

# The plugin's names (tensorboard/plugins/hparams/metadata.py); the reader matches on them.
PLUGIN = "hparams"
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"

Value = bool | int | float | str


def hparam_value(value: Any) -> Value | None:
    """A setting as the plugin can hold it: bool, number or string (a tuple of layer
    widths becomes ``"10,10,1"``); None for a setting that is not set."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Number):
        return float(value)  # type: ignore[arg-type]  # the plugin stores numbers as doubles
    if isinstance(value, Sequence):
        return ",".join(str(v) for v in value)
    return str(value)


def _summary(tag: str, **content: Any) -> Any:
    from tensorboardX.proto import plugin_hparams_pb2
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    data = plugin_hparams_pb2.HParamsPluginData(version=0, **content)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=PLUGIN, content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def session_summaries(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """The start and end records of one finished session with these ``values``."""
    from tensorboardX.proto import api_pb2, plugin_hparams_pb2

    start = plugin_hparams_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, raw in values.items():
        value = hparam_value(raw)
        if isinstance(value, bool):  # before numbers: a bool is an int in Python
            start.hparams[name].bool_value = value
        elif isinstance(value, float):
            start.hparams[name].number_value = value
        elif isinstance(value, str):
            start.hparams[name].string_value = value
    end = plugin_hparams_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS,
                                            end_time_secs=time.time())
    return (_summary(SESSION_START_TAG, session_start_info=start),
            _summary(SESSION_END_TAG, session_end_info=end))


def experiment_summary(sessions: Sequence[Mapping[str, Any]],
                       metrics: Sequence[tuple[str, str]]) -> Any:
    """The experiment record: every name the ``sessions`` set, typed from their values
    (strings and bools with the values seen as the domain), and the ``(group, tag)``
    ``metrics``."""
    from tensorboardX.proto import api_pb2

    seen: dict[str, list[Value]] = {}
    for values in sessions:
        for name, raw in values.items():
            value = hparam_value(raw)
            if value is not None:
                seen.setdefault(name, []).append(value)
    infos = []
    for name, found in seen.items():
        kinds = {type(v) for v in found}
        kind = kinds.pop() if len(kinds) == 1 else str  # mixed: shown as text
        info = api_pb2.HParamInfo(name=name, type={
            bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64}.get(
                kind, api_pb2.DATA_TYPE_STRING))
        if kind is not float:  # a discrete domain lets the table filter by value
            info.domain_discrete.extend([v if kind is bool else str(v)
                                         for v in dict.fromkeys(found)])
        infos.append(info)
    experiment = api_pb2.Experiment(
        hparam_infos=infos, time_created_secs=time.time(),
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag))
                      for group, tag in metrics])
    return _summary(EXPERIMENT_TAG, experiment=experiment)
