r"""The embedded demo: a small OPERA-GT-shaped MAE ViT aligned to MiniLM on the synthetic corpus.

Two stages share this file (variants after the colon):

  # 1. self-supervised MAE pretraining (the "before alignment" encoder)
  python -m acula_jax.main --config=configs/demo.py:stage=pretrain --workdir=workdir/demo/pretrain
  # 2. AcuLa post-training from it, then linear probes before vs after
  python -m acula_jax.main --config=configs/demo.py --workdir=workdir/demo/acula \
      --config.init_from=workdir/demo/pretrain

`make demo` runs the whole chain, corpus and teacher embeddings included. `:tiny` is the test size.
`:encoder=audiomae` swaps in a small AudioMAE-shaped ViT on its own Kaldi fbank front end (the same
stages; 16 x 16 patches of 128-bin fbanks, 192 frames = 1.9 s crops; tiny: 8 x 8 patches, 32 bins).
"""
import ml_collections

from acula_jax import evaluators
from configs import acula

DEMO_ENCODERS = ("opera_gt", "audiomae")


def get_config(arg=None):
  """Returns the demo config; `arg` is 'stage=pretrain|align,tiny,loss=...,encoder=opera_gt|audiomae'."""
  args = acula.parse_arg(arg, stage="align", tiny=False, loss="linear_cka", encoder="opera_gt")
  if args.encoder not in DEMO_ENCODERS:
    raise ValueError(f"the demo has encoder={'|'.join(DEMO_ENCODERS)}, got {args.encoder!r}")
  config = acula.get_config(f"encoder={args.encoder},loss={args.loss}")

  config.data.records_dir = "workdir/demo/data/records"
  config.data.teacher_dir = "workdir/demo/data/teacher"
  # 2 s crops (64 frames, 256 patches) instead of OPERA's 8.16 s so the demo fits a 2-core CPU;
  # probes still see whole recordings (averaged 2 s chunks).
  if args.encoder == "opera_gt":
    config.data.clip_frames = 64
    config.model.update(width=64, depth=3, num_heads=2, decoder_width=64, decoder_depth=1,
                        decoder_heads=2, spec_shape=(64, 64))
  else:
    config.model.update(spec_shape=(192, 128), width=64, depth=3, num_heads=2, decoder_width=64,
                        decoder_depth=1, decoder_heads=2)
    acula.set_audiomae_frontend(config)
  config.heads.hidden_dim = 256
  config.heads.out_dim = 128

  config.batch_size = 32
  config.num_epochs = 6
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 20
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50

  config.evals.probe = evaluators.default_config("linear_probe", tasks="demo")
  config.evals.probe.probe.learning_rate = 1e-3
  if not args.tiny:  # (the tests' teacher embeddings are random: no teacher to embed sentences with)
    config.evals.zeroshot = evaluators.default_config("zeroshot", tasks="demo")
    config.evals.retrieval = evaluators.default_config("retrieval", tasks="demo")

  if args.stage == "pretrain":
    config.loss.align_weight = 0.0
    config.data.teacher_dir = ""
    config.num_epochs = 10
    config.evals = ml_collections.ConfigDict()  # the align stage probes this encoder as its "before"
  elif args.stage != "align":
    raise ValueError(f"stage must be pretrain or align, got {args.stage!r}")

  if args.tiny:
    _make_tiny(config)
  return config


def _make_tiny(config: ml_collections.ConfigDict):
  """Seconds-long runs for the tests."""
  if config.model.name == "audiomae":
    config.model.update(spec_shape=(64, 32), patch_size=(8, 8), width=32, depth=1, num_heads=2,
                        decoder_width=32, decoder_depth=1, decoder_heads=2)
    acula.set_audiomae_frontend(config)  # 64 frames (0.66 s crops) of 32 bins
  else:
    config.data.clip_frames = 32
    config.model.update(width=32, depth=1, num_heads=2, decoder_width=32, decoder_depth=1,
                        decoder_heads=2, spec_shape=(32, 64))
  config.heads.hidden_dim = 32
  config.heads.out_dim = 16
  config.batch_size = 8
  config.num_epochs = 1
  config.num_train_steps = 6
  config.optim.warmup_steps = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  if "probe" in config.evals:
    config.evals.probe.probe.update(epochs=8, seeds=2)
