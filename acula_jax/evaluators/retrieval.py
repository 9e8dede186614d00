r"""Audio-to-report and report-to-audio retrieval through the aligned projection space.

  python -m acula_jax.evaluators.main --workdir=W --tasks=demo --evals=retrieval

Each test recording's own report (`reports.report_for` of its metadata and labels; test reports never
reach alignment) is embedded by the training teacher and projected by the text head; recordings are
encoded and projected by the audio head (as in `zeroshot`, whose heads and loop this shares);
recall@1/5/10 of audio -> report and report -> audio over a task's test set (a retrieved report with
identical text counts as a hit), beside chance. Writes retrieval.{json,md}.
"""
from typing import Callable

import numpy as np

from acula_jax import evaluators
from acula_jax.evaluators import zeroshot
from acula_jax.models import heads as heads_lib
from acula_jax.text import reports as reports_lib

RECALL_AT = (1, 5, 10)


def default_config():
  """Retrieval's settings (`config.evals.<name>` of type retrieval)."""
  return evaluators.base_config("retrieval", report_seed=0)  # report_seed: the test reports' phrasing


def recall_at_k(similarity, same, ks=RECALL_AT) -> dict:
  """recall@k of rows: is a column marked in `same` (the row's own item) among the top k scores?"""
  similarity, same = np.asarray(similarity), np.asarray(same, bool)
  order = np.argsort(-similarity, axis=1, kind="stable")
  hit_rank = np.argmax(np.take_along_axis(same, order, axis=1), axis=1)  # first correct position
  return {f"recall@{k}": float(np.mean(hit_rank < k)) for k in ks}


def retrieval(heads: heads_lib.Heads, audio_features, report_embeddings, reports: list) -> dict:
  """Audio -> report and report -> audio recall@k; identical report texts count as the same report."""
  audio = heads.project_audio(audio_features)
  text = heads.project_text(report_embeddings)
  similarity = audio @ text.T
  reports = np.asarray(reports, dtype=object)
  same = reports[:, None] == reports[None, :]
  out = {f"audio_to_report_{k}": v for k, v in recall_at_k(similarity, same).items()}
  out.update({f"report_to_audio_{k}": v for k, v in recall_at_k(similarity.T, same.T).items()})
  chance = {f"chance_recall@{k}": min(1.0, k / max(len(reports), 1)) for k in RECALL_AT}
  return {**out, **chance, "num_recordings": int(len(reports))}


def evaluate_task(task, index: list, features: np.ndarray, heads: heads_lib.Heads, embed_fn: Callable, *,
                  report_seed: int = 0) -> dict:
  """Retrieval between one task's test recordings and their own reports."""
  rows = zeroshot.test_rows(task, index)
  texts = [reports_lib.report_for(index[r]["metadata"], index[r]["labels"], seed=report_seed) for r in rows]
  return retrieval(heads, features[rows], embed_fn(texts), texts)


def results_table(results: dict) -> str:
  lines = []
  for encoder, r in results.items():
    lines += [f"Retrieval through the aligned projection space ({encoder}).", "",
              "| task | R@1 a->r | R@5 a->r | R@10 a->r | R@1 r->a | chance R@1 | test recordings |",
              "|---|---|---|---|---|---|---|"]
    for task, t in r["tasks"].items():
      lines.append(f"| {task} | {t['audio_to_report_recall@1']:.3f} | {t['audio_to_report_recall@5']:.3f} | "
                   f"{t['audio_to_report_recall@10']:.3f} | {t['report_to_audio_recall@1']:.3f} | "
                   f"{t['chance_recall@1']:.3f} | {t['num_recordings']} |")
    lines.append("")
  return "\n".join(lines)


class Evaluator(zeroshot.Evaluator):
  """Retrieval recall@k of every aligned encoder on the configured tasks' test recordings."""
  stem = "retrieval"

  def evaluate_task(self, task, index, features, heads, embed_fn) -> dict:
    return evaluate_task(task, index, features, heads, embed_fn, report_seed=self.config.report_seed)

  def table(self, results: dict) -> str:
    return results_table(results)
