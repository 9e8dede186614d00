"""timm for the parity tests, from the side folder `make install` fills (see import_timm)."""
import importlib.util
import os
import sys

import pytest
import torch


def import_timm():
  """timm, from the side folder `make install` fills (timm, torchvision, pillow; --no-deps).

  It stays out of the venv's site-packages: the registry's torchvision is a CUDA build that, beside
  the CPU torch, lacks the torchvision::nms / qnms op schemas, so once importable it breaks
  `import timm` and transformers' BertModel / ClapAudioModel imports. Here the schemas are
  registered first, then the folder goes on this process's sys.path only (subprocesses, e.g.
  `python -m acula_jax.text.precompute`, never see it); later transformers imports here still work.
  ACULA_TIMM_SIDE overrides the folder.
  """
  side = os.environ.get("ACULA_TIMM_SIDE") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "timm-side")
  has_side = os.path.isdir(side)
  if has_side or importlib.util.find_spec("torchvision") is not None:
    try:
      lib = torch.library.Library("torchvision", "DEF")
      lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      import_timm.keep = lib  # the schemas live as long as the library object
    except RuntimeError:  # already defined (a second call, or a torchvision that registers them)
      pass
  if has_side and side not in sys.path:
    sys.path.insert(0, side)
  return pytest.importorskip(
      "timm", reason=f"timm not installed: {side} is missing (`make install` puts timm there)")
