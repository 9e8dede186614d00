"""Softmax attention without masks, with the kernel of the platform the program is compiled for.

`implementation="auto"` picks by the compile target (`jax.lax.platform_dependent`), never by the
host's default backend, so a step traced on a CPU host and compiled for a TPU topology gets the TPU
kernel:
- TPU: Pallas' flash attention (`jax.experimental.pallas.ops.tpu.flash_attention`). Logits and softmax
  statistics in float32, only the output and the row log-sum-exp kept for the backward pass, so no
  [heads, N, N] scores or probabilities are stored (XLA's plain attention keeps float32 probabilities
  for every layer: most of the paper step's HBM). Sequences are padded to whole 128-row blocks and the
  padded keys masked out with segment ids. Under a mesh (`jax.sharding.use_abstract_mesh`, set by the
  train step) the kernel runs per batch shard in a `shard_map`, since XLA cannot partition a custom
  kernel.
- GPU: cuDNN's fused attention (`jax.nn.dot_product_attention(implementation="cudnn")`) for bf16/f16
  inputs; XLA's for float32, which cuDNN does not take.
- CPU: `cpu_kernels.blocked_attention_bnhd`, a query-blocked kernel written for XLA:CPU.
- anything else: `jax.nn.dot_product_attention`.
"""
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from acula_jax.models import cpu_kernels
from acula_jax.models import partitioning

IMPLEMENTATIONS = ("auto", "xla", "blocked", "flash", "cudnn")
FLASH_BLOCK = 128  # rows of the TPU kernel's blocks; sequences are padded to a multiple


def dot_product_attention(q, k, v, *, implementation="auto"):
  """softmax(q k^T / sqrt(d)) v for [B, N, heads, d] inputs (jax.nn.dot_product_attention's layout).

  `implementation`: "auto" (the compile target's kernel, see the module docstring), or one kernel on
  every platform: "xla" (jax.nn.dot_product_attention), "blocked" (the CPU kernel), "flash" (the TPU
  kernel; on other platforms only in Pallas' interpret mode) or "cudnn" (GPU only).
  """
  kernels = {"xla": jax.nn.dot_product_attention, "blocked": cpu_kernels.blocked_attention_bnhd,
             "flash": flash_attention, "cudnn": _cudnn}
  if implementation == "auto":
    per_platform = dict(cpu=cpu_kernels.blocked_attention_bnhd, tpu=flash_attention)
    if q.dtype in (jnp.bfloat16, jnp.float16) and _can_trace_cudnn():
      per_platform["cuda"] = _cudnn
    return jax.lax.platform_dependent(q, k, v, default=jax.nn.dot_product_attention, **per_platform)
  if implementation not in kernels:
    raise ValueError(f"unknown attention implementation {implementation!r}; available: "
                     f"{', '.join(IMPLEMENTATIONS)}")
  return kernels[implementation](q, k, v)


def _cudnn(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


@functools.cache
def _can_trace_cudnn() -> bool:
  # Tracing cuDNN's attention asks the local cuDNN for its version, so its branch can only be staged
  # out in a process that has a GPU backend; the choice among branches is still the compile target's.
  try:
    return bool(jax.devices("cuda"))
  except RuntimeError:
    return False


def flash_attention(q, k, v):
  """The TPU flash-attention kernel for [B, N, heads, d] inputs, per batch shard under a mesh."""
  mesh = partitioning.batch_mesh()
  if mesh is None or q.shape[0] % mesh.size:
    return _flash_attention_local(q, k, v)
  batch = P(mesh.axis_names)  # every mesh axis splits the batch (sharding.BATCH_AXES)
  return jax.shard_map(_flash_attention_local, mesh=mesh, in_specs=(batch,) * 3, out_specs=batch,
                       check_vma=False)(q, k, v)


def _flash_attention_local(q, k, v):
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash  # pylint: disable=g-import-not-at-top  (Pallas' TPU ops load only when used)
  batch, n, _, d = q.shape
  padded = -(-n // FLASH_BLOCK) * FLASH_BLOCK
  to_kernel = lambda x: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, padded - n), (0, 0)))
  # Segment 1: the real tokens, 0: the padding; keys of another segment are masked out.
  segments = jnp.broadcast_to((jnp.arange(padded) < n).astype(jnp.int32), (batch, padded))
  blocks = tpu_flash.BlockSizes(
      block_q=FLASH_BLOCK, block_k_major=FLASH_BLOCK, block_k=FLASH_BLOCK, block_b=1,
      block_q_major_dkv=FLASH_BLOCK, block_k_major_dkv=FLASH_BLOCK, block_k_dkv=FLASH_BLOCK,
      block_q_dkv=FLASH_BLOCK, block_k_major_dq=FLASH_BLOCK, block_k_dq=FLASH_BLOCK,
      block_q_dq=FLASH_BLOCK)
  out = tpu_flash.flash_attention(
      to_kernel(q), to_kernel(k), to_kernel(v), segment_ids=tpu_flash.SegmentIds(segments, segments),
      sm_scale=d ** -0.5, block_sizes=blocks)
  return jnp.swapaxes(out[:, :, :n], 1, 2)
