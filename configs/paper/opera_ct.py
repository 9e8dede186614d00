r"""AcuLa on OPERA-CT (HTS-AT, 768-d; COLA as the self-supervised term) at the paper's settings.

Needs ROOT prepared as benchmarks/reproduce_paper.md describes (records, reports, MedGemma-4B
teacher embeddings, ROOT/checkpoints/opera_ct from the released checkpoint):

  python -m acula_jax.tools.convert --from=opera_ct --checkpoint=$ROOT/opera/encoder-operaCT.ckpt \
      --output=$ROOT/checkpoints/opera_ct

Train, then probe before vs after on the `acula` tasks (one H100):

  launch/gpu_local.sh --config=configs/paper/opera_ct.py:root=$ROOT --workdir=$ROOT/runs/opera_ct \
      --run_name=opera_ct -- --config.data.num_workers=16

TPU v4-8 (one host: ROOT on the VM's disk, the workdir in a bucket):

  python launch/tpu.py run --name=acula-v4 --zone=us-central2-b --accelerator_type=v4-8 \
      --config=configs/paper/opera_ct.py:root=/mnt/disks/acula --workdir=gs://BUCKET/acula/opera_ct \
      --run_name=opera_ct -- --config.data.num_workers=32

The authors' loss instead of our pair-aware default (everything else equal), to reproduce their numbers:

  launch/gpu_local.sh --config=configs/paper/opera_ct.py:root=$ROOT,reference \
      --workdir=$ROOT/runs/opera_ct_reference -- --config.data.num_workers=16

Other variants: loss=contrastive, teacher=minilm, train=disjoint (see configs/paper/__init__.py).
Re-run or extend the evaluation (features are cached in WORKDIR/eval/features):

  python -m acula_jax.evaluators.main --workdir=$ROOT/runs/opera_ct --tasks=acula --data_root=$ROOT/records

HTS-AT resizes every input to its 256 x 256 image, so each of the three passes per example (the
alignment pass and the two COLA crops) costs a full forward whatever the crop length.
"""
from configs import paper


def get_config(arg=None):
  """OPERA-CT at the paper's settings; `arg` is 'loss=...,reference,teacher=...,root=...,train=...'."""
  return paper.get_paper_config("opera_ct", arg)
