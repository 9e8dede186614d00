"""Training metrics to `metrics.jsonl` and TensorBoard event files.

TensorBoard's event files are TFRecord files of `tensorboard.Event` protos. The three tiny messages
needed for scalars are encoded here by hand, so neither TensorFlow nor tensorboardX (which imports
torch when it is installed) is needed to log.
"""
import json
import os
import pathlib
import socket
import struct
import time

from acula_jax import records


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, payload: bytes) -> bytes:
  return _field(number, 2, _varint(len(payload)) + payload)


def scalar_event(step: int, tag: str, value: float, wall_time: float) -> bytes:
  """Event{wall_time=1, step=2, summary=5: Summary{value=1: Value{tag=1, simple_value=2}}}."""
  summary_value = _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
  summary = _length_delimited(1, summary_value)
  return (_field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
          + _length_delimited(5, summary))


def version_event(wall_time: float) -> bytes:
  """The first event of every file: Event{wall_time=1, file_version=3}."""
  return _field(1, 1, struct.pack("<d", wall_time)) + _length_delimited(3, b"brain.Event:2")


def drop_lines_after(path: pathlib.Path, step: int) -> int:
  """Rewrites a metrics.jsonl without the lines of steps after `step`; returns how many went."""
  if not path.exists():
    return 0
  lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
  keep = [line for line, line_step in zip(lines, map(_step_of, lines))
          if line_step is None or line_step <= step]
  if len(keep) != len(lines):
    records.write_text_atomic(path, "".join(keep))
  return len(lines) - len(keep)


def _step_of(line: str):
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class MetricWriter:
  """Appends one JSON line per logged step and mirrors the scalars to `workdir/tensorboard`."""

  def __init__(self, workdir, *, enabled: bool = True, resume_step: int | None = None):
    """`resume_step`: the step this run restarts from; lines of later steps in metrics.jsonl (written
    after the last checkpoint of a run that was killed) are dropped, so no step appears twice."""
    self._enabled = enabled
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    (workdir / "tensorboard").mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      drop_lines_after(workdir / "metrics.jsonl", resume_step)
    self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    now = time.time()
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
    self._events = open(workdir / "tensorboard" / name, "ab")
    self._events.write(records.frame_record(version_event(now)))

  def write(self, step: int, scalars: dict):
    if not self._enabled:
      return
    now = time.time()
    self._jsonl.write(json.dumps({"step": step, "time": now, **scalars}) + "\n")
    self._jsonl.flush()
    for tag, value in scalars.items():
      self._events.write(records.frame_record(scalar_event(step, tag, float(value), now)))
    self._events.flush()

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._events.close()
