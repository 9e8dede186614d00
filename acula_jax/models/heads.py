"""Projection heads that map audio and text embeddings into the shared space."""

from flax import nnx
import jax.numpy as jnp

from acula_jax.models import layers


class ProjectionMLP(nnx.Module):
  """Linear -> GELU -> Linear, as in the AcuLa reference.

  The reference uses 384 -> 1024 -> 512 for OPERA-GT audio features and
  d_text -> 1024 -> 512 for the teacher's report embeddings. Parameters are
  float32; `dtype` is the compute dtype. The output is float32 because it
  feeds the alignment losses directly.
  """

  def __init__(self, in_dim, hidden_dim=1024, out_dim=512, *, rngs, dtype=jnp.float32):
    self.in_dim = in_dim
    self.out_dim = out_dim
    self.fc1 = nnx.Linear(in_dim, hidden_dim, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(hidden_dim, out_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    if x.shape[-1] != self.in_dim:
      raise ValueError(f"ProjectionMLP expects width {self.in_dim}, got input of shape {x.shape}")
    h = layers.gelu(self.fc1(x))  # exact (erf) GELU, as torch.nn.GELU() in the reference
    return self.fc2(h).astype(jnp.float32)


def text_projection(teacher_manifest, hidden_dim=1024, out_dim=512, *, rngs, dtype=jnp.float32):
  """The text head, sized from the teacher manifest written by precompute.

  The teacher width (384 for MiniLM, 2048+ for LLM teachers) is read from
  `teacher_manifest["dim"]` so that swapping teachers needs no code change.
  """
  if "dim" not in teacher_manifest:
    raise ValueError(f"teacher manifest has no 'dim' entry (keys: {sorted(teacher_manifest)})")
  in_dim = int(teacher_manifest["dim"])
  return ProjectionMLP(in_dim, hidden_dim, out_dim, rngs=rngs, dtype=dtype)
