"""From a probe's test predictions to a task's numbers: levels, the protocol's combination, intervals.

Levels. Clinicians diagnose patients, and cardio-respiratory datasets record several sites per patient.
`recording` scores every recording; `subject` first turns each subject's recordings into one score (the
mean of their class probabilities, or the max; regression: the mean prediction) and scores subjects.
Subject level needs one label per subject in the task (`conflicting_subjects`). `levels_for` picks the
levels an `--aggregate` request means for one task: `auto` is both where some subject has several
recordings, else recording.

Combination (`tasks.Folds.aggregate`). `single`: the one test set; `mean`: each fold's metric, then the
mean over folds; `pooled`: every fold's test predictions pooled into one set; `per_fold` (regression
leave-one-out): each fold's MAE, mean ± std over folds (OPERA's convention). Classification reports
mean ± std over probe seeds.

Intervals. `ci95` is a 95% percentile interval over `bootstrap` resamples of the test subjects: each
replicate gives every subject a Poisson(1) multiplicity drawn from a hash of its id (a subject's
recordings travel together, and the subject weighs the same in every fold, repetition, task and
encoder of that replicate), recomputes every seed's metric with those multiplicities, and combines
folds and seeds as the headline number does. It covers which patients were tested, given the fitted
probes; the probes are not refitted. `paired` applies one resample to two encoders: the interval and
p-value of their difference.
"""
import dataclasses
import hashlib

import numpy as np

from acula_jax.evaluators import probe

BOOTSTRAP_SAMPLES = 1000  # subject resamples behind each 95% interval

AGGREGATES = ("auto", "recording", "subject", "both")
SUBJECT_SCORES = ("mean", "max")


@dataclasses.dataclass
class Part:
  """Test predictions scored together: one fold's test set, or several folds pooled."""
  name: str
  y: np.ndarray          # [n] class indices or regression targets
  pred: np.ndarray       # [S, n, C] probabilities, or [S, n] predictions
  subjects: np.ndarray   # [n] subject ids: the bootstrap's clusters


def levels_for(aggregate: str, subject_ids: list) -> tuple:
  """The levels an --aggregate value means for a task whose rows have these subject ids."""
  if aggregate not in AGGREGATES:
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
  if aggregate == "auto":
    repeated = len(set(subject_ids)) < len(subject_ids)
    return ("recording", "subject") if repeated else ("recording",)
  return {"recording": ("recording",), "subject": ("subject",), "both": ("recording", "subject")}[aggregate]


def conflicting_subjects(subject_ids: list, targets: list) -> list:
  """Subjects whose recordings carry more than one label value in a task (sorted)."""
  seen = {}
  for subject, target in zip(subject_ids, targets):
    seen.setdefault(subject, set()).add(target)
  return sorted(s for s, values in seen.items() if len(values) > 1)


def by_subject(part: Part, how: str = "mean") -> Part:
  """One row per subject: its recordings' predictions averaged (or their max), its (single) label."""
  if how not in SUBJECT_SCORES:
    raise ValueError(f"subject score must be one of {SUBJECT_SCORES}, got {how!r}")
  subjects, inverse = np.unique(part.subjects, return_inverse=True)
  rows = [np.flatnonzero(inverse == k) for k in range(len(subjects))]
  reduce = np.max if how == "max" and part.pred.ndim == 3 else np.mean
  pred = np.stack([reduce(part.pred[:, r], axis=1) for r in rows], axis=1)
  return Part(part.name, np.asarray([part.y[r[0]] for r in rows]), pred, subjects)


def parts_of(folds, fold_predictions: list, targets: np.ndarray, subject_ids: np.ndarray) -> list:
  """The scored parts of a protocol: one pooled part, or one per fold (`mean`, `per_fold`)."""
  parts = [Part(f.name, targets[f.test], np.asarray(p), subject_ids[f.test])
           for f, p in zip(folds.folds, fold_predictions)]
  if folds.aggregate != "pooled":
    return parts
  return [Part("pooled", np.concatenate([p.y for p in parts]), np.concatenate([p.pred for p in parts], axis=1),
               np.concatenate([p.subjects for p in parts]))]


_DRAWS = {}  # (seed, subject, num_samples) -> its Poisson draws; a process evaluates one population


def subject_weights(subjects: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
  """[num_samples, n] bootstrap multiplicities of each row: its subject's Poisson(1) draws.

  The draws come from a hash of (seed, subject id), so a subject carries the same multiplicity in
  every fold, repetition, task, level and encoder of replicate b: paired differences, fold means
  and means over tasks all resample one population of subjects (a Poisson bootstrap, which for
  more than a few dozen subjects behaves as drawing them with replacement).
  """
  unique, inverse = np.unique(np.asarray(subjects).astype(str), return_inverse=True)
  columns = []
  for subject in unique:
    key = (seed, subject, num_samples)
    if key not in _DRAWS:
      digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
      _DRAWS[key] = np.random.default_rng(int.from_bytes(digest[:8], "little")).poisson(1.0, num_samples)
    columns.append(_DRAWS[key])
  return np.stack(columns, axis=1)[:, inverse].astype(np.float64)


def _weighted_metric(part: Part, weights: np.ndarray, num_classes: int) -> np.ndarray:
  """[B, S]: every seed's metric under every weight row (AUROC, or MAE for regression)."""
  if part.pred.ndim == 3:
    y = part.y.astype(int)
    return np.stack([probe.weighted_macro_auroc(p, y, num_classes, weights) for p in part.pred], axis=1)
  errors = np.abs(part.pred - part.y[None])                  # [S, n]
  return (weights @ errors.T) / weights.sum(1, keepdims=True)


def finite_mean(values, axis):
  """Mean over the finite entries; NaN (without numpy's warning) where there are none."""
  finite = np.isfinite(values)
  count = finite.sum(axis)
  total = np.where(finite, values, 0.0).sum(axis)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _summary(values) -> dict:
  values = np.asarray(values, np.float64)
  return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}


def replicates(parts: list, aggregate: str, *, num_classes: int, num_samples: int, seed: int = 0) -> np.ndarray:
  """[num_samples] bootstrap replicates of the headline number (see the module docstring)."""
  if aggregate == "per_fold":  # one subject per fold: resampling subjects resamples folds
    weights = subject_weights(np.asarray([p.subjects[0] for p in parts]), num_samples, seed)
    fold_values = np.asarray([_weighted_metric(p, np.ones((1, len(p.y))), num_classes)[0].mean() for p in parts])
    with np.errstate(invalid="ignore", divide="ignore"):
      return (weights @ fold_values) / weights.sum(1)
  per_part = [finite_mean(_weighted_metric(p, subject_weights(p.subjects, num_samples, seed), num_classes), axis=1)
              for p in parts]
  return finite_mean(np.stack(per_part), axis=0)


def interval(values) -> list:
  """The 2.5th and 97.5th percentiles of the finite replicates."""
  values = np.asarray(values)
  low, high = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
  return [float(low), float(high)]


def score(parts: list, aggregate: str, *, regression: bool, num_classes: int = 2, bootstrap: int = 0,
          seed: int = 0, spread: str = "seeds") -> dict:
  """The outcome of one level: metric, mean ± std (over seeds; over folds for `per_fold`, or with
  spread="folds" for cross-validation), per-seed and per-fold values, and with `bootstrap` > 0 the
  subject-bootstrap `ci95`."""
  ones = lambda p: np.ones((1, len(p.y)))
  values = np.stack([_weighted_metric(p, ones(p), num_classes)[0] for p in parts])   # [P, S]
  if regression:
    mapes = np.stack([[probe.mape(p.y, s) for s in p.pred] for p in parts])
    if aggregate == "per_fold":
      out = {"metric": "mae", **_summary(values.mean(1)), "per_fold": {p.name: float(v) for p, v in
                                                                       zip(parts, values.mean(1))}}
      mape = _summary(mapes.mean(1))
    else:
      out = {"metric": "mae", **_summary(values[0]), "per_seed": [float(v) for v in values[0]]}
      mape = _summary(mapes[0])
    out.update(mape_mean=mape["mean"], mape_std=mape["std"])
  else:
    per_seed = finite_mean(values, axis=0)
    out = {"metric": "auroc", **_summary(per_seed), "per_seed": [float(v) for v in per_seed], "spread": "seeds"}
    if aggregate == "mean":
      per_fold = finite_mean(values, axis=1)
      out["per_fold"] = {p.name: float(v) for p, v in zip(parts, per_fold)}
      if spread == "folds":
        out.update(std=float(np.nanstd(per_fold)), spread="folds")
  if bootstrap:
    out["ci95"] = interval(replicates(parts, aggregate, num_classes=num_classes, num_samples=bootstrap, seed=seed))
  out["num_test"] = int(sum(len(p.y) for p in parts))
  out["num_test_subjects"] = len(set(np.concatenate([p.subjects for p in parts]).tolist()))
  return out


def paired(parts_a: list, parts_b: list, aggregate: str, *, regression: bool, num_classes: int,
           num_samples: int, seed: int = 0, known_replicates=(None, None)) -> dict:
  """A - B on the same folds and subjects: the difference of headline numbers, its paired-bootstrap 95%
  interval and a two-sided p-value (the share of centred replicates at least as far from 0), and the
  replicates themselves (for means over tasks). `known_replicates`: either side's `replicates` of the
  same draws, when the caller computed them already (for its interval)."""
  summary = lambda parts: score(parts, aggregate, regression=regression, num_classes=num_classes)["mean"]
  diff = summary(parts_a) - summary(parts_b)
  side = lambda parts, known: known if known is not None else replicates(
      parts, aggregate, num_classes=num_classes, num_samples=num_samples, seed=seed)
  reps = side(parts_a, known_replicates[0]) - side(parts_b, known_replicates[1])
  return {"diff": float(diff), **difference_test(diff, reps), "replicates": reps}


def difference_test(diff: float, reps: np.ndarray) -> dict:
  """95% interval and two-sided bootstrap p-value of a difference from its replicates."""
  finite = reps[np.isfinite(reps)]
  p_value = (1 + np.sum(np.abs(finite - diff) >= abs(diff))) / (len(finite) + 1)
  low, high = interval(finite)
  return {"ci95": [low, high], "p_value": float(p_value), "excludes_zero": bool(low > 0 or high < 0)}


# ----------------------------------------------------------------------------------------------------
# Presenting outcomes (results.md and report.html share these).
# ----------------------------------------------------------------------------------------------------

LEVELS = ("recording", "subject")


def at_level(outcome: dict, level: str):
  """The part of an encoder's task outcome for one level (None when that level was not scored)."""
  return outcome if outcome.get("level", "recording") == level else outcome.get(level)


def levels_of(by_encoder: dict) -> list:
  """The levels a task was scored at, the headline one first."""
  first = next(iter(by_encoder.values()))
  return [first.get("level", "recording")] + [l for l in LEVELS if isinstance(first.get(l), dict)]


def best_encoder(by_encoder: dict) -> str:
  """The encoder with the best mean: highest AUROC, lowest MAE."""
  items = [(n, r) for n, r in by_encoder.items() if np.isfinite(r["mean"])]
  if not items:
    return ""
  sign = -1.0 if items[0][1]["metric"] == "mae" else 1.0
  return max(items, key=lambda item: sign * item[1]["mean"])[0]


def cell_text(outcome: dict) -> str:
  """'mean ± std [low, high]' (MAE cells add the MAPE in %; no ± for a single fit without seeds)."""
  single_fit = outcome.get("spread") == "seeds" and len(outcome.get("per_seed", [])) == 1
  text = f"{outcome['mean']:.3f}" + ("" if single_fit else f" ± {outcome['std']:.3f}")
  if outcome["metric"] == "mae":
    text += f" ({outcome['mape_mean']:.1f}%)"
  if "ci95" in outcome:
    text += f" [{outcome['ci95'][0]:.3f}, {outcome['ci95'][1]:.3f}]"
  return text


def side_text(size: dict) -> str:
  """'70 rec / 23 subj (normal 40, murmur 30)' for one side of a task's folds."""
  text = f"{size['recordings']} rec / {size['subjects']} subj"
  if size.get("classes"):
    text += " (" + ", ".join(f"{c} {n}" for c, n in size["classes"].items()) + ")"
  return text


def explanation(results: dict) -> str:
  """What the numbers of a results table are (one paragraph)."""
  settings = results.get("scoring", {})
  seeds = results["probe"]["seeds"]
  protocol = results.get("protocol", "official")
  text = (f"Classification: test macro AUROC, mean ± std over {seeds} probe seeds (leave-one-out tasks pool the "
          "held-out predictions; per-database tasks average the databases)")
  if protocol != "official":
    text += (f"; under {protocol}, the mean over every fold and repetition ± the std over folds, seeds "
             "averaged inside each fold")
  text += (". Probes: `opera` = OPERA's linear probe, `logreg` = logistic regression with C chosen by inner "
           "subject-grouped CV (one fit, no seeds). Regression: MAE (MAPE), mean ± std over leave-one-subject-out "
           "folds (over seeds on a single split).")
  if settings.get("bootstrap"):
    text += (f" [low, high]: 95% interval over {settings['bootstrap']} Poisson resamples of the test subjects "
             "(a subject's recordings together), for the fitted probes.")
  text += (f" Level `subject`: each subject's recordings scored as one ({settings.get('subject_score', 'mean')} "
           "of their probabilities; regression: mean prediction); `recording`: every recording on its own."
           " Best per task and level in bold.")
  return text
