"""The training loop end to end at tiny size: pretrain -> align -> export -> probes, resume, bad input."""
import json
import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import input_pipeline
from acula_jax.data import records
from acula_jax.data import teacher as teacher_lib
from acula_jax import sharding
from acula_jax.data import synthetic
from acula_jax import train
from configs import demo
import teacher_table
from tiny_training import tiny_config





def exported_params(workdir):
  encoder = checkpointing.load_encoder(workdir)
  from flax import nnx
  return jax.tree.map(np.asarray, nnx.state(encoder, nnx.Param).to_pure_dict())


def test_pretrain_align_probe_end_to_end(corpus, tmp_path):
  pre = tmp_path / "pretrain"
  train.train_and_evaluate(tiny_config(corpus, "tiny,stage=pretrain"), pre)
  lines = [json.loads(l) for l in (pre / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [2, 4, 6]
  assert all(np.isfinite(l["ssl_loss"]) and "align_loss" not in l for l in lines)
  assert (pre / "config.json").is_file() and (pre / "export" / "manifest.json").is_file()

  config = tiny_config(corpus, "tiny", init_from=str(pre))
  config.evals.probe.tasks = "demo"
  align = tmp_path / "align"
  results = train.train_and_evaluate(config, align)
  assert np.isfinite(results["align_loss"]) and np.isfinite(results["ssl_loss"])
  saved = json.loads((align / "eval" / "results.json").read_text())
  assert saved["encoders"][1] == f"init from {pre}"
  assert saved["encoders"][2] == "aligned (linear_cka)"
  for task in synthetic.DEMO_TASKS:
    for outcome in saved["tasks"][task.name].values():
      assert 0.0 <= outcome["mean"] <= 1.0 and len(outcome["per_seed"]) == config.evals.probe.probe.seeds
  assert "| task |" in (align / "eval" / "results.md").read_text()

  # Alignment starts from the pretrained encoder: its initial encoder equals the exported one.
  before = exported_params(pre)
  after = exported_params(align)
  assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape, before, after))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))


@pytest.mark.parametrize("loss,features,dtype", [("contrastive", "visible", "float32"),
                                                 ("reference_gram", "full", "bfloat16")])
def test_alignment_variants_train(corpus, tmp_path, loss, features, dtype):
  config = tiny_config(corpus, f"tiny,loss={loss}", align_features=features, num_train_steps=2,
                       log_every_steps=1, **{"model.dtype": dtype})
  metrics = train.train_and_evaluate(config, tmp_path)
  assert np.isfinite(metrics["align_loss"]) and metrics["learning_rate"] > 0


def test_interrupted_run_resumes_bit_identically(corpus, tmp_path, monkeypatch):
  config = tiny_config(corpus, "tiny", checkpoint_every_steps=100)
  train.train_and_evaluate(config, tmp_path / "straight")

  real_make = train.make_train_step
  calls = {"n": 0}

  def make_preempted(*args, **kwargs):
    step_fn = real_make(*args, **kwargs)

    def step(*a):
      calls["n"] += 1
      if calls["n"] == 3:  # a preemption notice arrives during the third step
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(*a)
    return step

  monkeypatch.setattr(train, "make_train_step", make_preempted)
  with pytest.raises(train.Preempted, match="interrupted by SIGTERM at step 3"):
    train.train_and_evaluate(config, tmp_path / "resumed")
  assert max(int(s) for s in os.listdir(tmp_path / "resumed" / "checkpoints")) == 3
  assert not (tmp_path / "resumed" / "export").exists()
  monkeypatch.setattr(train, "make_train_step", real_make)
  train.train_and_evaluate(config, tmp_path / "resumed")

  straight, resumed = exported_params(tmp_path / "straight"), exported_params(tmp_path / "resumed")
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, straight, resumed)))
  steps = [json.loads(l)["step"] for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  assert steps == [2, 4, 6]


def test_non_finite_loss_stops_with_a_clear_message(corpus, tmp_path, monkeypatch):
  real = input_pipeline._CropAndJoin.random_map

  def poisoned(self, example, rng):
    out = real(self, example, rng)
    out["text_embedding"] = np.full_like(out["text_embedding"], np.nan)
    return out

  monkeypatch.setattr(input_pipeline._CropAndJoin, "random_map", poisoned)
  with pytest.raises(FloatingPointError, match="non-finite values at step"):
    train.train_and_evaluate(tiny_config(corpus, "tiny"), tmp_path)


def test_missing_teacher_embeddings_are_found_before_step_0(corpus, tmp_path):
  table = list(teacher_lib.TeacherTable(corpus / "teacher").rows())
  ids = [row["id"] for row in table]
  rows = [(row["id"], row["embedding"], "r") for row in table[2:]]
  teacher_table.write_teacher_shards(tmp_path / "teacher", rows, num_shards=1)
  config = tiny_config(corpus, "tiny")
  config.data.teacher_dir = str(tmp_path / "teacher")
  with pytest.raises(errors.DataError, match=rf"2 of {len(ids)} training examples.*{ids[0]}.*{ids[1]}"):
    train.train_and_evaluate(config, tmp_path / "work")
  assert not (tmp_path / "work" / "checkpoints").exists()  # refused before any step or checkpoint
  config.data.skip_missing_teacher = True
  train.train_and_evaluate(config, tmp_path / "skip")
  skipped = json.loads((tmp_path / "skip" / "skipped_missing_teacher.json").read_text())
  assert skipped["count"] == 2 and skipped["ids"] == ids[:2]


def test_config_naming_missing_files_fails_clearly(corpus, tmp_path):
  config = tiny_config(corpus, "tiny")
  config.data.teacher_dir = str(tmp_path / "nowhere")
  with pytest.raises(errors.DataError, match="nowhere"):
    train.train_and_evaluate(config, tmp_path / "a")
  config = tiny_config(corpus, "tiny,stage=pretrain", init_from=str(tmp_path / "no_export"))
  with pytest.raises(errors.DataError, match="no_export"):
    train.train_and_evaluate(config, tmp_path / "b")
  config = tiny_config(corpus, "tiny,stage=pretrain")
  config.data.records_dir = str(tmp_path / "no_records")
  with pytest.raises(errors.DataError, match="no_records"):
    train.train_and_evaluate(config, tmp_path / "c")


def test_records_at_another_sample_rate_fail_naming_the_example(tmp_path):
  examples = [dict(synthetic.generate_example(i, seed=0, duration_s=1.0), sample_rate=8000)
              for i in range(40)]
  records.write_audio_records(tmp_path / "records", examples, dataset="synthetic")
  config = demo.get_config("tiny,stage=pretrain")
  config.data.records_dir = str(tmp_path / "records")
  with pytest.raises(errors.BadAudioError, match=r"syn-\d+: stored at 8000 Hz"):
    train.train_and_evaluate(config, tmp_path / "work")


def test_resume_from_another_run_continues_it(corpus, tmp_path, monkeypatch):
  """config.resume: a new workdir continues another run's latest state and data position."""
  config = tiny_config(corpus, "tiny,stage=pretrain", checkpoint_every_steps=3)
  train.train_and_evaluate(config, tmp_path / "straight")

  real_make = train.make_train_step
  def stop_after_three(*args, **kwargs):
    step_fn, calls = real_make(*args, **kwargs), []
    def step(*a):
      calls.append(1)
      if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(*a)
    return step
  monkeypatch.setattr(train, "make_train_step", stop_after_three)
  with pytest.raises(train.Preempted):
    train.train_and_evaluate(config, tmp_path / "first")
  monkeypatch.setattr(train, "make_train_step", real_make)

  config.resume = str(tmp_path / "first")
  train.train_and_evaluate(config, tmp_path / "second")
  steps = [json.loads(l)["step"] for l in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
  assert steps == [4, 6]
  straight, second = exported_params(tmp_path / "straight"), exported_params(tmp_path / "second")
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, straight, second)))


def test_real_data_config_variants():
  from configs import real_data
  control = real_data.get_config("text=false")
  assert control.loss.align_weight == 0 and control.data.teacher_dir == "" and control.loss.ssl_weight == 1
  collapse = real_data.get_config("loss=contrastive,mae=false,features=visible")
  assert collapse.loss.ssl_weight == 0 and collapse.loss.align_weight == 1
  assert collapse.loss.alignment == "contrastive" and collapse.align_features == "visible"
  assert real_data.get_config("stage=pretrain").loss.align_weight == 0
  with pytest.raises(ValueError, match="needs mae=true"):
    real_data.get_config("text=false,mae=false")


def test_trains_on_several_record_folders(corpus, tmp_path, monkeypatch):
  """records_dir="A,B": both folders' training splits feed one run, joined with one teacher table."""
  examples = [synthetic.generate_example(i, seed=1, duration_s=2.0) for i in range(100, 140)]
  records.write_audio_records(tmp_path / "second", examples, dataset="synthetic")
  first = records.open_split(corpus / "records", "train")
  ids = [first[i]["id"] for i in range(len(first))] + [e["id"] for e in examples if e["split"] == "train"]
  rng = np.random.default_rng(0)
  rows = [(i, rng.normal(size=24).astype(np.float32), f"report {i}") for i in ids]
  teacher_table.write_teacher_shards(tmp_path / "teacher", rows, num_shards=1, metadata={"model": "random"})
  config = tiny_config(corpus, "tiny", num_train_steps=2, log_every_steps=1)
  config.data.records_dir = f"{corpus / 'records'},{tmp_path / 'second'}"
  config.data.teacher_dir = str(tmp_path / "teacher")
  seen = set()
  real = input_pipeline._CropAndJoin.random_map

  def spy(self, example, rng):
    seen.add(example["id"])
    return real(self, example, rng)

  monkeypatch.setattr(input_pipeline._CropAndJoin, "random_map", spy)
  metrics = train.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(metrics["align_loss"])
  assert seen <= set(ids) and seen & {e["id"] for e in examples}  # the second folder was read


def test_audiomae_trains_on_its_fbank_and_yields_evaluation_features(corpus, tmp_path):
  """encoder=audiomae: AcuLa steps on Kaldi fbanks, probes after training, and the export's features."""
  from acula_jax.audio import frontends
  from acula_jax.evaluators import features as features_lib
  from configs import acula as acula_config
  config = tiny_config(corpus, "tiny,encoder=audiomae", num_train_steps=4, log_every_steps=2)
  assert config.audio.frontend == "audiomae_fbank" and tuple(config.model.spec_shape) == (64, 32)
  config.evals.probe.tasks = "demo"
  metrics = train.train_and_evaluate(config, tmp_path)
  assert np.isfinite(metrics["align_loss"]) and np.isfinite(metrics["ssl_loss"])
  saved = json.loads((tmp_path / "eval" / "results.json").read_text())
  for task in synthetic.DEMO_TASKS:
    for outcome in saved["tasks"][task.name].values():
      assert 0.0 <= outcome["mean"] <= 1.0
  aligned_key = saved["features"]["aligned (linear_cka)"][synthetic.DEMO_TASKS[0].name]
  info = json.loads(next((tmp_path / "eval" / "features").glob(f"*/{aligned_key}/info.json")).read_text())
  assert info["family"] == "audiomae" and info["audio"] == config.audio.to_dict()
  assert info["window"] == frontends.window_samples(64, config.audio) == 400 + 63 * 160

  # The export through the CLI's path: an OPERA evaluation config still gives AudioMAE its fbank.
  encoder = features_lib.from_export("am", tmp_path)
  assert (encoder.family, encoder.frames, encoder.spec_shape) == ("audiomae", 64, (64, 32))
  opera_audio = acula_config.get_config().audio.to_dict()
  window = features_lib.encoder_window(encoder, None, opera_audio)
  featurizer = features_lib.encoder_featurizer(encoder, opera_audio, window, batch_size=4)
  assert window == info["window"] and featurizer.info["audio"] == config.audio.to_dict()
  waves = [synthetic.generate_example(i, seed=3, duration_s=d)["audio"] for i, d in enumerate((0.5, 2.0, 3.3))]
  features = features_lib.featurize_waves(waves, featurizer)
  assert features.shape == (3, 32) and np.all(np.isfinite(features))
  assert np.ptp(features, axis=0).max() > 0


def test_encoder_and_front_end_must_agree(corpus, tmp_path):
  config = tiny_config(corpus, "tiny,encoder=audiomae")
  config.audio = demo.get_config("tiny").audio
  with pytest.raises(ValueError, match="takes the 'audiomae_fbank' front end"):
    train.train_and_evaluate(config, tmp_path / "a")
  config = tiny_config(corpus, "tiny,encoder=audiomae")
  config.audio.num_mel_bins = 64
  with pytest.raises(ValueError, match="spec_shape is"):
    train.train_and_evaluate(config, tmp_path / "b")


def test_bfloat16_loss_curve_tracks_float32():
  """20 steps of the tiny AcuLa step (one batch of 8 synthetic clips and teacher embeddings, lr 1e-3)
  computed in bfloat16, parameters and optimizer state float32, against float32: every step's MAE and
  alignment loss within 2% of float32's (measured: at most 0.8% and 0.5%)."""
  examples = [synthetic.generate_example(i, seed=0, duration_s=1.0) for i in range(8)]
  curves = {}
  for dtype in ("float32", "bfloat16"):
    config = demo.get_config("tiny")
    config.model.dtype, config.optim.learning_rate = dtype, 1e-3
    batch = {"audio": np.stack([e["audio"][:input_pipeline.clip_samples(config)] for e in examples]),
             "text_embedding": np.random.default_rng(1).normal(size=(8, 24)).astype(np.float32)}
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model, optimizer, _ = train.create_model_and_optimizer(config, 24, 20, "cpu")
    graphdef, state = nnx.split((model, optimizer))
    step = train.make_train_step(graphdef, config, sharding.replicated(mesh), sharding.batch_sharding(mesh))
    batch = sharding.shard_batch(batch, mesh)
    curve = []
    for i in range(20):
      state, metrics = step(state, batch, jax.random.key(i))
      curve.append([float(metrics["ssl_loss"]), float(metrics["align_loss"])])
    curves[dtype] = np.array(curve)
  assert not np.allclose(curves["float32"][0], curves["float32"][-1], rtol=0.05)  # it trains
  np.testing.assert_allclose(curves["bfloat16"], curves["float32"], rtol=0.02)


def test_renamed_config_key_names_the_new_one(corpus, tmp_path):
  config = tiny_config(corpus, "tiny", **{"loss.mae_weight": 0.5})
  with pytest.raises(errors.UsageError, match=r"config.loss.mae_weight is now config.loss.ssl_weight: "
                                              r"set --config.loss.ssl_weight=0.5"):
    train.train_and_evaluate(config, tmp_path)


def test_weight_decay_skips_biases_and_norms_of_stacked_blocks():
  config = demo.get_config("tiny")
  model = train.acula.AculaModel(config, 24, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = train.weight_decay_mask(params).to_pure_dict()
  blocks = mask["encoder"]["blocks"]["stacked"]
  assert blocks["attn"]["qkv"]["kernel"] and blocks["mlp"]["fc1"]["kernel"]  # [depth, in, out]
  assert not blocks["attn"]["qkv"]["bias"] and not blocks["norm1"]["scale"]  # [depth, width]
  assert mask["encoder"]["patch_embed"]["kernel"] and not mask["encoder"]["norm"]["scale"]
  assert mask["audio_head"]["fc1"]["kernel"] and not mask["audio_head"]["fc1"]["bias"]
  # Every stacked leaf decays exactly when one block's slice of it is a matrix.
  shapes = jax.tree.map(np.shape, params.to_pure_dict()["encoder"]["blocks"]["stacked"])
  assert all(jax.tree.leaves(jax.tree.map(lambda decays, shape: decays == (len(shape) - 1 >= 2), blocks,
                                          shapes, is_leaf=lambda x: isinstance(x, tuple))))
