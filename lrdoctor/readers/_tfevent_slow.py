"""The protobuf path: one Event at a time, for everything the vectorised path does not take
(multi-value summaries, hparams, session logs, unusual tensor dtypes) and for records whose
checksum has to be looked at individually."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Event.what field tags of events that never hold scalars (file_version, graph_def,
# tagged_run_metadata, meta_graph_def, source_metadata), and Summary.Value kinds that are not
# scalars (image, histo, audio): skipped without parsing.
SKIP_WHAT = (0x1A, 0x22, 0x42, 0x4A, 0x52)
SKIP_VALUE_KIND = (0x22, 0x2A, 0x32)

_SESSION_START = 1


@dataclass
class Decoded:
    """Scalars and side information from the slow path of one chunk."""

    offsets: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    pending: list[bool] = field(default_factory=list)  # tensor without plugin metadata
    restarts: list[tuple[int, int]] = field(default_factory=list)  # (file offset, step)
    plugins: dict[str, str] = field(default_factory=dict)  # tag -> first plugin name seen
    hparams: dict[str, Any] = field(default_factory=dict)


def parse_event(payload: bytes):
    """The Event, or None when the bytes do not decode."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    try:
        return event_pb2.Event.FromString(payload)
    except (DecodeError, ValueError, RuntimeError):
        return None


def _tensor_scalar(tensor) -> float | None:
    if len(tensor.tensor_shape.dim) != 0:
        return None
    from tensorboard.util import tensor_util

    try:
        arr = tensor_util.make_ndarray(tensor)
    except (TypeError, ValueError, KeyError):
        return None
    if arr.shape != () or arr.dtype.kind not in "biuf":
        return None
    return float(arr)


def _hparams(value, out: dict[str, Any]) -> None:
    from google.protobuf.message import DecodeError
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    except DecodeError:
        return
    if not data.HasField("session_start_info"):
        return
    for name, v in data.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        if kind == "number_value":
            num = v.number_value
            out[name] = int(num) if float(num).is_integer() and abs(num) < 2**53 else num
        elif kind == "string_value":
            out[name] = v.string_value
        elif kind == "bool_value":
            out[name] = v.bool_value
        elif kind == "null_value":
            out[name] = None
        elif kind is not None:
            from google.protobuf.json_format import MessageToDict

            out[name] = MessageToDict(v)


def extract(event, offset: int, out: Decoded) -> None:
    """Add the scalars (and hparams, restarts) of one parsed Event to ``out``."""
    what = event.WhichOneof("what")
    if what == "session_log":
        if event.session_log.status == _SESSION_START:
            out.restarts.append((offset, int(event.step)))
        return
    if what != "summary":
        return
    for value in event.summary.value:
        plugin = None
        if value.HasField("metadata") and value.metadata.HasField("plugin_data"):
            plugin = value.metadata.plugin_data.plugin_name
            out.plugins.setdefault(value.tag, plugin)
            if plugin == "hparams":
                _hparams(value, out.hparams)
                continue
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            x, pending = float(np.float32(value.simple_value)), False
        elif kind == "tensor" and plugin in (None, "scalars"):
            x = _tensor_scalar(value.tensor)
            if x is None:
                continue
            pending = plugin is None
        else:
            continue
        out.offsets.append(offset)
        out.tags.append(value.tag)
        out.steps.append(int(event.step))
        out.walls.append(float(event.wall_time))
        out.values.append(x)
        out.pending.append(pending)
