r"""Zero-shot classification through the aligned projection space.

  python -m acula_jax.evaluators.main --workdir=W --tasks=demo --evals=zeroshot

Needs the projection heads that training exports beside an aligned encoder (`checkpointing.export_heads`:
export/heads/); encoders without them are skipped. Each class gets one sentence in the style of the
training reports (`class_sentences`); the sentences are embedded by the same teacher
(`precompute.embed_reports` with the teacher config recorded in the heads' manifest; tests pass a fake
`embed_fn`) and projected by the text head; recordings are encoded (chunk-averaged features, as the
probes see them) and projected by the audio head; class probabilities = softmax(exp(log_temperature) *
cosine). Metric: macro one-vs-rest AUROC on the task's test recordings (every fold's test set for
leave-out protocols). Writes zeroshot.{json,md}.
"""
import functools
import json
import pathlib
from typing import Callable

import ml_collections
import numpy as np

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import evaluators
from acula_jax import fileio
from acula_jax.evaluators import features as features_lib
from acula_jax.evaluators import probe
from acula_jax.evaluators import tasks as tasks_lib
from acula_jax.models import heads as heads_lib


def default_config():
  """Zero-shot's settings (`config.evals.<name>` of type zeroshot)."""
  return evaluators.base_config("zeroshot")


def teacher_embedder(heads: heads_lib.Heads) -> Callable:
  """texts -> [n, d] teacher embeddings with the teacher config recorded at training time."""
  teacher_info = heads.manifest.get("teacher") or {}
  if not teacher_info.get("config"):
    raise ValueError("the heads manifest records no teacher config; pass embed_fn explicitly")
  return _embedder(json.dumps(teacher_info["config"], sort_keys=True))


@functools.lru_cache(maxsize=1)
def _embedder(config_json: str) -> Callable:
  """One loaded teacher per config, kept for the next evaluator (zero-shot and retrieval embed with the
  same teacher; loading it is seconds for MiniLM, a minute and GBs for MedGemma-4B)."""
  from acula_jax.text import precompute  # pylint: disable=g-import-not-at-top  (imports torch)
  config = ml_collections.ConfigDict(json.loads(config_json))
  teacher = precompute.Teacher(config)
  return lambda texts: precompute.embed_reports(list(texts), config, teacher=teacher)


# ----------------------------------------------------------------------------------------------------
# Class sentences.
# ----------------------------------------------------------------------------------------------------

_RECORDING = {"heart": "Heart sound recording.", "lung": "Chest auscultation.", "cough": "Cough recording.",
              "breath": "Breathing sound recording.", "mixed": "Auscultation recording."}
# (label key, class) -> findings, in the words of the training reports.
_FINDINGS = {
    ("murmur", "absent"): "No murmur.", ("murmur", "present"): "A murmur is heard.",
    ("murmur", "Absent"): "No murmur.", ("murmur", "Present"): "A murmur is heard.",
    ("lung_sound", "normal"): "Breath sounds are vesicular. No crackles. No wheezes.",
    ("lung_sound", "crackles"): "Crackles are heard. No wheezes.",
    ("lung_sound", "wheezes"): "No crackles. There are wheezes.",
    ("lung_sound", "both"): "Crackles are heard. There are wheezes.",
    ("outcome", "normal"): "Impression: normal heart sounds.",
    ("outcome", "abnormal"): "Impression: abnormal heart sounds.",
    ("copd", "Healthy"): "Impression: healthy.", ("copd", "COPD"): "Impression: COPD.",
    ("covid", "negative"): "COVID-19 test negative.", ("covid", "positive"): "COVID-19 test positive.",
}


def _words(value) -> str:
  return str(value).replace("_", " ")


def class_sentences(task) -> list:
  """One sentence per class of a classification task, in the style of the training reports."""
  opening = _RECORDING.get(task.modality, _RECORDING["mixed"])
  out = []
  for value in task.classes:
    finding = _FINDINGS.get((task.label_key, value))
    if finding is None:
      finding = (f"Impression: {_words(value)}." if isinstance(value, str)
                 else f"{_words(task.label_key).capitalize()}: {value}.")
    out.append(f"{opening} {finding}")
  return out


def zero_shot_scores(heads: heads_lib.Heads, audio_features, class_embeddings) -> np.ndarray:
  """Class probabilities [n, C]: softmax of the temperature-scaled cosine between projections."""
  audio = heads.project_audio(audio_features)
  text = heads.project_text(class_embeddings)
  logits = np.exp(heads.log_temperature) * audio @ text.T
  logits -= logits.max(axis=1, keepdims=True)
  return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_rows(task, index) -> np.ndarray:
  """The rows of every fold's test set."""
  folds = tasks_lib.make_folds(task, index)
  return np.unique(np.concatenate([f.test for f in folds.folds]))


def evaluate_task(task, index: list, features: np.ndarray, heads: heads_lib.Heads, embed_fn: Callable) -> dict:
  """Zero-shot AUROC of one task's test recordings."""
  rows = test_rows(task, index)
  sentences = class_sentences(task)
  probabilities = zero_shot_scores(heads, features[rows], embed_fn(sentences))
  labels = np.asarray([task.target(index[r]["labels"]) for r in rows])
  return {"auroc": probe.auroc(probabilities, labels, len(task.classes)), "num_test": int(len(rows)),
          "sentences": dict(zip(map(str, task.classes), sentences))}


def run_with_heads(config, context, encoders: list, evaluate: Callable, embed_fn: Callable | None) -> dict:
  """{encoder name: {"temperature", "tasks": {task: evaluate(task, index, features, heads, embed_fn)}}}
  over the classification tasks, for every encoder of `encoders` exported with projection heads."""
  task_list = [t for t in tasks_lib.resolve(config.tasks, cache_dir=context.out_dir / "features")
               if not t.is_regression]
  results, stores = {}, {}
  for name, path in encoders:
    if not checkpointing.has_heads(path):
      continue  # not an aligned export: nothing to project with
    heads = checkpointing.load_heads(path)
    encoder = features_lib.from_export(name, path)
    embed = embed_fn or teacher_embedder(heads)
    out = results[name] = {"temperature": float(np.exp(heads.log_temperature)), "tasks": {}}
    for task in task_list:
      directory = features_lib.task_records_dir(task, config.data_root, context.fallback_records)
      store = stores.setdefault(directory, features_lib.RecordsStore(directory, context.out_dir / "features"))
      featurizer = features_lib.featurizer_for(encoder, task, context, config.feature_batch_size)
      index, features = store.load([featurizer])
      out["tasks"][task.name] = evaluate(task, index, features[featurizer.key], heads, embed)
  if not results:
    raise errors.UsageError("zero-shot and retrieval need an aligned export with projection heads "
                            f"(export/{checkpointing.HEADS_DIR}/); none among {[n for n, _ in encoders]}")
  return results


def write_results(out_dir, stem: str, results: dict, table: str):
  pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
  fileio.write_text_atomic(pathlib.Path(out_dir) / f"{stem}.json", json.dumps(results, indent=2))
  fileio.write_text_atomic(pathlib.Path(out_dir) / f"{stem}.md", table)
  print(table)


def results_table(results: dict) -> str:
  lines = []
  for encoder, r in results.items():
    lines += [f"Zero-shot through the aligned projection space ({encoder}).", "",
              "| task | zero-shot AUROC | test recordings |", "|---|---|---|"]
    lines += [f"| {task} | {t['auroc']:.3f} | {t['num_test']} |" for task, t in r["tasks"].items()]
    lines.append("")
  return "\n".join(lines)


class Evaluator:
  """Zero-shot AUROC of every aligned encoder on the configured classification tasks."""
  stem = "zeroshot"  # results go to <out_dir>/<stem>.{json,md}

  def __init__(self, config, context, embed_fn: Callable | None = None):
    self.config, self.context, self.embed_fn = config, context, embed_fn

  def evaluate_task(self, task, index, features, heads, embed_fn) -> dict:
    return evaluate_task(task, index, features, heads, embed_fn)

  def table(self, results: dict) -> str:
    return results_table(results)

  def run(self, encoders: list) -> dict:
    results = run_with_heads(self.config, self.context, encoders, self.evaluate_task, self.embed_fn)
    write_results(self.context.out_dir, self.stem, results, self.table(results))
    return results
