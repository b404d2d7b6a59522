"""Write TensorBoard event files with each real writer, for tests and benchmarks.

Every function takes a log directory and a ``{tag: [(step, value), ...]}`` mapping and returns the
event files it wrote. The writers are the real ones: ``torch.utils.tensorboard.SummaryWriter``
(``simple_value`` and ``new_style=True`` tensor scalars), ``tensorboardX.SummaryWriter``, and a
TF2-style writer. TensorFlow is not installed, so the TF2 writer builds exactly what
``tf.summary.scalar`` writes in TF2 (a rank-0 ``DT_FLOAT`` tensor whose value is in
``tensor_content``, with ``plugin_data.plugin_name = "scalars"``; see tensorboard's
``plugins/scalar/summary_v2.py`` and ``metadata.py``) with tensorboard's own protobuf classes and
its ``EventFileWriter``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

Points = Mapping[str, Sequence[tuple[int, float]]]


def event_files(logdir: str | Path) -> list[Path]:
    return sorted(Path(logdir).rglob("events.out.tfevents.*"))


def _interleaved(points: Points) -> Iterable[tuple[str, int, float]]:
    """Points in the order a training loop logs them: step by step, tags within a step."""
    rows = [(step, i, tag, value) for i, (tag, pts) in enumerate(points.items()) for step, value in pts]
    rows.sort(key=lambda r: (r[0], r[1]))
    for step, _, tag, value in rows:
        yield tag, step, value


def write_torch(logdir: str | Path, points: Points, *, new_style: bool = False,
                double_precision: bool = False, in_order: bool = True) -> list[Path]:
    from torch.utils.tensorboard import SummaryWriter

    rows = _interleaved(points) if in_order else (
        (tag, s, v) for tag, pts in points.items() for s, v in pts)
    with SummaryWriter(log_dir=str(logdir), max_queue=1000, flush_secs=3600) as w:
        for tag, step, value in rows:
            w.add_scalar(tag, value, step, new_style=new_style, double_precision=double_precision)
    return event_files(logdir)


def write_tensorboardx(logdir: str | Path, points: Points) -> list[Path]:
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir=str(logdir), max_queue=1000, flush_secs=3600) as w:
        for tag, step, value in _interleaved(points):
            w.add_scalar(tag, value, step)
    return event_files(logdir)


def tf2_scalar_summary(tag: str, value: float):
    """The Summary that TF2's ``tf.summary.scalar(tag, value)`` writes (C++ writer:
    ``Tensor::AsProtoTensorContent``, so the float32 lives in ``tensor_content``)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        tensor_content=np.asarray(value, dtype="<f4").tobytes(),
    )
    md = metadata.create_summary_metadata(display_name=None, description=None)
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, tensor=tensor, metadata=md)
    return summary


def write_tf2(logdir: str | Path, points: Points, *, wall_time: float | None = None) -> list[Path]:
    """TF2-style tensor scalars written by tensorboard's own EventFileWriter."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=3600)
    t0 = time.time() if wall_time is None else wall_time
    for i, (tag, step, value) in enumerate(_interleaved(points)):
        ev = event_pb2.Event(wall_time=t0 + i * 1e-3, step=step, summary=tf2_scalar_summary(tag, value))
        w.add_event(ev)
    w.close()
    return event_files(logdir)


def write_session_log_start(logdir: str | Path, step: int) -> None:
    """Append a SessionLog.START event (what TF's supervisor writes when a run restarts)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(logdir), max_queue_size=10, flush_secs=3600)
    w.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    w.close()


def linear_points(tags: Sequence[str], n_steps: int, seed: int = 0) -> dict[str, list[tuple[int, float]]]:
    """Deterministic float32-representable points for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    out = {}
    for tag in tags:
        vals = rng.standard_normal(n_steps).astype(np.float32).astype(float)
        out[tag] = list(zip(range(n_steps), vals, strict=True))
    return out
