r"""AcuLa on OPERA-GT (MAE ViT-S/4, 384-d, released Swin decoder) at the paper's settings.

Needs ROOT prepared as benchmarks/reproduce_paper.md describes (records, reports, MedGemma-4B
teacher embeddings, ROOT/checkpoints/opera_gt from the released checkpoint):

  python -m acula_jax.tools.convert --from=opera_gt --checkpoint=$ROOT/opera/encoder-operaGT.ckpt \
      --output=$ROOT/checkpoints/opera_gt

Train, then probe before vs after on the `acula` tasks (one H100):

  launch/gpu_local.sh --config=configs/paper/opera_gt.py:root=$ROOT --workdir=$ROOT/runs/opera_gt \
      --run_name=opera_gt -- --config.data.num_workers=16

TPU v4-8 (one host: ROOT on the VM's disk, the workdir in a bucket):

  python launch/tpu.py run --name=acula-v4 --zone=us-central2-b --accelerator_type=v4-8 \
      --config=configs/paper/opera_gt.py:root=/mnt/disks/acula --workdir=gs://BUCKET/acula/opera_gt \
      --run_name=opera_gt -- --config.data.num_workers=32

The authors' loss instead of our pair-aware default (everything else equal), to reproduce their numbers:

  launch/gpu_local.sh --config=configs/paper/opera_gt.py:root=$ROOT,reference \
      --workdir=$ROOT/runs/opera_gt_reference -- --config.data.num_workers=16

Other variants: loss=contrastive, teacher=minilm, train=disjoint (see configs/paper/__init__.py).
Re-run or extend the evaluation (features are cached in WORKDIR/eval/features):

  python -m acula_jax.evaluators.main --workdir=$ROOT/runs/opera_gt --tasks=acula --data_root=$ROOT/records

Memory and speed: `--config.model.dtype=bfloat16` (bf16 compute, f32 parameters and optimizer state)
if batch 48 does not fit or to go faster; compare with float32 before reporting numbers from it.
"""
from configs import paper


def get_config(arg=None):
  """OPERA-GT at the paper's settings; `arg` is 'loss=...,reference,teacher=...,root=...,train=...'."""
  return paper.get_paper_config("opera_gt", arg)
