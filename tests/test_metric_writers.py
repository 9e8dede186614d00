"""metrics.jsonl and TensorBoard event files, read back with an independent TFRecord reader."""
import json

import pytest
from tfrecord import reader
from tensorboardX.proto import event_pb2

from acula_jax import metric_writers


def _events(directory) -> list:
  out = []
  for path in sorted(directory.iterdir()):
    for payload in reader.tfrecord_iterator(str(path)):
      event = event_pb2.Event()
      event.ParseFromString(bytes(payload))
      out.append(event)
  return out


def _scalars(events) -> list:
  return [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]


def test_scalars_reach_tensorboard_and_jsonl(tmp_path):
  writer = metric_writers.MetricWriter(tmp_path)
  writer.write(10, {"loss": 1.5, "learning_rate": 1e-4})
  writer.write(20, {"loss": 0.25, "learning_rate": 2e-4})
  writer.close()

  events = _events(tmp_path / "tensorboard")
  assert events[0].file_version == "brain.Event:2"
  assert _scalars(events) == [(10, "loss", 1.5), (10, "learning_rate", pytest.approx(1e-4)),
                              (20, "loss", 0.25), (20, "learning_rate", pytest.approx(2e-4))]
  assert all(e.wall_time > 1e9 for e in events)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(l["step"], l["loss"]) for l in lines] == [(10, 1.5), (20, 0.25)]


def test_a_resumed_run_drops_the_steps_after_its_checkpoint(tmp_path):
  """A run killed at step 30 and resumed from its step-20 checkpoint: metrics.jsonl keeps steps <= 20
  and the new event file tells TensorBoard to hide the old events after step 20 (a purge marker)."""
  first = metric_writers.MetricWriter(tmp_path)
  for step in (10, 20, 30):
    first.write(step, {"loss": 1.0 / step})
  first.close()
  resumed = metric_writers.MetricWriter(tmp_path, resume_step=20)
  resumed.write(30, {"loss": 0.5})
  resumed.close()
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [10, 20, 30]
  events = _events(tmp_path / "tensorboard")
  starts = [e for e in events if e.HasField("session_log") and e.session_log.status == e.session_log.START]
  assert [e.step for e in starts] == [20]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writers.MetricWriter(tmp_path, enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert list(tmp_path.iterdir()) == []
