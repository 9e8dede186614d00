"""OPERA-CE, OPERA-CT, AudioMAE, the Swin MAE decoder (and OPERA-GT through `convert`).

Parity: random PyTorch weights -> a Lightning-style checkpoint file -> `convert` -> JAX
features, against independent PyTorch forwards:
  OPERA-GT / AudioMAE   a plain-torch MAE ViT (timm block layout) and, if importable, timm's
                        VisionTransformer;
  OPERA-CE              a plain-torch port of efficientnet_pytorch's EfficientNet-B0 (static
                        TF-"SAME" padding) and, if importable, timm's efficientnet_b0;
  OPERA-CT              transformers' ClapAudioModel (the HTS-AT audio tower, a separate
                        implementation with split q/k/v), its weights renamed to HTS-AT's keys;
  Swin decoder          a plain-torch port of the v2-cr block of OPERA's / AudioMAE's code.
Tiny configs run by default; one full-size check per encoder is marked slow.

The PyTorch references are also used by `tests/test_convert.py` and `benchmarks/encoders.py`.
"""
import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acula_jax import checkpointing
from acula_jax.tools import convert
from acula_jax.models import audiomae
from acula_jax.models import opera_ce
from acula_jax.models import opera_ct
from acula_jax.models import opera_gt
from acula_jax.models import swin_decoder
import timm_side

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

ATOL = 1e-4


# ----------------------------------------------------------------------------
# PyTorch references.


def mae_flexible_pos_embed(dim, grid_size, cls_token):
  """MAE's get_2d_sincos_pos_embed_flexible(dim, grid_size), restated."""
  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  grid_h = np.arange(grid_size[0], dtype=np.float32)
  grid_w = np.arange(grid_size[1], dtype=np.float32)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, *grid_size)
  emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)


class TorchAttention(nn.Module):
  """timm's Attention: fused qkv, softmax(q k^T / sqrt(d)) v, proj.

  `sdpa` (class-wide; the benchmark sets it) uses F.scaled_dot_product_attention, as timm does
  when fused attention is available; the tests keep the explicit softmax.
  """
  sdpa = False

  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    if self.sdpa:
      out = F.scaled_dot_product_attention(q, k, v)
    else:
      out = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
    return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TorchMlp(nn.Module):

  def __init__(self, dim, hidden, act=nn.GELU):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class TorchBlock(nn.Module):
  """timm's pre-LN ViT block."""

  def __init__(self, dim, heads, eps=1e-6):
    super().__init__()
    self.norm1, self.attn = nn.LayerNorm(dim, eps=eps), TorchAttention(dim, heads)
    self.norm2, self.mlp = nn.LayerNorm(dim, eps=eps), TorchMlp(dim, 4 * dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class TorchCosineAttention(nn.Module):
  """v2-cr WindowMultiHeadAttention of OPERA's / AudioMAE's swin_transformer.py."""

  def __init__(self, dim, heads, window):
    super().__init__()
    self.heads, self.window = heads, window
    self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    self.meta_mlp = TorchMlp(2, 384, act=nn.ReLU)
    self.meta_mlp.fc2 = nn.Linear(384, heads)
    self.tau = nn.Parameter(torch.ones(heads))
    coords = torch.stack(torch.meshgrid(
        [torch.arange(window[0]), torch.arange(window[1])], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2).float()
    self.register_buffer("rel_log", torch.sign(rel) * torch.log(1.0 + rel.abs()), persistent=False)

  def forward(self, x, mask=None):
    bw, n, c = x.shape
    q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
    denom = torch.norm(q, dim=-1, keepdim=True) @ torch.norm(k, dim=-1, keepdim=True).transpose(-2, -1)
    attn = q @ k.transpose(-2, -1) / denom.clamp(min=1e-6)
    attn = attn / self.tau.clamp(min=0.01).reshape(1, self.heads, 1, 1)
    attn = attn + self.meta_mlp(self.rel_log).transpose(1, 0).reshape(self.heads, n, n).unsqueeze(0)
    if mask is not None:
      nw = mask.shape[0]
      attn = (attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.heads, n, n)
    return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, -1))


def _torch_partition(x, ws):
  b, h, w, c = x.shape
  x = x.view(b, h // ws[0], ws[0], w // ws[1], ws[1], c)
  return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws[0], ws[1], c)


def _torch_reverse(windows, ws, size):
  h, w = size
  b = int(windows.shape[0] / (h * w / ws[0] / ws[1]))
  x = windows.view(b, h // ws[0], w // ws[1], ws[0], ws[1], -1)
  return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class TorchSwinDecoderBlock(nn.Module):
  """v2-cr SwinTransformerBlock; layout "opera" views (B, H, W, L), "grid" (B, H, W, C)."""

  def __init__(self, dim, heads, feat_size, window=(4, 4), shift=(0, 0), layout="opera"):
    super().__init__()
    self.feat_size, self.layout = feat_size, layout
    self.window = tuple(f if f <= w else w for f, w in zip(feat_size, window))
    self.shift = tuple(0 if f <= w else s for f, w, s in zip(feat_size, self.window, shift))
    self.attn = TorchCosineAttention(dim, heads, self.window)
    self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
    self.mlp = TorchMlp(dim, 4 * dim)
    self.attn_mask = None
    if any(self.shift):
      img = torch.zeros((1, *feat_size, 1))
      cnt = 0
      for hs in (slice(0, -self.window[0]), slice(-self.window[0], -self.shift[0]), slice(-self.shift[0], None)):
        for ws in (slice(0, -self.window[1]), slice(-self.window[1], -self.shift[1]), slice(-self.shift[1], None)):
          img[:, hs, ws, :] = cnt
          cnt += 1
      mw = _torch_partition(img, self.window).view(-1, self.window[0] * self.window[1])
      mask = mw.unsqueeze(1) - mw.unsqueeze(2)
      self.attn_mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

  def _shifted_window_attn(self, x):
    (h, w), (b, l, c) = self.feat_size, x.shape
    x = x.view(b, h, w, l) if self.layout == "opera" else x.view(b, h, w, c)
    if any(self.shift):
      x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
    x = _torch_partition(x, self.window).view(-1, self.window[0] * self.window[1], c)
    x = self.attn(x, mask=self.attn_mask).view(-1, self.window[0], self.window[1], c)
    x = _torch_reverse(x, self.window, self.feat_size)
    if any(self.shift):
      x = torch.roll(x, shifts=self.shift, dims=(1, 2))
    return x.view(b, l, c)

  def forward(self, x):
    x = x + self.norm1(self._shifted_window_attn(x))
    return x + self.norm2(self.mlp(x))


class TorchMAE(nn.Module):
  """The MAE module of OPERA-GT / AudioMAE (state-dict names as the reference).

  `fc_norm=False` is OPERA-GT's `forward_feature` (norm of the mean patch token);
  `fc_norm=True` is OPERA's AudioMAE baseline (fc_norm of it, inputs zero-padded).
  """

  def __init__(self, spec_shape, patch, width, depth, heads, dec_width, dec_depth, dec_heads,
               pos_table, decoder="transformer", feat_size=None, layout="opera", fc_norm=False):
    super().__init__()
    self.spec_shape, self.patch, self.decoder = spec_shape, patch, decoder
    grid = (spec_shape[0] // patch, spec_shape[1] // patch)
    self.patch_embed = nn.Module()
    self.patch_embed.proj = nn.Conv2d(1, width, patch, patch)
    self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, width))
    self.pos_embed = nn.Parameter(torch.from_numpy(pos_table(width, grid))[None], requires_grad=False)
    self.blocks = nn.ModuleList([TorchBlock(width, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.fc_norm = nn.LayerNorm(width, eps=1e-6) if fc_norm else None
    self.decoder_embed = nn.Linear(width, dec_width)
    self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, dec_width))
    self.decoder_pos_embed = nn.Parameter(
        torch.from_numpy(pos_table(dec_width, grid))[None], requires_grad=False)
    if decoder == "swin":
      self.decoder_blocks = nn.ModuleList([
          TorchSwinDecoderBlock(dec_width, dec_heads, feat_size, (4, 4), (0, 0) if i % 2 == 0 else (2, 0), layout)
          for i in range(dec_depth)])
    else:
      self.decoder_blocks = nn.ModuleList([TorchBlock(dec_width, dec_heads) for _ in range(dec_depth)])
    self.decoder_norm = nn.LayerNorm(dec_width, eps=1e-6)
    self.decoder_pred = nn.Linear(dec_width, patch * patch)

  def forward_feature(self, x):
    if self.fc_norm is not None:  # the AudioMAE baseline pads to the full input
      x = F.pad(x, (0, self.spec_shape[1] - x.shape[2], 0, self.spec_shape[0] - x.shape[1]))
    x = self.patch_embed.proj(x.unsqueeze(1)).flatten(2).transpose(1, 2)
    x = x + self.pos_embed[:, 1:x.shape[1] + 1]
    cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for blk in self.blocks:
      x = blk(x)
    x = x[:, 1:].mean(dim=1)
    return self.fc_norm(x) if self.fc_norm is not None else self.norm(x)

  def forward_decoder(self, x, ids_restore):
    """x: encoder output after `norm`, cls first."""
    x = self.decoder_embed(x)
    mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed[:, :ids_restore.shape[1] + 1]
    if self.decoder == "swin":
      x = x[:, 1:]
    for blk in self.decoder_blocks:
      x = blk(x)
    pred = self.decoder_pred(self.decoder_norm(x))
    return pred if self.decoder == "swin" else pred[:, 1:]


def _tf_same_pad(size, kernel, stride):
  out = math.ceil(size / stride)
  pad = max((out - 1) * stride + kernel - size, 0)
  return pad // 2, pad - pad // 2


class TorchStaticSameConv(nn.Conv2d):
  """efficientnet_pytorch's Conv2dStaticSamePadding (padding fixed for `image_size`)."""

  def __init__(self, cin, cout, kernel, stride=1, groups=1, bias=False, image_size=224):
    super().__init__(cin, cout, kernel, stride, groups=groups, bias=bias)
    a, b = _tf_same_pad(image_size, kernel, stride)
    self.static_padding = nn.ZeroPad2d((a, b, a, b))

  def forward(self, x):
    return super().forward(self.static_padding(x))


def _swish(x):
  return x * torch.sigmoid(x)


class TorchMBConv(nn.Module):
  """efficientnet_pytorch's MBConvBlock."""

  def __init__(self, cin, cout, kernel, stride, expand, image_size, eps, momentum):
    super().__init__()
    mid = cin * expand
    bn = lambda n: nn.BatchNorm2d(n, eps=eps, momentum=momentum)
    self.expand = expand != 1
    if self.expand:
      self._expand_conv, self._bn0 = TorchStaticSameConv(cin, mid, 1, image_size=image_size), bn(mid)
    self._depthwise_conv = TorchStaticSameConv(mid, mid, kernel, stride, groups=mid, image_size=image_size)
    self._bn1 = bn(mid)
    squeezed = max(1, int(cin * 0.25))
    self._se_reduce, self._se_expand = nn.Conv2d(mid, squeezed, 1), nn.Conv2d(squeezed, mid, 1)
    self._project_conv = TorchStaticSameConv(mid, cout, 1, image_size=image_size)
    self._bn2 = bn(cout)
    self.skip = stride == 1 and cin == cout

  def forward(self, inputs, drop_rate=0.0):
    x = _swish(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
    x = _swish(self._bn1(self._depthwise_conv(x)))
    x = torch.sigmoid(self._se_expand(_swish(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))) * x
    x = self._bn2(self._project_conv(x))
    if self.skip:
      if drop_rate and self.training:
        keep = torch.floor(1 - drop_rate + torch.rand(x.shape[0], 1, 1, 1))
        x = x / (1 - drop_rate) * keep
      x = x + inputs
    return x


class TorchEfficientNet(nn.Module):
  """efficientnet_pytorch's EfficientNet(include_top=False) for a block list."""

  def __init__(self, blocks, stem, head, eps=1e-3, momentum=0.01, image_size=224, drop_rate=0.0):
    super().__init__()
    self.drop_rate = drop_rate
    self._conv_stem = TorchStaticSameConv(3, stem, 3, 2, image_size=image_size)
    self._bn0 = nn.BatchNorm2d(stem, eps=eps, momentum=momentum)
    size = math.ceil(image_size / 2)
    self._blocks = nn.ModuleList()
    for repeats, kernel, stride, expand, cin, cout in blocks:
      self._blocks.append(TorchMBConv(cin, cout, kernel, stride, expand, size, eps, momentum))
      size = math.ceil(size / stride)
      for _ in range(repeats - 1):
        self._blocks.append(TorchMBConv(cout, cout, kernel, 1, expand, size, eps, momentum))
    self._conv_head = TorchStaticSameConv(blocks[-1][5], head, 1, image_size=size)
    self._bn1 = nn.BatchNorm2d(head, eps=eps, momentum=momentum)

  def forward(self, x):
    x = _swish(self._bn0(self._conv_stem(x)))
    for idx, block in enumerate(self._blocks):
      x = block(x, self.drop_rate * idx / len(self._blocks))
    return F.adaptive_avg_pool2d(_swish(self._bn1(self._conv_head(x))), 1).flatten(1)


class TorchColaCE(nn.Module):
  """OPERA's `Cola(encoder="efficientnet")`: encoder (cnn1 + EfficientNet) and the COLA head."""

  def __init__(self, blocks, stem, head, dim=512):
    super().__init__()
    self.encoder = nn.Module()
    self.encoder.cnn1 = nn.Conv2d(1, 3, 3)
    self.encoder.efficientnet = TorchEfficientNet(blocks, stem, head)
    self.g, self.layer_norm = nn.Linear(head, dim), nn.LayerNorm(dim)
    self.linear = nn.Linear(dim, dim, bias=False)

  def features(self, x):
    return self.encoder.efficientnet(self.encoder.cnn1(x.unsqueeze(1)))


def randomize_norms(module, seed):
  """Non-trivial LayerNorm/BatchNorm affine parameters and running statistics."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
      if isinstance(m, TorchCosineAttention):
        m.tau.copy_(0.2 + torch.rand(m.tau.shape, generator=gen))
  return module


# -- OPERA-CT: transformers' ClapAudioModel renamed to HTS-AT keys.


def clap_audio_model(tiny=True):
  from transformers import ClapAudioConfig, ClapAudioModel  # pylint: disable=g-import-not-at-top
  if tiny:
    cfg = dict(opera_ct.CONFIG, **opera_ct.TINY_CONFIG)
    config = ClapAudioConfig(
        spec_size=cfg["spec_size"], num_mel_bins=64, patch_embeds_hidden_size=cfg["embed_dim"],
        hidden_size=cfg["embed_dim"] * 2 ** (len(cfg["depths"]) - 1), depths=list(cfg["depths"]),
        num_attention_heads=list(cfg["num_heads"]), window_size=cfg["window_size"],
        drop_path_rate=0.0, hidden_dropout_prob=0.0, enable_fusion=False)
  else:
    config = ClapAudioConfig(drop_path_rate=0.0, hidden_dropout_prob=0.0, enable_fusion=False)
  return ClapAudioModel(config).eval()


def clap_to_htsat(state_dict, root="encoder.encoder.htsat."):
  """ClapAudioModel names -> OPERA's `Cola` names for HTS-AT (q/k/v fused into qkv)."""
  out = {}
  renames = (
      ("audio_encoder.batch_norm.", "bn0."), ("layernorm_before", "norm1"),
      ("layernorm_after", "norm2"), ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
      ("attention.self.relative_position_index", "attn.relative_position_index"),
      ("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
      ("output.dense", "mlp.fc2"), ("audio_encoder.", ""))
  for key, value in state_dict.items():
    if ".attention.self.key." in key or ".attention.self.value." in key:
      continue
    if ".attention.self.query." in key:
      parts = [state_dict[key.replace(".query.", f".{n}.")] for n in ("query", "key", "value")]
      key, value = key.replace("attention.self.query", "attn.qkv"), torch.cat(parts, dim=0)
    for old, new in renames:
      key = key.replace(old, new)
    out[root + key] = value
  return out


def clap_features(model, spec):
  with torch.no_grad():
    return model(input_features=torch.from_numpy(spec)[:, None]).pooler_output.numpy()


# ----------------------------------------------------------------------------
# Helpers.


def _spec(batch, frames, mels=64, seed=0):
  return np.random.default_rng(seed).uniform(size=(batch, frames, mels)).astype(np.float32)


def save_lightning(tmp_path, state_dict, name="model.ckpt"):
  """A Lightning-style checkpoint (state_dict + plain metadata), as OPERA's releases."""
  path = tmp_path / name
  torch.save({"epoch": 3, "global_step": 42, "state_dict": state_dict,
              "hyper_parameters": {"encoder": "test", "dim_out": 512}}, path)
  return str(path)


def convert_and_load(tmp_path, name, state_dict, **kwargs):
  """File -> `convert.convert` -> export dir -> `checkpointing.load_encoder`."""
  ckpt = save_lightning(tmp_path, state_dict)
  report = convert.convert(name, ckpt, tmp_path / "export", **kwargs)
  return checkpointing.load_encoder(tmp_path / "export"), report


@nnx.jit
def _features(m, spec):
  return m.features(spec)


@nnx.jit
def _train_features(m, spec):
  return m.features(spec, train=True)


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ----------------------------------------------------------------------------
# OPERA-GT and AudioMAE through the converter.

GT_TINY = dict(spec_shape=(32, 64), width=32, depth=2, num_heads=2, decoder_width=32, decoder_depth=1,
               decoder_heads=2)


def _gt_positions(dim, grid):
  """The positions of the OPERA-GT model `convert` builds (MAE's grid or OPERA's patch_hw table,
  depending on whether MAEViT has `pos_layout` yet), for the reference to share."""
  config = dict(convert.released_config("opera_gt"), spec_shape=(grid[0] * 4, 64), width=dim, depth=0, num_heads=1,
                decoder="transformer", decoder_width=dim, decoder_depth=0, decoder_heads=1)
  model = nnx.eval_shape(lambda: convert.build_encoder(config, rngs=nnx.Rngs(0)))
  return np.asarray(model.pos_embed())


def test_opera_gt_features_and_decoder_match_torch(tmp_path):
  torch.manual_seed(0)
  ref = randomize_norms(TorchMAE((32, 64), 4, 32, 2, 2, 32, 1, 2, _gt_positions), 1).eval()
  model, report = convert_and_load(tmp_path, "opera_gt", ref.state_dict(), overrides=GT_TINY)
  assert report.checked == ["pos_embed", "decoder_pos_embed"] and not report.unknown
  # OPERA-GT's pooled feature is norm(mean token): `norm` fills fc_norm too.
  np.testing.assert_array_equal(np.asarray(model.fc_norm.scale[...]), ref.norm.weight.detach().numpy())
  spec = _spec(2, 32, seed=1)
  with torch.no_grad():
    want = ref.forward_feature(torch.from_numpy(spec)).numpy()
  assert _max_diff(_features(model, spec), want) <= ATOL
  # Decoder: same encoder output and shuffle on both sides.
  encoded = np.random.default_rng(2).normal(size=(2, 1 + 38, 32)).astype(np.float32)
  ids_restore = np.stack([np.random.default_rng(s).permutation(128) for s in (3, 4)])
  with torch.no_grad():
    want = ref.forward_decoder(ref.norm(torch.from_numpy(encoded)), torch.from_numpy(ids_restore)).numpy()
  got = nnx.jit(lambda m, e, i: m._decode(e, i))(model, encoded, ids_restore)
  assert _max_diff(got, want) <= ATOL


def test_opera_gt_swin_decoder_matches_torch(tmp_path):
  """The released GT layout: Swin decoder with OPERA's (B, H, W, L) view."""
  torch.manual_seed(3)
  ref = TorchMAE((32, 64), 4, 32, 1, 2, 64, 2, 4, _gt_positions, decoder="swin",
                 feat_size=swin_decoder.opera_feat_size(64), layout="opera")
  ref = randomize_norms(ref, 4).eval()
  overrides = {k: v for k, v in GT_TINY.items() if k != "decoder_depth"}  # inferred: 2 blocks
  overrides.update(depth=1, decoder_width=64, decoder_heads=4)
  model, report = convert_and_load(tmp_path, "opera_gt", ref.state_dict(), overrides=overrides)
  assert model.decoder == "swin" and not report.unknown
  encoded = np.random.default_rng(5).normal(size=(2, 1 + 38, 32)).astype(np.float32)
  ids_restore = np.stack([np.random.default_rng(s).permutation(128) for s in (6, 7)])
  with torch.no_grad():
    want = ref.forward_decoder(ref.norm(torch.from_numpy(encoded)), torch.from_numpy(ids_restore)).numpy()
  got = nnx.jit(lambda m, e, i: m._decode(e, i))(model, encoded, ids_restore)
  assert _max_diff(got, want) <= ATOL


AM_TINY = {**audiomae.CONFIG, **audiomae.TINY_CONFIG, "decoder": "swin"}


def _audiomae_torch(seed, *, tiny=True):
  """AudioMAE's MAE module; the full-size one without decoder blocks (features only)."""
  torch.manual_seed(seed)
  cfg = AM_TINY if tiny else dict(audiomae.PRETRAINED_CONFIG, decoder_depth=0)
  patch = cfg["patch_size"][0]
  grid = (cfg["spec_shape"][0] // patch, cfg["spec_shape"][1] // patch)
  ref = TorchMAE(
      cfg["spec_shape"], patch, cfg["width"], cfg["depth"], cfg["num_heads"], cfg["decoder_width"],
      cfg["decoder_depth"], cfg["decoder_heads"],
      lambda d, g: mae_flexible_pos_embed(d, (g[1], g[0]), True),  # AudioMAE's patch_hw order
      decoder="swin", feat_size=grid, layout="grid", fc_norm=True)
  return randomize_norms(ref, seed + 1).eval()


def test_audiomae_features_and_swin_decoder_match_torch(tmp_path):
  ref = _audiomae_torch(0)
  overrides = {k: v for k, v in AM_TINY.items() if k != "decoder"}
  model, report = convert_and_load(tmp_path, "audiomae", ref.state_dict(), overrides=overrides)
  assert model.decoder == "swin" and not report.unknown and not report.defaulted
  spec = _spec(2, 40, mels=32, seed=5)  # shorter than 64 frames: zero-padded on both sides
  with torch.no_grad():
    want = ref.forward_feature(torch.from_numpy(spec)).numpy()
  assert _max_diff(_features(model, spec), want) <= ATOL
  encoded = np.random.default_rng(6).normal(size=(2, 1 + 6, 32)).astype(np.float32)
  ids_restore = np.stack([np.random.default_rng(s).permutation(32) for s in (7, 8)])
  with torch.no_grad():
    want = ref.forward_decoder(ref.norm(torch.from_numpy(encoded)), torch.from_numpy(ids_restore)).numpy()
  got = nnx.jit(lambda m, e, i: m._decode(e, i))(model, encoded, ids_restore)
  assert _max_diff(got, want) <= ATOL


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["torch", "timm"])
def test_audiomae_matches_vit_reference_full_size(reference):
  """Full-size ViT-B/16 features (slow for the plain reference; timm only if importable)."""
  if reference == "timm":
    timm = timm_side.import_timm()
  ref = _audiomae_torch(10, tiny=False)
  sd = ref.state_dict()
  model, _, _ = convert.convert_state_dict("audiomae", sd, skip_decoder=True)
  spec = _spec(1, 1000, mels=128, seed=11)
  if reference == "timm":
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=(1024, 128), patch_size=16, in_chans=1, num_classes=0, embed_dim=768, depth=12,
        num_heads=12, global_pool="avg", fc_norm=True,
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-6)).eval()
    missing, unexpected = vit.load_state_dict(
        {k: v for k, v in sd.items() if not k.startswith(("decoder", "mask_token"))}, strict=False)
    assert not missing and set(unexpected) <= {"norm.weight", "norm.bias"}, (missing, unexpected)
    with torch.no_grad():
      want = vit(F.pad(torch.from_numpy(spec), (0, 0, 0, 24))[:, None]).numpy()
  else:
    with torch.no_grad():
      want = ref.forward_feature(torch.from_numpy(spec)).numpy()
  assert _max_diff(_features(model, spec), want) <= ATOL


@pytest.mark.slow
def test_opera_gt_full_size_matches_torch():
  torch.manual_seed(20)
  ref = randomize_norms(TorchMAE((256, 64), 4, 384, 12, 6, 256, 0, 8, _gt_positions), 21).eval()
  model, config, _ = convert.convert_state_dict("opera_gt", ref.state_dict(), skip_decoder=True)
  assert (config["width"], config["depth"], tuple(config["spec_shape"])) == (384, 12, (256, 64))
  spec = _spec(1, 256, seed=22)
  with torch.no_grad():
    want = ref.forward_feature(torch.from_numpy(spec)).numpy()
  assert _max_diff(_features(model, spec), want) <= ATOL


# ----------------------------------------------------------------------------
# OPERA-CE.

CE_TINY = dict(opera_ce.CONFIG, **opera_ce.TINY_CONFIG)


def _ce_torch(seed, cfg=CE_TINY):
  torch.manual_seed(seed)
  ref = TorchColaCE(cfg["blocks"], cfg["stem_width"], cfg["head_width"], cfg["cola_dim"])
  return randomize_norms(ref, seed + 1).eval()


def test_opera_ce_matches_torch_eval_and_train(tmp_path):
  ref = _ce_torch(0)
  model, report = convert_and_load(tmp_path, "opera_ce", ref.state_dict(), overrides=opera_ce.TINY_CONFIG)
  assert not report.unknown and not report.fresh_groups
  assert all(k.endswith("num_batches_tracked") for k in report.ignored)
  spec = _spec(3, 30, seed=1)  # odd sizes: the static padding must not depend on them
  with torch.no_grad():
    want = ref.features(torch.from_numpy(spec)).numpy()
  assert want.shape == (3, 32) and _max_diff(_features(model, spec), want) <= ATOL
  # Train mode: batch statistics, and the running statistics move the same way.
  ref.train()
  with torch.no_grad():
    want = ref.features(torch.from_numpy(spec)).numpy()
  got = _train_features(model, spec)
  assert _max_diff(got, want) <= ATOL
  np.testing.assert_allclose(
      np.asarray(model.bn0.mean[...]), ref.encoder.efficientnet._bn0.running_mean.numpy(), atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(model.blocks[2].bn1.mean[...]),
      ref.encoder.efficientnet._blocks[2]._bn1.running_mean.numpy(), atol=1e-5)


@pytest.mark.slow
def test_opera_ce_full_size_matches_torch():
  ref = _ce_torch(30, dict(opera_ce.CONFIG))
  model, _, report = convert.convert_state_dict("opera_ce", ref.state_dict())
  assert len(report.converted) == len(ref.state_dict()) - len(report.ignored)
  spec = _spec(2, 128, seed=31)
  with torch.no_grad():
    want = ref.features(torch.from_numpy(spec)).numpy()
  assert want.shape == (2, 1280) and _max_diff(_features(model, spec), want) <= ATOL


def _timm_to_efficientnet_pytorch(timm_sd):
  """timm efficientnet_b0 names -> efficientnet_pytorch names under `encoder.efficientnet.`."""
  out, flat = {}, {}
  for key in timm_sd:
    if key.startswith("blocks."):
      stage, idx = key.split(".")[1:3]
      flat.setdefault((int(stage), int(idx)), len(flat))
  ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
  ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
        "conv_pwl": "_project_conv", "bn3": "_bn2"}
  top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
  for key, value in timm_sd.items():
    parts = key.split(".")
    if parts[0] == "blocks":
      i = flat[(int(parts[1]), int(parts[2]))]
      layer, rest = parts[3], parts[4:]
      if layer == "se":
        name = {"conv_reduce": "_se_reduce", "conv_expand": "_se_expand"}[rest[0]]
        rest = rest[1:]
      else:
        name = (ds if i == 0 else ir)[layer]
      out[".".join(["encoder.efficientnet._blocks", str(i), name] + rest)] = value
    elif parts[0] in top:
      out[".".join(["encoder.efficientnet", top[parts[0]]] + parts[1:])] = value
  return out


@pytest.mark.slow
def test_opera_ce_trunk_matches_timm_efficientnet_b0():
  timm = timm_side.import_timm()
  torch.manual_seed(40)
  trunk = randomize_norms(timm.create_model("efficientnet_b0", pretrained=False, num_classes=0), 41).eval()
  cnn1 = nn.Conv2d(1, 3, 3)
  sd = _timm_to_efficientnet_pytorch(trunk.state_dict())
  sd.update({"encoder.cnn1.weight": cnn1.weight.detach(), "encoder.cnn1.bias": cnn1.bias.detach()})
  model, _, _ = convert.convert_state_dict(
      "opera_ce", sd, overrides=dict(same_padding_size=None, bn_eps=1e-5, bn_momentum=0.9))
  spec = _spec(2, 96, seed=42)
  with torch.no_grad():
    want = trunk(cnn1(torch.from_numpy(spec)[:, None])).numpy()
  assert _max_diff(_features(model, spec), want) <= ATOL


# ----------------------------------------------------------------------------
# OPERA-CT.


def test_opera_ct_matches_clap_audio_model(tmp_path):
  torch.manual_seed(0)
  ref = randomize_norms(clap_audio_model(tiny=True), 1)
  sd = clap_to_htsat(ref.state_dict())
  model, report = convert_and_load(tmp_path, "opera_ct", sd, overrides=opera_ct.TINY_CONFIG)
  assert report.fresh_groups == ["cola_head"] and not report.unknown
  assert any(k.endswith("relative_position_index") for k in report.checked)
  spec = _spec(2, 200, seed=2)  # < 256 frames: bicubic stretch first
  want = clap_features(ref, spec)
  assert want.shape == (2, 16) and _max_diff(_features(model, spec), want) <= ATOL
  ref.train()
  with torch.no_grad():
    want = ref(input_features=torch.from_numpy(spec)[:, None]).pooler_output.numpy()
  assert _max_diff(_train_features(model, spec), want) <= ATOL
  np.testing.assert_allclose(np.asarray(model.bn0.mean[...]),
                             ref.audio_encoder.batch_norm.running_mean.numpy(), atol=1e-5)


@pytest.mark.slow
def test_opera_ct_full_size_matches_clap_audio_model():
  torch.manual_seed(50)
  ref = randomize_norms(clap_audio_model(tiny=False), 51)
  model, _, report = convert.convert_state_dict("opera_ct", clap_to_htsat(ref.state_dict()))
  clap_params = sum(p.numel() for p in ref.parameters())
  ours = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
             if "cola_head" not in jax.tree_util.keystr(path))
  assert ours == clap_params
  spec = _spec(1, 800, seed=52)
  want = clap_features(ref, spec)
  assert want.shape == (1, 768) and _max_diff(_features(model, spec), want) <= ATOL


# ----------------------------------------------------------------------------
# The Swin decoder on OPERA-GT's layout (MAEViT has no Swin option yet: blocks alone).


def test_swin_decoder_blocks_opera_layout_match_torch():
  torch.manual_seed(60)
  width, heads, feat = 64, 4, swin_decoder.opera_feat_size(64)  # (8, 8): shifts apply
  refs = nn.ModuleList([TorchSwinDecoderBlock(width, heads, feat, (4, 4), s, "opera")
                        for s in ((0, 0), (2, 0))])
  randomize_norms(refs, 61).eval()
  blocks = nnx.eval_shape(lambda: swin_decoder.swin_decoder_blocks(
      width, 2, heads, feat_size=feat, rngs=nnx.Rngs(0)))
  entries = [e for i in range(2) for e in convert._swin_decoder_block(str(i), (i,), "encoder")]
  sd = {k: v.detach().numpy() for k, v in refs.state_dict().items()}
  graphdef, state = nnx.split(blocks)
  pure = state.to_pure_dict()
  report = convert._fill(pure, sd, convert.KeyMap("", ("",), entries, [], ()), "test", 0)
  assert not report.unknown
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
  blocks = nnx.merge(graphdef, state)
  x = np.random.default_rng(62).normal(size=(2, 16 * 16, width)).astype(np.float32)  # 16 x 16 patches
  with torch.no_grad():
    want = refs[1](refs[0](torch.from_numpy(x))).numpy()

  @nnx.jit
  def run(blocks, x):
    for block in blocks:
      x = block(x)
    return x

  assert _max_diff(run(blocks, x), want) <= ATOL
  with pytest.raises(ValueError, match="cannot take"):
    blocks[1](jnp.zeros((1, 8, width)))


def test_swin_shift_mask_and_windows():
  mask = swin_decoder.shift_mask((8, 8), (4, 4), (2, 0))
  assert mask.shape == (4, 16, 16) and set(np.unique(mask)) == {0.0, -100.0}
  assert not mask[0].any()  # the first window holds one region only
  assert swin_decoder.shift_mask((8, 8), (4, 4), (0, 0)) is None
  block = nnx.eval_shape(lambda: swin_decoder.SwinDecoderBlock(
      32, 2, feat_size=(4, 8), shift_size=(2, 0), rngs=nnx.Rngs(0)))
  assert (block.window, block.shift) == ((4, 4), (0, 0))  # feat height == window: no shift
  x = np.arange(2 * 8 * 6 * 3).reshape(2, 8, 6, 3)
  np.testing.assert_array_equal(
      np.asarray(swin_decoder.window_reverse(swin_decoder.window_partition(x, (4, 2)), (4, 2), (8, 6))), x)


# ----------------------------------------------------------------------------
# JAX-side behaviour: input layout, padding, positions, training.


def test_bicubic_matrix_matches_torch_interpolate():
  x = np.random.default_rng(70).normal(size=(1, 1, 37, 5)).astype(np.float32)
  want = F.interpolate(torch.from_numpy(x), (128, 5), mode="bicubic", align_corners=True).numpy()
  got = np.einsum("ot,t...->o...", opera_ct.bicubic_matrix(37, 128), x[0, 0])
  np.testing.assert_allclose(got, want[0, 0], atol=1e-5)
  np.testing.assert_allclose(opera_ct.bicubic_matrix(9, 9), np.eye(9), atol=1e-7)


def test_wav2img_follows_htsat_reshape():
  x = np.arange(2 * 16 * 4, dtype=np.float32).reshape(2, 16, 4)  # T = 16, F = 4, ratio 2
  t = torch.from_numpy(x)[:, None].permute(0, 1, 3, 2).reshape(2, 1, 4, 2, 8)
  want = t.permute(0, 1, 3, 2, 4).reshape(2, 1, 8, 8)[:, 0].numpy()  # HTS-AT's reshape_wav2img
  np.testing.assert_array_equal(np.asarray(opera_ct.wav2img(jnp.asarray(x), 8, 2)), want)


@functools.lru_cache(maxsize=None)
def _abstract(name):
  """Full-size models, shapes only (cheap)."""
  builders = {"opera_ce": opera_ce.opera_ce, "opera_ct": opera_ct.opera_ct,
              "audiomae": lambda: audiomae.audiomae(**audiomae.PRETRAINED_CONFIG)}
  return nnx.eval_shape(builders[name])


def test_static_same_padding_is_efficientnet_pytorchs():
  # efficientnet_pytorch pads for a 224 image at every stage, whatever the input size.
  assert opera_ce.same_padding(224, 3, 2) == (0, 1)   # stem
  assert opera_ce.same_padding(56, 5, 2) == (1, 2)    # stage 3
  assert opera_ce.same_padding(28, 3, 2) == (0, 1)    # stage 4
  assert opera_ce.same_padding(14, 5, 2) == (1, 2)    # stage 6
  assert opera_ce.same_padding(14, 5, 1) == (2, 2)
  m = _abstract("opera_ce")
  assert [b.depthwise_conv.padding for b in m.blocks][:4] == [
      ((1, 1), (1, 1)), ((0, 1), (0, 1)), ((1, 1), (1, 1)), ((1, 2), (1, 2))]


def test_audiomae_positions_are_mae_patch_hw_tables():
  want = mae_flexible_pos_embed(768, (8, 64), True)  # AudioMAE: patch_hw = (128/16, 1024/16)
  table = lambda dim, grid: opera_gt.sincos_pos_embed_2d(dim, grid, cls_token=True, layout="patch_hw")
  np.testing.assert_allclose(table(768, (64, 8)), want, atol=1e-6)
  np.testing.assert_allclose(audiomae.audiomae(rngs=nnx.Rngs(0), **audiomae.TINY_CONFIG).pos_embed(),
                             mae_flexible_pos_embed(32, (4, 8), True), atol=1e-6)
  gt = mae_flexible_pos_embed(384, (16, 64), True)  # OPERA-GT: patch_hw = (64/4, 256/4)
  np.testing.assert_allclose(table(384, (64, 16)), gt, atol=1e-6)


def test_full_size_shapes_and_parameter_counts():
  ce, ct, am = _abstract("opera_ce"), _abstract("opera_ct"), _abstract("audiomae")
  count = lambda m, skip: sum(
      x.size for p, x in jax.tree_util.tree_leaves_with_path(nnx.state(m, nnx.Param))
      if not any(s in jax.tree_util.keystr(p) for s in skip))
  # efficientnet-b0 without its classifier has 4,007,548 parameters; OPERA adds cnn1 (30).
  assert count(ce, ("cola_head",)) == 4_007_548 + 30
  assert len(ce.blocks) == 16 and ce.feature_dim == 1280
  assert ct.feature_dim == 768 and [len(s.blocks) for s in ct.layers] == [2, 2, 6, 2]
  assert [s.blocks[-1].window for s in ct.layers] == [8, 8, 8, 8]
  assert [s.blocks[1].shift for s in ct.layers] == [4, 4, 4, 0]  # 8 x 8 last stage: no shift
  block = 4 * 768 + 768 * 2304 + 2304 + 768 * 768 + 768 + 2 * 768 * 3072 + 3072 + 768
  vit_b16 = 256 * 768 + 768 + 768 + 12 * block + 2 * 768  # 1-channel patches, cls, blocks, norm
  assert count(am, ("decoder", "mask_token")) == vit_b16 + 2 * 768  # + fc_norm
  assert len(am.decoder_blocks) == 16 and am.decoder_blocks[1].shift == (2, 0)


@pytest.mark.parametrize("name", ["opera_ce", "opera_ct"])
def test_cola_objective_trains(name):
  module = {"opera_ce": opera_ce, "opera_ct": opera_ct}[name]
  model = convert.initialize(nnx.eval_shape(lambda: getattr(module, name)(**module.TINY_CONFIG)), 1)
  spec = jnp.asarray(_spec(6, 96, seed=80))
  stats0 = np.asarray(model.bn0.mean[...])

  @nnx.jit
  def loss_and_grads(model, key):
    return nnx.value_and_grad(lambda m: m.ssl_forward(spec, key), has_aux=True)(model)

  key = jax.random.key(81)  # the same crops and dropout each step: the loss must fall
  losses = []
  for _ in range(4):
    (loss, aux), grads = loss_and_grads(model, key)
    losses.append(float(loss))
    # Plain SGD in numpy (an optax update would double the compile time of this test).
    grads = jax.tree.map(np.asarray, grads)
    norm = np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads)))
    assert np.isfinite(norm) and norm > 0
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: jnp.asarray(np.asarray(p) - 0.5 * g / norm), params, grads))
  assert aux["visible_features"].shape == (6, model.feature_dim) and 0 <= float(aux["accuracy"]) <= 1
  assert losses[-1] < losses[0], losses
  assert not np.allclose(np.asarray(model.bn0.mean[...]), stats0)  # BatchNorm stats were updated


def test_randomness_is_per_example():
  keys = jax.random.split(jax.random.key(0), 64)
  x = jnp.ones((64, 3, 2))
  assert opera_ce.drop_path(x, 0.5, None) is x
  y = np.asarray(opera_ce.drop_path(x, 0.5, keys))
  kept = y[:, 0, 0] > 0
  assert 10 < kept.sum() < 54 and np.all(y[kept] == 2.0) and np.all(y[~kept] == 0.0)
  assert np.all(y == y[:, :1, :1])  # one draw per example
  # An example's draws depend on its own key only, not on the (micro-)batch around it.
  np.testing.assert_array_equal(np.asarray(opera_ce.drop_path(x[:8], 0.5, keys[:8])), y[:8])
  spec = jnp.asarray(_spec(6, 96, seed=90))
  k6 = opera_ce.example_keys(jax.random.key(1), 6)
  assert opera_ce.example_keys(k6, 6) is k6 and k6.shape == (6,)
  whole = opera_ce.random_crops(spec, 16, k6)
  halves = [opera_ce.random_crops(spec[i:i + 3], 16, k6[i:i + 3]) for i in (0, 3)]
  np.testing.assert_array_equal(np.asarray(whole), np.concatenate(halves))
  assert whole.shape == (6, 16, 64)


def test_rejects_bad_inputs():
  ce = nnx.eval_shape(lambda: opera_ce.opera_ce(**opera_ce.TINY_CONFIG))
  ct = nnx.eval_shape(lambda: opera_ct.opera_ct(**opera_ct.TINY_CONFIG))
  with pytest.raises(ValueError, match="64"):
    ce.features(jnp.zeros((1, 32, 48)))
  with pytest.raises(ValueError, match="256"):
    ct.features(jnp.zeros((1, 300, 64)))
  with pytest.raises(TypeError, match="unknown OPERA-CT options"):
    opera_ct.opera_ct(width=3)
  with pytest.raises(ValueError, match="decoder"):
    audiomae.audiomae(**audiomae.TINY_CONFIG, decoder="conv")


@pytest.mark.parametrize("kernel, stride, padding", [
    (3, 1, ((1, 1), (1, 1))), (3, 2, ((0, 1), (0, 1))), (5, 2, ((1, 2), (1, 2))), (5, 1, ((2, 2), (2, 2)))])
def test_depthwise_conv_matches_xla_grouped_convolution(kernel, stride, padding):
  """OPERA-CE's CPU depthwise convolution (shifted slices) against nnx.Conv's grouped one."""
  conv = opera_ce.DepthwiseConv(16, kernel, stride, padding=padding, dtype=None, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(conv)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 17, 9, 16)).astype(np.float32))
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(conv(x).shape).astype(np.float32))

  def loss(apply, params, x):
    return jnp.sum(apply(nnx.merge(graphdef, params), x) * weights)

  ours = lambda conv, x: conv.shifted_sum(x)
  xla = lambda conv, x: nnx.Conv.__call__(conv, x)
  np.testing.assert_allclose(ours(conv, x), xla(conv, x), rtol=1e-5, atol=1e-5)
  (d_params, d_x), (ref_params, ref_x) = (
      jax.grad(functools.partial(loss, apply), argnums=(0, 1))(params, x) for apply in (ours, xla))
  np.testing.assert_allclose(d_x, ref_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_params["kernel"][...], ref_params["kernel"][...], rtol=1e-4, atol=1e-4)
  assert conv.feature_group_count == 16 and conv.bias is None  # depthwise, bias-free by construction
  # The module's own call is one of the two, whichever the compile target picks.
  np.testing.assert_allclose(conv(x), xla(conv, x), rtol=1e-5, atol=1e-5)


def test_depthwise_conv_refuses_an_input_of_another_width():
  conv = opera_ce.DepthwiseConv(16, 3, 1, padding=((1, 1), (1, 1)), dtype=None, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="depthwise convolution of 16 channels"):
    conv(jnp.zeros((1, 5, 5, 8)))
