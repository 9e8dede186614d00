"""Projection heads that map audio and text embeddings into the shared space."""

import dataclasses

from flax import nnx
import jax.numpy as jnp
import numpy as np

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


@dataclasses.dataclass
class Heads:
  """A trained run's two projection heads and temperature, as exported (`checkpointing.load_heads`)."""
  audio: ProjectionMLP
  text: ProjectionMLP
  log_temperature: float
  manifest: dict

  def project_audio(self, features) -> np.ndarray:
    return _unit(self.audio(jnp.asarray(features, jnp.float32)))

  def project_text(self, embeddings) -> np.ndarray:
    return _unit(self.text(jnp.asarray(embeddings, jnp.float32)))


def _unit(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def build_heads(manifest: dict, *, seed: int = 0) -> Heads:
  """Freshly initialised heads of an export manifest's sizes (`checkpointing.load_heads` fills them)."""
  rngs = nnx.Rngs(seed)
  audio = ProjectionMLP(manifest["audio_dim"], manifest["hidden_dim"], manifest["out_dim"], rngs=rngs)
  text = ProjectionMLP(manifest["text_dim"], manifest["hidden_dim"], manifest["out_dim"], rngs=rngs)
  return Heads(audio, text, float(np.log(1 / 0.07)), manifest)
