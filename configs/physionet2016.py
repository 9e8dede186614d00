r"""AcuLa on real heart sounds: PhysioNet/CinC 2016, at the demo's CPU-sized model.

The whole chain, from the published layout (training-a ... training-f) to an aligned encoder:

  # 1. audio records, 16 kHz; database e held out as the test set (see the split caveats in
  #    acula_jax/data/datasets/physionet2016.py: never report the random split alone)
  python -m acula_jax.data.prepare --dataset=physionet2016 --data_dir=/path/to/physionet2016 \
      --output=workdir/physionet2016/data/records --option=split=leave_database_out:e --workers=2
  # 2. rule-based reports of the TRAINING split only (test recordings must never reach alignment)
  python -m acula_jax.text.reports --records=workdir/physionet2016/data/records \
      --output=workdir/physionet2016/data/reports.jsonl --splits=train
  # 3. MiniLM teacher embeddings, offline
  HF_HUB_OFFLINE=1 python -m acula_jax.text.precompute --config=configs/teacher/minilm.py \
      --reports=workdir/physionet2016/data/reports.jsonl --output=workdir/physionet2016/data/teacher
  # 4. MAE pretraining, then alignment from it
  python -m acula_jax.main --config=configs/physionet2016.py:stage=pretrain \
      --workdir=workdir/physionet2016/pretrain
  python -m acula_jax.main --config=configs/physionet2016.py --workdir=workdir/physionet2016/acula \
      --config.init_from=workdir/physionet2016/pretrain

Variants (after the colon): stage=pretrain|align, loss=linear_cka|contrastive|reference_gram, tiny
(seconds-long runs for the tests). Sizes come from configs/demo.py (2 s crops, width 64), so this runs on
a 2-core CPU. The probes after alignment run the leave-database-out-e task, which these records encode.
"""
from configs import acula
from configs import demo

ROOT = "workdir/physionet2016"


def get_config(arg=None):
  """The demo-sized config pointed at the PhysioNet 2016 records and teacher embeddings."""
  args = acula.parse_arg(arg, stage="align", tiny=False, loss="linear_cka")
  variant = ",".join([f"stage={args.stage}", f"loss={args.loss}"] + (["tiny"] if args.tiny else []))
  config = demo.get_config(variant)
  config.data.records_dir = f"{ROOT}/data/records"
  config.data.teacher_dir = "" if args.stage == "pretrain" else f"{ROOT}/data/teacher"
  for entry in config.evals.values():
    entry.tasks = "physionet_ldo_e"  # the records hold database e as the test split
  return config
