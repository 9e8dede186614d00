"""GELU and LayerNorm with hand-written backward passes, against torch's and against nnx/jax.nn's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from acula_jax.models import layers


def _torch_value_and_grads(fn, *arrays, weights):
  tensors = [torch.from_numpy(np.asarray(a, np.float64)).requires_grad_() for a in arrays]
  out = fn(*tensors)
  (out * torch.from_numpy(np.asarray(weights, np.float64))).sum().backward()
  return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def test_gelu_matches_torch_exact_gelu_values_and_gradient():
  x = np.concatenate([np.linspace(-9, 9, 721), np.random.default_rng(0).standard_normal(500) * 3])
  x = x.astype(np.float32)
  weights = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
  out = layers.gelu(jnp.asarray(x))
  grad = jax.grad(lambda x: jnp.sum(layers.gelu(x) * weights))(jnp.asarray(x))
  ref_out, (ref_grad,) = _torch_value_and_grads(
      lambda t: torch.nn.functional.gelu(t), x, weights=weights)  # default: exact erf form
  np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
  # And what it replaces, in float32.
  np.testing.assert_allclose(out, jax.nn.gelu(jnp.asarray(x), approximate=False), atol=1e-6)


def test_gelu_keeps_bfloat16():
  x = jnp.linspace(-4, 4, 64, dtype=jnp.bfloat16)
  out, grad = jax.value_and_grad(lambda x: jnp.sum(layers.gelu(x).astype(jnp.float32)))(x)
  assert layers.gelu(x).dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16
  ref = jax.nn.gelu(x.astype(jnp.float32), approximate=False)
  np.testing.assert_allclose(layers.gelu(x).astype(jnp.float32), ref, atol=3e-2)


@pytest.mark.parametrize("shape, epsilon", [((3, 7, 16), 1e-6), ((5, 24), 1e-5)])
def test_layer_norm_matches_torch_values_and_gradients(shape, epsilon):
  rng = np.random.default_rng(0)
  width = shape[-1]
  x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)  # an offset mean, as residual streams have
  weights = rng.standard_normal(shape).astype(np.float32)
  norm = layers.LayerNorm(width, epsilon=epsilon, rngs=nnx.Rngs(0))
  norm.scale[...] = jnp.asarray(rng.standard_normal(width).astype(np.float32))
  norm.bias[...] = jnp.asarray(rng.standard_normal(width).astype(np.float32))
  graphdef, params = nnx.split(norm)

  def loss(params, x):
    return jnp.sum(nnx.merge(graphdef, params)(x) * weights)

  out = norm(jnp.asarray(x))
  d_params, d_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
  ref_out, (ref_dx, ref_dscale, ref_dbias) = _torch_value_and_grads(
      lambda t, s, b: torch.nn.functional.layer_norm(t, (width,), s, b, eps=epsilon),
      x, np.asarray(norm.scale[...]), np.asarray(norm.bias[...]), weights=weights)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_x, ref_dx, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(d_params["scale"][...], ref_dscale, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(d_params["bias"][...], ref_dbias, rtol=1e-5, atol=1e-4)


def test_layer_norm_has_nnx_layer_norms_variables_and_values():
  ours = layers.LayerNorm(12, epsilon=1e-6, rngs=nnx.Rngs(0))
  theirs = nnx.LayerNorm(12, epsilon=1e-6, use_fast_variance=False, rngs=nnx.Rngs(0))
  ours_state, theirs_state = nnx.state(ours, nnx.Param), nnx.state(theirs, nnx.Param)
  assert jax.tree.structure(ours_state) == jax.tree.structure(theirs_state)
  assert [a.shape for a in jax.tree.leaves(ours_state)] == [a.shape for a in jax.tree.leaves(theirs_state)]
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32))
  np.testing.assert_allclose(ours(x), theirs(x), atol=1e-6)
  mask = jnp.asarray(np.random.default_rng(1).random((4, 12)) > 0.3)
  np.testing.assert_allclose(ours(x, mask=mask), theirs(x, mask=mask), atol=1e-6)  # nnx's path


def test_layer_norm_dtypes():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))
  bf16_norm = layers.LayerNorm(8, epsilon=1e-6, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(bf16_norm)
  out = bf16_norm(x)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), nnx.LayerNorm(8, epsilon=1e-6, rngs=nnx.Rngs(0))(x),
                             atol=2e-2)
  d_params = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x).astype(jnp.float32)))(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(d_params))  # float32 master weights
  # dtype=None promotes as nnx does: bfloat16 input, float32 parameters -> float32.
  assert layers.LayerNorm(8, epsilon=1e-6, rngs=nnx.Rngs(0))(x.astype(jnp.bfloat16)).dtype == jnp.float32


def _scanned_mlp_grad_temp_bytes(activation, norm_call):
  """XLA temp memory of d/dx of 4 scanned LayerNorm -> Linear -> activation -> Linear blocks."""
  rng = np.random.default_rng(0)
  w1 = jnp.asarray(rng.standard_normal((4, 64, 256)).astype(np.float32) * 0.05)
  w2 = jnp.asarray(rng.standard_normal((4, 256, 64)).astype(np.float32) * 0.05)
  x = jnp.asarray(rng.standard_normal((512, 64)).astype(np.float32))
  norm = layers.LayerNorm(64, epsilon=1e-6, rngs=nnx.Rngs(0))

  def loss(x):
    body = lambda h, w: (h + activation(norm_call(norm, h) @ w[0]) @ w[1], None)
    return jnp.sum(jax.lax.scan(body, x, (w1, w2))[0])

  compiled = jax.jit(jax.grad(loss)).lower(x).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.cpu_only  # the temporaries of XLA:CPU's program
def test_custom_backward_passes_save_less_for_the_backward_pass():
  """Why these layers exist: autodiff's versions keep more intermediates per scanned block."""
  nnx_call = lambda norm, h: nnx.LayerNorm.__call__(norm, h)
  ours = _scanned_mlp_grad_temp_bytes(layers.gelu, layers.LayerNorm.__call__)
  theirs = _scanned_mlp_grad_temp_bytes(lambda h: jax.nn.gelu(h, approximate=False), nnx_call)
  assert ours < 0.75 * theirs, (ours, theirs)
