r"""AcuLa post-training of an audio encoder against precomputed teacher embeddings.

  python -m acula_jax.main --config=configs/acula.py:encoder=opera_gt,loss=linear_cka \
      --workdir=$WORKDIR --config.data.records_dir=... --config.data.teacher_dir=... \
      --config.init_from=PATH_TO_CONVERTED_OPERA_GT

Variants (after the colon, comma separated):
  encoder=opera_gt|opera_ce|opera_ct|audiomae
                            OPERA-GT MAE ViT-S (384-d), OPERA-CE EfficientNet-B0 (1280-d), OPERA-CT
                            HTS-AT (768-d), or AudioMAE ViT-B/16 (768-d); `python -m acula_jax.tools.convert`
                            turns the released checkpoints into --config.init_from directories.
                            The OPERA encoders read OPERA's log-mel (64 bins, hop 512; 8.16 s crops);
                            AudioMAE reads its own front end (`frontends.audiomae_fbank`): Kaldi fbanks of
                            128 bins, 25 ms Hann windows every 10 ms, 1024 frames (10.26 s crops),
                            normalised with AudioSet's mean/std. Its MAE decoder here is a plain
                            8-block transformer, which matches `convert --from=audiomae --skip_decoder`;
                            the released Swin decoder needs --config.model.decoder=swin
                            --config.model.decoder_depth=16.
  loss=linear_cka|contrastive|reference_gram
                            pair-aware linear CKA (default), symmetric InfoNCE, or the authors' d x d Gram
                            formula (pair-agnostic; for reproducing their numbers only)
  teacher=minilm|medgemma   only documents which teacher directory is expected; the text head's input
                            width is always read from the teacher manifest.
Paper settings: AdamW lr 1e-5, wd 0.01, 400 warm-up steps, batch 48, 50 epochs, clip 1.0, 8.18 s crops.
"""
import types

import ml_collections

from acula_jax.audio import frontends
from acula_jax import models

ALIGNMENT_LOSSES = ("linear_cka", "contrastive", "reference_gram")


def parse_arg(arg, **defaults):
  """Parses 'a=1,b,c=x' into a namespace; bare words set booleans, values keep the default's type."""
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in values:
      raise ValueError(f"unknown config variant {key!r}; known: {sorted(values)}")
    default = values[key]
    if not value:
      values[key] = True
    elif isinstance(default, bool):
      values[key] = value.lower() in ("1", "true", "yes")
    else:
      values[key] = type(default)(value) if default is not None else value
  return types.SimpleNamespace(**values)


def get_config(arg=None):
  """Paper-scale AcuLa config (OPERA-GT, full size)."""
  args = parse_arg(arg, encoder="opera_gt", loss="linear_cka", teacher="minilm")
  if args.loss not in ALIGNMENT_LOSSES:
    raise ValueError(f"loss must be one of {ALIGNMENT_LOSSES}, got {args.loss!r}")
  if args.encoder not in models.ENCODERS:
    raise ValueError(f"encoder {args.encoder!r} is not available here; choose from {models.ENCODERS}")

  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.records_dir = ""        # output of `acula_jax.data.synthetic` / `acula_jax.data.prepare`; "A,B" mixes folders
  config.data.teacher_dir = ""        # output of `acula_jax.text.precompute`; "" = MAE only
  config.data.train_split = "train"   # alignment only ever sees this split
  config.data.clip_frames = 256       # 256 frames = 8.16 s at hop 512: OPERA-GT's input
  config.data.num_workers = 0         # grain worker processes (0 = in-process)
  # Training examples without a teacher embedding: an error before step 0 (False), or left out and
  # listed in the workdir's skipped_missing_teacher.json (True).
  config.data.skip_missing_teacher = False

  config.audio = ml_collections.ConfigDict(frontends.OPERA_LOG_MEL)

  # The encoder's own defaults (`models.get_model(name).CONFIG`). dtype and remat "auto": bfloat16
  # compute and rematerialised blocks ("dots": keep the Linear layers' outputs) in programs for
  # accelerators, float32 without recomputation for CPU (see `acula.AUTO`). Parameters and optimizer
  # state are float32 either way. OPERA-GT's MAE decoder is the plain transformer (cheaper when
  # starting it afresh); a converted release's Swin decoder needs --config.model.decoder=swin
  # --config.model.decoder_depth=16 --config.model.decoder_heads=16.
  module = models.get_model(args.encoder)
  config.model = ml_collections.ConfigDict(dict(module.CONFIG, name=args.encoder, dtype="auto"))
  if "remat" in module.CONFIG:  # the transformers' BlockStack
    config.model.remat = "auto"
  if args.encoder == "audiomae":
    set_audiomae_frontend(config)

  config.heads = ml_collections.ConfigDict(dict(hidden_dim=1024, out_dim=512))

  config.loss = ml_collections.ConfigDict()
  config.loss.alignment = args.loss
  config.loss.align_weight = 1.0
  config.loss.ssl_weight = 1.0         # the encoder's self-supervised loss: MAE (ViTs) or COLA (CE/CT)
  # Renamed to ssl_weight: kept only so that setting it is an error naming the new key.
  config.loss.mae_weight = ml_collections.FieldReference(None, field_type=float)
  config.loss.init_temperature = 0.07   # contrastive only; learnable
  # full: a second, unmasked encoder pass feeds the alignment head (the authors' choice);
  # visible: reuse the masked pass's visible tokens (about 60% cheaper per step).
  config.align_features = "full"

  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-5, end_learning_rate_factor=0.0, warmup_steps=400, weight_decay=0.01,
      b1=0.9, b2=0.999, clip_norm=1.0))

  config.batch_size = 48              # global, over all processes and devices
  # Gradient accumulation: the batch is cut into this many micro-batches whose gradients are averaged.
  # Exact for the MAE term; the alignment losses are batch-level, so each micro-batch is then its own
  # alignment batch (as it would be on a smaller machine).
  config.grad_accum_steps = 1

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: all remaining devices
  config.param_sharding = "replicated"  # or "fsdp": split params + optimizer state over mesh.fsdp
  config.num_epochs = 50
  config.num_train_steps = -1         # > 0 overrides num_epochs
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  # Where a run starts, in this order: the workdir's own latest checkpoint; `resume` (another run's
  # workdir: its latest full state and data position); `init_from` (a workdir or export dir: the
  # encoder's parameters only, fresh heads and optimizer); else from scratch.
  config.resume = ""
  config.init_from = ""

  # Evaluators run after training on the exported encoders, by name: {name: evaluators.default_config(
  # type, ...)}; see acula_jax/evaluators/__init__.py. One with no tasks does not run.
  config.evals = ml_collections.ConfigDict()
  return config


def set_audiomae_frontend(config):
  """AudioMAE's fbank front end sized to `config.model.spec_shape`, and crops that fill it exactly."""
  frames, bins = config.model.spec_shape
  front_end = models.get_model("audiomae").FRONTEND
  config.audio = ml_collections.ConfigDict(frontends.frontend_for(front_end, spec_shape=(frames, bins)))
  config.data.clip_frames = int(frames)  # 1024 frames of 10 ms: 164,080 samples (10.255 s) at 16 kHz
