"""AcuLa in JAX/Flax: align auscultation audio encoders with a frozen language teacher."""

__version__ = "0.1.0"


def load_encoder(path, **kwargs):
  """The (aligned) audio encoder exported in a workdir or export directory; see checkpointing."""
  from acula_jax import checkpointing  # pylint: disable=g-import-not-at-top  (keeps `import acula_jax` light)
  return checkpointing.load_encoder(path, **kwargs)
