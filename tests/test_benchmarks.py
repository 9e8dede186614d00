"""The guard of benchmarks/real_data.py: no probe test example may reach pretraining or alignment."""
import importlib.util
import pathlib

import numpy as np
import pytest

from acula_jax.data import records
from acula_jax.data import synthetic
import teacher_table

REPO = pathlib.Path(__file__).resolve().parents[1]


def _real_data_module():
  spec = importlib.util.spec_from_file_location("real_data", REPO / "benchmarks" / "real_data.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _teacher(path, ids):
  rng = np.random.default_rng(0)
  teacher_table.write_teacher_shards(path, [(i, rng.normal(size=8).astype(np.float32), "r") for i in ids],
                                     num_shards=1, metadata={"model": "random"})


def test_leak_check(tiny_corpus, tmp_path):
  real_data = _real_data_module()
  tasks = [t.name for t in synthetic.DEMO_TASKS]
  train = records.open_split(tiny_corpus / "records", "train")
  train_ids = [train[i]["id"] for i in range(len(train))]
  _teacher(tmp_path / "teacher", train_ids)
  out = real_data.check_no_leak([tiny_corpus / "records"], tmp_path / "teacher", tiny_corpus, tmp_path / "cache",
                                task_names=tasks)
  assert out["corpus_examples"] == len(train_ids) and all(v["test_examples"] > 0 for v in out["tasks"].values())

  # A corpus folder whose training split holds a recording that the probes test on.
  test = records.open_split(tiny_corpus / "records", "test")
  leaked = dict(test[0], split="train")
  records.write_audio_records(tmp_path / "leaky", [leaked], dataset="synthetic")
  with pytest.raises(AssertionError, match=f"test examples are in the training corpus, e.g. .*{leaked['id']}"):
    real_data.check_no_leak([tiny_corpus / "records", tmp_path / "leaky"], tmp_path / "teacher", tiny_corpus,
                            tmp_path / "cache", task_names=tasks)
  # A teacher table with an id outside the corpus's training split.
  _teacher(tmp_path / "teacher2", train_ids + [leaked["id"]])
  with pytest.raises(AssertionError, match="teacher ids are not training-split corpus ids"):
    real_data.check_no_leak([tiny_corpus / "records"], tmp_path / "teacher2", tiny_corpus, tmp_path / "cache",
                            task_names=tasks)


def test_accelerator_step_script_runs_on_cpu(tmp_path):
  """benchmarks/accelerator_step.py, the prepared script for a lent GPU, at tiny size on this machine."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = subprocess.run(
      [sys.executable, "benchmarks/accelerator_step.py", "--size=tiny", "--batch=4", "--steps=2",
       "--warmup=1", f"--json={tmp_path}/r.json"], cwd=REPO, capture_output=True, text=True,
      timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "r.json").read_text())["results"]
  assert [r["framework"] for r in results] == ["jax", "torch"]
  assert all(r["step_s"] > 0 and r["peak_bytes"] > 0 for r in results)
  assert results[0]["dtype"] == "float32" and results[0]["remat"] == "none"  # "auto" on CPU
  assert "| jax " in out.stdout and "| torch " in out.stdout


def test_teacher_memory_script_runs(tmp_path):
  """benchmarks/teacher_memory.py at a tiny size: both joins serve every lookup and report their memory."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = subprocess.run(
      [sys.executable, "benchmarks/teacher_memory.py", "--sizes=300", "--dim=8", "--lookups=96",
       f"--workdir={tmp_path}", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads(out.stdout)
  assert [(r["mode"], r["rows"], r["dim"]) for r in results] == [("lookup", 300, 8), ("eager", 300, 8)]
  assert all({"peak_rss_mb_above_imports", "anon_rss_mb_after", "lookups_per_s"} <= r.keys() for r in results)
