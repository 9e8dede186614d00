"""Feature baselines that sit beside the encoders in the results table.

  logmel     log-mel band mean and std (the OPERA front end, clip-length chunks averaged) + duration (s)
  egemaps    openSMILE eGeMAPSv02 functionals (88), whole recording
  compare    openSMILE ComParE_2016 functionals (6373), whole recording

Each baseline is a `Featurizer` like an encoder's, so the evaluation caches it on disk the same way
(`features.featurize_waves`); openSMILE runs on the 16 kHz waveform in memory (no files written).
Duration is part of the trivial baseline on purpose: recording length differs between sources (e.g.
PhysioNet 2016 databases), and a table that shows what length alone predicts keeps encoders honest.
"""
import dataclasses
import hashlib
import importlib.metadata
import json
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from acula_jax import audio
from acula_jax.audio import frontends

NAMES = {"logmel": "log-mel mean/std + duration", "egemaps": "openSMILE eGeMAPSv02",
         "compare": "openSMILE ComParE_2016"}
OPENSMILE_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}


@dataclasses.dataclass
class Featurizer:
  """How to turn recordings into one vector each; `key` identifies the features for the cache.

  kind "chunks": `fn` maps a [batch, window] float32 batch of clip-length chunks to [batch, d] and
  the chunk features of a recording are averaged (see `features.chunk`); `with_duration` appends the
  recording's length in seconds. kind "recording": `fn` maps one whole waveform to [d]. `factory`
  builds `fn` on first use instead (encoders: no weights are loaded when every feature is cached).
  """
  name: str
  key: str
  kind: str
  fn: Callable | None
  window: int = 0
  batch_size: int = 32
  with_duration: bool = False
  factory: Callable | None = None
  info: dict = dataclasses.field(default_factory=dict)

  def function(self) -> Callable:
    if self.fn is None:
      self.fn = self.factory()
    return self.fn


def logmel_stats_fn(audio_config) -> Callable:
  """Jitted [B, n] -> [B, 2 * n_mels]: mean and std over frames of each log-mel band."""
  @jax.jit
  def featurize(waves):
    spec = frontends.spectrogram(waves, **audio_config)
    return jnp.concatenate([spec.mean(axis=-2), spec.std(axis=-2)], axis=-1)
  return featurize


def logmel(audio_config, window: int, *, batch_size: int = 32) -> Featurizer:
  """The log-mel statistics baseline; always OPERA's log-mel (its defaults when `audio_config` is
  another front end, e.g. an AudioMAE run's fbank)."""
  config = frontends.frontend_for("log_mel", audio_config)
  return Featurizer(NAMES["logmel"], f"logmel-{_digest([config, window, 1])}", "chunks",
                    logmel_stats_fn(config), window=window, batch_size=batch_size, with_duration=True,
                    info={"audio": config, "window": window})


def opensmile_fn(feature_set: str) -> Callable:
  """wave (16 kHz float32) -> float32 functionals of `feature_set`; NaN (e.g. no voicing) -> 0."""
  try:
    import opensmile  # pylint: disable=g-import-not-at-top  (slow import, only for these baselines)
  except ImportError as e:
    raise ImportError("the openSMILE baselines need the opensmile package (pip install opensmile), or "
                      "leave them out with --baselines=logmel") from e
  smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                          feature_level=opensmile.FeatureLevel.Functionals)

  def featurize(wave):
    frame = smile.process_signal(np.asarray(wave, np.float32), audio.SAMPLE_RATE)
    return np.nan_to_num(frame.to_numpy(np.float32)[0], nan=0.0, posinf=0.0, neginf=0.0)
  return featurize


def opensmile_baseline(name: str) -> Featurizer:
  feature_set = OPENSMILE_SETS[name]
  try:
    version = importlib.metadata.version("opensmile")
  except importlib.metadata.PackageNotFoundError as e:
    raise ImportError("the openSMILE baselines need the opensmile package (pip install opensmile), or "
                      "leave them out with --baselines=logmel") from e
  return Featurizer(NAMES[name], f"opensmile-{feature_set}-{version}", "recording", opensmile_fn(feature_set),
                    info={"opensmile": version, "feature_set": feature_set, "level": "Functionals"})


def build(names, audio_config, window: int, *, batch_size: int = 32) -> dict:
  """display name -> Featurizer for the requested baseline names (see NAMES)."""
  out = {}
  for name in names:
    if name == "logmel":
      featurizer = logmel(audio_config, window, batch_size=batch_size)
    elif name in OPENSMILE_SETS:
      featurizer = opensmile_baseline(name)
    else:
      raise ValueError(f"unknown baseline {name!r}; available: {', '.join(NAMES)}")
    out[featurizer.name] = featurizer
  return out


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]
