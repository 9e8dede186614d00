"""acula_jax.tools.extract: embeddings of arbitrary audio files, as the evaluation computes them; bad files named."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from acula_jax.audio import io as audio_io
from acula_jax.audio import frontends
from acula_jax import checkpointing
from acula_jax import errors
from acula_jax.evaluators import features as features_lib
from acula_jax.tools import extract
from acula_jax.models import acula
from configs import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="workdir", scope="module")
def workdir_fixture(tmp_path_factory):
  """A workdir with an exported tiny encoder and the config.json training writes."""
  workdir = tmp_path_factory.mktemp("w")
  config = demo.get_config("tiny")
  checkpointing.export_encoder(workdir, acula.build_encoder(config.model, rngs=nnx.Rngs(0)), config.model)
  (workdir / "config.json").write_text(config.to_json_best_effort())
  return workdir


@pytest.fixture(name="files", scope="module")
def files_fixture(tmp_path_factory):
  folder = tmp_path_factory.mktemp("audio")
  rng = np.random.default_rng(0)
  t = np.arange(8000 * 3) / 8000
  sf.write(folder / "heart.wav", (0.3 * np.sin(2 * np.pi * 90 * t)).astype(np.float32), 8000)
  sf.write(folder / "lung.flac", (0.1 * rng.normal(size=16000 * 5)).astype(np.float32), 16000)
  (folder / "broken.wav").write_bytes(b"RIFF this is not audio")
  sf.write(folder / "silent.wav", np.zeros(4000, np.float32), 4000)
  return folder


def test_extract_matches_the_evaluation_features_and_writes_every_format(workdir, files, tmp_path):
  paths = [files / "heart.wav", files / "broken.wav", files / "lung.flac", files / "silent.wav"]
  manifest = extract.extract(workdir, paths, tmp_path / "out", skip_bad=True, batch_size=8)
  embeddings = np.load(tmp_path / "out" / "embeddings.npy")
  assert embeddings.shape == (2, 32) and manifest["count"] == 2 and manifest["dim"] == 32
  assert (tmp_path / "out" / "files.txt").read_text().splitlines() == [str(paths[0]), str(paths[2])]
  assert [s["path"] for s in manifest["skipped"]] == [str(paths[1]), str(paths[3])]
  assert "silent" in manifest["skipped"][1]["reason"]
  # Same numbers as the evaluation's chunked features of the same recordings.
  encoder = features_lib.from_export("e", workdir)
  config = json.loads((workdir / "config.json").read_text())
  featurizer = features_lib.encoder_featurizer(encoder, config["audio"], frontends.num_samples_for_frames(32), batch_size=8)
  waves = [audio_io.load_audio(p, downmix=True) for p in (paths[0], paths[2])]
  np.testing.assert_allclose(embeddings, features_lib.featurize_waves(waves, featurizer), rtol=1e-5, atol=1e-6)
  pq = pytest.importorskip("pyarrow.parquet")
  table = pq.read_table(tmp_path / "out" / "embeddings.parquet").to_pydict()
  assert table["file"] == [str(paths[0]), str(paths[2])]
  np.testing.assert_allclose(np.asarray(table["embedding"]), embeddings)


def test_bad_files_are_named_and_nothing_is_written(workdir, files, tmp_path):
  with pytest.raises(errors.DataError, match="broken.wav.*missing.wav|missing.wav.*broken.wav") as info:
    extract.extract(workdir, [files / "broken.wav", files / "heart.wav", files / "missing.wav"], tmp_path / "out")
  assert "2 unreadable" in str(info.value)
  assert not (tmp_path / "out").exists()


def test_cli_embeds_files_and_reports_a_bad_one(workdir, files, tmp_path):
  out = tmp_path / "cli"
  command = [sys.executable, "-m", "acula_jax.tools.extract", f"--workdir={workdir}", f"--output={out}",
             str(files / "heart.wav"), str(files / "broken.wav")]
  # One process (imports cost seconds): the failing run without --skip_bad is the function test above.
  done = subprocess.run(command + ["--skip_bad"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "wrote 1 32-d embeddings" in done.stdout and "skipped 1" in done.stdout
  assert "broken.wav" in done.stdout
  assert np.load(out / "embeddings.npy").shape == (1, 32)
