"""GELU and LayerNorm, every transformer block's: the plain versions, or `cpu_kernels`' on CPU.

Which one runs follows the platform the program is compiled for (`jax.lax.platform_dependent`):
XLA:CPU gets the hand-written backward passes of `cpu_kernels` (less memory, faster there), every other
platform `jax.nn.gelu` and `nnx.LayerNorm` with autodiff. Both compute the same function.
"""
import functools

from flax import nnx
import jax
import jax.numpy as jnp

from acula_jax.models import cpu_kernels
from acula_jax.models import partitioning


def gelu(x):
  """Exact (erf) GELU, x * Phi(x): torch's nn.GELU() default."""
  return jax.lax.platform_dependent(
      x, cpu=cpu_kernels.gelu, default=functools.partial(jax.nn.gelu, approximate=False))


class LayerNorm(nnx.LayerNorm):
  """`nnx.LayerNorm(width)` over the last axis with exact two-pass variance (torch's), statistics in
  float32.

  `dtype` is the output dtype (None: the promoted dtype of the input and parameters, as nnx).
  """

  def __init__(self, width, *, epsilon, dtype=None, rngs):
    super().__init__(width, epsilon=epsilon, dtype=dtype, use_fast_variance=False, rngs=rngs)

  def __call__(self, x, *, mask=None):
    if mask is not None:  # nnx's masked statistics; not used by the models here
      return super().__call__(x, mask=mask)
    return jax.lax.platform_dependent(x, cpu=self._cpu_kernel, default=super().__call__)

  def _cpu_kernel(self, x):
    scale, bias = self.scale[...], self.bias[...]
    out_dtype = self.dtype or jnp.promote_types(x.dtype, scale.dtype)
    return cpu_kernels.layer_norm(x, scale, bias, self.epsilon, jnp.dtype(out_dtype))


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` whose batch statistics stay the whole batch's when the step runs per device
  (synchronised over `partitioning.manual_batch_axes`); elsewhere exactly `nnx.BatchNorm`."""

  def __call__(self, x, use_running_average=None, *, mask=None):
    self.axis_name = partitioning.manual_batch_axes() or None
    return super().__call__(x, use_running_average=use_running_average, mask=mask)
