r"""AcuLa on OPERA-CE (EfficientNet-B0, 1280-d; COLA as the self-supervised term) at the paper's settings.

Needs ROOT prepared as benchmarks/reproduce_paper.md describes (records, reports, MedGemma-4B
teacher embeddings, ROOT/checkpoints/opera_ce from the released checkpoint):

  python -m acula_jax.tools.convert --from=opera_ce --checkpoint=$ROOT/opera/encoder-operaCE.ckpt \
      --output=$ROOT/checkpoints/opera_ce

Train, then probe before vs after on the `acula` tasks (one H100):

  launch/gpu_local.sh --config=configs/paper/opera_ce.py:root=$ROOT --workdir=$ROOT/runs/opera_ce \
      --run_name=opera_ce -- --config.data.num_workers=16

TPU v4-8 (one host: ROOT on the VM's disk, the workdir in a bucket):

  python launch/tpu.py run --name=acula-v4 --zone=us-central2-b --accelerator_type=v4-8 \
      --config=configs/paper/opera_ce.py:root=/mnt/disks/acula --workdir=gs://BUCKET/acula/opera_ce \
      --run_name=opera_ce -- --config.data.num_workers=32

The authors' loss instead of our pair-aware default (everything else equal), to reproduce their numbers:

  launch/gpu_local.sh --config=configs/paper/opera_ce.py:root=$ROOT,reference \
      --workdir=$ROOT/runs/opera_ce_reference -- --config.data.num_workers=16

Other variants: loss=contrastive, teacher=minilm, train=disjoint (see configs/paper/__init__.py).
Re-run or extend the evaluation (features are cached in WORKDIR/eval/features):

  python -m acula_jax.evaluators.main --workdir=$ROOT/runs/opera_ce --tasks=acula --data_root=$ROOT/records

OPERA-CE is small (about 5M parameters): its step is cheap and the input pipeline sets the pace, so
give it as many `data.num_workers` as the host has cores to spare. Its BatchNorm statistics are
carried through the step and exported with the encoder.
"""
from configs import paper


def get_config(arg=None):
  """OPERA-CE at the paper's settings; `arg` is 'loss=...,reference,teacher=...,root=...,train=...'."""
  return paper.get_paper_config("opera_ce", arg)
