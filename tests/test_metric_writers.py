"""Event files written without TensorFlow parse as TensorBoard events (tensorboardX's protos)."""
import json

import pytest

from acula_jax import metric_writers
from acula_jax import records


def test_events_parse_with_tensorboard_protos(tmp_path):
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  writer = metric_writers.MetricWriter(tmp_path)
  writer.write(10, {"loss": 1.5, "learning_rate": 1e-4})
  writer.write(20, {"loss": 0.25, "learning_rate": 2e-4})
  writer.close()

  (events_file,) = (tmp_path / "tensorboard").iterdir()
  events = []
  for payload in records.iter_tfrecord(events_file):
    event = event_pb2.Event()
    event.ParseFromString(payload)
    events.append(event)
  assert events[0].file_version == "brain.Event:2"
  scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert scalars == [(10, "loss", 1.5), (10, "learning_rate", pytest.approx(1e-4)),
                     (20, "loss", 0.25), (20, "learning_rate", pytest.approx(2e-4))]
  assert all(e.wall_time > 1e9 for e in events)

  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(l["step"], l["loss"]) for l in lines] == [(10, 1.5), (20, 0.25)]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writers.MetricWriter(tmp_path, enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert list(tmp_path.iterdir()) == []
