r"""Converts PyTorch checkpoints of the OPERA encoders and AudioMAE into acula_jax exports.

  python -m acula_jax.tools.convert --from=opera_gt --checkpoint=encoder-operaGT.ckpt --output=DIR
  python -m acula_jax.tools.convert --from=opera_ce --checkpoint=encoder-operaCE.ckpt --output=DIR
  python -m acula_jax.tools.convert --from=opera_ct --checkpoint=encoder-operaCT.ckpt --output=DIR
  python -m acula_jax.tools.convert --from=audiomae --checkpoint=pretrained.pth --output=DIR

DIR gets the layout of `checkpointing.export_encoder`: DIR/encoder (Orbax) and
DIR/manifest.json = {"model": config with `name`, "format", "source"}, so
`checkpointing.load_encoder(DIR)` rebuilds the encoder.
BatchNorm running statistics (OPERA-CE/CT) are exported next to the
parameters.

Reading is safe: `.safetensors` files through safetensors, anything else
through `torch.load(weights_only=True)`. Checkpoints that also pickle a few
known, inert containers (Lightning's AttributeDict, argparse.Namespace, numpy
scalars) load with those replaced by an inert stand-in; any other global is
refused with its name, and nothing in the file is ever executed.

Keys. The tensors are taken from `state_dict` (Lightning), `model` (AudioMAE)
or the top level, and a wrapper prefix (`model.`, `module.`, `sed_model.`,
...) is found by locating one anchor key. Each encoder has one key map, in the
names of the reference code (OPERA's `Cola` for CE/CT, the MAE module for GT
and AudioMAE). Conv kernels go OIHW -> HWIO, linear weights are transposed,
patch convs become the ViT's patch `Linear`. Fixed buffers the checkpoint
stores (sin-cos positions, Swin relative-position indices and shift masks)
are compared with the model's own constants. The conversion

* fails on a shape mismatch, naming the checkpoint key and the parameter;
* fails when encoder keys are missing, listing them all;
* converts optional groups (the MAE decoder, the COLA head) when present and
  initialises them afresh when wholly absent (reported);
* lists unknown keys (fatal with `--strict`) and the known-but-unused ones.

Architecture sizes come from each encoder's default config (the released
models), with the block counts and the MAE decoder kind read from the
checkpoint and `--overrides` (a JSON object) on top.
"""
import dataclasses
import json
import math
import os
import pickle
import re
import sys

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import fileio
from acula_jax import models
from acula_jax.models import acula
from acula_jax.models import audiomae
from acula_jax.models import opera_ce
from acula_jax.models import opera_ct
from acula_jax.models import opera_gt

EXPORT_VARIABLES = checkpointing.EXPORT_VARIABLES

# Globals that only build plain containers or scalars; replaced by `_Inert`.
_INERT_GLOBALS = (
    "argparse.Namespace",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
)


class ConversionError(errors.DataError):
  """A checkpoint that cannot be converted; the message names the file."""


# ----------------------------------------------------------------------------
# Safe reading.


class _Inert(dict):
  """Stand-in for an allow-listed container global: keeps its data, runs nothing."""

  def __init__(self, *args, **kwargs):  # pylint: disable=super-init-not-called
    dict.__init__(self)
    self.args = args

  def __setstate__(self, state):
    self.state = state


def _torch_load(path):
  import torch  # pylint: disable=g-import-not-at-top  (only the converter needs torch)
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    refused = sorted(set(needed) - set(_INERT_GLOBALS))
    if refused:
      raise ConversionError(path, (
          f"refusing to unpickle: the checkpoint needs the globals {refused}, which "
          "weights_only loading does not allow (convert it to a plain state dict or "
          "safetensors first)")) from e
    with torch.serialization.safe_globals([(_Inert, name) for name in needed]):
      return torch.load(path, map_location="cpu", weights_only=True)


def _to_numpy(tensor):
  import torch  # pylint: disable=g-import-not-at-top
  if tensor.is_floating_point():
    return tensor.detach().to(torch.float32).cpu().numpy()
  return tensor.detach().cpu().numpy()


def _tensor_dict(obj, path):
  """The dict of tensors inside a loaded checkpoint."""
  import torch  # pylint: disable=g-import-not-at-top
  is_tensors = lambda d: isinstance(d, dict) and d and all(
      isinstance(v, torch.Tensor) for v in d.values())
  for key in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and is_tensors(obj.get(key)):
      return obj[key]
  if is_tensors(obj):
    return obj
  keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
  raise ConversionError(path, f"no state dict found (expected 'state_dict', 'model' or tensors; got {keys})")


def load_state_dict(path):
  """Reads a checkpoint safely -> {name: float32/int numpy array}."""
  path = str(path)
  if not os.path.isfile(path):
    raise ConversionError(path, "checkpoint file not found")
  if path.endswith(".safetensors"):
    try:
      import safetensors.torch  # pylint: disable=g-import-not-at-top
      tensors = safetensors.torch.load_file(path)
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own types)
      raise ConversionError(path, f"not a readable safetensors file: {e}") from e
  else:
    try:
      obj = _torch_load(path)
    except ConversionError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (corrupt zip, truncated file, ...)
      raise ConversionError(path, f"not a readable torch checkpoint: {e}") from e
    tensors = _tensor_dict(obj, path)
  return {k: _to_numpy(v) for k, v in tensors.items()}


# ----------------------------------------------------------------------------
# Key maps.


@dataclasses.dataclass(frozen=True)
class Entry:
  """One checkpoint tensor -> one model leaf.

  `keys` are root-relative checkpoint names, the first present wins; `kind`
  says how to re-lay it out; `group` is "encoder" (required) or an optional
  group name converted all-or-nothing; `default` gives the value when none of
  `keys` is present ("ones"/"zeros"), making the entry optional on its own.
  """
  keys: tuple
  path: tuple
  kind: str = "copy"
  group: str = "encoder"
  default: str | None = None


@dataclasses.dataclass(frozen=True)
class Check:
  """A stored buffer that must equal the model's constant (positions, masks)."""
  key: str
  expected: np.ndarray
  hint: str


@dataclasses.dataclass
class KeyMap:
  anchor: str     # a root-relative key every checkpoint of this encoder has
  roots: tuple    # root-relative prefixes a checkpoint may start at ("" = the full module)
  entries: list
  checks: list
  ignore: tuple   # regexes (root-relative) of known keys that are not converted


@dataclasses.dataclass
class Report:
  """What a conversion did, for logs and the manifest."""
  prefix: str = ""
  root: str = ""
  converted: list = dataclasses.field(default_factory=list)
  defaulted: list = dataclasses.field(default_factory=list)
  fresh_groups: list = dataclasses.field(default_factory=list)
  checked: list = dataclasses.field(default_factory=list)
  ignored: list = dataclasses.field(default_factory=list)
  unknown: list = dataclasses.field(default_factory=list)

  def summary(self):
    return {
        "prefix": self.prefix, "converted": len(self.converted), "defaulted": self.defaulted,
        "fresh_groups": self.fresh_groups, "checked": self.checked,
        "ignored": len(self.ignored), "unknown": self.unknown}


def _ln(torch_name, path, group="encoder"):
  return [Entry((f"{torch_name}.weight",), path + ("scale",), group=group),
          Entry((f"{torch_name}.bias",), path + ("bias",), group=group)]


def _linear(torch_name, path, group="encoder", bias=True):
  out = [Entry((f"{torch_name}.weight",), path + ("kernel",), "linear", group)]
  if bias:
    out.append(Entry((f"{torch_name}.bias",), path + ("bias",), group=group))
  return out


def _conv(torch_name, path, group="encoder", bias=False):
  out = [Entry((f"{torch_name}.weight",), path + ("kernel",), "conv", group)]
  if bias:
    out.append(Entry((f"{torch_name}.bias",), path + ("bias",), group=group))
  return out


def _bn(torch_name, path):
  return [Entry((f"{torch_name}.weight",), path + ("scale",)),
          Entry((f"{torch_name}.bias",), path + ("bias",)),
          Entry((f"{torch_name}.running_mean",), path + ("mean",)),
          Entry((f"{torch_name}.running_var",), path + ("var",))]


def _vit_block(prefix, path, group):
  return (_ln(f"{prefix}.norm1", path + ("norm1",), group)
          + _linear(f"{prefix}.attn.qkv", path + ("attn", "qkv"), group)
          + _linear(f"{prefix}.attn.proj", path + ("attn", "proj"), group)
          + _ln(f"{prefix}.norm2", path + ("norm2",), group)
          + _linear(f"{prefix}.mlp.fc1", path + ("mlp", "fc1"), group)
          + _linear(f"{prefix}.mlp.fc2", path + ("mlp", "fc2"), group))


def _swin_decoder_block(prefix, path, group):
  return (_linear(f"{prefix}.attn.qkv", path + ("attn", "qkv"), group)
          + _linear(f"{prefix}.attn.proj", path + ("attn", "proj"), group)
          + [Entry((f"{prefix}.attn.tau",), path + ("attn", "tau"), group=group)]
          + _linear(f"{prefix}.attn.meta_mlp.fc1", path + ("attn", "meta_mlp", "fc1"), group)
          + _linear(f"{prefix}.attn.meta_mlp.fc2", path + ("attn", "meta_mlp", "fc2"), group)
          + _ln(f"{prefix}.norm1", path + ("norm1",), group)
          + _linear(f"{prefix}.mlp.fc1", path + ("mlp", "fc1"), group)
          + _linear(f"{prefix}.mlp.fc2", path + ("mlp", "fc2"), group)
          + _ln(f"{prefix}.norm2", path + ("norm2",), group))


def _mae_key_map(model, *, fc_norm_keys, fc_norm_default, with_decoder):
  """OPERA-GT / AudioMAE (MAE module names; timm ViT blocks)."""
  entries = [
      Entry(("patch_embed.proj.weight",), ("patch_embed", "kernel"), "patch"),
      Entry(("patch_embed.proj.bias",), ("patch_embed", "bias")),
      Entry(("cls_token",), ("cls_token",)),
  ]
  for i in range(len(model.blocks)):
    entries += _vit_block(f"blocks.{i}", ("blocks", i), "encoder")
  entries += _ln("norm", ("norm",))
  entries += [Entry(tuple(f"{k}.weight" for k in fc_norm_keys), ("fc_norm", "scale"),
                    default=fc_norm_default and "ones"),
              Entry(tuple(f"{k}.bias" for k in fc_norm_keys), ("fc_norm", "bias"),
                    default=fc_norm_default and "zeros")]
  checks = [Check("pos_embed", np.asarray(model.pos_embed())[None], _POS_HINT)]
  ignore = ()
  if with_decoder:
    swin = model.decoder == "swin"
    entries += _linear("decoder_embed", ("decoder_embed",), "decoder")
    entries.append(Entry(("mask_token",), ("mask_token",), group="decoder"))
    for i in range(len(model.decoder_blocks)):
      block = _swin_decoder_block if swin else _vit_block
      entries += block(f"decoder_blocks.{i}", ("decoder_blocks", i), "decoder")
    entries += _ln("decoder_norm", ("decoder_norm",), "decoder")
    entries += _linear("decoder_pred", ("decoder_pred",), "decoder")
    checks.append(Check("decoder_pos_embed", np.asarray(model.pos_embed(decoder=True))[None], _POS_HINT))
  else:
    ignore = (r"decoder_.*", r"mask_token")
  return KeyMap("patch_embed.proj.weight", ("",), entries, checks, ignore)


_POS_HINT = (
    "the checkpoint's fixed sin-cos positions differ from the model's table; OPERA and "
    "AudioMAE use MAE's get_2d_sincos_pos_embed_flexible over patch_hw = (freq, time) "
    "patches (MAEViT's pos_layout='patch_hw'), so the model must build that table")


def _cola_head(entries):
  return (entries + _linear("g", ("cola_head", "g"), "cola_head")
          + _ln("layer_norm", ("cola_head", "layer_norm"), "cola_head")
          + _linear("linear", ("cola_head", "linear"), "cola_head", bias=False))


def _ce_key_map(model):
  """OPERA-CE: `Cola.encoder` = cnn1 + efficientnet_pytorch EfficientNet-B0."""
  e = "encoder.efficientnet"
  entries = _conv("encoder.cnn1", ("cnn1",), bias=True)
  entries += _conv(f"{e}._conv_stem", ("conv_stem",)) + _bn(f"{e}._bn0", ("bn0",))
  for i, block in enumerate(model.blocks):
    b, p = f"{e}._blocks.{i}", ("blocks", i)
    if block.expand_conv is not None:
      entries += _conv(f"{b}._expand_conv", p + ("expand_conv",)) + _bn(f"{b}._bn0", p + ("bn0",))
    entries += _conv(f"{b}._depthwise_conv", p + ("depthwise_conv",)) + _bn(f"{b}._bn1", p + ("bn1",))
    entries += _conv(f"{b}._se_reduce", p + ("se_reduce",), bias=True)
    entries += _conv(f"{b}._se_expand", p + ("se_expand",), bias=True)
    entries += _conv(f"{b}._project_conv", p + ("project_conv",)) + _bn(f"{b}._bn2", p + ("bn2",))
  entries += _conv(f"{e}._conv_head", ("conv_head",)) + _bn(f"{e}._bn1", ("bn1",))
  ignore = (r".*num_batches_tracked", r"encoder\.efficientnet\._fc\..*")
  return KeyMap(f"{e}._conv_stem.weight", ("", "encoder.", f"{e}."), _cola_head(entries), [], ignore)


def _ct_key_map(model):
  """OPERA-CT: `Cola.encoder.encoder.htsat` = HTS-AT's HTSAT_Swin_Transformer."""
  h = "encoder.encoder.htsat"
  entries = _bn(f"{h}.bn0", ("bn0",)) + _conv(f"{h}.patch_embed.proj", ("patch_embed",), bias=True)
  entries += _ln(f"{h}.patch_embed.norm", ("patch_norm",))
  checks = []
  for i, stage in enumerate(model.layers):
    for j, block in enumerate(stage.blocks):
      b, p = f"{h}.layers.{i}.blocks.{j}", ("layers", i, "blocks", j)
      entries += _ln(f"{b}.norm1", p + ("norm1",))
      entries += _linear(f"{b}.attn.qkv", p + ("attn", "qkv"))
      entries += _linear(f"{b}.attn.proj", p + ("attn", "proj"))
      entries.append(Entry((f"{b}.attn.relative_position_bias_table",),
                           p + ("attn", "relative_position_bias_table")))
      entries += _ln(f"{b}.norm2", p + ("norm2",))
      entries += _linear(f"{b}.mlp.fc1", p + ("mlp", "fc1"))
      entries += _linear(f"{b}.mlp.fc2", p + ("mlp", "fc2"))
      checks.append(Check(f"{b}.attn.relative_position_index",
                          opera_ct.relative_position_index(block.window), _SWIN_HINT))
      mask = block.attn_mask()
      if mask is not None:
        checks.append(Check(f"{b}.attn_mask", mask, _SWIN_HINT))
    if stage.downsample is not None:
      d = f"{h}.layers.{i}.downsample"
      entries += _ln(f"{d}.norm", ("layers", i, "downsample", "norm"))
      entries += _linear(f"{d}.reduction", ("layers", i, "downsample", "reduction"), bias=False)
  entries += _ln(f"{h}.norm", ("norm",))
  ignore = (r".*num_batches_tracked", rf"{h}\.(spectrogram_extractor|logmel_extractor)\..*",
            rf"{h}\.(tscam_conv|head)\..*")
  roots = ("", "encoder.", "encoder.encoder.", f"{h}.")
  return KeyMap(f"{h}.patch_embed.proj.weight", roots, _cola_head(entries), checks, ignore)


_SWIN_HINT = "the checkpoint's Swin windows differ from the configured spec_size/window_size"


# ----------------------------------------------------------------------------
# Per-encoder configs and builders.


def _count(state_dict, pattern):
  """1 + the largest index captured by `pattern` over the keys (0 when none match)."""
  found = [int(m.group(1)) for k in state_dict for m in [re.fullmatch(pattern, k)] if m]
  return max(found) + 1 if found else 0


def _infer_mae(sd, skip_decoder, no_decoder):
  """Block counts and decoder kind of a root-relative OPERA-GT / AudioMAE state dict.

  `no_decoder` is the config used when the checkpoint has no decoder at all.
  """
  config = {"depth": _count(sd, r"blocks\.(\d+)\..*")}
  decoder_depth = _count(sd, r"decoder_blocks\.(\d+)\..*")
  if skip_decoder:
    return config
  if not decoder_depth:
    return {**config, **no_decoder}
  swin = any(re.fullmatch(r"decoder_blocks\.\d+\.attn\.tau", k) for k in sd)
  return {**config, "decoder_depth": decoder_depth, "decoder": "swin" if swin else "transformer"}


@dataclasses.dataclass(frozen=True)
class Spec:
  released: dict   # the released checkpoint's options (over the model module's CONFIG)
  key_map: object  # (model, skip_decoder) -> KeyMap
  infer: object    # (root-relative state dict, skip_decoder) -> config updates


# The released checkpoints' settings; every other option's default is its model module's CONFIG.
SPECS = {
    "opera_gt": Spec(
        opera_gt.RELEASE_CONFIG,
        lambda m, skip: _mae_key_map(
            m, fc_norm_keys=("fc_norm", "norm"), fc_norm_default=False, with_decoder=not skip),
        lambda sd, skip: _infer_mae(sd, skip, dict(
            decoder="transformer", decoder_depth=opera_gt.CONFIG["decoder_depth"],
            decoder_heads=opera_gt.CONFIG["decoder_heads"]))),
    "opera_ce": Spec(opera_ce.CONFIG, lambda m, skip: _ce_key_map(m), lambda sd, skip: {}),
    "opera_ct": Spec(opera_ct.CONFIG, lambda m, skip: _ct_key_map(m), lambda sd, skip: {}),
    "audiomae": Spec(
        audiomae.PRETRAINED_CONFIG,
        lambda m, skip: _mae_key_map(
            m, fc_norm_keys=("fc_norm",), fc_norm_default=True, with_decoder=not skip),
        lambda sd, skip: _infer_mae(sd, skip, {})),
}


def released_config(name: str) -> dict:
  """The model config of `name`'s released checkpoint (float32, no recomputation: exports are read
  for features)."""
  return dict(models.get_model(name).CONFIG, **SPECS[name].released, name=name, dtype="float32")


def build_encoder(model_config, *, rngs):
  """Any encoder of `models.ENCODERS` from a manifest config (`name` + its options)."""
  config = dict(model_config)
  return acula.build_encoder(ml_collections.ConfigDict({**released_config(config.get("name")), **config}),
                             rngs=rngs)


# ----------------------------------------------------------------------------
# Conversion.


def _dot_suffix_match(key, suffix):
  return key == suffix or key.endswith("." + suffix)


def align_keys(state_dict, key_map, where):
  """Root-relative names: strips the wrapper prefix found from the anchor key.

  Returns ({root-relative name: array}, {original name: array} of keys outside
  the prefix, prefix, root).
  """
  for root in key_map.roots:  # the longest anchor first, so `encoder.` beats a bare trunk
    suffix = key_map.anchor[len(root):]
    hits = [k for k in state_dict if _dot_suffix_match(k, suffix)]
    prefixes = sorted({k[:len(k) - len(suffix)] for k in hits})
    if len(prefixes) > 1:
      raise ConversionError(where, f"ambiguous checkpoint: {suffix!r} found under prefixes {prefixes}")
    if prefixes:
      prefix = prefixes[0]
      inside = {root + k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
      outside = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
      return inside, outside, prefix, root
  raise ConversionError(where, (
      f"no {key_map.anchor!r} (or a shorter form of it) in the checkpoint; is it the right "
      f"--from? first keys: {sorted(state_dict)[:8]}"))


def _relayout(value, kind):
  if kind == "conv":  # torch OIHW -> flax HWIO
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  if kind == "linear":  # torch [out, in] -> flax [in, out]
    return value.T if value.ndim == 2 else value
  if kind == "patch":  # conv [D, 1, ph, pw] -> the ViT's patch Linear [ph * pw, D]
    return value.reshape(value.shape[0], -1).T if value.ndim == 4 else value
  return value


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def _fresh_leaf(path, shape, rng):
  """Fresh value of one leaf: identity norms, LeCun-normal kernels, N(0, 0.02) tokens/tables."""
  name = str(path[-1])
  if name in ("scale", "var", "tau"):
    return np.ones(shape, np.float32)
  if name in ("bias", "mean"):
    return np.zeros(shape, np.float32)
  if name == "kernel" and len(shape) >= 2:  # [.., in, out]: fan-in is all but the last axis
    return (rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))).astype(np.float32)
  return (0.02 * rng.standard_normal(shape)).astype(np.float32)


def initialize(abstract_model, seed=0):
  """A concrete model from an `nnx.eval_shape` one, with numpy initial values.

  Eager Flax initialisation compiles one small program per parameter shape,
  which costs tens of seconds for these models on a loaded CPU; this costs
  milliseconds. Values: LayerNorm/BatchNorm identity, kernels LeCun-normal,
  cls/mask tokens and position tables N(0, 0.02), biases zero.
  """
  graphdef, state, rest = nnx.split(abstract_model, EXPORT_VARIABLES, ...)
  rng = np.random.default_rng(seed)
  pure = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.asarray(_fresh_leaf(
          [getattr(p, "key", getattr(p, "idx", p)) for p in path], leaf.shape, rng)),
      state.to_pure_dict())
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state, rest)


def _fill(pure, sd, key_map, where, seed):
  """Writes the mapped tensors into `pure` (in place); returns the Report."""
  report = Report()
  used = set()
  missing, absent = [], {}
  groups_present = {e.group for e in key_map.entries if any(k in sd for k in e.keys)}
  for entry in key_map.entries:
    key = next((k for k in entry.keys if k in sd), None)
    target = _get(pure, entry.path)
    leaf = ".".join(map(str, entry.path))
    if key is None:
      if entry.default:
        _set(pure, entry.path, getattr(np, entry.default)(target.shape, np.float32))
        report.defaulted.append(f"{leaf} ({entry.default}; checkpoint has no {' or '.join(entry.keys)})")
      elif entry.group == "encoder" or entry.group in groups_present:
        missing.append(entry.keys[0])
      else:
        absent.setdefault(entry.group, []).append(entry)
      continue
    value = _relayout(sd[key], entry.kind)
    if value.shape != tuple(target.shape):
      raise ConversionError(where, (
          f"shape mismatch: checkpoint {key} {tuple(sd[key].shape)} (as {value.shape}) cannot "
          f"fill {leaf} {tuple(target.shape)}; check --from and --overrides"))
    _set(pure, entry.path, value.astype(target.dtype))
    used.add(key)
    report.converted.append(key)
  if missing:
    raise ConversionError(where, f"{len(missing)} missing keys: {missing}")
  rng = np.random.default_rng(seed)
  for group, entries in absent.items():
    for entry in entries:
      _set(pure, entry.path, _fresh_leaf(entry.path, _get(pure, entry.path).shape, rng))
    report.fresh_groups.append(group)
  for check in key_map.checks:
    if check.key not in sd:
      continue
    got, want = np.asarray(sd[check.key]), np.asarray(check.expected)
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
      detail = (f"shape {got.shape} vs {want.shape}" if got.shape != want.shape
                else f"max abs diff {np.max(np.abs(got - want)):.3g}")
      raise ConversionError(where, f"{check.key}: {check.hint} ({detail})")
    used.add(check.key)
    report.checked.append(check.key)
  for key in sorted(set(sd) - used):
    is_known = any(re.fullmatch(p, key) for p in key_map.ignore)
    (report.ignored if is_known else report.unknown).append(key)
  return report


def _fill_unmapped(pure, report, seed):
  """Fresh values for leaves no entry covers (a skipped decoder); reported by top-level name."""
  rng = np.random.default_rng(seed + 1)
  fresh = set()

  def fill(path, leaf):
    if not isinstance(leaf, jax.ShapeDtypeStruct):
      return leaf
    keys = [getattr(p, "key", getattr(p, "idx", p)) for p in path]
    fresh.add(str(keys[0]))
    return _fresh_leaf(keys, leaf.shape, rng)

  filled = jax.tree_util.tree_map_with_path(fill, pure)
  pure.update(filled)
  if fresh:
    report.fresh_groups.append(f"unmapped: {sorted(fresh)}")


def convert_state_dict(name, state_dict, *, overrides=None, skip_decoder=False, strict=False,
                       seed=0, where="<state dict>"):
  """Builds `name` and fills it from a state dict (numpy arrays or torch tensors).

  Returns (encoder, model_config dict, Report). Raises ConversionError.
  """
  models.get_model(name)  # a ValueError naming the encoders for an unknown name
  spec = SPECS[name]
  state_dict = {k: _to_numpy(v) if type(v).__module__.startswith("torch") else np.asarray(v)
                for k, v in state_dict.items()}
  sd, outside, prefix, root = align_keys(state_dict, _roots(name), where)
  config = {**released_config(name), **spec.infer(sd, skip_decoder), **(overrides or {}), "name": name}
  if skip_decoder and name in ("opera_gt", "audiomae"):
    config["decoder"] = "transformer"
  try:
    abstract = nnx.eval_shape(lambda: build_encoder(config, rngs=nnx.Rngs(seed)))
  except (TypeError, ValueError) as e:
    raise ConversionError(where, f"cannot build {name} with {config}: {e}") from e
  key_map = spec.key_map(abstract, skip_decoder)
  graphdef, state, rest = nnx.split(abstract, EXPORT_VARIABLES, ...)
  if jax.tree.leaves(rest):
    raise ConversionError(where, f"{name} has variables that cannot be converted: {rest}")
  stacked = state.to_pure_dict()
  pure = opera_gt.unstack_tree(stacked)  # the key maps address blocks one by one
  report = _fill(pure, sd, key_map, where, seed)
  report.prefix, report.root = prefix, root
  _fill_unmapped(pure, report, seed)
  pure = opera_gt.stack_tree(pure, stacked)
  report.unknown += sorted(outside)
  if strict and report.unknown:
    raise ConversionError(where, f"unknown keys (--strict): {report.unknown}")
  pure = jax.tree.map(jnp.asarray, pure)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state, rest), config, report


def _roots(name):
  """The anchor and roots of `name`'s key map (they do not depend on sizes)."""
  anchors = {
      "opera_gt": ("patch_embed.proj.weight", ("",)),
      "audiomae": ("patch_embed.proj.weight", ("",)),
      "opera_ce": ("encoder.efficientnet._conv_stem.weight",
                   ("", "encoder.", "encoder.efficientnet.")),
      "opera_ct": ("encoder.encoder.htsat.patch_embed.proj.weight",
                   ("", "encoder.", "encoder.encoder.", "encoder.encoder.htsat.")),
  }
  anchor, roots = anchors[name]
  return KeyMap(anchor, roots, [], [], ())


def convert(name, checkpoint, output, *, overrides=None, skip_decoder=False, strict=False, seed=0):
  """Reads `checkpoint`, converts it and writes an export to `output`; returns the Report."""
  state_dict = load_state_dict(checkpoint)
  encoder, config, report = convert_state_dict(
      name, state_dict, overrides=overrides, skip_decoder=skip_decoder, strict=strict, seed=seed,
      where=checkpoint)
  source = {"from": name, "checkpoint": os.path.abspath(checkpoint),
            "sha256": fileio.sha256_file(checkpoint), "report": report.summary()}
  checkpointing.write_export(output, encoder, config, source=source)
  return report


# ----------------------------------------------------------------------------
# CLI.


def _define_flags():
  """CLI flags, defined only when run as a script so that importing this module defines none."""
  flags.DEFINE_enum("from", None, models.ENCODERS, "Which encoder the checkpoint holds.")
  flags.DEFINE_string("checkpoint", None, "PyTorch checkpoint (.ckpt/.pth/.pt or .safetensors).")
  flags.DEFINE_string("output", None, "Export directory (manifest.json + encoder/).")
  flags.DEFINE_string("overrides", "", "JSON object of config overrides (e.g. '{\"num_heads\": 6}').")
  flags.DEFINE_bool("skip_decoder", False, "OPERA-GT/AudioMAE: convert the encoder only.")
  flags.DEFINE_bool("strict", False, "Fail on unknown checkpoint keys.")
  flags.DEFINE_integer("seed", 0, "Seed for optional groups absent from the checkpoint.")
  flags.mark_flags_as_required(["from", "checkpoint", "output"])


def main(argv):
  del argv
  cfg = flags.FLAGS
  overrides = json.loads(cfg.overrides) if cfg.overrides else None
  report = convert(cfg["from"].value, cfg.checkpoint, cfg.output, overrides=overrides,
                   skip_decoder=cfg.skip_decoder, strict=cfg.strict, seed=cfg.seed)
  print(f"converted {len(report.converted)} tensors (prefix {report.prefix!r}) -> {cfg.output}",
        file=sys.stderr)
  for label, items in (("checked", report.checked), ("defaulted", report.defaulted),
                       ("fresh (absent) groups", report.fresh_groups),
                       ("ignored (known, unused)", report.ignored), ("UNKNOWN", report.unknown)):
    if items:
      print(f"{label} ({len(items)}): {items}", file=sys.stderr)


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
