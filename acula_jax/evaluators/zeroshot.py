r"""Zero-shot classification and audio-to-report retrieval through the aligned projection space.

  python -m acula_jax.evaluators.main --workdir=W --tasks=demo --data_root=ROOT --zeroshot

Needs the heads that training exports next to the encoder (`export_heads`, written by
`train.train_and_evaluate` as W/export/heads/):
  heads/params/        Orbax checkpoint {"audio_head": ..., "text_head": ..., "log_temperature": ...}
                       (the nnx.Param pure dicts of the two `models.heads.ProjectionMLP`s)
  heads/manifest.json  {"format": "acula_jax.heads/1", "audio_dim", "text_dim", "hidden_dim",
                       "out_dim", "alignment", "align_features", "teacher": the teacher manifest's
                       model fields and its `config` (what `precompute.Teacher` needs)}

Zero-shot: each class gets one sentence in the style of the training reports (`class_sentences`);
the sentences are embedded by the same teacher (`precompute.embed_reports` with the teacher config
recorded in the manifest; tests pass a fake `embed_fn`) and projected by the text head; recordings
are encoded (chunk-averaged features, as the probes see them) and projected by the audio head;
class probabilities = softmax(exp(log_temperature) * cosine). Metric: macro one-vs-rest AUROC on
the task's test recordings (every fold's test set for leave-out protocols).

Retrieval: each test recording's own report (`reports.report_for` of its metadata and labels; test
reports never reach alignment) is embedded and projected the same way; recall@1/5/10 of audio ->
report and report -> audio over the test set (a retrieved report with identical text counts as a hit).
"""
import dataclasses
import json
import os
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from acula_jax import fileio
from acula_jax import errors
from acula_jax.evaluators import features as features_lib
from acula_jax.evaluators import probe
from acula_jax.evaluators import tasks as tasks_lib
from acula_jax.models import heads as heads_lib

HEADS_DIR = "heads"
FORMAT = "acula_jax.heads/1"
RECALL_AT = (1, 5, 10)
_TEACHER_FIELDS = ("model", "revision", "resolved_revision", "model_class", "layer", "pooling", "max_length",
                   "dtype", "normalize", "padding_side", "dim", "config")


# ----------------------------------------------------------------------------------------------------
# Export and loading of the projection heads.
# ----------------------------------------------------------------------------------------------------

def export_heads(export_dir, model, config, teacher_manifest: dict) -> pathlib.Path:
  """Writes `export_dir/heads/` (see the module docstring); every process calls it, process 0 writes the manifest."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(export_dir, HEADS_DIR).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  state = {"audio_head": nnx.to_pure_dict(nnx.state(model.audio_head, nnx.Param)),
           "text_head": nnx.to_pure_dict(nnx.state(model.text_head, nnx.Param)),
           "log_temperature": jnp.asarray(model.log_temperature[...])}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "params", state, force=True)
  if jax.process_index() == 0:
    manifest = {"format": FORMAT, "audio_dim": int(model.audio_head.in_dim), "text_dim": int(model.text_dim),
                "hidden_dim": int(config.heads.hidden_dim), "out_dim": int(config.heads.out_dim),
                "alignment": config.loss.alignment, "align_features": config.align_features,
                "teacher": {k: teacher_manifest.get(k) for k in _TEACHER_FIELDS}}
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, directory / "manifest.json")
  return directory


@dataclasses.dataclass
class Heads:
  """The trained projection heads and what they were trained with."""
  audio: heads_lib.ProjectionMLP
  text: heads_lib.ProjectionMLP
  log_temperature: float
  manifest: dict

  def project_audio(self, features) -> np.ndarray:
    return _unit(self.audio(jnp.asarray(features, jnp.float32)))

  def project_text(self, embeddings) -> np.ndarray:
    return _unit(self.text(jnp.asarray(embeddings, jnp.float32)))


def _unit(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def build_heads(manifest: dict, *, seed: int = 0) -> Heads:
  """Freshly initialised heads of the manifest's sizes (tests; `load_heads` fills in the weights)."""
  rngs = nnx.Rngs(seed)
  audio = heads_lib.ProjectionMLP(manifest["audio_dim"], manifest["hidden_dim"], manifest["out_dim"], rngs=rngs)
  text = heads_lib.ProjectionMLP(manifest["text_dim"], manifest["hidden_dim"], manifest["out_dim"], rngs=rngs)
  return Heads(audio, text, float(np.log(1 / 0.07)), manifest)


def heads_dir(path) -> pathlib.Path:
  """Accepts a heads folder, an export folder or a workdir."""
  path = pathlib.Path(path)
  for candidate in (path, path / HEADS_DIR, path / "export" / HEADS_DIR):
    if (candidate / "manifest.json").is_file() and (candidate / "params").is_dir():
      return candidate
  raise errors.DataError(path, f"no exported projection heads (expected {HEADS_DIR}/manifest.json and "
                               f"{HEADS_DIR}/params; train.py writes them to export/{HEADS_DIR}/ when aligning)")


def load_heads(path) -> Heads:
  """The heads exported by `export_heads` under `path` (heads, export or workdir folder)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = heads_dir(path)
  manifest = json.loads((directory / "manifest.json").read_text())
  if manifest.get("format") != FORMAT:
    raise errors.DataError(directory, f"heads format {manifest.get('format')!r}, expected {FORMAT!r}")
  heads = build_heads(manifest)
  target = {"audio_head": nnx.to_pure_dict(nnx.state(heads.audio, nnx.Param)),
            "text_head": nnx.to_pure_dict(nnx.state(heads.text, nnx.Param)),
            "log_temperature": jnp.zeros((), jnp.float32)}
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(directory / "params", target)
  for module, key in ((heads.audio, "audio_head"), (heads.text, "text_head")):
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, restored[key])
    nnx.update(module, state)
  heads.log_temperature = float(restored["log_temperature"])
  return heads


def teacher_embedder(heads: Heads) -> Callable:
  """texts -> [n, d] teacher embeddings with the teacher config recorded at training time."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from acula_jax.text import precompute  # pylint: disable=g-import-not-at-top  (imports torch)
  teacher_info = heads.manifest.get("teacher") or {}
  if not teacher_info.get("config"):
    raise ValueError("the heads manifest records no teacher config; pass embed_fn explicitly")
  config = ml_collections.ConfigDict(teacher_info["config"])
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


# ----------------------------------------------------------------------------------------------------
# Scores.
# ----------------------------------------------------------------------------------------------------

def zero_shot_scores(heads: Heads, audio_features, class_embeddings) -> np.ndarray:
  """Class probabilities [n, C]: softmax of the temperature-scaled cosine between projections."""
  audio = heads.project_audio(audio_features)
  text = heads.project_text(class_embeddings)
  logits = np.exp(heads.log_temperature) * audio @ text.T
  logits -= logits.max(axis=1, keepdims=True)
  return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def recall_at_k(similarity, same, ks=RECALL_AT) -> dict:
  """recall@k of rows: is a column marked in `same` (the row's own item) among the top k scores?"""
  similarity, same = np.asarray(similarity), np.asarray(same, bool)
  order = np.argsort(-similarity, axis=1, kind="stable")
  hit_rank = np.argmax(np.take_along_axis(same, order, axis=1), axis=1)  # first correct position
  return {f"recall@{k}": float(np.mean(hit_rank < k)) for k in ks}


def retrieval(heads: Heads, audio_features, report_embeddings, reports: list) -> dict:
  """Audio -> report and report -> audio recall@k; identical report texts count as the same report."""
  audio = heads.project_audio(audio_features)
  text = heads.project_text(report_embeddings)
  similarity = audio @ text.T
  reports = np.asarray(reports, dtype=object)
  same = reports[:, None] == reports[None, :]
  out = {f"audio_to_report_{k}": v for k, v in recall_at_k(similarity, same).items()}
  out.update({f"report_to_audio_{k}": v for k, v in recall_at_k(similarity.T, same.T).items()})
  chance = {f"chance_{k}": min(1.0, k / max(len(reports), 1)) for k in RECALL_AT}
  return {**out, **chance, "num_recordings": int(len(reports))}


# ----------------------------------------------------------------------------------------------------
# Running it over tasks.
# ----------------------------------------------------------------------------------------------------

def _test_rows(task, index) -> np.ndarray:
  folds = tasks_lib.make_folds(task, index)
  return np.unique(np.concatenate([f.test for f in folds.folds]))


def evaluate_task(task, index: list, features: np.ndarray, heads: Heads, embed_fn: Callable,
                  *, report_seed: int = 0) -> dict:
  """Zero-shot AUROC and retrieval of one task's test recordings."""
  from acula_jax.text import reports as reports_lib  # pylint: disable=g-import-not-at-top
  rows = _test_rows(task, index)
  sentences = class_sentences(task)
  probabilities = zero_shot_scores(heads, features[rows], embed_fn(sentences))
  labels = np.asarray([task.target(index[r]["labels"]) for r in rows])
  texts = [reports_lib.report_for(index[r]["metadata"], index[r]["labels"], seed=report_seed) for r in rows]
  return {"auroc": probe.auroc(probabilities, labels, len(task.classes)), "num_test": int(len(rows)),
          "sentences": dict(zip(map(str, task.classes), sentences)),
          "retrieval": retrieval(heads, features[rows], embed_fn(texts), texts)}


def run(task_list: list, setup, encoder, heads: Heads, embed_fn: Callable | None = None) -> dict:
  """Zero-shot results of `encoder` (a features.Encoder) on the classification tasks; writes zeroshot.{json,md}."""
  embed_fn = embed_fn or teacher_embedder(heads)
  results = {"encoder": encoder.name, "temperature": float(np.exp(heads.log_temperature)), "tasks": {}}
  stores = {}
  for task in task_list:
    if task.is_regression:
      continue
    directory = features_lib.task_records_dir(task, setup)
    store = stores.setdefault(directory, features_lib.RecordsStore(directory, setup.out_dir / "features"))
    window = features_lib.encoder_window(encoder, task, setup.audio_config, setup.default_window)
    featurizer = features_lib.encoder_featurizer(encoder, setup.audio_config, window,
                                             batch_size=setup.feature_batch_size)
    index, features = store.load([featurizer])
    results["tasks"][task.name] = evaluate_task(task, index, features[featurizer.key], heads, embed_fn)
  setup.out_dir.mkdir(parents=True, exist_ok=True)
  fileio.write_text_atomic(setup.out_dir / "zeroshot.json", json.dumps(results, indent=2))
  fileio.write_text_atomic(setup.out_dir / "zeroshot.md", results_table(results))
  return results


def results_table(results: dict) -> str:
  lines = [f"Zero-shot through the aligned projection space ({results['encoder']}).", "",
           "| task | zero-shot AUROC | R@1 a->r | R@5 a->r | R@10 a->r | R@1 r->a | test recordings |",
           "|---|---|---|---|---|---|---|"]
  for task, r in results["tasks"].items():
    ret = r["retrieval"]
    lines.append(f"| {task} | {r['auroc']:.3f} | {ret['audio_to_report_recall@1']:.3f} | "
                 f"{ret['audio_to_report_recall@5']:.3f} | {ret['audio_to_report_recall@10']:.3f} | "
                 f"{ret['report_to_audio_recall@1']:.3f} | {r['num_test']} |")
  return "\n".join(lines) + "\n"


def run_cli(workdir, task_list, setup) -> dict:
  """Zero-shot for the evaluation CLI's --zeroshot: W/export with W/export/heads."""
  heads = load_heads(workdir)
  encoder = features_lib.from_export("aligned", pathlib.Path(workdir) / "export")
  results = run(task_list, setup, encoder, heads)
  print(results_table(results))
  return results

