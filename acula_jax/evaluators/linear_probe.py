"""The linear-probe evaluator: every featurizer on every task, OPERA's protocol with intervals.

Features come from `features` (chunked, cached). Then:
1. Folds (--protocol): each task's own protocol (`official`, OPERA's), or subject-grouped,
label-stratified K-fold CV repeated R times (`cv:K`, `repeated_cv:K:R`) for tasks whose own protocol
is a single split. Heads (--probes): `opera`, OPERA's linear probe (`probe`: Adam 1e-4
decayed x0.97 per epoch, L2 1e-5, 64 epochs, clip 1.0, best validation AUROC) on standardised
features, every fold and seed in one program; `logreg`, L2 logistic regression with C chosen by
inner subject-grouped 3-fold CV on each fold's training rows. Regression: leave-one-subject-out with
OPERA's head (MLP, or least squares for MMLung), MAE and MAPE, mean ± std over folds.
2. Scores (`acula_jax.scoring`), at the levels of --aggregate: per recording, and per subject (each
subject's recordings as one: the mean, or with --subject_score=max the max, of their probabilities).
The default `auto` scores both where a subject has several recordings in a task; a task whose
subjects' recordings disagree on the label keeps the recording level only, with a note. Each number
carries a 95% interval from --bootstrap resamples of the test subjects.
3. Paired comparisons (--compare=A:B): A - B per task on the same folds and subjects, with a paired
subject-bootstrap interval and p-value, and the mean over tasks (`scoring.paired`).
4. Output in W/eval/: results.json (every number, per seed and fold, both levels, comparisons, and each
task's recordings, subjects and class counts per side), results.md (the tables, best per task and
level in bold, comparisons starred where the interval excludes 0) and report.html (the tables, ROC
curves, predicted-vs-true plots, intervals, forest plots of the comparisons, t-SNE maps).

Settings (`default_config`): `tasks` (names, groups or table:DIR:LABEL specs), `data_root` (one
prepared records folder per task family), `baselines`, `probe` (OPERA's protocol, with `seeds`),
`probes`, `protocol`, `aggregate`, `subject_score`, `bootstrap`, `compare`, `tsne_points`,
`feature_batch_size`.
"""
import json

from absl import logging
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from acula_jax import errors
from acula_jax import evaluators
from acula_jax import models
from acula_jax import fileio
from acula_jax.audio import frontends
from acula_jax.evaluators import baselines
from acula_jax.evaluators import features as features_lib
from acula_jax.evaluators import probe
from acula_jax.evaluators import report
from acula_jax.evaluators import scoring
from acula_jax.evaluators import tasks as tasks_lib


BASELINE = baselines.NAMES["logmel"]


# OPERA's regression MLP is d -> d -> 1; capped so that 6373-d ComParE features do not need a 6373^2 layer
# (x Adam state x seeds). The OPERA encoders' widths (384-1280) are below the cap.
MAX_MLP_HIDDEN = 1280




def _probe_config(base: dict, task) -> dict:
  config = dict(base)
  config.update(task.probe_overrides())
  return config


def _standardized(features, fold):
  return probe.standardize(features[fold.train], features[fold.valid], features[fold.test])


def _padded(row_lists) -> tuple:
  """([F, T] rows padded with each list's first row, [F] real counts)."""
  slots = max(len(r) for r in row_lists)
  rows = np.stack([np.pad(r, (0, slots - len(r)), mode="edge") for r in row_lists])
  return rows, np.asarray([len(r) for r in row_lists])


def _classify_folds(task, features, targets, folds, config, seeds) -> list:
  """Test probabilities [S, n_test, C] of every seed's OPERA probe on every fold (one program)."""
  train_rows, num_train = _padded([f.train for f in folds])
  # A fold without validation rows selects its epoch on the training rows.
  val_rows, num_val = _padded([f.valid if len(f.valid) else f.train for f in folds])
  labels = np.nan_to_num(targets, nan=0.0).astype(np.int32)
  proba, _ = probe.train_probes(
      jnp.arange(seeds), features, labels, train_rows, num_train, val_rows, num_val,
      num_classes=len(task.classes),
      epochs=config["epochs"], batch_size=config["batch_size"], learning_rate=config["learning_rate"],
      decay=config["decay"], l2=config["l2"], clip=config.get("clip", 1.0))
  proba = np.asarray(proba)
  return [proba[k][:, fold.test] for k, fold in enumerate(folds)]


def _logistic_folds(task, index, features, targets, folds, *, inner_folds=3, grid=probe.LOGREG_C_GRID) -> list:
  """Test probabilities [1, n_test, C] of an L2 logistic regression per fold, its C chosen by
  subject-grouped inner cross-validation on the fold's training and validation rows (ties: smaller C)."""
  weights, held_out = [], []   # per fit: training rows; the inner fold's held-out rows (None: final fit)
  for fold in folds:
    train = np.concatenate([fold.train, fold.valid])
    inner = tasks_lib.grouped_kfold(task, index, sorted(train.tolist()), inner_folds, seed=0)
    for held in [*inner, None]:
      w = np.zeros(len(features), np.float32)
      w[train] = 1.0
      if held is not None:
        w[held] = 0.0
      weights.append(w)
      held_out.append(held)
  labels = np.nan_to_num(targets, nan=0.0).astype(np.int32)
  proba = np.asarray(probe.fit_logistic_path(features, labels, np.stack(weights), np.asarray(grid, np.float32),
                                             num_classes=len(task.classes)))       # [G, fits, N, C]
  per_fold = inner_folds + 1
  out = []
  for k, fold in enumerate(folds):
    fits = range(k * per_fold, (k + 1) * per_fold - 1)
    scores = np.full((len(grid), inner_folds), np.nan)
    for j, m in enumerate(fits):
      mask = np.zeros((1, len(features)))
      mask[0, held_out[m]] = 1.0
      scores[:, j] = [probe.weighted_macro_auroc(proba[g, m], labels, len(task.classes), mask)[0]
                      for g in range(len(grid))]
    mean = np.nan_to_num(scoring.finite_mean(scores, axis=1), nan=-np.inf)   # no defined inner score: last
    out.append(proba[int(np.argmax(mean)), (k + 1) * per_fold - 1][None, fold.test])
  return out


def _regress_fold(task, features, targets, fold, config, seeds):
  """Test predictions [S, n_test] (one row for the deterministic least-squares head)."""
  x_tr, x_va, x_te = _standardized(features, fold)
  y_tr, y_va = targets[fold.train], targets[fold.valid]
  if task.head == "ols":
    w, b = probe.fit_ols(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    return probe.predict_ols(w, b, x_te)[None]
  if not len(y_va):
    x_va, y_va = x_tr, y_tr
  params, _ = probe.train_regressors(
      jnp.arange(seeds), x_tr, jnp.asarray(y_tr, jnp.float32), x_va, jnp.asarray(y_va, jnp.float32),
      hidden=min(x_tr.shape[1], MAX_MLP_HIDDEN), epochs=config["epochs"], batch_size=config["batch_size"],
      learning_rate=config["learning_rate"], decay=config["decay"], l2=config["l2"],
      clip=config.get("clip", 1.0))
  return np.asarray(probe.predict_regression(params, x_te))


def _recording_detail(task, parts) -> dict:
  """What the report plots: pooled test labels with the first seed's probabilities (the seeds' mean
  prediction for regression)."""
  y = np.concatenate([p.y for p in parts])
  if task.is_regression:
    return {"y": y, "pred": np.concatenate([p.pred.mean(0) for p in parts])}
  return {"y": y.astype(int), "proba": np.concatenate([p.pred[0] for p in parts])}


PROBES = ("opera", "logreg")


def probe_task(task, index: list, features: np.ndarray, probe_config: dict, *, seeds: int,
               levels=("recording",), subject_score: str = "mean", bootstrap: int = 0, protocol: str = "official",
               probe_name: str = "opera", namespace: str = ""):
  """(outcome for results.json, details for the report) of one task on one feature matrix.

  `protocol` (`tasks.effective_protocol`) gives the folds, `probe_name` the head (`opera`: OPERA's
  linear probe over `seeds`; `logreg`: logistic regression, C by inner grouped CV; regression tasks
  always use their own head). The outcome holds the first of `levels` (`scoring`), the subject level
  under "subject" when both are asked for, and fold sizes; the details hold what the report plots and
  each level's scored parts (for paired comparisons; subject ids prefixed by `namespace`).
  """
  protocol = tasks_lib.effective_protocol(task, protocol)
  folds = tasks_lib.make_folds(task, index, protocol=protocol)
  config = _probe_config(probe_config, task)
  targets = np.asarray([task.target(r["labels"]) if task.applies_to(r) else np.nan for r in index], np.float64)
  if task.is_regression:
    predictions = [_regress_fold(task, features, targets, f, config, seeds) for f in folds.folds]
  elif probe_name == "logreg":
    predictions = _logistic_folds(task, index, features, targets, folds.folds)
  else:
    predictions = _classify_folds(task, features, targets, folds.folds, config, seeds)
  subject_ids = np.asarray([f"{namespace}/{r['subject_id']}" if namespace else str(r["subject_id"]) for r in index])
  parts = scoring.parts_of(folds, predictions, targets, subject_ids)
  by_level = {"recording": parts, "subject": [scoring.by_subject(p, subject_score) for p in parts]}
  spread = "folds" if protocol.partition(":")[0] in ("cv", "repeated_cv") else "seeds"
  # Replicates once per level: the intervals here, the paired comparisons later (`compare_tasks`).
  reps = {level: scoring.replicates(by_level[level], folds.aggregate, num_classes=len(task.classes),
                                    num_samples=bootstrap) for level in levels} if bootstrap else {}
  scored = {level: scoring.score(by_level[level], folds.aggregate, regression=task.is_regression,
                                 num_classes=len(task.classes), spread=spread) for level in levels}
  for level, level_reps in reps.items():
    scored[level]["ci95"] = scoring.interval(level_reps)
  outcome = {**scored[levels[0]], "level": levels[0]}
  if len(levels) > 1:
    outcome[levels[1]] = {**scored[levels[1]], "level": levels[1]}
  # Per fold (the mean when there are several) for train/valid.
  per_fold = lambda side: int(round(np.mean([len(getattr(f, side)) for f in folds.folds])))
  outcome.update(num_train=per_fold("train"), num_valid=per_fold("valid"), num_folds=len(folds.folds),
                 protocol=protocol, probe="opera" if task.is_regression else probe_name)
  if folds.skipped:
    outcome["skipped_folds"] = [f"{name}: {reason}" for name, reason in folds.skipped]
  detail = _recording_detail(task, parts)
  detail.update(parts={level: by_level[level] for level in levels}, aggregate=folds.aggregate, replicates=reps)
  return outcome, detail


def compare_tasks(results: dict, details: dict, pairs: list, probes, num_samples: int) -> dict:
  """Paired differences A - B per task, probe and level, and their mean over tasks (`scoring.paired`)."""
  out = {}
  for a, b in pairs:
    for probe_name in probes:
      col_a, col_b = report.column_name(a, probe_name, probes), report.column_name(b, probe_name, probes)
      for level in scoring.LEVELS:
        rows, reps = {}, []
        for task, by_column in details.items():
          if col_a not in by_column or col_b not in by_column or level not in by_column[col_a]["parts"]:
            continue
          info = results["task_info"][task]
          # The intervals' replicates (probe_task, same draws and count when it made any) are reused.
          known = tuple(by_column[c]["replicates"].get(level) for c in (col_a, col_b))
          pair = scoring.paired(by_column[col_a]["parts"][level], by_column[col_b]["parts"][level],
                                by_column[col_a]["aggregate"], regression=info["kind"] == tasks_lib.REGRESSION,
                                num_classes=len(info["classes"]), num_samples=num_samples, known_replicates=known)
          reps.append(pair.pop("replicates"))
          rows[task] = pair
        if not rows:
          continue
        entry = {"tasks": rows}
        if len(rows) > 1:
          diff = float(np.mean([r["diff"] for r in rows.values()]))
          entry["mean_over_tasks"] = {"diff": diff, **scoring.difference_test(diff, np.mean(reps, axis=0))}
        out.setdefault(f"{a} vs {b}", {}).setdefault(probe_name, {})[level] = entry
  return out


def task_levels(task, index: list, aggregate: str) -> tuple:
  """(levels, note) of one task: `scoring.levels_for`, less the subject level where some subjects'
  recordings disagree on the label (a note says how many; asked for alone, that is an error)."""
  rows = [r for r in index if task.applies_to(r)]
  subjects = [str(r["subject_id"]) for r in rows]
  levels = scoring.levels_for(aggregate, subjects)
  if "subject" not in levels:
    return levels, ""
  conflicts = scoring.conflicting_subjects(subjects, [task.target(r["labels"]) for r in rows])
  if not conflicts:
    return levels, ""
  shown = ", ".join(conflicts[:5]) + (", ..." if len(conflicts) > 5 else "")
  if levels == ("subject",):
    raise errors.UsageError(f"task {task.name}: --aggregate=subject needs one {task.label_key!r} per subject, but "
                            f"{len(conflicts)} subjects' recordings disagree ({shown}); use --aggregate=recording")
  return ("recording",), (f"subject level skipped: {len(conflicts)} of {len(set(subjects))} subjects' recordings "
                          f"carry different {task.label_key!r} values ({shown})")


def check_setup(setup: features_lib.Setup, names: list):
  """UsageError for a protocol, probe or comparison that cannot run, before any feature is computed."""
  if setup.protocol != "official":
    try:
      tasks_lib.parse_cv(setup.protocol)
    except ValueError as e:
      raise errors.UsageError(f"--protocol: {e}") from None
  unknown = [p for p in setup.probes if p not in PROBES]
  if unknown or not setup.probes:
    raise errors.UsageError(f"--probes: unknown {unknown or 'empty'}; choose from {list(PROBES)}")
  for a, b in setup.compare:
    missing = [n for n in (a, b) if n not in names]
    if missing:
      raise errors.UsageError(f"--compare={a}:{b}: no encoder or baseline named {missing}; names: {names}")


def run(task_list: list, setup: features_lib.Setup) -> dict:
  """Evaluates every featurizer on every task; writes results.json, results.md and report.html."""
  out_dir = setup.context.out_dir
  out_dir.mkdir(parents=True, exist_ok=True)
  featurizer_names = list(setup.baselines) + [e.name for e in setup.encoders]
  check_setup(setup, featurizer_names)
  names = [report.column_name(n, p, setup.probes) for n in featurizer_names for p in setup.probes]
  results = {"encoders": names, "tasks": {}, "task_info": {}, "skipped_tasks": {},
             "probe": {**setup.probe_config, "seeds": setup.seeds}, "probes": list(setup.probes),
             "protocol": setup.protocol, "features": {},
             "scoring": {"aggregate": setup.aggregate, "subject_score": setup.subject_score,
                         "bootstrap": setup.bootstrap, "comparison": setup.context.comparison}}
  details, maps = {}, []
  usable = []
  for task in task_list:
    reason = features_lib.missing_records(task, setup.data_root, setup.context.fallback_records)
    if reason:
      if setup.data_root or task.records_dir:
        logging.warning("skipping task %s: %s", task.name, reason)
        results["skipped_tasks"][task.name] = reason
        continue
      raise errors.UsageError(f"task {task.name}: {reason}")
    usable.append(task)
  if not usable:
    raise errors.UsageError(f"no task has prepared records (check --data_root): {results['skipped_tasks']}")
  stores = {}
  for task in tqdm(usable, desc="tasks", unit="task"):
    directory = features_lib.task_records_dir(task, setup.data_root, setup.context.fallback_records)
    store = stores.setdefault(directory, features_lib.RecordsStore(directory, out_dir / "features"))
    featurizers = features_lib.featurizers_for(task, setup)
    index, features = store.load(list(featurizers.values()))
    levels, note = task_levels(task, index, setup.aggregate)
    protocol = tasks_lib.effective_protocol(task, setup.protocol)
    results["task_info"][task.name] = task.info() | {
        "records": directory, "levels": list(levels), "protocol": protocol,
        "sizes": tasks_lib.fold_sizes(task, index, tasks_lib.make_folds(task, index, protocol=protocol))}
    if note:
      logging.warning("task %s: %s", task.name, note)
      results["task_info"][task.name]["note"] = note
    runs = [(n, p) for n in featurizers for p in setup.probes if p == "opera" or not task.is_regression]
    for name, probe_name in tqdm(runs, desc=f"probe {task.name}", unit="run", leave=False):
      outcome, detail = probe_task(task, index, features[featurizers[name].key], setup.probe_config,
                                   seeds=setup.seeds, levels=levels, subject_score=setup.subject_score,
                                   bootstrap=setup.bootstrap, protocol=setup.protocol, probe_name=probe_name,
                                   namespace=store.key)
      column = report.column_name(name, probe_name, setup.probes)
      results["tasks"].setdefault(task.name, {})[column] = outcome
      details.setdefault(task.name, {})[column] = detail
      results["features"].setdefault(name, {})[task.name] = featurizers[name].key
      logging.info("%s / %s: %s %.3f ± %.3f", task.name, column, outcome["metric"], outcome["mean"], outcome["std"])
    maps += report.embedding_maps(task, index, {e.name: features[featurizers[e.name].key]
                                                for e in setup.encoders},
                                  max_points=setup.tsne_points, cache=store)
  if setup.compare:
    results["comparisons"] = compare_tasks(results, details, list(setup.compare), setup.probes,
                                           setup.bootstrap or scoring.BOOTSTRAP_SAMPLES)
  fileio.write_text_atomic(out_dir / "results.json", json.dumps(results, indent=2, default=float))
  table = report.results_table(results)
  fileio.write_text_atomic(out_dir / "results.md", table)
  fileio.write_text_atomic(out_dir / "report.html", report.html_page(results, details, maps))
  print(table)
  return results


def default_config():
  """The linear probe's settings and their defaults (`config.evals.<name>` of type linear_probe)."""
  return evaluators.base_config(
      "linear_probe",
      baselines=("logmel",),      # also "egemaps", "compare" (openSMILE functionals)
      probe=dict(probe.OPERA_PROTOCOL),
      probes=("opera",),          # PROBES, side by side
      protocol="official",        # official | cv:K | repeated_cv:K:R
      aggregate="auto",           # scoring.AGGREGATES
      subject_score="mean",       # scoring.SUBJECT_SCORES
      bootstrap=scoring.BOOTSTRAP_SAMPLES,  # subject resamples per 95% interval (0: none)
      compare=(),                 # ("A:B", ...): paired differences A - B
      tsne_points=600,            # recordings per t-SNE map in report.html (0: none)
  )


def parse_compare(values) -> tuple:
  """((A, B), ...) from A:B items (names may hold anything but ':')."""
  pairs = []
  for value in values:
    a, sep, b = value.partition(":")
    if not sep or not a.strip() or not b.strip() or ":" in b:
      raise errors.UsageError(f"--compare={value}: expected A:B, two encoder or baseline names")
    pairs.append((a.strip(), b.strip()))
  return tuple(pairs)


class Evaluator:
  """Linear probes of the encoders and the baselines on the configured tasks (see the module docstring)."""

  def __init__(self, config, context):
    self.config, self.context = config, context

  def setup(self, encoders: list) -> features_lib.Setup:
    config, context = self.config, self.context
    probe_config = dict(config.probe)
    seeds = int(probe_config.pop("seeds"))
    # Without a run's clip length (the CLI): OPERA-GT's input frames, under the baselines' log-mel.
    baseline_window = context.default_window or frontends.window_samples(
        models.get_model("opera_gt").CONFIG["spec_shape"][0], frontends.frontend_for("log_mel", context.audio_config))
    return features_lib.Setup(
        encoders=[features_lib.from_export(name, path) for name, path in encoders],
        baselines=baselines.build(list(config.baselines), context.audio_config, baseline_window,
                                  batch_size=config.feature_batch_size),
        context=context, data_root=config.data_root, feature_batch_size=config.feature_batch_size,
        probe_config=probe_config, seeds=seeds, tsne_points=config.tsne_points, aggregate=config.aggregate,
        subject_score=config.subject_score, bootstrap=config.bootstrap, protocol=config.protocol,
        probes=tuple(config.probes), compare=parse_compare(config.compare))

  def run(self, encoders: list) -> dict:
    """Probes `encoders` ([(name, export dir)]) and the baselines; writes results.{json,md}, report.html."""
    setup = self.setup(encoders)
    if not setup.encoders and not setup.baselines:
      raise errors.UsageError("nothing to evaluate: no encoder and no baseline")
    return run(tasks_lib.resolve(self.config.tasks, cache_dir=self.context.out_dir / "features"), setup)
