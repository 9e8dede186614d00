"""Frozen-feature linear probes: encoders before vs after alignment, with a log-mel baseline.

Writes `eval/results.json` (task, metric, value per encoder and seed) and `eval/results.md` (the table).
Features follow OPERA's protocol for GT-style encoders: a recording is cut into clip-length chunks
(the last one zero-padded when it is at least half a clip, or when it is the only one), each chunk is
encoded, and the chunk features are averaged.
"""
import dataclasses
import json
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from sklearn import metrics as sk_metrics
from tqdm import tqdm

from acula_jax import audio
from acula_jax import input_pipeline
from acula_jax import probe

SPLITS = ("train", "valid", "test")
BASELINE = "log-mel band mean+std"


@dataclasses.dataclass
class SplitData:
  ids: list
  waves: list
  labels: list


def resolve_tasks(spec: str):
  """Task objects (name, label_key, classes) for a task spec; 'demo' = the synthetic corpus tasks."""
  if spec == "demo":
    from acula_jax import synthetic  # pylint: disable=g-import-not-at-top
    return list(synthetic.DEMO_TASKS)
  raise ValueError(f"unknown task set {spec!r}; available: demo")


def load_splits(records_dir) -> dict:
  data = {}
  for split in SPLITS:
    examples = list(tqdm(input_pipeline.iterate_split(records_dir, split), desc=f"read {split}",
                         unit="rec", leave=False))
    data[split] = SplitData([e["id"] for e in examples], [e["audio"] for e in examples],
                            [e["labels"] for e in examples])
  return data


def chunk(wave: np.ndarray, window: int) -> list:
  """Clip-length chunks of a recording (see the module docstring for the rule)."""
  full, rest = divmod(len(wave), window)
  chunks = [wave[i * window:(i + 1) * window] for i in range(full)]
  if full == 0 or rest >= window // 2:
    chunks.append(audio.crop_or_pad(wave[full * window:], window, offset=0))
  return chunks


def chunked_features(waves: list, featurize: Callable, *, window: int, batch_size: int,
                     desc: str) -> np.ndarray:
  """Averages `featurize` ([B, window] -> [B, d]) over each recording's chunks; fixed batch shapes."""
  pieces, owners = [], []
  for i, wave in enumerate(waves):
    for piece in chunk(wave, window):
      pieces.append(piece)
      owners.append(i)
  outputs = []
  for start in tqdm(range(0, len(pieces), batch_size), desc=desc, unit="batch", leave=False):
    batch = pieces[start:start + batch_size]
    padded = np.zeros((batch_size, window), np.float32)
    padded[:len(batch)] = batch
    outputs.append(np.asarray(featurize(padded))[:len(batch)])
  features = np.concatenate(outputs)
  summed = np.zeros((len(waves), features.shape[1]), np.float64)
  np.add.at(summed, np.asarray(owners), features)
  return (summed / np.bincount(owners, minlength=len(waves))[:, None]).astype(np.float32)


def encoder_featurizer(encoder: nnx.Module, audio_config) -> Callable:
  graphdef, state = nnx.split(encoder)

  @jax.jit
  def featurize(state, waves):
    return nnx.merge(graphdef, state).features(audio.log_mel(waves, **audio_config), train=False)
  return lambda waves: featurize(state, waves)


def logmel_stats_featurizer(audio_config) -> Callable:
  @jax.jit
  def featurize(waves):
    spec = audio.log_mel(waves, **audio_config)
    return jnp.concatenate([spec.mean(axis=-2), spec.std(axis=-2)], axis=-1)
  return featurize


def task_arrays(task, data: dict):
  """Per split: (row indices into that split, integer labels) of the examples the task covers."""
  out = {}
  for split, split_data in data.items():
    rows, ys = [], []
    for row, labels in enumerate(split_data.labels):
      value = labels.get(task.label_key)
      if value is not None and value in task.classes:
        rows.append(row)
        ys.append(task.classes.index(value))
    out[split] = (np.asarray(rows, np.int64), np.asarray(ys, np.int32))
  return out


def test_auroc(probabilities: np.ndarray, y: np.ndarray, num_classes: int) -> float:
  """sklearn macro one-vs-rest AUROC over the classes present in the test labels."""
  if num_classes == 2:
    return float(sk_metrics.roc_auc_score(y, probabilities[:, 1]))
  present = [c for c in range(num_classes) if 0 < (y == c).sum() < len(y)]
  return float(np.mean([sk_metrics.roc_auc_score(y == c, probabilities[:, c]) for c in present]))


def probe_task(task, features: dict, arrays: dict, probe_config) -> dict:
  """Trains the probes of one task on one encoder's features; AUROC per seed on the test split."""
  (tr_rows, y_tr), (va_rows, y_va), (te_rows, y_te) = (arrays[s] for s in SPLITS)
  x_tr, x_va, x_te = (features[s][rows] for s, rows in zip(SPLITS, (tr_rows, va_rows, te_rows)))
  if probe_config.get("standardize", True):
    x_tr, x_va, x_te = probe.standardize(x_tr, x_va, x_te)
  num_classes = len(task.classes)
  w, b, best_val = probe.train_probes(
      jnp.arange(probe_config.seeds), x_tr, y_tr, x_va, y_va, num_classes=num_classes,
      epochs=probe_config.epochs, batch_size=probe_config.batch_size,
      learning_rate=probe_config.learning_rate, decay=probe_config.decay, l2=probe_config.l2)
  probabilities = np.asarray(probe.predict_proba(w, b, x_te))
  per_seed = [test_auroc(p, y_te, num_classes) for p in probabilities]
  return {"metric": "auroc", "mean": float(np.mean(per_seed)), "std": float(np.std(per_seed)),
          "per_seed": per_seed, "best_valid_auroc": np.asarray(best_val).tolist(),
          "num_train": len(y_tr), "num_valid": len(y_va), "num_test": len(y_te)}


def evaluate_encoders(config, out_dir, encoders: dict) -> dict:
  """Probes every encoder (name -> nnx encoder) and the log-mel baseline on the configured tasks."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tasks = resolve_tasks(config.eval.tasks)
  data = load_splits(config.data.records_dir)
  window = input_pipeline.clip_samples(config)
  featurizers = {BASELINE: logmel_stats_featurizer(config.audio)}
  featurizers.update({name: encoder_featurizer(enc, config.audio) for name, enc in encoders.items()})

  results = {"tasks": {}, "encoders": list(featurizers), "probe": config.eval.probe.to_dict()}
  for name, featurize in featurizers.items():
    features = {split: chunked_features(data[split].waves, featurize, window=window,
                                        batch_size=config.eval.feature_batch_size,
                                        desc=f"features {name} {split}") for split in SPLITS}
    for task in tqdm(tasks, desc=f"probe {name}", unit="task"):
      outcome = probe_task(task, features, task_arrays(task, data), config.eval.probe)
      results["tasks"].setdefault(task.name, {})[name] = outcome
      logging.info("%s / %s: AUROC %.3f ± %.3f", task.name, name, outcome["mean"], outcome["std"])
  (out_dir / "results.json").write_text(json.dumps(results, indent=2))
  (out_dir / "results.md").write_text(results_table(results))
  print(results_table(results))
  return results


def results_table(results: dict) -> str:
  """Markdown table: one row per task, one column per encoder, best mean in bold."""
  names = results["encoders"]
  lines = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for task, by_encoder in results["tasks"].items():
    best = max(by_encoder[n]["mean"] for n in names)
    cells = []
    for n in names:
      r = by_encoder[n]
      cell = f"{r['mean']:.3f} ± {r['std']:.3f}"
      cells.append(f"**{cell}**" if r["mean"] == best else cell)
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  seeds = results["probe"]["seeds"]
  lines.append(f"\nTest macro AUROC, mean ± std over {seeds} probe seeds (linear probe on frozen features).")
  return "\n".join(lines) + "\n"
