r"""The embedded demo: a small OPERA-GT-shaped MAE ViT aligned to MiniLM on the synthetic corpus.

Two stages share this file (variants after the colon):

  # 1. self-supervised MAE pretraining (the "before alignment" encoder)
  python -m acula_jax.main --config=configs/demo.py:stage=pretrain --workdir=workdir/demo/pretrain
  # 2. AcuLa post-training from it, then linear probes before vs after
  python -m acula_jax.main --config=configs/demo.py --workdir=workdir/demo/acula \
      --config.init_from=workdir/demo/pretrain

`make demo` runs the whole chain, corpus and teacher embeddings included. `:tiny` is the test size.
"""
import ml_collections

from configs import acula


def get_config(arg=None):
  """Returns the demo config; `arg` is 'stage=pretrain|align,tiny,loss=...'."""
  args = acula.parse_arg(arg, stage="align", tiny=False, loss="linear_cka")
  config = acula.get_config(f"encoder=opera_gt,loss={args.loss}")

  config.data.records_dir = "workdir/demo/data/records"
  config.data.teacher_dir = "workdir/demo/data/teacher"
  # 2 s crops (64 frames, 256 patches) instead of OPERA's 8.16 s so the demo fits a 2-core CPU;
  # probes still see whole recordings (averaged 2 s chunks).
  config.data.clip_frames = 64

  config.model.update(width=64, depth=3, num_heads=2, decoder_width=64, decoder_depth=1,
                      decoder_heads=2, spec_frames=64)
  config.heads.hidden_dim = 256
  config.heads.out_dim = 128

  config.batch_size = 32
  config.num_epochs = 6
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 20
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50

  config.eval.tasks = "demo"
  config.eval.probe.learning_rate = 1e-3

  if args.stage == "pretrain":
    config.loss.align_weight = 0.0
    config.data.teacher_dir = ""
    config.num_epochs = 10
    config.eval.tasks = ""  # the align stage probes this encoder as its "before"
  elif args.stage != "align":
    raise ValueError(f"stage must be pretrain or align, got {args.stage!r}")

  if args.tiny:
    _make_tiny(config)
  return config


def _make_tiny(config: ml_collections.ConfigDict):
  """Seconds-long runs for the tests."""
  config.data.clip_frames = 32
  config.model.update(width=32, depth=1, num_heads=2, decoder_width=32, decoder_depth=1,
                      decoder_heads=2, spec_frames=32)
  config.heads.hidden_dim = 32
  config.heads.out_dim = 16
  config.batch_size = 8
  config.num_epochs = 1
  config.num_train_steps = 6
  config.optim.warmup_steps = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.eval.probe.epochs = 8
  config.eval.probe.seeds = 2
