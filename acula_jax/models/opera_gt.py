"""OPERA-GT: a masked-autoencoder ViT on log-mel spectrograms, in Flax NNX.

OPERA-GT (Zhang et al., OPERA, 2024) is an MAE ViT-S: spectrograms of
[T=256 frames, F=64 mels] (values in [0, 1]) are cut into 4x4 patches, giving
a (64, 16) grid of 1024 tokens ordered row-major over (time, freq). The
encoder is 12 pre-LN blocks of width 384 with 6 heads, a cls token and fixed
2-D sin-cos positions. Pre-training masks 70% of the patches at random and a
decoder reconstructs them from the visible ones.

Only the encoder is kept for AcuLa: `features` gives the pooled embedding
used for alignment and downstream probes, and `mae_forward` gives the MAE
loss that can regularise alignment training.

Decoder: `decoder="transformer"` is a plain transformer decoder (the
`mae_vit_small` setting of 256 wide, 6 deep, 8 heads); `decoder="swin"` is
OPERA's released decoder, 16 post-norm Swin-v2-cr blocks of width 256 with 16
heads and 4x4 windows (see `swin_decoder`, including the layout quirk it
reproduces). Positions: `pos_layout="patch_hw"` is the table OPERA and
AudioMAE build (`get_2d_sincos_pos_embed_flexible` over patch_hw =
(freq, time) patches, see `sincos_pos_embed_2d`), which released checkpoints
need; "grid" is the (time row, freq column) table of earlier exports.

Parameters are float32; `dtype` sets the compute dtype (e.g. bfloat16).
LayerNorm statistics, attention softmax, pooling and losses run in float32.
The encoder's and the transformer decoder's blocks are a `BlockStack`: parameters
created stacked, one `lax.scan` over them, `remat` choosing what the backward
pass recomputes (`REMAT_POLICIES`).
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from acula_jax import losses
from acula_jax import models
from acula_jax.models import attention
from acula_jax.models import layers
from acula_jax.models import partitioning
from acula_jax.models import swin_decoder

_LN_EPS = 1e-6
DECODERS = ("transformer", "swin")
POS_LAYOUTS = ("grid", "patch_hw")


# ----------------------------------------------------------------------------
# Fixed sin-cos positions.


def sincos_1d(dim, positions):
  """[len(positions), dim] sin-cos features: first half sin, second half cos."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding width must be even, got {dim}")
  freqs = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim // 2))
  angles = np.asarray(positions, np.float64).reshape(-1)[:, None] * freqs[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


@functools.lru_cache(maxsize=None)
def _sincos_2d_cached(dim, rows, cols, cls_token, layout):
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
  if layout == "grid":
    # First half of the channels: the column (freq) index; second half: the row (time) index.
    row_idx, col_idx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    first, second = col_idx, row_idx
  elif layout == "patch_hw":
    # OPERA/AudioMAE: MAE's flexible table over a (cols, rows) grid, flattened row-major,
    # so token k = row * cols + col gets k % rows and k // rows.
    k = np.arange(rows * cols)
    first, second = k % rows, k // rows
  else:
    raise ValueError(f"unknown pos_layout {layout!r}; available: {', '.join(POS_LAYOUTS)}")
  emb = np.concatenate([sincos_1d(dim // 2, first), sincos_1d(dim // 2, second)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  emb = emb.astype(np.float32)
  emb.flags.writeable = False  # shared through the cache
  return emb


def sincos_pos_embed_2d(dim, grid_size, cls_token=False, layout="grid"):
  """Fixed 2-D positions for a row-major (rows, cols) patch grid.

  Args:
    dim: embedding width, a multiple of 4.
    grid_size: (rows, cols) = (time patches, freq patches).
    cls_token: prepend an all-zero row for the cls token.
    layout: "grid" (freq column | time row) or "patch_hw" (OPERA/AudioMAE:
      MAE's `get_2d_sincos_pos_embed_flexible(dim, (cols, rows))`).

  Returns:
    float32 numpy array [(1 if cls_token) + rows * cols, dim].
  """
  rows, cols = grid_size
  return _sincos_2d_cached(int(dim), int(rows), int(cols), bool(cls_token), layout)


# ----------------------------------------------------------------------------
# Transformer pieces (timm/MAE layout: fused qkv, pre-LN, exact GELU).


def _dense(in_dim, out_dim, *, dtype, rngs):
  # MAE initialises every Linear (and the flattened patch conv) with xavier.
  return nnx.Linear(
      in_dim, out_dim, dtype=dtype, rngs=rngs,
      kernel_init=nnx.initializers.xavier_uniform(),
      bias_init=nnx.initializers.zeros_init())


def _layer_norm(width, *, dtype, rngs):
  # Exact two-pass variance: matches torch's LayerNorm to float32 rounding.
  return layers.LayerNorm(width, epsilon=_LN_EPS, dtype=dtype, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head self-attention with a fused qkv projection (as timm)."""

  def __init__(self, width, num_heads, *, dtype, rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.qkv = _dense(width, 3 * width, dtype=dtype, rngs=rngs)
    self.proj = _dense(width, width, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, n, width = x.shape
    head_dim = width // self.num_heads
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    # Logits and softmax in float32 even for bf16 inputs; XLA's fused kernels
    # on accelerators, a query-blocked one on CPU (see `attention`).
    out = attention.dot_product_attention(q, k, v)
    return self.proj(out.reshape(b, n, width))


class Block(nnx.Module):
  """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

  def __init__(self, width, num_heads, mlp_ratio, *, dtype, rngs):
    self.norm1 = _layer_norm(width, dtype=dtype, rngs=rngs)
    self.attn = Attention(width, num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = _layer_norm(width, dtype=dtype, rngs=rngs)
    self.mlp = swin_decoder.Mlp(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs, dense=_dense)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


REMAT_POLICIES = {
    "none": None,
    # Keep the matmul outputs without a batch dimension (the Linear layers'), recompute the rest
    # (attention, norms, GELU) in the backward pass.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,  # keep each block's input only
}


class BlockStack(nnx.Module):
  """`depth` identical blocks whose parameters are created stacked on a leading axis (`nnx.vmap`)
  and run as one `lax.scan`, optionally rematerialised (`remat`, a key of `REMAT_POLICIES`).

  Why a scan: one compiled block instead of `depth`, and in the backward pass XLA:CPU would
  otherwise fuse the residual stream's gradient into every consumer (quadratic in depth). Why
  stacked at creation: stacking per-block parameters inside the step costs a copy of them every
  step and, on TPU, nearly doubled the step's temporaries. Checkpoint paths are
  `<name>/stacked/<block path>` with the block index as the leading axis (`unstack_tree` gives the
  per-block view that converters address).
  """

  def __init__(self, make_block, depth, *, remat="none", rngs):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"unknown remat {remat!r}; available: {', '.join(REMAT_POLICIES)}")
    self.depth = depth
    self.remat = remat
    self.stacked = nnx.data(None)
    if depth:
      @nnx.split_rngs(splits=depth)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def create(rngs):
        return make_block(rngs)
      self.stacked = nnx.data(create(rngs))

  def __len__(self):
    return self.depth

  def unstacked(self) -> list:
    """Copies of the blocks one by one (for reading: writing to them leaves the stack unchanged)."""
    if not self.depth:
      return []
    graphdef, state = nnx.split(self.stacked)
    return [nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state)) for i in range(self.depth)]

  def __call__(self, x):
    if not self.depth:
      return x
    graphdef, state = nnx.split(self.stacked)

    def apply_block(carry, block_state):
      block = nnx.merge(graphdef, partitioning.gathered(block_state))
      return partitioning.batch_sharded(block(partitioning.batch_sharded(carry))), None

    if self.remat != "none":
      apply_block = jax.checkpoint(apply_block, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    return jax.lax.scan(apply_block, x, state)[0]


def unstack_tree(pure):
  """A pure-dict state with every `BlockStack` as {index: block tree} (leaves sliced; abstract
  leaves as ShapeDtypeStructs): the per-block view that checkpoint converters address."""
  if not isinstance(pure, dict):
    return pure
  if set(pure) == {"stacked"}:
    leaves = jax.tree.leaves(pure["stacked"])
    depth = leaves[0].shape[0]
    take = lambda i: lambda x: (jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
                                if isinstance(x, jax.ShapeDtypeStruct) else x[i])
    return {i: jax.tree.map(take(i), pure["stacked"]) for i in range(depth)}
  return {k: unstack_tree(v) for k, v in pure.items()}


def stack_tree(pure, like):
  """Inverse of `unstack_tree`, following the structure of `like` (the stacked pure dict)."""
  if not isinstance(like, dict):
    return pure
  if set(like) == {"stacked"}:
    blocks = [pure[i] for i in range(len(pure))]
    return {"stacked": jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *blocks)}
  return {k: stack_tree(pure[k], like[k]) for k in like}


# ----------------------------------------------------------------------------
# The model.


class MAEViT(nnx.Module):
  """MAE ViT for [B, T, F] spectrograms: OPERA-GT (`CONFIG`) or AudioMAE (`audiomae.CONFIG`); every
  option is required here, its default lives in those configs.

  Inputs may be shorter than `spec_shape[0]` frames (any multiple of the
  time patch size): as in OPERA, they use the first T'/p_t rows of the
  positional grid. Every shape is static, so each distinct T' compiles once.

  Positions are recomputed as constants (not stored as variables): they are
  fixed, so they are neither trained nor checkpointed.

  `decoder` selects the MAE decoder: "transformer" or "swin" (OPERA's and
  AudioMAE's; its blocks see the patch tokens only, the cls token is dropped
  before them). `swin_feat_size` is the Swin blocks' (H, W) view of the tokens:
  None for OPERA's (decoder_width // 8, 8) (see `swin_decoder`), "grid" for the
  patch grid (AudioMAE's), or a pair. `pad_to_full`: `features` zero-pads
  shorter inputs to `spec_shape` first (AudioMAE's feature extractor).
  """

  def __init__(
      self, *, spec_shape, patch_size, width, depth, num_heads, mlp_ratio, decoder, decoder_width,
      decoder_depth, decoder_heads, mask_ratio, norm_pix_loss, pos_layout, swin_feat_size,
      pad_to_full, remat, dtype, rngs):
    spec_shape, patch_size = tuple(spec_shape), tuple(patch_size)
    if spec_shape[0] % patch_size[0] or spec_shape[1] % patch_size[1]:
      raise ValueError(f"spec_shape {spec_shape} is not a multiple of patch_size {patch_size}")
    if decoder not in DECODERS:
      raise ValueError(f"unknown decoder {decoder!r}; available: {', '.join(DECODERS)}")
    if not 0.0 <= mask_ratio < 1.0:
      raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if pos_layout not in POS_LAYOUTS:
      raise ValueError(f"unknown pos_layout {pos_layout!r}; available: {', '.join(POS_LAYOUTS)}")
    self.spec_shape = spec_shape
    self.patch_size = patch_size
    self.grid_size = (spec_shape[0] // patch_size[0], spec_shape[1] // patch_size[1])
    self.num_patches = self.grid_size[0] * self.grid_size[1]
    self.patch_dim = patch_size[0] * patch_size[1]
    self.width = width
    self.feature_dim = width
    self.pos_layout = pos_layout
    self.decoder_width = decoder_width
    self.decoder = decoder
    self.mask_ratio = mask_ratio
    self.norm_pix_loss = norm_pix_loss
    self.pad_to_full = pad_to_full
    self.dtype = dtype
    # Validate the position widths now rather than at the first call.
    sincos_pos_embed_2d(width, self.grid_size)
    sincos_pos_embed_2d(decoder_width, self.grid_size)

    # Encoder. A Linear on flattened patches is the 4x4/stride-4 conv.
    token_init = nnx.initializers.normal(stddev=0.02)
    self.patch_embed = _dense(self.patch_dim, width, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(token_init(rngs.params(), (1, 1, width)))
    self.blocks = BlockStack(
        lambda rngs: Block(width, num_heads, mlp_ratio, dtype=dtype, rngs=rngs), depth,
        remat=remat, rngs=rngs)
    self.norm = _layer_norm(width, dtype=dtype, rngs=rngs)  # feeds the decoder
    # Global-pool head (MAE fine-tuning variant); float32, it is tiny.
    self.fc_norm = _layer_norm(width, dtype=jnp.float32, rngs=rngs)

    # Transformer decoder.
    self.decoder_embed = _dense(width, decoder_width, dtype=dtype, rngs=rngs)
    self.mask_token = nnx.Param(token_init(rngs.params(), (1, 1, decoder_width)))
    if decoder == "swin":
      self.decoder_blocks = swin_decoder.swin_decoder_blocks(
          decoder_width, decoder_depth, decoder_heads, mlp_ratio,
          feat_size=self._swin_feat_size(swin_feat_size, decoder_width),
          dtype=dtype, rngs=rngs)
    else:
      self.decoder_blocks = BlockStack(
          lambda rngs: Block(decoder_width, decoder_heads, mlp_ratio, dtype=dtype, rngs=rngs),
          decoder_depth, remat=remat, rngs=rngs)
    self.decoder_norm = _layer_norm(decoder_width, dtype=dtype, rngs=rngs)
    self.decoder_pred = _dense(decoder_width, self.patch_dim, dtype=dtype, rngs=rngs)

  def _swin_feat_size(self, swin_feat_size, decoder_width):
    if swin_feat_size is None:
      return swin_decoder.opera_feat_size(decoder_width)
    return self.grid_size if swin_feat_size == "grid" else tuple(swin_feat_size)

  # -- shapes ---------------------------------------------------------------

  def _grid_rows(self, spec):
    """Number of patch rows of `spec`, after checking its (static) shape."""
    if spec.ndim != 3:
      raise ValueError(f"expected spectrograms [B, T, F], got shape {spec.shape}")
    frames, mels = spec.shape[1:]
    if mels != self.spec_shape[1]:
      raise ValueError(f"expected {self.spec_shape[1]} mel bins, got shape {spec.shape}")
    if frames % self.patch_size[0] or not 0 < frames <= self.spec_shape[0]:
      raise ValueError(
          f"frames must be a multiple of {self.patch_size[0]} in "
          f"[{self.patch_size[0]}, {self.spec_shape[0]}], got shape {spec.shape}")
    return frames // self.patch_size[0]

  def num_keep(self, num_patches):
    """Visible patches per example: floor(N * (1 - mask_ratio)), as MAE."""
    # The epsilon guards against 1 - 0.7 = 0.29999... style rounding.
    return max(1, int(num_patches * (1.0 - self.mask_ratio) + 1e-6))

  def patchify(self, spec):
    """[B, T, F] -> [B, N, p_t * p_f], patches row-major over (time, freq)."""
    b, t, f = spec.shape
    pt, pf = self.patch_size
    x = spec.reshape(b, t // pt, pt, f // pf, pf).transpose(0, 1, 3, 2, 4)
    return x.reshape(b, (t // pt) * (f // pf), pt * pf)

  def pos_embed(self, rows=None, *, decoder=False):
    """Fixed positions [1 + rows * cols, width] (row 0 is the cls position)."""
    rows = self.grid_size[0] if rows is None else rows
    dim = self.decoder_width if decoder else self.width
    table = sincos_pos_embed_2d(dim, self.grid_size, cls_token=True, layout=self.pos_layout)
    return jnp.asarray(table[:1 + rows * self.grid_size[1]])

  # -- encoder --------------------------------------------------------------

  def _embed(self, spec):
    """Patch tokens plus positions, [B, N, width] (no cls yet)."""
    rows = self._grid_rows(spec)
    x = self.patch_embed(self.patchify(spec.astype(self.dtype)))
    return x + self.pos_embed(rows)[1:].astype(self.dtype)

  def _encode(self, tokens):
    """Prepends cls (its position is zero) and runs the blocks, pre-norm."""
    cls = jnp.broadcast_to(
        self.cls_token[...].astype(self.dtype), (tokens.shape[0], 1, self.width))
    x = jnp.concatenate([cls, tokens], axis=1)
    return self.blocks(x)

  def _pool(self, x):
    """fc_norm(mean of patch tokens), excluding cls, in float32."""
    return self.fc_norm(jnp.mean(x[:, 1:].astype(jnp.float32), axis=1))

  def features(self, spec, *, train=False):
    """Full (unmasked) encoder pass -> [B, width] float32 embedding.

    `train` is accepted for API symmetry; the model has no dropout, so the
    result does not depend on it.
    """
    del train
    if self.pad_to_full and spec.ndim == 3 and spec.shape[1] < self.spec_shape[0]:
      spec = jnp.pad(spec, ((0, 0), (0, self.spec_shape[0] - spec.shape[1]), (0, 0)))
    return self._pool(self._encode(self._embed(spec)))

  # -- masked autoencoding --------------------------------------------------

  def random_masking(self, tokens, rng):
    """Per-example random masking by argsort of uniform noise.

    Args:
      tokens: [B, N, D].
      rng: a PRNG key, or one typed key per example ([B]). Each example's
        noise depends only on its own key (a single key is split into B), so
        a batch cut into micro-batches draws exactly the masks of the whole.

    Returns:
      visible [B, K, D] with K = num_keep(N), mask [B, N] float32 (1 =
      masked) in patch order, and ids_restore [B, N] that undoes the shuffle.
    """
    b, n, _ = tokens.shape
    keep = self.num_keep(n)
    per_example = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.shape == (b,)
    keys = rng if per_example else jax.random.split(rng, b)
    noise = jax.vmap(lambda key: jax.random.uniform(key, (n,)))(keys)
    ids_shuffle = jnp.argsort(noise, axis=1)  # the smallest noise is kept
    ids_restore = jnp.argsort(ids_shuffle, axis=1)
    visible = jnp.take_along_axis(tokens, ids_shuffle[:, :keep, None], axis=1)
    mask = (ids_restore >= keep).astype(jnp.float32)
    return visible, mask, ids_restore

  def _decode(self, encoded, ids_restore):
    """Decoder over the full sequence -> [B, N, patch_dim] float32."""
    x = self.decoder_embed(self.norm(encoded))
    b, num_vis, _ = x.shape
    n = ids_restore.shape[1]
    mask_tokens = jnp.broadcast_to(
        self.mask_token[...].astype(x.dtype), (b, n + 1 - num_vis, self.decoder_width))
    # Visible tokens then mask tokens, put back into patch order.
    seq = jnp.concatenate([x[:, 1:], mask_tokens], axis=1)
    seq = jnp.take_along_axis(seq, ids_restore[:, :, None], axis=1)
    x = jnp.concatenate([x[:, :1], seq], axis=1)
    rows = n // self.grid_size[1]
    x = x + self.pos_embed(rows, decoder=True).astype(x.dtype)
    swin = self.decoder == "swin"
    if swin:
      x = x[:, 1:]  # OPERA/AudioMAE: the Swin blocks see the patch tokens only
      for block in self.decoder_blocks:  # shifted and plain windows alternate: not one scan
        x = block(x)
    else:
      x = self.decoder_blocks(x)
    pred = self.decoder_pred(self.decoder_norm(x))
    return (pred if swin else pred[:, 1:]).astype(jnp.float32)

  def mae_target(self, spec):
    """Patches to reconstruct, normalised per patch if norm_pix_loss."""
    target = self.patchify(jnp.asarray(spec, jnp.float32))
    if self.norm_pix_loss:
      # MAE uses torch's unbiased variance here.
      mean = target.mean(axis=-1, keepdims=True)
      var = target.var(axis=-1, keepdims=True, ddof=1)
      target = (target - mean) / jnp.sqrt(var + 1e-6)
    return target

  def mae_forward(self, spec, rng):
    """Masked-autoencoder pass.

    Args:
      spec: [B, T, F] spectrograms.
      rng: PRNG key for the masking noise.

    Returns:
      (loss, aux): the MSE over masked patches (float32 scalar) and a dict
      with `visible_features` [B, width] (fc_norm of the mean of the visible
      patch tokens; a cheaper stand-in for `features`), `pred`
      [B, N, patch_dim] and `mask` [B, N] (1 = masked).
    """
    tokens = self._embed(spec)
    visible, mask, ids_restore = self.random_masking(tokens, rng)
    encoded = self._encode(visible)
    pred = self._decode(encoded, ids_restore)
    loss = losses.mae_loss(pred, self.mae_target(spec), mask)
    aux = dict(visible_features=self._pool(encoded), pred=pred, mask=mask)
    return loss, aux

  # The self-supervised objective every encoder exposes to the AcuLa step (MAE for this one).
  ssl_forward = mae_forward


# OPERA-GT's options, the one place their defaults live. decoder: OPERA released a Swin decoder
# (`RELEASE_CONFIG`); the plain transformer decoder is cheaper when starting the decoder afresh.
# remat: which activations the backward pass recomputes (`REMAT_POLICIES`; configs pass "auto").
FRONTEND = "log_mel"  # the front end it reads (`audio.FRONTENDS`)
CONFIG = dict(
    spec_shape=(256, 64), patch_size=(4, 4), width=384, depth=12, num_heads=6,
    mlp_ratio=4.0, decoder="transformer", decoder_width=256, decoder_depth=4,
    decoder_heads=8, mask_ratio=0.7, norm_pix_loss=False, pos_layout="patch_hw", remat="none",
    swin_feat_size=None, pad_to_full=False)

# The released OPERA-GT checkpoint: Swin decoder of 16 blocks, 16 heads.
RELEASE_CONFIG = dict(CONFIG, decoder="swin", decoder_depth=16, decoder_heads=16)

# A few-second-to-compile variant for tests.
TINY_CONFIG = dict(
    spec_shape=(32, 64), width=32, depth=2, num_heads=2, decoder_width=32,
    decoder_depth=1, decoder_heads=2)


def opera_gt(*, rngs=None, dtype=jnp.float32, **overrides):
  """OPERA-GT (MAE ViT-S/4 on 256 x 64 log-mels); keyword args override `CONFIG`.

  `opera_gt(**TINY_CONFIG)` builds the test-sized model. `rngs` defaults to
  `nnx.Rngs(0)`.
  """
  unknown = set(overrides) - set(CONFIG)
  if unknown:
    raise TypeError(f"unknown OPERA-GT options {sorted(unknown)}; valid: {sorted(CONFIG)}")
  return MAEViT(**{**CONFIG, **overrides}, dtype=dtype, rngs=nnx.Rngs(0) if rngs is None else rngs)


def from_config(model_config, *, rngs):
  """Builds from a model config (ConfigDict or dict) with `CONFIG`'s keys and `dtype`."""
  return MAEViT(**models.config_kwargs(CONFIG, model_config),
                dtype=models.parse_dtype(model_config.get("dtype", "float32")), rngs=rngs)
