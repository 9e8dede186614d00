"""AcuLa in JAX/Flax: align auscultation audio encoders with a frozen language teacher."""

__version__ = "0.1.0"
