"""The AcuLa training loop: data -> model/optimizer -> jitted step -> checkpoints -> export -> probes."""
import dataclasses
import pathlib
import signal
import time

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
from tqdm import tqdm

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import evaluators
from acula_jax import fileio
from acula_jax import input_pipeline
from acula_jax import losses
from acula_jax import metric_writers
from acula_jax import models
from acula_jax import sharding
from acula_jax import workdir as workdir_lib
from acula_jax.audio import frontends
from acula_jax.data import records
from acula_jax.data import teacher as teacher_lib
from acula_jax.models import acula
from acula_jax.models import partitioning


def create_optimizer(config, total_steps: int):
  """AdamW with linear warm-up then linear decay, global-norm clipping, no decay on biases/norms."""
  optim = config.optim
  warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
      optax.linear_schedule(optim.learning_rate, optim.learning_rate * optim.end_learning_rate_factor,
                            max(total_steps - warmup, 1)),
  ], boundaries=[warmup])
  tx = optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay,
                  mask=weight_decay_mask))
  return tx, schedule


def weight_decay_mask(params):
  """True for the parameters AdamW decays: matrices and kernels, not biases or norms. A leaf of
  stacked transformer blocks (`opera_gt.BlockStack`) carries the block index as an extra leading axis."""
  def decays(path, leaf):
    stacked = any(getattr(key, "key", None) == "stacked" for key in path)
    return jnp.ndim(leaf) - stacked >= 2
  return jax.tree_util.tree_map_with_path(decays, params)


def create_model_and_optimizer(config, text_dim: int | None, total_steps: int, platform: str):
  """The AcuLa model for programs on `platform` (its compute dtype), its AdamW optimizer and
  learning-rate schedule, freshly initialised.

  Under `nnx.eval_shape` it builds only shapes (what `acula_jax.tools.aot` compiles against).
  """
  model = acula.AculaModel(config, text_dim, rngs=nnx.Rngs(config.seed), platform=platform)
  tx, schedule = create_optimizer(config, total_steps)
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param), schedule


def compute_losses(model: acula.AculaModel, batch: dict, rng, config):
  """Total loss and its parts for one batch of waveforms (and teacher embeddings when aligning).

  Run per device (`_per_device_accumulation`), the batch-level alignment loss is computed on every
  device's projected embeddings, all-gathered (the same value on each device).
  """
  spec = frontends.spectrogram(batch["audio"], **config.audio)  # the encoder family's front end
  metrics = {}
  total = 0.0
  need_ssl = config.loss.ssl_weight > 0 or config.align_features == "visible"
  if need_ssl:
    # The encoder's own self-supervised loss: MAE for the ViTs, COLA for OPERA-CE/CT.
    ssl, aux = model.encoder.ssl_forward(spec, rng)
    metrics["ssl_loss"] = ssl
    total += config.loss.ssl_weight * ssl
  if model.text_dim:
    if config.align_features == "visible":
      features = aux["visible_features"]
    elif config.align_features == "full":
      features = model.encoder.features(spec, train=True)
    else:
      raise ValueError(f"align_features must be full or visible, got {config.align_features!r}")
    audio_emb = model.audio_head(features)
    text_emb = model.text_head(batch["text_embedding"])
    audio_emb, text_emb = partitioning.gather_batch(audio_emb), partitioning.gather_batch(text_emb)
    align = losses.alignment_loss(config.loss.alignment, audio_emb, text_emb,
                                  log_temperature=model.log_temperature[...])
    metrics["align_loss"] = align
    total += config.loss.align_weight * align
  metrics["loss"] = total
  return total, metrics


def accumulated_grads(model, batch, keys, config, accum_steps: int, mesh=None):
  """Mean gradients (w.r.t. the nnx.Params) and metrics over `accum_steps` scanned micro-batches.

  Micro-batch k takes rows k, k + accum_steps, ... so that each one is spread over all devices.
  Returns (grads, metrics, rest): `rest` is the non-parameter state after the last micro-batch
  (BatchNorm running statistics of OPERA-CE/CT, updated micro-batch after micro-batch; empty
  for the ViTs).

  With a `mesh`, each device sums the gradients of its own rows over the micro-batches and the
  devices' sums are reduced once (`_per_device_accumulation`): one gradient reduction per optimizer
  step instead of one per micro-batch, for replicated and fsdp parameters.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if accum_steps > 1 and _per_device_accumulation_applies(mesh, keys.shape[0], accum_steps):
    return _per_device_accumulation(graphdef, params, rest, batch, keys, config, accum_steps, mesh)
  return _mean_grads(graphdef, params, rest, batch, keys, config, accum_steps)


def _mean_grads(graphdef, params, rest, batch, keys, config, accum_steps: int, loss_divisor=1):
  """(grads, metrics, rest) of `accumulated_grads` without a mesh of its own: the micro-batches scanned
  one after another, each model update of `rest` (BatchNorm statistics) carried to the next.
  `loss_divisor`: what the loss is divided by before differentiating (the device count, per device)."""

  def loss_and_grads(rest, micro_batch, micro_keys):
    def loss_fn(params):
      # copy=True: fresh Variables inside this trace, so BatchNorm may update its statistics.
      model = nnx.merge(graphdef, params, rest, copy=True)
      total, metrics = compute_losses(model, micro_batch, micro_keys, config)
      return total / loss_divisor, (metrics, nnx.state(model, nnx.Not(nnx.Param)))
    (_, (metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return rest, (grads, metrics)

  if accum_steps == 1:
    rest, (grads, metrics) = loss_and_grads(rest, batch, keys)
    return grads, metrics, rest
  micro_batches = _micro_batches((batch, keys), accum_steps)

  def add_micro_batch(carry, micro_batch):
    rest, total = carry
    rest, out = loss_and_grads(rest, *micro_batch)
    return (rest, jax.tree.map(jnp.add, total, out)), None

  first = jax.tree.map(lambda x: x[0], micro_batches)
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda *a: loss_and_grads(rest, *a)[1], *first))
  (rest, total), _ = jax.lax.scan(add_micro_batch, (rest, zeros), micro_batches)
  grads, metrics = jax.tree.map(lambda x: x / accum_steps, total)
  return grads, metrics, rest


def _micro_batches(tree, accum_steps: int):
  """[B, ...] leaves -> [accum_steps, B / accum_steps, ...]: micro-batch k holds rows k, k + accum_steps, ..."""
  batch_size = jax.tree.leaves(tree)[0].shape[0]
  if batch_size % accum_steps:
    raise ValueError(f"batch of {batch_size} does not split into {accum_steps} micro-batches")
  return jax.tree.map(
      lambda x: x.reshape(batch_size // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1), tree)


def _per_device_accumulation_applies(mesh, batch_size: int, accum_steps: int) -> bool:
  return mesh is not None and (batch_size // mesh.size) % accum_steps == 0


def _per_device_accumulation(graphdef, params, rest, batch, keys, config, accum_steps, mesh):
  """`accumulated_grads` as one device's program (`shard_map`): the device's rows of each micro-batch
  (micro-batch k: its rows k, k + accum_steps, ..., which over all devices are the global rows of
  micro-batch k), gradients summed locally, then reduced across devices once, after the loop.

  Each device differentiates total / devices, where the MAE term is the mean over its own rows and the
  batch-level terms (alignment, COLA) and BatchNorm statistics are computed over all devices' rows
  (`partitioning.gather_batch`, `layers.BatchNorm`), so the devices' gradients add up to the gradient
  of the whole micro-batch's loss, and every device updates the same BatchNorm statistics. With
  `param_sharding=fsdp` the split parameters are gathered once before the loop and their gradients
  reduce-scattered once after it: for the step, each device holds whole parameters and gradients
  (the optimizer state stays split).
  """
  axes = mesh.axis_names
  specs = jax.tree.map(lambda s: s.spec, sharding.state_shardings(params, mesh, config.param_sharding))

  def one_device(params, rest, batch, keys):
    params = jax.tree.map(_gathered, params, specs)
    grads, metrics, rest = _mean_grads(graphdef, params, rest, batch, keys, config, accum_steps,
                                       loss_divisor=mesh.size)
    grads = jax.tree.map(lambda g, spec: _reduced(g, spec, axes), grads, specs)  # the one reduction
    return grads, jax.lax.pmean(metrics, axes), rest

  return jax.shard_map(one_device, mesh=mesh, in_specs=(specs, P(), P(axes), P(axes)),
                       out_specs=(specs, P(), P()), check_vma=False)(params, rest, batch, keys)


def _split_dim(spec) -> int | None:
  """The dimension a parameter's PartitionSpec splits over `fsdp`, or None (replicated)."""
  return next((dim for dim, axis in enumerate(spec) if axis == "fsdp"), None)


def _gathered(x, spec):
  dim = _split_dim(spec)
  return x if dim is None else jax.lax.all_gather(x, "fsdp", axis=dim, tiled=True)


def _reduced(grad, spec, axes):
  """One device's gradient summed over all devices, and split as its parameter is."""
  dim = _split_dim(spec)
  if dim is None:
    return jax.lax.psum(grad, axes)
  grad = jax.lax.psum_scatter(grad, "fsdp", scatter_dimension=dim, tiled=True)
  others = tuple(axis for axis in axes if axis != "fsdp")
  return jax.lax.psum(grad, others) if others else grad


def make_train_step(graphdef, config, state_sharding, batch_sharding):
  """A pure step: (state, batch, rng) -> (new state, metrics), jitted with declared shardings.

  Every example gets its own key (split from the step's), so its MAE mask does not depend on how
  the batch is cut into micro-batches or devices.
  """

  mesh = batch_sharding.mesh

  def train_step(state, batch, rng):
    # The mesh in context: kernels that XLA cannot partition (TPU flash attention) run per batch
    # shard under it, and activations are kept batch-sharded at block boundaries.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return _train_step(state, batch, rng)

  def _train_step(state, batch, rng):
    model, optimizer = nnx.merge(graphdef, state)
    keys = jax.random.split(rng, batch["audio"].shape[0])
    grads, metrics, rest = accumulated_grads(model, batch, keys, config, config.grad_accum_steps, mesh)
    nnx.update(model, rest)  # BatchNorm statistics; nothing for the ViTs
    optimizer.update(model, grads)
    metrics["grad_norm"] = optax.tree.norm(grads)
    # Counted on device after the update: an overflow inside AdamW shows here, not in the loss.
    metrics["nonfinite_params"] = sum(
        jnp.sum(~jnp.isfinite(p)).astype(jnp.float32) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return nnx.state((model, optimizer)), metrics

  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding, None),
                 out_shardings=(state_sharding, None), donate_argnums=0)


def _total_steps(config, num_examples: int) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * input_pipeline.steps_per_epoch(config, num_examples)


def _check_finite(metrics: dict, step: int):
  """Stops before a checkpoint can keep parameters that a NaN or an overflow reached."""
  bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
  if metrics.get("nonfinite_params", 0) > 0:
    bad["nonfinite_params"] = float(metrics["nonfinite_params"])
  if bad:
    raise FloatingPointError(
        f"non-finite values at step {step}: {bad}. Training stopped; no checkpoint of this step was "
        "written, the last good one is kept. Try a lower learning rate, float32 compute, or check the "
        "input data.")


RENAMED_KEYS = {"loss.mae_weight": "loss.ssl_weight"}


def check_renamed_keys(config):
  """UsageError for a config key that was renamed, naming the new one."""
  for old, new in RENAMED_KEYS.items():
    node = config
    for part in old.split("."):
      node = node.get(part) if node is not None else None
    if node is not None:
      raise errors.UsageError(f"config.{old} is now config.{new}: set --config.{new}={node}")


def check_batch(config, num_devices: int, num_examples: int | None = None):
  """UsageError for batch settings that cannot work, before anything is compiled."""
  batch, accum = config.batch_size, config.grad_accum_steps
  if batch < 1 or accum < 1:
    raise errors.UsageError(f"batch_size={batch} and grad_accum_steps={accum} must both be >= 1")
  if num_examples is not None and batch > num_examples:
    raise errors.UsageError(f"batch_size={batch} is larger than the {num_examples} training examples of "
                            f"{config.data.records_dir}: a batch would repeat examples; use at most "
                            f"--config.batch_size={num_examples}")
  if batch % accum:
    raise errors.UsageError(f"batch_size={batch} does not split into grad_accum_steps={accum} "
                            "micro-batches; use a divisor of the batch")
  if batch % num_devices:
    raise errors.UsageError(f"batch_size={batch} does not split over the mesh's {num_devices} devices; "
                            "use a multiple, or set --config.mesh.data / --config.mesh.fsdp")


def training_indices(config, teacher) -> tuple:
  """(indices of the training records to use, ids left out): (None, []) means all of them.

  Every training id is checked against the teacher table before step 0: a missing one is an error
  naming the count and the first ids, or, with `data.skip_missing_teacher`, left out.
  """
  if teacher is None:
    return None, []
  ids = records.split_ids(config.data.records_dir, config.data.train_split)
  missing = teacher.missing(ids)
  if not missing:
    return None, []
  if not config.data.skip_missing_teacher:
    raise errors.DataError(
        config.data.teacher_dir,
        f"{len(missing)} of {len(ids)} training examples have no teacher embedding (first: "
        f"{missing[:5]}); rerun acula_jax.text.reports and acula_jax.text.precompute on the training split, or "
        "pass --config.data.skip_missing_teacher=True to train without them")
  left_out = set(missing)
  return [i for i, example_id in enumerate(ids) if example_id not in left_out], missing


class Preempted(Exception):
  """SIGTERM stopped the run after it saved a checkpoint; rerunning the same command resumes it."""

  def __init__(self, workdir, step: int):
    self.step = step
    super().__init__(f"interrupted by SIGTERM at step {step}: checkpoint saved in {workdir}/checkpoints; "
                     "rerun the same command to resume (no export or evaluation was written)")


class _Preemption:
  """Turns SIGTERM (what a preemption sends) into a request to checkpoint and exit."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _restore_if_any(config, workdir, manager, state, data_iterator):
  """Resume order: this workdir's latest checkpoint, else `config.resume`'s, else the given state."""
  if manager.latest_step():
    step = manager.latest_step()
    logging.info("Resuming from %s at step %d", workdir / "checkpoints", step)
    return checkpointing.restore(manager, step, state, data_iterator), step
  if config.resume:
    other = checkpointing.make_manager(config.resume, save_interval_steps=1, max_to_keep=None,
                                       read_only=True)
    step = other.latest_step()
    if not step:
      raise errors.DataError(config.resume, "config.resume names a run without checkpoints")
    logging.info("Resuming from %s at step %d", config.resume, step)
    return checkpointing.restore(other, step, state, data_iterator), step
  return state, 0


def train_and_evaluate(config, workdir) -> dict:
  """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns final metrics."""
  workdir = pathlib.Path(workdir)
  check_renamed_keys(config)
  frontends.check_frontend(config.model.name, models.get_model(config.model.name).FRONTEND, config.audio,
                           spec_shape=config.model.get("spec_shape"))
  config_changes = workdir_lib.check_config(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  teacher = None
  if config.loss.align_weight > 0:
    if not config.data.teacher_dir:
      raise errors.UsageError("loss.align_weight > 0 needs --config.data.teacher_dir (the output of "
                              "acula_jax.text.precompute), or --config.loss.align_weight=0 for MAE only")
    teacher = teacher_lib.TeacherTable(config.data.teacher_dir)
  indices, missing_teacher = training_indices(config, teacher)
  num_examples = (len(indices) if indices is not None
                  else len(records.open_split(config.data.records_dir, config.data.train_split)))
  mesh = sharding.make_mesh(config.mesh)
  check_batch(config, mesh.devices.size, num_examples)
  total_steps = _total_steps(config, num_examples)

  model, optimizer, schedule = create_model_and_optimizer(
      config, teacher.dim if teacher else None, total_steps, platform=sharding.platform(mesh))
  if config.init_from:
    checkpointing.load_encoder_params(config.init_from, model.encoder)
  graphdef, state = nnx.split((model, optimizer))
  del model, optimizer  # `state` is the one copy from here on (the step donates its buffers)

  state_sharding = sharding.state_shardings(state, mesh, config.param_sharding)
  state = jax.device_put(state, state_sharding)
  train_step = make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))

  data_iterator = iter(input_pipeline.create_train_dataset(config, teacher, indices=indices))
  manager = checkpointing.make_manager(workdir, save_interval_steps=config.checkpoint_every_steps,
                                       max_to_keep=config.keep_checkpoints)
  state, start_step = _restore_if_any(config, workdir, manager, state, data_iterator)
  if jax.process_index() == 0:
    workdir_lib.record_start(config, workdir, start_step, config_changes)
    if missing_teacher:
      _record_skipped_teacher(workdir, missing_teacher, num_examples + len(missing_teacher))

  writer = metric_writers.MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=start_step)
  rng = jax.random.key(config.seed)
  preemption = _Preemption()
  try:
    loop = _Loop(config=config, train_step=train_step, data_iterator=data_iterator, manager=manager, writer=writer,
                 schedule=schedule, rng=rng, preemption=preemption, mesh=mesh)
    state, metrics, stopped_at = loop.run(state, start_step, total_steps)
  finally:
    preemption.restore()
    manager.wait_until_finished()
    writer.close()
  if preemption.requested:
    raise Preempted(workdir, stopped_at)

  _export(workdir, nnx.merge(graphdef, state)[0], config, teacher)
  del state  # the evaluators read the exports from disk: no model stays in device memory
  if config.evals:
    context = evaluators.Context(
        audio_config=config.audio.to_dict(), out_dir=workdir / "eval",
        default_window=input_pipeline.clip_samples(config), fallback_records=config.data.records_dir,
        comparison="alignment" if teacher is not None and config.init_from else "")
    evaluators.run_all(config.evals, evaluators.workdir_encoders(workdir), context)
  return metrics


def _export(workdir, model, config, teacher):
  """The encoder, and with a teacher its projection heads (zero-shot, retrieval), to workdir/export."""
  write_heads = (None if teacher is None else
                 lambda directory: checkpointing.export_heads(directory, model, config, teacher.manifest))
  export_dir = checkpointing.export_encoder(workdir, model.encoder, config.model, write_more=write_heads)
  logging.info("Exported the encoder to %s", export_dir)


def _record_skipped_teacher(workdir, missing: list, of: int):
  logging.warning("Training without %d examples that have no teacher embedding (listed in %s)",
                  len(missing), workdir / "skipped_missing_teacher.json")
  fileio.write_json_atomic(workdir / "skipped_missing_teacher.json",
                           {"count": len(missing), "of": of, "ids": missing})


@dataclasses.dataclass
class _Loop:
  """What the training loop runs with, besides the state and the steps."""
  config: object
  train_step: object
  data_iterator: object
  manager: object
  writer: object
  schedule: object
  rng: object
  preemption: object
  mesh: object

  def run(self, state, start_step: int, total_steps: int) -> tuple:
    """Runs steps [start_step, total_steps); returns (state, the last logged metrics, the last step)."""
    pending = None  # the previous step's metrics: fetched one step late so the host never stalls the device
    window_start, window_examples = time.perf_counter(), 0
    logged, done = {}, start_step
    progress = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps,
                    desc="train", unit="step", disable=jax.process_index() != 0)
    for step in progress:
      batch = sharding.shard_batch(next(self.data_iterator), self.mesh)
      state, step_metrics = self.train_step(state, batch, jax.random.fold_in(self.rng, step))  # RNG per step
      if pending is not None:
        _check_finite(jax.device_get(pending[1]), pending[0])
      pending = (step + 1, step_metrics)
      window_examples += self.config.batch_size
      done = step + 1
      if done % self.config.log_every_steps == 0 or done == total_steps:
        logged = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        _check_finite(logged, done)
        elapsed = time.perf_counter() - window_start
        logged.update(learning_rate=float(self.schedule(step)), examples_per_sec=window_examples / elapsed)
        self.writer.write(done, logged)
        progress.set_postfix(loss=f"{logged['loss']:.4f}", ex_s=f"{logged['examples_per_sec']:.1f}")
        window_start, window_examples = time.perf_counter(), 0
      stop = self.preemption.requested or done == total_steps
      if stop or self.manager.should_save(done):
        _check_finite(jax.device_get(step_metrics), done)  # never checkpoint parameters a NaN reached
        checkpointing.save(self.manager, done, state, self.data_iterator, force=stop)
      if stop:
        break
    return state, logged, done
