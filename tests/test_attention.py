"""The CPU and TPU attention kernels against jax.nn.dot_product_attention (XLA's), values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from acula_jax.models import attention
from acula_jax.models import cpu_kernels
from acula_jax.models import opera_gt


def _qkv(shape, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(shape).astype(np.float32) * scale) for _ in range(3)]


def _value_and_grads(fn, q, k, v, weights):
  loss = lambda q, k, v: jnp.sum(fn(q, k, v) * weights)
  out = fn(q, k, v)
  return out, jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("shape, block_size", [
    ((3, 37, 2, 8), 8),     # several query blocks, the last one padded, groups of examples
    ((2, 33, 4, 16), 128),  # one block
    ((1, 5, 1, 4), 2),      # tiny: blocks of 2 queries
])
def test_blocked_matches_xla_values_and_gradients(shape, block_size):
  q, k, v = _qkv(shape)
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
  blocked = lambda q, k, v: cpu_kernels.blocked_attention_bnhd(q, k, v, block_size=block_size)
  out, grads = _value_and_grads(blocked, q, k, v, weights)
  ref_out, ref_grads = _value_and_grads(jax.nn.dot_product_attention, q, k, v, weights)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  for name, g, ref in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def test_blocked_is_stable_with_large_logits():
  q, k, v = _qkv((2, 40, 2, 8), scale=30.0)  # logits in the thousands: exp overflows unshifted
  weights = jnp.ones((2, 40, 2, 8))
  blocked = lambda q, k, v: cpu_kernels.blocked_attention_bnhd(q, k, v, block_size=16)
  out, grads = _value_and_grads(blocked, q, k, v, weights)
  ref_out, ref_grads = _value_and_grads(jax.nn.dot_product_attention, q, k, v, weights)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in (out, *grads))
  # Near-one-hot softmax: float32 rounding of logits in the thousands moves both results by ~1e-3.
  np.testing.assert_allclose(out, ref_out, rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(grads[2], ref_grads[2], rtol=1e-2, atol=1e-2)


def test_bfloat16_inputs_give_bfloat16_close_to_float32():
  q, k, v = _qkv((2, 24, 2, 8))
  low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = cpu_kernels.blocked_attention_bnhd(*low, block_size=8)
  assert out.dtype == jnp.bfloat16
  ref = jax.nn.dot_product_attention(*[x.astype(jnp.float32) for x in low])
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=2e-2)


def _compiled_for_cpu(fn, *specs):
  """fn compiled for a CPU device, whatever the default backend (CPU devices always exist)."""
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  return jax.jit(fn, in_shardings=cpu, out_shardings=cpu).lower(*specs).compile()


def test_auto_follows_the_compile_target_on_cpu():
  spec = jax.ShapeDtypeStruct((2, 200, 2, 16), jnp.float32)

  def program(implementation):
    loss = lambda q, k, v: jnp.sum(attention.dot_product_attention(
        q, k, v, implementation=implementation) ** 2)
    compiled = _compiled_for_cpu(jax.grad(loss, argnums=(0, 1, 2)), spec, spec, spec)
    return compiled.as_text().count(" while("), compiled.memory_analysis().temp_size_in_bytes

  assert program("auto") == program("blocked")  # the query-block loops, and no [N, N] buffers
  assert program("auto") != program("xla")
  assert program("xla")[0] == 0


def test_unknown_implementation_is_refused():
  q, k, v = _qkv((1, 4, 1, 4))
  with pytest.raises(ValueError, match="unknown attention implementation 'splash'"):
    attention.dot_product_attention(q, k, v, implementation="splash")


def test_block_shapes():
  assert cpu_kernels.query_rows_per_block(1025, 128) == 120  # 9 blocks of 120, not 9 of 128
  assert cpu_kernels.query_rows_per_block(308, 128) == 104
  assert cpu_kernels.query_rows_per_block(5, 128) == 8
  per_example = 6 * 120 * 1025
  assert cpu_kernels.examples_per_block(48, per_example) == 2
  assert cpu_kernels.examples_per_block(7, per_example) == 1  # 7 is prime: one example a step
  assert cpu_kernels.examples_per_block(48, 10) == 48


@pytest.mark.cpu_only  # XLA:GPU/TPU fuse attention differently
def test_blocked_keeps_no_score_matrices_for_the_backward_pass():
  # The point of the kernel on CPU: XLA's attention keeps [B, H, N, N] probabilities.
  spec = jax.ShapeDtypeStruct((2, 1025, 6, 64), jnp.float32)
  def temp_bytes(implementation):
    loss = lambda q, k, v: jnp.sum(attention.dot_product_attention(
        q, k, v, implementation=implementation) ** 2)
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(spec, spec, spec).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  scores = 2 * 6 * 1025 * 1025 * 4
  assert temp_bytes("xla") >= 2 * scores  # scores and probabilities, at least
  assert temp_bytes("blocked") < scores


@pytest.mark.parametrize("remat", ["none", "dots"])
def test_stacked_blocks_match_a_python_loop(remat):
  model = opera_gt.opera_gt(**dict(opera_gt.TINY_CONFIG, depth=3, remat=remat), rngs=nnx.Rngs(3))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 32)).astype(np.float32))
  graphdef, params = nnx.split(model.blocks)
  block_graphdef = nnx.graphdef(model.blocks.unstacked()[0])

  def scanned(params):
    return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

  def looped(params):
    y = x
    for i in range(3):
      y = nnx.merge(block_graphdef, jax.tree.map(lambda p, i=i: p[i], params.stacked))(y)
    return jnp.sum(y ** 2)

  value, grads = jax.value_and_grad(scanned)(params)
  ref_value, ref_grads = jax.value_and_grad(looped)(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, ref_grads)
  # Created stacked: one leaf per parameter with the block index leading; distinct initial values.
  kernel = model.blocks.stacked.attn.qkv.kernel[...]
  assert kernel.shape == (3, 32, 96) and not np.allclose(kernel[0], kernel[1])


def test_unstack_tree_round_trips():
  model = opera_gt.opera_gt(**dict(opera_gt.TINY_CONFIG, depth=3))
  pure = nnx.state(model, nnx.Param).to_pure_dict()
  per_block = opera_gt.unstack_tree(pure)
  assert sorted(per_block["blocks"]) == [0, 1, 2]
  np.testing.assert_array_equal(per_block["blocks"][1]["mlp"]["fc1"]["kernel"],
                                pure["blocks"]["stacked"]["mlp"]["fc1"]["kernel"][1])
  back = opera_gt.stack_tree(per_block, pure)
  jax.tree.map(np.testing.assert_array_equal, back, pure)


@pytest.mark.parametrize("shape, dtype, tolerance", [
    ((2, 37, 2, 16), jnp.float32, 1e-5),     # one padded 128-row block
    ((1, 130, 2, 64), jnp.bfloat16, 3e-2),   # two blocks, the second nearly all padding
])
def test_tpu_flash_kernel_matches_xla_in_interpret_mode(shape, dtype, tolerance):
  """The TPU kernel (Pallas' flash attention, padded and masked) run by Pallas' TPU interpreter on
  this machine, against XLA's attention of the same inputs."""
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  q, k, v = (x.astype(dtype) for x in _qkv(shape))
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
  flash = lambda q, k, v: attention.dot_product_attention(q, k, v, implementation="flash")
  xla = lambda q, k, v: jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
  with pltpu.force_tpu_interpret_mode():
    out, grads = _value_and_grads(lambda *a: flash(*a).astype(jnp.float32), q, k, v, weights)
  ref_out, ref_grads = _value_and_grads(xla, q, k, v, weights)
  np.testing.assert_allclose(out, ref_out, rtol=tolerance, atol=tolerance)
  for name, g, ref in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(np.asarray(g, np.float32), ref, rtol=tolerance, atol=2 * tolerance,
                               err_msg=f"d{name}")
