"""Scale-out on CPU: meshes of 8 simulated devices, 2 processes, gradient accumulation, SIGKILL resume.

Runs `python -m acula_jax.main` in subprocesses (XLA's device count is fixed when jax starts) and
compares the loss curves and exported parameters with a single-device run of the same global batch.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest
from flax import nnx

from acula_jax import checkpointing
from acula_jax import sharding
from acula_jax import train
from configs import demo

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 4


def main_command(corpus, workdir, *extra, variant="tiny"):
  return [sys.executable, "-m", "acula_jax.main", f"--config=configs/demo.py:{variant}",
          f"--workdir={workdir}", f"--config.data.records_dir={corpus / 'records'}",
          f"--config.data.teacher_dir={corpus / 'teacher'}", f"--config.num_train_steps={STEPS}",
          "--config.log_every_steps=1", *([] if "pretrain" in variant else ["--config.evals.probe.tasks="]), *extra]


def run_env(devices=1):
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def run_main(cmd, env, timeout=600):
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def losses(workdir):
  lines = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return np.array([[l["ssl_loss"], l["align_loss"]] for l in lines])


def exported(workdir):
  encoder = checkpointing.load_encoder(workdir)
  return jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(encoder, nnx.Param).to_pure_dict()))


@pytest.fixture(scope="module")
def single_device_run(tiny_corpus, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("single")
  run_main(main_command(tiny_corpus, workdir), run_env(1))
  return workdir


@pytest.mark.parametrize("param_sharding", ["replicated", "fsdp"])
def test_2x4_mesh_matches_one_device(tiny_corpus, single_device_run, tmp_path, param_sharding):
  run_main(main_command(tiny_corpus, tmp_path, "--config.mesh.data=2", "--config.mesh.fsdp=4",
                        f"--config.param_sharding={param_sharding}"), run_env(8))
  np.testing.assert_allclose(losses(tmp_path), losses(single_device_run), rtol=2e-4, atol=1e-6)
  # Adam divides by the root of the squared gradients, so a parameter whose gradient is ~0 can move
  # by up to a step size on float-rounding differences alone: compare at a fraction of the lr.
  lr = demo.get_config("tiny").optim.learning_rate
  for a, b in zip(exported(tmp_path), exported(single_device_run)):
    np.testing.assert_allclose(a, b, rtol=0, atol=0.2 * lr)


def test_two_processes_match_one(tiny_corpus, single_device_run, tmp_path):
  port = portpicker.pick_unused_port()
  procs = []
  for process_id in range(2):
    cmd = main_command(tiny_corpus, tmp_path, "--distributed",
                       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                       f"--process_id={process_id}")
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=run_env(1), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  np.testing.assert_allclose(losses(tmp_path), losses(single_device_run), rtol=2e-4, atol=1e-6)


def test_sigkill_then_resume_is_bit_identical(tiny_corpus, tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  extra = ["--config.checkpoint_every_steps=2", "--config.num_train_steps=8"]
  run_main(main_command(tiny_corpus, straight, *extra, variant="tiny,stage=pretrain"), run_env(1))

  proc = subprocess.Popen(main_command(tiny_corpus, killed, *extra, variant="tiny,stage=pretrain"),
                          cwd=REPO, env=run_env(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "4").is_dir():
    assert proc.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "export").exists()
  run_main(main_command(tiny_corpus, killed, *extra, variant="tiny,stage=pretrain"), run_env(1))

  for a, b in zip(exported(straight), exported(killed)):
    np.testing.assert_array_equal(a, b)
  # Same data order: the resumed run's losses after the checkpoint equal the uninterrupted ones.
  by_step = lambda w: {json.loads(l)["step"]: json.loads(l)["ssl_loss"]
                       for l in (w / "metrics.jsonl").read_text().splitlines()}
  resumed, reference = by_step(killed), by_step(straight)
  assert all(resumed[s] == reference[s] for s in range(5, 9))


def test_gradient_accumulation_equals_the_large_batch(tiny_corpus):
  """MAE-only objective: 4 micro-batches of 2 give the gradients of one batch of 8."""
  config = demo.get_config("tiny,stage=pretrain")
  model = train.acula.AculaModel(config, None, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = {"audio": (rng.standard_normal((8, 31 * 512)) * 0.1).astype(np.float32)}
  keys = jax.random.split(jax.random.key(3), 8)
  full_grads, full_metrics, _ = train.accumulated_grads(model, batch, keys, config, 1)
  accum_grads, accum_metrics, _ = jax.jit(
      lambda b, k: train.accumulated_grads(model, b, k, config, 4))(batch, keys)
  np.testing.assert_allclose(accum_metrics["ssl_loss"], full_metrics["ssl_loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accum_grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_per_device_accumulation_equals_the_scanned_one():
  """The one-reduction path (each device sums its rows' gradients over the micro-batches; the
  alignment loss on all-gathered embeddings) against the scan over whole micro-batches."""
  config = demo.get_config("tiny")
  model = train.acula.AculaModel(config, 24, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = {"audio": (rng.standard_normal((8, 31 * 512)) * 0.1).astype(np.float32),
           "text_embedding": rng.standard_normal((8, 24)).astype(np.float32)}
  keys = jax.random.split(jax.random.key(3), 8)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  batch, keys = jax.device_put((batch, keys), sharding.batch_sharding(mesh))  # as the train step's
  scanned = jax.jit(lambda b, k: train.accumulated_grads(model, b, k, config, 4))(batch, keys)
  per_device = jax.jit(lambda b, k: train.accumulated_grads(model, b, k, config, 4, mesh))(batch, keys)
  for name in ("ssl_loss", "align_loss", "loss"):
    np.testing.assert_allclose(per_device[1][name], scanned[1][name], rtol=1e-5, err_msg=name)
  for a, b in zip(jax.tree.leaves(per_device[0]), jax.tree.leaves(scanned[0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


_PER_DEVICE_GRADS = """
import sys
import jax, ml_collections, numpy as np
from flax import nnx
from acula_jax import input_pipeline, sharding, train
from acula_jax.models import opera_ce
from configs import acula, demo
if sys.argv[1] == "fsdp":
  config, mesh = demo.get_config("tiny"), {"data": 2, "fsdp": 2}
  config.param_sharding = "fsdp"
else:  # BatchNorm, and COLA's loss over the batch
  config, mesh = acula.get_config("encoder=opera_ce"), {"data": 4, "fsdp": 1}
  config.model.update(opera_ce.TINY_CONFIG)
  config.data.clip_frames = 32
  config.heads.update(hidden_dim=32, out_dim=16)
model = train.acula.AculaModel(config, 24, rngs=nnx.Rngs(0))
rng = np.random.default_rng(0)
batch = {"audio": (rng.standard_normal((16, input_pipeline.clip_samples(config))) * 0.1).astype(np.float32),
         "text_embedding": rng.standard_normal((16, 24)).astype(np.float32)}
keys = jax.random.split(jax.random.key(3), 16)
mesh = sharding.make_mesh(ml_collections.ConfigDict(mesh))
batch, keys = jax.device_put((batch, keys), sharding.batch_sharding(mesh))
scanned = jax.jit(lambda b, k: train.accumulated_grads(model, b, k, config, 2))(batch, keys)
per_device = jax.jit(lambda b, k: train.accumulated_grads(model, b, k, config, 2, mesh))(batch, keys)
for name in ("ssl_loss", "align_loss", "loss"):
  np.testing.assert_allclose(per_device[1][name], scanned[1][name], rtol=1e-4, err_msg=name)
split = 0
for a, b in zip(jax.tree.leaves(per_device[0]), jax.tree.leaves(scanned[0])):
  np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)  # float32 sums in another order
  split += "fsdp" in str(a.sharding.spec)
for a, b in zip(jax.tree.leaves(per_device[2]), jax.tree.leaves(scanned[2])):  # BatchNorm statistics
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
print("split gradients", split, "statistics", len(jax.tree.leaves(per_device[2])))
"""


@pytest.mark.parametrize("case", ["fsdp", "batchnorm"])
def test_per_device_accumulation_over_4_devices_equals_the_scanned_one(case):
  """In a 4-device process: with fsdp over a 2 x 2 mesh (weights gathered once, gradients summed per
  device and reduce-scattered once), and for OPERA-CE (BatchNorm synchronised, COLA over the gathered
  batch), against the scan over whole micro-batches."""
  result = run_main([sys.executable, "-c", _PER_DEVICE_GRADS, case], run_env(4))
  split, statistics = map(int, result.stdout.split()[-3::2])
  assert (split > 10) if case == "fsdp" else (statistics > 10), result.stdout


@pytest.mark.parametrize("layout", [("--config.mesh.data=4",),
                                    ("--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.param_sharding=fsdp")],
                         ids=["replicated", "fsdp"])
def test_accumulation_over_4_devices_matches_one_device(tiny_corpus, tmp_path, layout):
  """grad_accum_steps=2 with the batch over 4 devices (one gradient reduction per step: an all-reduce,
  or with fsdp a reduce-scatter) trains as on one device."""
  one, four = tmp_path / "one", tmp_path / "four"
  run_main(main_command(tiny_corpus, one, "--config.grad_accum_steps=2"), run_env(1))
  run_main(main_command(tiny_corpus, four, "--config.grad_accum_steps=2", *layout), run_env(4))
  np.testing.assert_allclose(losses(four), losses(one), rtol=2e-4, atol=1e-6)
