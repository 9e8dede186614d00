r"""The real-recordings experiment of benchmarks/real_data.py: MAE pretraining, then AcuLa variants.

`benchmarks/real_data.py` runs the whole chain and sets the paths; one stage by hand:

  python -m acula_jax.main --config=configs/real_data.py:stage=pretrain --workdir=W/pretrain \
      --config.data.records_dir=W/train_records/physionet2016_bcdf,W/eval_records/yaseen2018
  python -m acula_jax.main --config=configs/real_data.py:loss=contrastive,mae=false --workdir=W/align \
      --config.data.records_dir=... --config.data.teacher_dir=W/teacher --config.init_from=W/pretrain

Variants (after the colon):
  stage=pretrain|align      MAE only from scratch, or alignment starting from --config.init_from
  loss=linear_cka|contrastive|reference_gram
  mae=true|false            keep the MAE term during alignment (false: the representation-collapse ablation)
  text=true|false           false = the control run: the align stage's schedule with MAE only, so that
                            "aligned vs MAE-only" is not "more steps vs fewer"
  features=full|visible     alignment embedding from a second unmasked pass (the authors') or from
                            the masked pass's visible tokens
  tiny                      seconds-long runs for the tests
Sizes are the demo's CPU-sized OPERA-GT shape (ViT width 64, depth 3, 4x4 patches, 2 s crops), so the
whole experiment fits a 2-core CPU; larger runs change model/clip_frames/num_train_steps by flag.
"""
import ml_collections

from configs import acula
from configs import demo

PRETRAIN_STEPS = 2000
ALIGN_STEPS = 400


def get_config(arg=None):
  """Demo-sized model, records and teacher paths left to the caller (benchmarks/real_data.py)."""
  args = acula.parse_arg(arg, stage="align", loss="linear_cka", mae=True, text=True, features="full",
                         tiny=False)
  config = demo.get_config(f"stage={args.stage},loss={args.loss}" + (",tiny" if args.tiny else ""))
  config.data.records_dir = ""
  config.evals = ml_collections.ConfigDict()  # benchmarks/real_data.py probes every encoder in one table afterwards
  if args.stage == "pretrain":
    config.num_train_steps = config.num_train_steps if args.tiny else PRETRAIN_STEPS
    config.optim.warmup_steps = config.optim.warmup_steps if args.tiny else 100
    return config
  config.num_train_steps = config.num_train_steps if args.tiny else ALIGN_STEPS
  config.loss.ssl_weight = 1.0 if args.mae else 0.0
  config.align_features = args.features
  if not args.text:
    if not args.mae:
      raise ValueError("text=false (the MAE-only control) needs mae=true")
    config.loss.align_weight = 0.0
    config.data.teacher_dir = ""
  return config
