"""Training metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

tensorboardX imports torch when torch is installed (for its tensor type): about 1 s and 180 MB. It is
imported when a writer is enabled, so only the process that writes (process 0) pays that.
"""
import json
import pathlib
import time

from acula_jax import fileio


def drop_lines_after(path: pathlib.Path, step: int) -> int:
  """Rewrites a metrics.jsonl without the lines of steps after `step`; returns how many went."""
  if not path.exists():
    return 0
  lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
  keep = [line for line, line_step in zip(lines, map(_step_of, lines))
          if line_step is None or line_step <= step]
  if len(keep) != len(lines):
    fileio.write_text_atomic(path, "".join(keep))
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
    import tensorboardX  # pylint: disable=g-import-not-at-top  (imports torch: only the writing process)
    # purge_step: TensorBoard hides the killed run's events past the step this run resumes from.
    self._events = tensorboardX.SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step)

  def write(self, step: int, scalars: dict):
    if not self._enabled:
      return
    now = time.time()
    self._jsonl.write(json.dumps({"step": step, "time": now, **scalars}) + "\n")
    self._jsonl.flush()
    for tag, value in scalars.items():
      self._events.add_scalar(tag, float(value), step, walltime=now)
    self._events.flush()

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._events.close()
