"""Tests for the OPERA-GT MAE ViT and the projection heads (tiny configs only)."""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from acula_jax import losses
from acula_jax.models import heads
from acula_jax.models import opera_gt
import timm_side

TINY = opera_gt.TINY_CONFIG  # spec (32, 64), width 32, depth 2, 2 heads, decoder 32 x 1
N_TINY = (32 // 4) * (64 // 4)  # 128 patches


def _spec(batch=4, frames=32, seed=0):
  return np.random.default_rng(seed).uniform(size=(batch, frames, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
  return opera_gt.opera_gt(**TINY, rngs=nnx.Rngs(0))


@nnx.jit
def _features(m, spec):
  return m.features(spec)


@nnx.jit
def _mae(m, spec, key):
  return m.mae_forward(spec, key)


# ----------------------------------------------------------------------------
# MAE's get_2d_sincos_pos_embed(_flexible), restated independently.


def _mae_sincos_1d(embed_dim, pos):
  omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
  omega = 1.0 / 10000**omega
  out = np.einsum("m,d->md", pos.reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _mae_sincos_2d(embed_dim, grid_size, cls_token):
  grid_h = np.arange(grid_size[0], dtype=np.float32)
  grid_w = np.arange(grid_size[1], dtype=np.float32)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # w first, as in MAE
  grid = grid.reshape([2, 1, grid_size[0], grid_size[1]])
  emb_h = _mae_sincos_1d(embed_dim // 2, grid[0])
  emb_w = _mae_sincos_1d(embed_dim // 2, grid[1])
  emb = np.concatenate([emb_h, emb_w], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
  return emb


def test_sincos_positions_match_mae(model):
  want = _mae_sincos_2d(384, (64, 16), cls_token=True)
  got = opera_gt.sincos_pos_embed_2d(384, (64, 16), cls_token=True)
  assert got.shape == (1025, 384) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-6)
  # OPERA's table: MAE's flexible one over patch_hw = (freq, time) patches.
  m_want = _mae_sincos_2d(32, (16, 8), cls_token=True)
  np.testing.assert_allclose(np.asarray(model.pos_embed()), m_want, atol=1e-6)
  d_want = _mae_sincos_2d(32, (16, 8), cls_token=True)[:1 + 4 * 16]  # decoder table, first 4 rows
  np.testing.assert_allclose(np.asarray(model.pos_embed(4, decoder=True)), d_want, atol=1e-6)


# ----------------------------------------------------------------------------
# Shapes, patches, masking.


def test_output_shapes(model):
  spec = _spec()
  assert _features(model, spec).shape == (4, 32)
  loss, aux = _mae(model, spec, jax.random.key(0))
  assert loss.shape == () and np.isfinite(float(loss))
  assert aux["visible_features"].shape == (4, 32)
  assert aux["pred"].shape == (4, N_TINY, 16)
  assert aux["mask"].shape == (4, N_TINY)
  assert _features(model, spec).dtype == jnp.float32


def test_patchify_order(model):
  spec = _spec(batch=2)
  patches = np.asarray(model.patchify(spec))
  assert patches.shape == (2, N_TINY, 16)
  r, c = 5, 11  # patch (time row 5, freq col 11) is number 5 * 16 + 11
  want = spec[1, 4 * r:4 * r + 4, 4 * c:4 * c + 4].ravel()
  np.testing.assert_array_equal(patches[1, r * 16 + c], want)
  # Every patch, against a plain numpy reading of the same row-major order.
  b, t, f = spec.shape
  reference = spec.reshape(b, t // 4, 4, f // 4, 4).transpose(0, 1, 3, 2, 4).reshape(b, -1, 16)
  np.testing.assert_array_equal(patches, reference)


def test_random_masking_counts(model):
  keep = round(N_TINY * (1 - 0.7))
  assert model.num_keep(N_TINY) == keep == 38
  tokens = jnp.arange(4 * N_TINY, dtype=jnp.float32).reshape(4, N_TINY, 1)
  visible, mask, ids_restore = model.random_masking(tokens, jax.random.key(1))
  assert visible.shape == (4, keep, 1)
  np.testing.assert_array_equal(np.asarray(mask.sum(axis=1)), N_TINY - keep)
  for b in range(4):
    kept = np.sort(np.asarray(visible[b, :, 0]))
    np.testing.assert_array_equal(kept, np.asarray(tokens[b, :, 0])[np.asarray(mask[b]) == 0])
    np.testing.assert_array_equal(np.sort(np.asarray(ids_restore[b])), np.arange(N_TINY))
  assert not np.array_equal(np.asarray(mask[0]), np.asarray(mask[1]))  # per-example noise
  _, aux = _mae(model, _spec(), jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(aux["mask"].sum(axis=1)), N_TINY - keep)


def test_masked_loss_ignores_visible_patches(model):
  spec = _spec()
  loss, aux = _mae(model, spec, jax.random.key(3))
  pred, mask = aux["pred"], aux["mask"]
  target = model.patchify(jnp.asarray(spec))
  np.testing.assert_allclose(float(losses.mae_loss(pred, target, mask)), float(loss), rtol=1e-6)
  visible_changed = jnp.where(mask[..., None] == 0, 123.0, target)
  np.testing.assert_allclose(
      float(losses.mae_loss(pred, visible_changed, mask)), float(loss), rtol=1e-6)
  masked_changed = jnp.where(mask[..., None] == 1, target + 1.0, target)
  assert abs(float(losses.mae_loss(pred, masked_changed, mask)) - float(loss)) > 0.1


def test_variable_length_uses_first_position_rows(model):
  spec = _spec()
  short = spec[:, :16]  # 4 of the 8 patch rows
  assert _features(model, short).shape == (4, 32)
  # Patch embedding is per patch, so equal tokens mean equal positions.
  np.testing.assert_allclose(
      np.asarray(model._embed(jnp.asarray(short))),
      np.asarray(model._embed(jnp.asarray(spec)))[:, :4 * 16], atol=1e-6)
  loss, aux = _mae(model, short, jax.random.key(4))
  assert np.isfinite(float(loss)) and aux["pred"].shape == (4, 64, 16)
  np.testing.assert_array_equal(np.asarray(aux["mask"].sum(axis=1)), 64 - round(64 * 0.3))


def test_rejects_bad_shapes_and_options(model):
  with pytest.raises(ValueError, match="mel bins"):
    model.features(jnp.zeros((1, 32, 48)))
  with pytest.raises(ValueError, match="multiple of 4"):
    model.features(jnp.zeros((1, 18, 64)))
  with pytest.raises(ValueError, match="multiple of 4"):
    model.features(jnp.zeros((1, 64, 64)))  # longer than the position grid
  with pytest.raises(ValueError, match="transformer, swin"):
    opera_gt.opera_gt(**TINY, decoder="conv")


# ----------------------------------------------------------------------------
# Training and precision.


def test_adam_steps_decrease_mae_loss():
  m = opera_gt.opera_gt(**TINY, rngs=nnx.Rngs(1))
  opt = nnx.Optimizer(m, optax.adam(3e-3), wrt=nnx.Param)
  spec, key = jnp.asarray(_spec()), jax.random.key(5)

  @nnx.jit
  def step(m, opt):
    loss_fn = lambda m: m.mae_forward(spec, key)[0]
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    opt.update(m, grads)
    return loss

  history = [float(step(m, opt)) for _ in range(8)]
  assert all(np.isfinite(history))
  assert history[-1] < 0.7 * history[0], history


def test_bfloat16_compute_close_to_float32(model):
  m16 = opera_gt.opera_gt(**TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  # Same seed, float32 params either way: only the compute dtype differs.
  p32, p16 = nnx.state(model, nnx.Param), nnx.state(m16, nnx.Param)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p16))
  jax.tree.map(np.testing.assert_array_equal, p32, p16)
  spec, key = _spec(), jax.random.key(6)
  f32, f16 = _features(model, spec), _features(m16, spec)
  assert f16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(f32 - f16))) < 0.1
  l32, _ = _mae(model, spec, key)
  # One compiled function for the bf16 loss and its gradients.
  loss_and_grads = nnx.jit(nnx.value_and_grad(lambda m: m.mae_forward(spec, key)[0]))
  l16, grads = loss_and_grads(m16)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(float(l16), float(l32), rtol=0.05)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


# ----------------------------------------------------------------------------
# Parity with an independent PyTorch forward.


def _perturbed_tiny():
  """Tiny model with every parameter (LayerNorm included) made non-trivial."""
  m = opera_gt.opera_gt(**TINY, rngs=nnx.Rngs(7))
  params = nnx.state(m, nnx.Param)
  rng = np.random.default_rng(8)  # numpy: no per-shape compilation
  params = jax.tree.map(
      lambda x: np.asarray(x) + 0.1 * rng.normal(size=x.shape).astype(np.float32), params)
  nnx.update(m, params)
  return m


def _t(variable):
  import torch
  return torch.from_numpy(np.array(variable[...], np.float32))


def _load_linear(linear, dense):
  linear.weight.data = _t(dense.kernel).T.contiguous()
  linear.bias.data = _t(dense.bias)


def _load_norm(norm, ln):
  norm.weight.data = _t(ln.scale)
  norm.bias.data = _t(ln.bias)


def _torch_features(m, spec):
  """MAE global-pool ViT forward written with plain torch.nn layers."""
  import torch
  nn = torch.nn
  width, heads_ = TINY["width"], TINY["num_heads"]
  conv = nn.Conv2d(1, width, kernel_size=4, stride=4)
  conv.weight.data = _t(m.patch_embed.kernel).T.reshape(width, 1, 4, 4).contiguous()
  conv.bias.data = _t(m.patch_embed.bias)
  pos = torch.from_numpy(_mae_sincos_2d(width, (16, 8), cls_token=True)).float()[None]
  with torch.no_grad():
    x = conv(torch.from_numpy(spec)[:, None]).flatten(2).transpose(1, 2) + pos[:, 1:]
    cls = (_t(m.cls_token) + pos[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for blk in m.blocks.unstacked():
      norm1, norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      _load_norm(norm1, blk.norm1)
      _load_norm(norm2, blk.norm2)
      attn = nn.MultiheadAttention(width, heads_, batch_first=True)
      attn.in_proj_weight.data = _t(blk.attn.qkv.kernel).T.contiguous()  # [q; k; v] rows
      attn.in_proj_bias.data = _t(blk.attn.qkv.bias)
      _load_linear(attn.out_proj, blk.attn.proj)
      fc1, fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
      _load_linear(fc1, blk.mlp.fc1)
      _load_linear(fc2, blk.mlp.fc2)
      h = norm1(x)
      x = x + attn(h, h, h, need_weights=False)[0]
      x = x + fc2(nn.GELU()(fc1(norm2(x))))
    fc_norm = nn.LayerNorm(width, eps=1e-6)
    _load_norm(fc_norm, m.fc_norm)
    return fc_norm(x[:, 1:].mean(dim=1)).numpy()


def _timm_features(m, spec):
  """The same forward through timm's VisionTransformer (global_pool='avg')."""
  import torch
  timm = timm_side.import_timm()
  width = TINY["width"]
  vit = timm.models.vision_transformer.VisionTransformer(
      img_size=(32, 64), patch_size=4, in_chans=1, num_classes=0, embed_dim=width,
      depth=TINY["depth"], num_heads=TINY["num_heads"], mlp_ratio=4.0, qkv_bias=True,
      class_token=True, global_pool="avg", fc_norm=True,
      norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
  sd = {
      "patch_embed.proj.weight": _t(m.patch_embed.kernel).T.reshape(width, 1, 4, 4),
      "patch_embed.proj.bias": _t(m.patch_embed.bias),
      "cls_token": _t(m.cls_token),
      "pos_embed": torch.from_numpy(_mae_sincos_2d(width, (16, 8), True)).float()[None],
      "fc_norm.weight": _t(m.fc_norm.scale), "fc_norm.bias": _t(m.fc_norm.bias),
  }
  for i, blk in enumerate(m.blocks.unstacked()):
    pairs = dict(norm1=blk.norm1, norm2=blk.norm2)
    for name, ln in pairs.items():
      sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"] = _t(ln.scale), _t(ln.bias)
    dense = {"attn.qkv": blk.attn.qkv, "attn.proj": blk.attn.proj,
             "mlp.fc1": blk.mlp.fc1, "mlp.fc2": blk.mlp.fc2}
    for name, d in dense.items():
      sd[f"blocks.{i}.{name}.weight"] = _t(d.kernel).T.contiguous()
      sd[f"blocks.{i}.{name}.bias"] = _t(d.bias)
  missing, unexpected = vit.load_state_dict(sd, strict=False)
  assert not unexpected and all(k.startswith("norm.") for k in missing), (missing, unexpected)
  with torch.no_grad():
    return vit(torch.from_numpy(spec)[:, None]).numpy()


@pytest.mark.parametrize("reference", ["torch", "timm"])
def test_features_match_pytorch_reference(reference):
  pytest.importorskip("torch")
  m = _perturbed_tiny()
  spec = _spec(seed=9)  # batch 4, as the other tests: reuses the compiled _features
  want = _torch_features(m, spec) if reference == "torch" else _timm_features(m, spec)
  got = np.asarray(_features(m, spec))
  assert np.max(np.abs(got - want)) <= 1e-4


# ----------------------------------------------------------------------------
# Heads.


def test_projection_mlp_matches_numpy():
  head = heads.ProjectionMLP(24, 40, 16, rngs=nnx.Rngs(0))
  x = np.random.default_rng(10).normal(size=(5, 24)).astype(np.float32)
  w1, b1 = np.asarray(head.fc1.kernel[...]), np.asarray(head.fc1.bias[...])
  w2, b2 = np.asarray(head.fc2.kernel[...]), np.asarray(head.fc2.bias[...])
  h = x @ w1 + b1
  erf = np.vectorize(math.erf)  # exact GELU, as torch.nn.GELU()
  want = (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ w2 + b2
  np.testing.assert_allclose(np.asarray(head(x)), want, atol=1e-5)
  with pytest.raises(ValueError, match="width 24"):
    head(jnp.zeros((2, 48)))


def test_full_size_config():
  # Abstract evaluation: checks the full-size graph without spending CPU on it.
  m = nnx.eval_shape(lambda: opera_gt.opera_gt())
  assert (m.grid_size, m.num_patches, m.num_keep(m.num_patches)) == ((64, 16), 1024, 307)
  encoder = ("patch_embed", "cls_token", "blocks", "norm", "fc_norm")
  counts = {k: sum(x.size for x in jax.tree.leaves(v))
            for k, v in nnx.state(m, nnx.Param).items()}
  block = 2 * 2 * 384 + (384 * 1152 + 1152) + (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384
  assert sum(counts[k] for k in encoder) == 16 * 384 + 384 + 384 + 12 * block + 2 * 2 * 384
  spec = jax.ShapeDtypeStruct((2, 256, 64), jnp.float32)

  def both(s):
    full = opera_gt.opera_gt()
    return full.features(s), full.mae_forward(s, jax.random.key(0))

  feats, (loss, aux) = nnx.eval_shape(both, spec)
  assert feats.shape == aux["visible_features"].shape == (2, 384) and loss.shape == ()
  assert aux["pred"].shape == (2, 1024, 16)
