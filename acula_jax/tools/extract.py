r"""Embeddings of any audio files with a trained (or converted) encoder.

  python -m acula_jax.tools.extract --workdir=W a.wav b.flac ... [--output=W/embeddings] [--skip_bad]

Each file is decoded with `acula_jax.audio.io.load_audio` (16 kHz, multi-channel files averaged), cut
into the encoder's clip-length chunks and the chunk features averaged, exactly as the evaluators do
(`acula_jax.evaluators.features.featurize_waves`). The encoder is W's export (W may also be an export folder itself);
the front end is W/config.json's `audio` section when present, else the default.

Writes to --output (default W/embeddings): embeddings.npy (float32 [n, d], rows in argument order
of the readable files), files.txt (one path a line, same order), embeddings.parquet (columns `file`
and `embedding`, when pyarrow is installed) and manifest.json (encoder, its hash, window, front end).
A file that cannot be decoded (missing, corrupt, empty, silent, NaN) stops the job with a
`DataError` naming every such file, and nothing is written; with --skip_bad the readable files are
embedded and the others listed in manifest.json's `skipped`.
"""
import json
import os
import pathlib
import sys

from absl import flags
import numpy as np

from acula_jax import audio
from acula_jax import errors
from acula_jax import fileio
from acula_jax.audio import frontends
from acula_jax.audio import io as audio_io
from acula_jax.evaluators import features as features_lib


def _audio_config(workdir) -> dict:
  path = pathlib.Path(workdir, "config.json")
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved.get("audio"):
      return saved["audio"]
  return dict(frontends.OPERA_LOG_MEL)


def _waves(paths, good: list, bad: list):
  """Decoded waveforms of the readable files (listed in `good`); failures go to `bad` as (path, reason)."""
  for path in map(os.fspath, paths):
    try:
      wave = audio_io.load_audio(path, downmix=True)
    except errors.DataError as e:
      bad.append((path, e.reason))
      continue
    except OSError as e:
      bad.append((path, str(e)))
      continue
    good.append(path)
    yield wave


def extract(workdir, paths, output=None, *, skip_bad: bool = False, seconds: float = 8.0,
            batch_size: int = 32) -> dict:
  """Embeds `paths` with the encoder of `workdir`; returns the manifest (see the module docstring)."""
  if not paths:
    raise ValueError("no audio files given")
  encoder = features_lib.from_export("encoder", workdir)
  audio_config = _audio_config(workdir)
  window = features_lib.encoder_window(encoder, None, audio_config, int(round(seconds * audio.SAMPLE_RATE)))
  featurizer = features_lib.encoder_featurizer(encoder, audio_config, window, batch_size=batch_size)
  good, bad = [], []
  features = features_lib.featurize_waves(_waves(paths, good, bad), featurizer, desc="extract")
  if bad and (not skip_bad or not good):
    listing = "; ".join(f"{p}: {r}" for p, r in bad)
    raise errors.DataError(bad[0][0], f"{len(bad)} unreadable audio file(s), nothing written "
                                      f"(--skip_bad embeds the others): {listing}")
  return _write(output or pathlib.Path(workdir, "embeddings"), good, features, encoder, featurizer, bad)


def _write(output, files, features, encoder, featurizer, bad) -> dict:
  output = pathlib.Path(output)
  output.mkdir(parents=True, exist_ok=True)
  np.save(output / "embeddings.npy", features.astype(np.float32))
  fileio.write_text_atomic(output / "files.txt", "".join(f"{f}\n" for f in files))
  wrote = ["embeddings.npy", "files.txt"]
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    table = pa.table({"file": files, "embedding": [row.tolist() for row in features.astype(np.float32)]})
    pq.write_table(table, output / "embeddings.parquet")
    wrote.append("embeddings.parquet")
  except ImportError:
    pass
  manifest = {"encoder": encoder.name, "family": encoder.family, "encoder_sha256": encoder.digest,
              "window_samples": featurizer.window, "audio": featurizer.info.get("audio"),
              "count": len(files), "dim": int(features.shape[1]), "files": wrote,
              "skipped": [{"path": p, "reason": r} for p, r in bad]}
  fileio.write_text_atomic(output / "manifest.json", json.dumps(manifest, indent=2))
  return manifest


def _define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir (or export folder) whose encoder embeds the audio.")
  flags.DEFINE_string("output", None, "Output folder (default WORKDIR/embeddings).")
  flags.DEFINE_bool("skip_bad", False, "Embed the readable files and list the others instead of failing.")
  flags.DEFINE_float("seconds", 8.0, "Chunk length for encoders without a fixed input length (CNN/Swin).")
  flags.DEFINE_integer("batch_size", 32, "Chunks per encoder call.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  cfg = flags.FLAGS
  manifest = extract(cfg.workdir, argv[1:], cfg.output, skip_bad=cfg.skip_bad, seconds=cfg.seconds,
                     batch_size=cfg.batch_size)
  where = cfg.output or os.path.join(cfg.workdir, "embeddings")
  print(f"wrote {manifest['count']} {manifest['dim']}-d embeddings to {where}"
        + (f"; skipped {len(manifest['skipped'])}" if manifest["skipped"] else ""))
  for entry in manifest["skipped"]:
    print(f"  skipped {entry['path']}: {entry['reason']}")
  sys.stdout.flush()


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
