r"""The downstream task registry: every evaluation task defined once.

A task names the dataset adapter whose prepared records it reads (`acula_jax.data.prepare` output, one
folder per task family under `--data_root`), the label it predicts (a class list, or a regression
target), the split protocol, the metric and OPERA's audio length per encoder family:

  python -m acula_jax.data.prepare --dataset=icbhi --data_dir=/data/ICBHI --output=ROOT/icbhi_copd \
      --option=task=copd                      # `tasks.get("t7_icbhi_copd").prepare_command()`
  python -m acula_jax.evaluators.main --workdir=W --tasks=t7_icbhi_copd,physionet --data_root=ROOT

Groups (`--tasks=opera,cardiac,...`): `opera` = the 16 public OPERA tasks (T1, T2, T5-T11, T13-T19,
defined from each adapter's OPERA_TASKS), `cardiac` = CirCor murmur + outcome and ZCHSound, `acula`
= both, `physionet` = PhysioNet 2016 under its three protocols, `ours` = PhysioNet, Yaseen 2018 and
HLS-CMDS, `demo` = the synthetic corpus's tasks, `all` = acula + ours.

Split protocols (`Task.protocol`), all computed from the records' `split` and metadata:
  official              the prepared train/valid/test split (valid carved from train, subject-wise,
                        when the records have none).
  within_database       one fold per value of metadata["database"] (its own train/valid/test);
                        the metric is the mean over databases.
  leave_database_out:X  database X (every split) is the test set; the other databases' valid split
                        is the validation set and the rest trains.
  loo / loso            leave one recording / one subject out: every recording (subject) is a test
                        fold, a fixed seeded `valid_fraction` of the others validates, the rest trains.
                        Classification pools the held-out predictions into one AUROC per seed;
                        regression reports the mean ± std of the per-fold MAE, as OPERA does.

A user's table (`acula_jax.data.datasets.table`, prepared into DIR) becomes a task with the spec
`table:DIR:LABEL_COLUMN[:classification|:regression]` (`parse_spec`); without the suffix, a column
whose values are all numbers with more than `MAX_NUMERIC_CLASSES` distinct values is a regression
target, anything else a class label.
"""
import dataclasses
import hashlib
import math
import os

import numpy as np

from acula_jax import errors
from acula_jax.data import datasets
from acula_jax.data import records
from acula_jax.data import synthetic
from acula_jax.data.datasets import common
from acula_jax.evaluators import features as features_lib

CLASSIFICATION = "classification"
REGRESSION = "regression"
# OPERA-GT (and our ViTs) always see 8.18 s windows (256 frames at hop 512), averaged over a
# recording; OPERA feeds the CNN/Swin encoders `min_len_cnn` / `min_len_htsat` seconds.
GT_SECONDS = 8.18
DEFAULT_SECONDS = (("opera_gt", GT_SECONDS), ("opera_ce", 8.0), ("opera_ct", 8.0), ("audiomae", 10.24))
MAX_NUMERIC_CLASSES = 10
# Class values that read as "no finding": listed first so that class 1 of a binary task is the finding.
_NEGATIVE = ("healthy", "normal", "negative", "non-smoker", "absent", "female")


@dataclasses.dataclass(frozen=True)
class Task:
  """One downstream task; see the module docstring for the fields' meaning."""
  name: str
  dataset: str                    # adapter name (`acula_jax.data.datasets.ADAPTERS`), or "synthetic"
  modality: str                   # heart | lung | cough | breath | mixed
  label_key: str                  # key in the records' `labels`
  classes: tuple = ()             # class values as stored in the records; () for regression
  kind: str = CLASSIFICATION
  protocol: str = "official"
  records: str = ""               # folder under --data_root holding the prepared records
  prepare_options: tuple = ()     # ((key, value), ...): `prepare --option=key=value`
  filters: tuple = ()             # ((metadata key, (allowed values, ...)), ...)
  seconds: tuple = DEFAULT_SECONDS  # ((encoder family, seconds), ...)
  head: str = "linear"            # linear (classification) | mlp | ols (regression)
  fold_groups: tuple = ()         # loo/loso: only these groups become test folds
  valid_fraction: float = 0.2     # loo/loso (and official without a valid split)
  probe: tuple = ()               # ((probe hyper-parameter, value), ...) overriding the defaults
  opera_id: str = ""
  description: str = ""
  records_dir: str = ""           # explicit records folder (table: specs, demo), else data_root/records

  @property
  def is_regression(self) -> bool:
    return self.kind == REGRESSION

  @property
  def metric(self) -> str:
    """The headline metric: macro one-vs-rest AUROC, or MAE (MAPE reported beside it)."""
    return "mae" if self.is_regression else "auroc"

  def applies_to(self, example) -> bool:
    """Whether a record (dict with labels + metadata) passes the filters and carries a usable label."""
    metadata = example.get("metadata") or {}
    if any(metadata.get(key) not in allowed for key, allowed in self.filters):
      return False
    value = (example.get("labels") or {}).get(self.label_key)
    if self.is_regression:
      return _number(value) is not None
    return value in self.classes

  def target(self, labels):
    """The class index (classification) or the float target (regression) of a labels dict."""
    value = labels[self.label_key]
    return _number(value) if self.is_regression else self.classes.index(value)

  def audio_seconds(self, family: str) -> float:
    return dict(self.seconds).get(family, dict(DEFAULT_SECONDS).get(family, GT_SECONDS))

  def probe_overrides(self) -> dict:
    return dict(self.probe)

  def prepare_command(self, data_dir="DATA_DIR", data_root="DATA_ROOT") -> str:
    """The `acula_jax.data.prepare` command that makes this task's records."""
    options = "".join(f" --option={k}={v}" for k, v in self.prepare_options)
    return (f"python -m acula_jax.data.prepare --dataset={self.dataset} --data_dir={data_dir} "
            f"--output={os.path.join(data_root, self.records)}{options}")

  def info(self) -> dict:
    """What results.json records about the task."""
    return {"dataset": self.dataset, "modality": self.modality, "label": self.label_key,
            "classes": list(self.classes), "kind": self.kind, "protocol": self.protocol,
            "metric": self.metric, "head": self.head, "opera_id": self.opera_id,
            "description": self.description, "records": self.records_dir or self.records}


def _number(value):
  """A finite float from an int/float/numeric string; None otherwise (bools are not numbers)."""
  if isinstance(value, bool) or value is None:
    return None
  try:
    number = float(value)
  except (TypeError, ValueError):
    return None
  return number if math.isfinite(number) else None


def ordered_classes(values) -> tuple:
  """Unique values, "no finding" classes first, the rest in first-seen order (ints sorted)."""
  unique = list(dict.fromkeys(values))
  if all(isinstance(v, int) and not isinstance(v, bool) for v in unique):
    return tuple(sorted(unique))
  negative = [v for v in unique if str(v).lower() in _NEGATIVE]
  return tuple(negative + [v for v in unique if v not in negative])


# ----------------------------------------------------------------------------------------------------
# The registry.
# ----------------------------------------------------------------------------------------------------

# How each OPERA task is prepared: adapter, its records folder and adapter options, and OPERA's
# input seconds for its CNN (OPERA-CE) and Swin (OPERA-CT) encoders (`min_len_cnn`/`min_len_htsat`
# of OPERA's src/benchmark/processing scripts). Labels and descriptions come from OPERA_TASKS.
_OPERA = {
    "T1": ("ukcovid", "t1_ukcovid_exhalation", "ukcovid_exhalation", {"modality": "exhalation"}, 2, 2),
    "T2": ("ukcovid", "t2_ukcovid_cough", "ukcovid_cough", {"modality": "cough"}, 2, 2),
    "T5": ("coughvid", "t5_coughvid_covid", "coughvid_covid", {"task": "covid"}, 2, 2),
    "T6": ("coughvid", "t6_coughvid_sex", "coughvid_sex", {"task": "sex"}, 2, 2),
    "T7": ("icbhi", "t7_icbhi_copd", "icbhi_copd", {"task": "copd"}, 8, 8),
    "T8": ("coswara", "t8_coswara_smoker", "coswara_smoker", {"task": "smoker"}, 2, 8),
    "T9": ("coswara", "t9_coswara_sex", "coswara_sex", {"task": "sex"}, 2, 8),
    "T10": ("kauh", "t10_kauh_obstructive", "kauh_obstructive", {"task": "obstructive"}, 8, 8),
    "T11": ("respiratory_tr", "t11_tr_copd_severity", "respiratory_tr", {}, 8, 8),
    "T13": ("mmlung", "t13_mmlung_fvc_breath", "mmlung_deep_breath", {"modality": "deep_breath"}, 1, 20),
    "T14": ("mmlung", "t14_mmlung_fev1_breath", "mmlung_deep_breath", {"modality": "deep_breath"}, 1, 20),
    "T15": ("mmlung", "t15_mmlung_fev1_fvc_breath", "mmlung_deep_breath", {"modality": "deep_breath"}, 1, 20),
    "T16": ("mmlung", "t16_mmlung_fvc_vowel", "mmlung_vowel_o", {"modality": "vowel_o"}, 1, 20),
    "T17": ("mmlung", "t17_mmlung_fev1_vowel", "mmlung_vowel_o", {"modality": "vowel_o"}, 1, 20),
    "T18": ("mmlung", "t18_mmlung_fev1_fvc_vowel", "mmlung_vowel_o", {"modality": "vowel_o"}, 1, 20),
    "T19": ("nosemic", "t19_nosemic_respiratory_rate", "nosemic", {}, 1, 30),
}
# OPERA's regression protocols: MMLung by leave-one-participant-out with least squares on standardised
# features (its LinearRegression), NoseMic by leave-one-user-out with an MLP head (l2 0.1).
_OPERA_REGRESSION = {"mmlung": dict(head="ols"), "nosemic": dict(head="mlp", probe=(("l2", 0.1),))}


def _seconds(cnn, htsat):
  return (("opera_gt", GT_SECONDS), ("opera_ce", float(cnn)), ("opera_ct", float(htsat)),
          ("audiomae", 10.24))


def _opera_task(task_id, dataset, name, records, options, cnn, htsat) -> Task:
  adapter = datasets.get_adapter(dataset)
  label_key, description = adapter.OPERA_TASKS[task_id]
  common_fields = dict(name=name, dataset=dataset, modality=adapter.MODALITY, label_key=label_key,
                       records=records, prepare_options=tuple(options.items()),
                       seconds=_seconds(cnn, htsat), opera_id=task_id)
  if dataset in _OPERA_REGRESSION:
    fold_groups = tuple(getattr(adapter, "OPERA_USERS", ()))
    what = f"{label_key} from {description}" if dataset == "mmlung" else description
    return Task(**common_fields, kind=REGRESSION, protocol="loso", fold_groups=fold_groups,
                description=f"OPERA {task_id}: {what} (leave one subject out)",
                **_OPERA_REGRESSION[dataset])
  classes = ordered_classes(adapter.LABEL_MAPS[label_key].values())
  return Task(**common_fields, classes=classes, description=f"OPERA {task_id}: {description}")


def _opera_tasks() -> list:
  return [_opera_task(task_id, *spec) for task_id, spec in _OPERA.items()]


def _cardiac_tasks() -> list:
  circor = datasets.get_adapter("circor")
  zch = datasets.get_adapter("zchsound")
  return [
      # Murmur detection: present vs absent; "Unknown" (unreadable recordings) is left out.
      Task("circor_murmur", "circor", "heart", "murmur", ("Absent", "Present"), records="circor",
           description="CirCor murmur present vs absent (patient label per recording, official split)"),
      Task("circor_outcome", "circor", "heart", "outcome",
           ordered_classes(circor.LABEL_MAPS["outcome"].values()), records="circor",
           description="CirCor clinical outcome normal vs abnormal (official split)"),
      Task("zchsound_diagnosis", "zchsound", "heart", "diagnosis",
           ordered_classes(zch.LABEL_MAPS["diagnosis"].values()), records="zchsound_clean",
           prepare_options=(("subset", "clean"),),
           description="ZCHSound (clean) congenital heart disease: normal, ASD, VSD, PFO, PDA"),
  ]


def _physionet_tasks() -> list:
  physionet = datasets.get_adapter("physionet2016")
  classes = ordered_classes(physionet.LABEL_MAPS["outcome"].values())
  base = dict(dataset="physionet2016", modality="heart", label_key="outcome", classes=classes,
              records="physionet2016", prepare_options=(("split", "random"),))
  return [
      Task("physionet_random", **base, description="PhysioNet 2016 normal vs abnormal, random split "
           "(stratified by database: the database letter is a shortcut; never report alone)"),
      Task("physionet_within_db", **base, protocol="within_database",
           description="PhysioNet 2016 normal vs abnormal within each database, mean over databases"),
      Task("physionet_ldo_e", **base, protocol="leave_database_out:e",
           description="PhysioNet 2016 normal vs abnormal, database e held out"),
      Task("physionet_ldo_a", **base, protocol="leave_database_out:a",
           description="PhysioNet 2016 normal vs abnormal, database a held out"),
  ]


def _our_other_tasks() -> list:
  yaseen = datasets.get_adapter("yaseen2018")
  hls = datasets.get_adapter("hls_cmds")
  return [
      Task("yaseen_valve", "yaseen2018", "heart", "valve_class",
           tuple(yaseen.LABEL_MAPS["valve_class"][k] for k in ("N", "MR", "MS", "MVP", "AS")),
           records="yaseen2018", description="Yaseen 2018 valve class (saturated: a sanity check)"),
      Task("hls_heart", "hls_cmds", "heart", "heart_sound", tuple(hls.LABEL_MAPS["heart_sound"].values()),
           protocol="loo", records="hls_cmds_hs", prepare_options=(("part", "HS"),),
           description="HLS-CMDS heart sound type (manikin, 50 recordings, leave one out)"),
      Task("hls_lung", "hls_cmds", "lung", "lung_sound", tuple(hls.LABEL_MAPS["lung_sound"].values()),
           protocol="loo", records="hls_cmds_ls", prepare_options=(("part", "LS"),),
           description="HLS-CMDS lung sound type (manikin, 50 recordings, leave one out)"),
  ]


def _demo_tasks() -> list:
  return [Task(t.name, "synthetic", t.sound_type, t.label_key, tuple(t.classes), records="records",
               filters=(("sound_type", (t.sound_type,)),), description=f"synthetic demo: {t.label_key}")
          for t in synthetic.DEMO_TASKS]


def registry() -> dict:
  """name -> Task for every registered task (table: tasks are made by `parse_spec`)."""
  tasks = _opera_tasks() + _cardiac_tasks() + _physionet_tasks() + _our_other_tasks() + _demo_tasks()
  return {t.name: t for t in tasks}


def groups() -> dict:
  """Group name -> task names."""
  reg = registry()
  by_prefix = lambda *prefixes: [n for n in reg if n.startswith(prefixes)]
  opera = [t.name for t in reg.values() if t.opera_id]
  cardiac = by_prefix("circor_", "zchsound_")
  ours = by_prefix("physionet_", "yaseen_", "hls_")
  return {"opera": opera, "cardiac": cardiac, "acula": opera + cardiac,
          "physionet": by_prefix("physionet_"), "ours": ours,
          "demo": [t.name for t in reg.values() if t.dataset == "synthetic"],
          "all": opera + cardiac + ours}


def get(name: str) -> Task:
  reg = registry()
  if name not in reg:
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(reg)}; groups: {', '.join(groups())}; "
                     "or table:DIR:LABEL_COLUMN[:classification|:regression]")
  return reg[name]


def resolve(spec: str, *, cache_dir=None) -> list:
  """Tasks of a comma-separated spec of task names, group names and table: specs (order kept).

  `cache_dir` (the evaluation's features cache) keeps the records index that table: specs read.
  """
  out, seen = [], set()
  all_groups = groups()
  for item in filter(None, (piece.strip() for piece in str(spec or "").split(","))):
    if item.startswith("table:"):
      found = [parse_spec(item, cache_dir=cache_dir)]
    elif item in all_groups:
      found = [get(n) for n in all_groups[item]]
    else:
      found = [get(item)]
    for task in found:
      if task.name not in seen:
        seen.add(task.name)
        out.append(task)
  return out


# ----------------------------------------------------------------------------------------------------
# Your own table.
# ----------------------------------------------------------------------------------------------------

def parse_spec(spec: str, *, cache_dir=None) -> Task:
  """`table:DIR:LABEL_COLUMN[:classification|:regression]` -> a Task on the records in DIR.

  The kind is inferred from the label values in DIR's records unless given; classes are the sorted
  distinct values. Reading the labels reads the records once; with `cache_dir` their index is kept.
  """
  body = spec[len("table:"):] if spec.startswith("table:") else spec
  pieces = body.split(":")
  kind = None
  if len(pieces) >= 3 and pieces[-1] in (CLASSIFICATION, REGRESSION):
    kind = pieces.pop()
  if len(pieces) < 2 or not pieces[-1] or not ":".join(pieces[:-1]):
    raise ValueError(f"task spec {spec!r}: expected table:DIR:LABEL_COLUMN[:classification|:regression]")
  records_dir, label = ":".join(pieces[:-1]), pieces[-1]
  label_keys = records.read_manifest(records_dir).get("label_keys", [])
  if label not in label_keys:
    raise errors.UsageError(
        f"{records_dir}: no label column {label!r}; its label columns are {label_keys or 'none'} "
        "(acula_jax.data.prepare takes them from --option=label_columns=a,b)")
  values = _label_values(records_dir, label, cache_dir)
  kind = kind or infer_kind(values)
  name = f"table_{os.path.basename(os.path.normpath(records_dir))}_{label}"
  if kind == REGRESSION:
    bad = [v for v in values if _number(v) is None]
    if bad:
      raise ValueError(f"{records_dir}: label {label!r} has non-numeric values {bad[:5]} for a regression task")
    return Task(name, "table", "mixed", label, kind=REGRESSION, head="mlp", records_dir=records_dir,
                description=f"your table: {label} (regression)")
  classes = tuple(sorted(set(values), key=lambda v: (str(type(v)), v)))
  if len(classes) < 2:
    raise ValueError(f"{records_dir}: label {label!r} has {len(classes)} distinct value(s); a "
                     "classification task needs two or more")
  return Task(name, "table", "mixed", label, classes, records_dir=records_dir,
              description=f"your table: {label} ({len(classes)} classes)")


def infer_kind(values) -> str:
  """Regression when every value is a number and there are more than MAX_NUMERIC_CLASSES of them."""
  numeric = [_number(v) for v in values]
  if values and all(n is not None for n in numeric) and len(set(numeric)) > MAX_NUMERIC_CLASSES:
    return REGRESSION
  return CLASSIFICATION


def _label_values(records_dir, label, cache_dir=None) -> list:
  """Every non-empty value of `label` in the records' index (all splits)."""
  rows = features_lib.records_index(records_dir, cache_dir)
  values = [r["labels"][label] for r in rows if r["labels"].get(label) not in (None, "")]
  if not values:
    raise ValueError(f"{records_dir}: no record has label {label!r} "
                     f"(labels: {sorted({k for r in rows for k in r['labels']})})")
  return values


# ----------------------------------------------------------------------------------------------------
# Folds: which rows of a records index train, validate and test under a task's protocol.
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Fold:
  """Row indices (into the records index) of one train/valid/test assignment."""
  name: str
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray


@dataclasses.dataclass
class Folds:
  """The folds of a task and how their test scores combine: single | mean | pooled | per_fold."""
  folds: list
  aggregate: str
  skipped: list = dataclasses.field(default_factory=list)   # (fold name, reason)


def _rows(indices) -> np.ndarray:
  return np.asarray(sorted(indices), dtype=np.int64)


def _valid_groups(strata: dict, fraction: float, seed: int) -> set:
  """A fixed, seeded `fraction` of the groups, drawn inside each stratum (group -> stratum).

  Hash-ordered (`common.subject_split`), so a group's side never depends on the others; stratified
  so that a small class keeps most of its examples for training.
  """
  if fraction <= 0 or len(strata) < 2:
    return set()
  by_stratum = {}
  for group, stratum in strata.items():
    by_stratum.setdefault(str(stratum), []).append(group)
  out = set()
  for members in by_stratum.values():
    assignment = common.subject_split(members, seed=seed, fractions=(1 - fraction, fraction, 0.0))
    out.update(g for g, s in assignment.items() if s == "valid")
  return out


def _strata(task, index, rows, key) -> dict:
  """group -> stratum: the group's (first) class for classification, one stratum for regression."""
  out = {}
  for r in rows:
    stratum = "" if task.is_regression else index[r]["labels"][task.label_key]
    out.setdefault(str(index[r][key]), stratum)
  return out


def _split_rows(index, rows, task, seed):
  """(train, valid, test) rows by the records' split; valid carved from train when absent."""
  by_split = {s: [r for r in rows if index[r]["split"] == s] for s in ("train", "valid", "test")}
  if not by_split["valid"] and by_split["train"]:
    valid = _valid_groups(_strata(task, index, by_split["train"], "subject_id"), task.valid_fraction, seed)
    by_split["valid"] = [r for r in by_split["train"] if str(index[r]["subject_id"]) in valid]
    by_split["train"] = [r for r in by_split["train"] if str(index[r]["subject_id"]) not in valid]
  return by_split["train"], by_split["valid"], by_split["test"]


def _official(task, index, rows, seed) -> Folds:
  train, valid, test = _split_rows(index, rows, task, seed)
  return Folds([Fold("official", _rows(train), _rows(valid), _rows(test))], "single")


def _add_fold(folds: Folds, fold: Fold, task, index):
  """Appends `fold`, or records why it cannot be scored."""
  reason = _unusable(task, index, fold)
  if reason:
    folds.skipped.append((fold.name, reason))
  else:
    folds.folds.append(fold)


def _within_database(task, index, rows, seed) -> Folds:
  out = Folds([], "mean")
  for database in sorted({index[r]["metadata"].get("database") for r in rows}, key=str):
    mine = [r for r in rows if index[r]["metadata"].get("database") == database]
    train, valid, test = _split_rows(index, mine, task, seed)
    _add_fold(out, Fold(f"database {database}", _rows(train), _rows(valid), _rows(test)), task, index)
  return out


def _leave_database_out(task, index, rows, held) -> Folds:
  test = [r for r in rows if index[r]["metadata"].get("database") == held]
  rest = [r for r in rows if index[r]["metadata"].get("database") != held]
  if not test:
    raise ValueError(f"task {task.name}: no records of database {held!r} to hold out")
  valid = [r for r in rest if index[r]["split"] == "valid"]
  train = [r for r in rest if index[r]["split"] != "valid"]
  return Folds([Fold(f"database {held} held out", _rows(train), _rows(valid), _rows(test))], "single")


def _leave_group_out(task, index, rows, key, seed) -> Folds:
  group_of = lambda r: str(index[r][key])
  all_groups = sorted({group_of(r) for r in rows}, key=lambda g: (len(g), g))
  heldout = [g for g in all_groups if g in set(map(str, task.fold_groups))] if task.fold_groups else all_groups
  if len(all_groups) < 3:
    raise ValueError(f"task {task.name}: leave-one-out needs at least 3 groups, got {len(all_groups)}")
  valid_groups = (set() if task.head == "ols" else
                  _valid_groups(_strata(task, index, rows, key), task.valid_fraction, seed))
  folds = []
  for group in heldout:
    test = [r for r in rows if group_of(r) == group]
    valid = [r for r in rows if group_of(r) in valid_groups and group_of(r) != group]
    train = [r for r in rows if group_of(r) not in valid_groups and group_of(r) != group]
    folds.append(Fold(f"{key} {group}", _rows(train), _rows(valid), _rows(test)))
  return Folds(folds, "per_fold" if task.is_regression else "pooled")


def _unusable(task, index, fold) -> str:
  """Why a fold cannot be scored (empty side, or a test/train set with a single class), or ''."""
  if not len(fold.train) or not len(fold.test):
    return "no training or no test records"
  if task.is_regression:
    return ""
  for side, rows in (("train", fold.train), ("test", fold.test)):
    if len({index[r]["labels"][task.label_key] for r in rows}) < 2:
      return f"only one class in the {side} set"
  return ""


def parse_cv(spec: str) -> tuple:
  """(folds K, repetitions R) of 'cv:K' or 'repeated_cv:K:R'; ValueError for anything else."""
  parts = spec.split(":")
  try:
    if parts[0] == "cv" and len(parts) == 2:
      k, r = int(parts[1]), 1
    elif parts[0] == "repeated_cv" and len(parts) == 3:
      k, r = int(parts[1]), int(parts[2])
    else:
      raise ValueError
  except ValueError:
    raise ValueError(f"protocol {spec!r}: expected official, cv:K or repeated_cv:K:R") from None
  if k < 2 or r < 1:
    raise ValueError(f"protocol {spec!r}: needs K >= 2 folds and R >= 1 repetitions")
  return k, r


def effective_protocol(task: Task, requested: str = "official") -> str:
  """The protocol a task runs under: `requested` (cv:K, repeated_cv:K:R) replaces a task's `official`
  split; the other protocols (leave-one-out, per database) are kept."""
  if requested == "official" or task.protocol != "official":
    return task.protocol
  parse_cv(requested)
  return requested


def grouped_kfold(task, index, rows, k: int, seed: int) -> list:
  """K lists of test rows: subjects dealt round-robin in a seeded order inside each stratum (their
  first class), so folds are subject-disjoint and label-stratified."""
  strata = _strata(task, index, rows, "subject_id")
  by_stratum = {}
  for subject in sorted(strata, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()):
    by_stratum.setdefault(str(strata[subject]), []).append(subject)
  fold_of, start = {}, 0
  for stratum in sorted(by_stratum):
    for i, subject in enumerate(by_stratum[stratum]):
      fold_of[subject] = (start + i) % k
    start += len(by_stratum[stratum])  # the next stratum continues where this one stopped: even sizes
  return [[r for r in rows if fold_of[str(index[r]["subject_id"])] == f] for f in range(k)]


def _cross_validation(task, index, rows, spec: str, seed: int) -> Folds:
  """Subject-grouped, label-stratified K-fold, R times with different fold seeds; each fold's valid
  set is a subject-wise `valid_fraction` of its training folds."""
  k, repetitions = parse_cv(spec)
  out = Folds([], "mean")
  for rep in range(repetitions):
    for f, test in enumerate(grouped_kfold(task, index, rows, k, seed + rep)):
      held = set(test)
      rest = [r for r in rows if r not in held]
      valid_groups = _valid_groups(_strata(task, index, rest, "subject_id"), task.valid_fraction, seed + rep)
      valid = [r for r in rest if str(index[r]["subject_id"]) in valid_groups]
      train = [r for r in rest if str(index[r]["subject_id"]) not in valid_groups]
      _add_fold(out, Fold(f"repetition {rep} fold {f}", _rows(train), _rows(valid), _rows(test)), task, index)
  return out


def make_folds(task: Task, index: list, *, seed: int = 0, check: bool = True, protocol: str = "") -> Folds:
  """The folds of `task` over a records index (dicts with id, split, subject_id, labels, metadata),
  under `protocol` (default: the task's own; see `effective_protocol`).

  With `check`, a protocol whose (only) fold cannot be scored raises ValueError saying why.
  """
  rows = [i for i, example in enumerate(index) if task.applies_to(example)]
  if not rows:
    raise ValueError(f"task {task.name}: no record carries label {task.label_key!r} with a value in "
                     f"{list(task.classes) or 'numbers'} (check --data_root and the prepare options: "
                     f"{task.prepare_command()})")
  spec = protocol or task.protocol
  protocol, _, held = spec.partition(":")
  if protocol in ("cv", "repeated_cv"):
    folds = _cross_validation(task, index, rows, spec, seed)
  elif protocol == "official":
    folds = _official(task, index, rows, seed)
  elif protocol == "within_database":
    folds = _within_database(task, index, rows, seed)
  elif protocol == "leave_database_out":
    folds = _leave_database_out(task, index, rows, held)
  elif protocol in ("loo", "loso"):
    folds = _leave_group_out(task, index, rows, "id" if protocol == "loo" else "subject_id", seed)
  else:
    raise ValueError(f"task {task.name}: unknown protocol {spec!r}")
  if check and folds.aggregate == "single":
    reason = _unusable(task, index, folds.folds[0])
    if reason:
      raise ValueError(f"task {task.name}: {reason} under protocol {task.protocol}")
  if not folds.folds:
    raise ValueError(f"task {task.name}: no usable fold ({folds.skipped})")
  return folds


def _side_size(task, index, rows) -> dict:
  out = {"recordings": len(rows), "subjects": len({str(index[r]["subject_id"]) for r in rows})}
  if not task.is_regression:
    values = [index[r]["labels"][task.label_key] for r in rows]
    out["classes"] = {str(c): values.count(c) for c in task.classes}
  return out


def _mean_size(sizes: list):
  """The per-fold mean of side sizes (nested dicts of counts), rounded."""
  if isinstance(sizes[0], dict):
    return {k: _mean_size([s[k] for s in sizes]) for k in sizes[0]}
  return int(round(float(np.mean(sizes))))


def fold_sizes(task: Task, index: list, folds: Folds) -> dict:
  """Recordings, subjects and class counts per side: train/valid of one fold (the mean per fold when
  there are several), test of every fold together."""
  out = {"folds": len(folds.folds)}
  for side in ("train", "valid"):
    out[side] = _mean_size([_side_size(task, index, getattr(f, side)) for f in folds.folds])
  out["test"] = _side_size(task, index, np.concatenate([f.test for f in folds.folds]))
  return out
