"""`acula_jax.tools.convert`: safe reading, key handling and error cases (tiny checkpoints).

Numerical parity of converted encoders is in `tests/test_encoders.py`, whose PyTorch
references build the state dicts used here.
"""
import argparse
import inspect
import os
import subprocess
import sys

from flax import nnx
import numpy as np
import pytest

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax.tools import convert
from acula_jax.models import opera_ce
from acula_jax.models import opera_gt

torch = pytest.importorskip("torch")
import test_encoders as ref  # pylint: disable=g-import-not-at-top,wrong-import-position  (tests/ is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ce_state_dict():
  """A tiny OPERA-CE `Cola` state dict (torch tensors)."""
  return ref._ce_torch(0).state_dict()  # pylint: disable=protected-access


def _gt_state_dict(seed=0):
  torch.manual_seed(seed)
  model = ref.TorchMAE((32, 64), 4, 32, 2, 2, 32, 1, 2, ref._gt_positions)  # pylint: disable=protected-access
  return ref.randomize_norms(model, seed + 1).state_dict()


def _convert_ce(sd, **kwargs):
  numpy_sd = {k: v.numpy() for k, v in sd.items()}
  return convert.convert_state_dict("opera_ce", numpy_sd, overrides=opera_ce.TINY_CONFIG, **kwargs)


def _leaf(model, *path):
  return np.asarray(nnx.state(model, (nnx.Param, nnx.BatchStat)).to_pure_dict()[path[0]][path[1]])


# ----------------------------------------------------------------------------
# Reading.


class _Payload:
  """Unpickling this would call print: weights_only loading must refuse it."""

  def __reduce__(self):
    return (print, ("unsafe code ran",))


def test_refuses_checkpoints_that_need_unsafe_unpickling(tmp_path, ce_state_dict, capsys):
  path = tmp_path / "evil.ckpt"
  torch.save({"state_dict": ce_state_dict, "callback": _Payload()}, path)
  with pytest.raises(convert.ConversionError, match=r"refusing to unpickle.*builtins\.print") as e:
    convert.load_state_dict(path)
  assert str(path) in str(e.value)
  assert "unsafe code ran" not in capsys.readouterr().out


def test_loads_lightning_metadata_with_inert_stand_ins(tmp_path, ce_state_dict):
  path = tmp_path / "lightning.ckpt"
  torch.save({"state_dict": ce_state_dict, "hyper_parameters": argparse.Namespace(lr=1e-4),
              "best_score": np.float64(0.5), "epoch": 7}, path)
  sd = convert.load_state_dict(path)
  assert set(sd) == set(ce_state_dict)
  np.testing.assert_array_equal(sd["g.weight"], ce_state_dict["g.weight"].numpy())


def test_safetensors_and_plain_state_dicts(tmp_path, ce_state_dict):
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  st_path = tmp_path / "model.safetensors"
  safetensors.torch.save_file({k: v.contiguous() for k, v in ce_state_dict.items()}, st_path)
  pt_path = tmp_path / "plain.pt"
  torch.save(ce_state_dict, pt_path)  # no Lightning wrapper
  a, b = convert.load_state_dict(st_path), convert.load_state_dict(pt_path)
  assert set(a) == set(b) == set(ce_state_dict)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_unreadable_files_name_the_path(tmp_path):
  bad = tmp_path / "broken.ckpt"
  bad.write_bytes(b"not a zip or a pickle")
  with pytest.raises(convert.ConversionError, match="broken.ckpt: not a readable torch checkpoint"):
    convert.load_state_dict(bad)
  with pytest.raises(convert.ConversionError, match="not found"):
    convert.load_state_dict(tmp_path / "missing.ckpt")
  torch.save({"weights": [1, 2]}, tmp_path / "odd.ckpt")
  with pytest.raises(convert.ConversionError, match="no state dict found"):
    convert.load_state_dict(tmp_path / "odd.ckpt")


# ----------------------------------------------------------------------------
# Keys.


def test_wrapper_prefixes_and_partial_roots(ce_state_dict):
  wrapped = {f"module.model.{k}": v for k, v in ce_state_dict.items()}
  model, _, report = _convert_ce(wrapped)
  assert report.prefix == "module.model." and not report.unknown
  np.testing.assert_array_equal(
      _leaf(model, "cnn1", "bias"), ce_state_dict["encoder.cnn1.bias"].numpy())
  # A bare efficientnet_pytorch trunk lacks OPERA's 1 -> 3 conv: named, not guessed.
  trunk = {k[len("encoder.efficientnet."):]: v for k, v in ce_state_dict.items()
           if k.startswith("encoder.efficientnet.")}
  with pytest.raises(convert.ConversionError, match=r"missing keys: \['encoder\.cnn1\.weight', 'encoder\.cnn1\.bias'\]"):
    _convert_ce(trunk)


def test_conv_and_linear_layouts(ce_state_dict):
  model, _, report = _convert_ce(ce_state_dict)
  assert report.fresh_groups == [] and not report.unknown
  w = ce_state_dict["encoder.efficientnet._blocks.1._depthwise_conv.weight"].numpy()  # [C, 1, k, k]
  got = np.asarray(model.blocks[1].depthwise_conv.kernel[...])  # [k, k, 1, C]
  np.testing.assert_array_equal(got, w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(model.cola_head.g.kernel[...]), ce_state_dict["g.weight"].numpy().T)
  np.testing.assert_array_equal(
      np.asarray(model.bn1.var[...]), ce_state_dict["encoder.efficientnet._bn1.running_var"].numpy())


def test_missing_keys_are_listed(ce_state_dict):
  sd = dict(ce_state_dict)
  del sd["encoder.efficientnet._blocks.0._se_reduce.bias"]
  del sd["encoder.efficientnet._bn1.running_mean"]
  with pytest.raises(convert.ConversionError, match=r"2 missing keys: .*_se_reduce\.bias.*_bn1\.running_mean"):
    _convert_ce(sd)


def test_shape_mismatch_names_key_and_parameter(ce_state_dict):
  sd = dict(ce_state_dict)
  sd["encoder.efficientnet._blocks.2._project_conv.weight"] = torch.zeros(16, 31, 1, 1)
  with pytest.raises(
      convert.ConversionError,
      match=r"shape mismatch: checkpoint encoder\.efficientnet\._blocks\.2\._project_conv\.weight "
            r"\(16, 31, 1, 1\).*blocks\.2\.project_conv\.kernel \(1, 1, 64, 16\)"):
    _convert_ce(sd)


def test_unknown_keys_are_listed_and_strict_fails(ce_state_dict):
  sd = dict(ce_state_dict, **{"encoder.extra.weight": torch.zeros(3), "optimizer_step": torch.zeros(())})
  _, _, report = _convert_ce(sd)
  assert report.unknown == ["encoder.extra.weight", "optimizer_step"]
  assert all(k.endswith("num_batches_tracked") for k in report.ignored)
  with pytest.raises(convert.ConversionError, match="unknown keys"):
    _convert_ce(sd, strict=True)


def test_absent_optional_group_is_fresh(ce_state_dict):
  sd = {k: v for k, v in ce_state_dict.items() if k.startswith("encoder.")}
  model, _, report = _convert_ce(sd)
  assert report.fresh_groups == ["cola_head"]
  np.testing.assert_array_equal(np.asarray(model.cola_head.layer_norm.scale[...]), 1.0)
  partial = dict(sd, **{"g.weight": ce_state_dict["g.weight"]})  # half a group is an error
  with pytest.raises(convert.ConversionError, match="missing keys: .*g.bias"):
    _convert_ce(partial)


def test_wrong_encoder_is_reported(ce_state_dict):
  numpy_sd = {k: v.numpy() for k, v in ce_state_dict.items()}
  with pytest.raises(convert.ConversionError, match="right --from"):
    convert.convert_state_dict("opera_ct", numpy_sd)


def test_position_tables_are_checked():
  sd = {k: v.numpy() for k, v in _gt_state_dict().items()}
  sd["pos_embed"] = sd["pos_embed"][:, ::-1].copy()
  with pytest.raises(convert.ConversionError, match="pos_embed: the checkpoint's fixed sin-cos positions"):
    convert.convert_state_dict("opera_gt", sd, overrides=ref.GT_TINY)


def test_opera_gt_release_positions():
  """OPERA-GT stores MAE's flexible table over patch_hw = (freq, time) patches."""
  sd = {k: v.numpy() for k, v in _gt_state_dict().items()}
  sd["pos_embed"] = ref.mae_flexible_pos_embed(32, (16, 8), True)[None]  # tiny grid: 8 x 16
  sd["decoder_pos_embed"] = sd["pos_embed"]
  if "pos_layout" in inspect.signature(opera_gt.MAEViT.__init__).parameters:
    convert.convert_state_dict("opera_gt", sd, overrides=ref.GT_TINY)
  else:  # an MAEViT without OPERA's table must not convert silently
    with pytest.raises(convert.ConversionError, match="pos_embed"):
      convert.convert_state_dict("opera_gt", sd, overrides=ref.GT_TINY)


def test_audiomae_without_fc_norm_uses_identity():
  sd = {k: v.numpy() for k, v in ref._audiomae_torch(3).state_dict().items()  # pylint: disable=protected-access
        if not k.startswith("fc_norm")}
  overrides = {k: v for k, v in ref.AM_TINY.items() if k != "decoder"}
  model, _, report = convert.convert_state_dict("audiomae", sd, overrides=overrides, skip_decoder=True)
  assert [d.split(" ")[0] for d in report.defaulted] == ["fc_norm.scale", "fc_norm.bias"]
  np.testing.assert_array_equal(np.asarray(model.fc_norm.scale[...]), 1.0)
  assert any(k.startswith("decoder_blocks.") for k in report.ignored) and not report.unknown


# ----------------------------------------------------------------------------
# Exports.


def test_gt_export_loads_with_checkpointing(tmp_path):
  path = ref.save_lightning(tmp_path, _gt_state_dict(5))
  convert.convert("opera_gt", path, tmp_path / "out", overrides=ref.GT_TINY)
  manifest = (tmp_path / "out" / "manifest.json").read_text()
  assert '"name": "opera_gt"' in manifest and '"sha256"' in manifest
  ours = checkpointing.load_encoder(tmp_path / "out")
  # The blocks are stored stacked, as the model holds them.
  kernel = nnx.state(ours, nnx.Param).to_pure_dict()["blocks"]["stacked"]["attn"]["qkv"]["kernel"]
  assert kernel.shape[0] == ref.GT_TINY["depth"]
  # An export of an earlier format is refused in one line saying what to do.
  old_format = (tmp_path / "out" / "manifest.json")
  old_format.write_text(manifest.replace(checkpointing.EXPORT_FORMAT, "acula_jax.encoder/2"))
  with pytest.raises(errors.DataError, match="export format 'acula_jax.encoder/2'.*acula_jax.tools.convert"):
    checkpointing.load_encoder(tmp_path / "out")


def test_non_gt_exports_load_with_checkpointing(tmp_path, ce_state_dict):
  path = ref.save_lightning(tmp_path, ce_state_dict)
  convert.convert("opera_ce", path, tmp_path / "out", overrides=opera_ce.TINY_CONFIG)
  ours = checkpointing.load_encoder(tmp_path / "out")  # BatchNorm statistics included
  np.testing.assert_array_equal(
      np.asarray(ours.bn0.mean[...]), ce_state_dict["encoder.efficientnet._bn0.running_mean"].numpy())


def test_command_line(tmp_path, ce_state_dict):
  path = ref.save_lightning(tmp_path, dict(ce_state_dict, **{"encoder.extra": torch.zeros(1)}))
  out = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "acula_jax.tools.convert", "--from=opera_ce", f"--checkpoint={path}",
       f"--output={out}", '--overrides={"blocks": [[1, 3, 1, 1, 8, 8], [2, 5, 2, 4, 8, 16]], '
       '"stem_width": 8, "head_width": 32, "cola_dim": 16}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "UNKNOWN (1): ['encoder.extra']" in result.stderr
  assert (out / "manifest.json").is_file() and (out / "encoder").is_dir()
