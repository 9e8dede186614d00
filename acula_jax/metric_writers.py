"""Training metrics to `metrics.jsonl` and TensorBoard event files (no TensorFlow needed)."""
import json
import pathlib
import time

from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends one JSON line per logged step and mirrors scalars to `workdir/tensorboard`."""

  def __init__(self, workdir, *, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict):
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()
