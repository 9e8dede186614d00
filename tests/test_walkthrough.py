"""README § "Your own recordings", run as written: from a generated study to a per-patient report."""
import json
import os
import pathlib
import re
import subprocess
import sys

import own_recordings
from tiny_training import tiny_config

from acula_jax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = ("ACULA", "DATA", "OUT", "CONFIG", "INIT")


def readme_commands() -> tuple:
  """(settings the block assigns, the rest of the block) of the section's bash block."""
  text = (REPO / "README.md").read_text()
  section = text.split("## Your own recordings", 1)[1].split("\n## ", 1)[0]
  block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
  lines = block.splitlines()
  assigned = [line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z]+=", line)]
  return assigned, "\n".join(line for line in lines if not re.match(r"^[A-Z]+=", line))


def test_own_recordings_walkthrough_runs_as_written(corpus, tmp_path):
  assigned, commands = readme_commands()
  assert tuple(assigned) == SETTINGS
  own_recordings.write(tmp_path / "study")
  # The starting point: a tiny MAE-pretrained encoder (the README's is a converted OPERA checkpoint).
  train.train_and_evaluate(tiny_config(corpus, "stage=pretrain,tiny"), str(tmp_path / "pretrain"))
  out = tmp_path / "out"
  env = dict(os.environ, ACULA=str(REPO), DATA=str(tmp_path / "study"), OUT=str(out),
             CONFIG=f"{REPO}/configs/demo.py:tiny", INIT=str(tmp_path / "pretrain"), HF_HUB_OFFLINE="1",
             PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
  env.pop("PYTHONPATH", None)
  run = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
  log = run.stdout + run.stderr
  assert run.returncode == 0, log[-3000:]
  assert not str(out).startswith(str(REPO))

  # prepare said what happened to the flawed files.
  assert f"audio file not found: audio/{own_recordings.MISSING}" in log
  assert f"audio/{own_recordings.STEREO} (2 channels averaged)" in log
  assert "4000 Hz x 1" in log and "labels: diagnosis, murmur_audible" in log
  manifest = json.loads((out / "records" / "manifest.json").read_text())
  assert manifest["num_examples"] == 3 * own_recordings.NUM_SUBJECTS - 1

  results = json.loads((out / "aligned" / "eval" / "results.json").read_text())
  assert results["encoders"][-2:] == [f"init from {tmp_path / 'pretrain'}", "aligned (linear_cka)"]
  diagnosis = results["tasks"]["table_records_diagnosis"]["aligned (linear_cka)"]
  assert diagnosis["level"] == "recording" and diagnosis["subject"]["num_test"] * 3 == diagnosis["num_test"]
  audible = results["task_info"]["table_records_murmur_audible"]
  assert audible["levels"] == ["recording"] and "subject level skipped" in audible["note"]
  test_side = results["task_info"]["table_records_diagnosis"]["sizes"]["test"]
  assert test_side["subjects"] * 3 == test_side["recordings"] == diagnosis["num_test"]
  markdown = (out / "aligned" / "eval" / "results.md").read_text()
  assert "| table_records_diagnosis | subject | AUROC |" in markdown
  assert "Embedding maps (before and after alignment)" in (out / "aligned" / "eval" / "report.html").read_text()
