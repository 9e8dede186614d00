"""The task registry: every task's label mapping and split on real metadata, real audio listings or
faithful fixture layouts; table: specs; fold construction."""
import collections
import csv

import numpy as np
import pytest

import fixtures_layouts as fl
from acula_jax.data import datasets
from acula_jax import errors
from acula_jax.evaluators import tasks


def _index(task, data_dir, **options):
  """The records index `prepare` would write for this task (listing only: no audio is decoded)."""
  adapter = datasets.get_adapter(task.dataset)
  specs, _ = adapter.list_examples(data_dir, **{**dict(task.prepare_options), **options})
  return [{"id": s.id, "split": s.split, "subject_id": s.subject_id or s.id, "labels": s.labels,
           "metadata": s.metadata} for s in specs]


def _counts(task, index, rows=None):
  rows = range(len(index)) if rows is None else rows
  return collections.Counter(index[r]["labels"][task.label_key] for r in rows if task.applies_to(index[r]))


def _assert_disjoint(index, fold, key="subject_id"):
  sides = [{index[r][key] for r in getattr(fold, side)} for side in ("train", "valid", "test")]
  assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), fold.name


def _check_official(task, index, expected_counts):
  assert _counts(task, index) == expected_counts
  folds = tasks.make_folds(task, index)
  assert folds.aggregate == "single" and len(folds.folds) == 1
  fold = folds.folds[0]
  _assert_disjoint(index, fold)
  for side in ("train", "valid", "test"):   # Every class on every side.
    assert set(_counts(task, index, getattr(fold, side))) == set(expected_counts), side
  used = np.concatenate([fold.train, fold.valid, fold.test])
  assert len(used) == len(set(used)) == sum(expected_counts.values())
  assert all(task.target(index[r]["labels"]) == task.classes.index(index[r]["labels"][task.label_key])
             for r in used)
  return fold


def _rows(path):
  with open(path, encoding="utf-8-sig", newline="") as f:
    return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------
# Real metadata tables (shared_data/metadata).
# ----------------------------------------------------------------------------------------------------

def _icbhi(shared_data):
  task = tasks.get("t7_icbhi_copd")
  index = _index(task, shared_data / "metadata" / "ICBHI", check_audio=False, split="subject")
  recordings = {}
  for r in _rows(shared_data / "metadata" / "ICBHI" / "icbhi_metadata_with_demographics_diagnosis.csv"):
    recordings[(r["Patient_ID"], r["Recording_Index"], r["Chest_Location"], r["Equipment"])] = r["Diagnosis"]
  expected = collections.Counter(d for d in recordings.values() if d in ("COPD", "Healthy"))
  _check_official(task, index, expected)


# Counts from the table; OPERA's split (the Coswara default) also drops the participants OPERA excludes
# by id (coswara.OPERA_EXCLUDED: a male smoker excluded for cough-shallow, one of the cough pair's two
# modalities, and two males without a smoker label, excluded for every modality).
def _coswara_smoker(shared_data):
  task = tasks.get("t8_coswara_smoker")
  _check_official(task, _index(task, shared_data / "metadata" / "Coswara", check_audio=False),
                  {"non-smoker": 861, "smoker": 225 - 1})


def _coswara_sex(shared_data):
  task = tasks.get("t9_coswara_sex")
  _check_official(task, _index(task, shared_data / "metadata" / "Coswara", check_audio=False),
                  {"male": 1900 - 3, "female": 844})


def _kauh(shared_data):
  task = tasks.get("t10_kauh_obstructive")
  _check_official(task, _index(task, shared_data / "metadata" / "KAUH", check_audio=False),
                  {"healthy": 105, "obstructive": 132})


def _tr(shared_data):
  task = tasks.get("t11_tr_copd_severity")
  assert task.classes == (0, 1, 2, 3, 4)
  _check_official(task, _index(task, shared_data / "metadata" / "TR", check_audio=False),
                  {4: 204, 3: 84, 2: 84, 0: 72, 1: 60})


def _circor(label, classes):
  def check(shared_data):
    task = tasks.get(f"circor_{label}")
    folder = shared_data / "metadata" / "circor_dataset"
    expected = collections.Counter()
    for table in ("training_data", "validation_data", "test_data"):
      for r in _rows(folder / f"{table}.csv"):
        value = r["Murmur" if label == "murmur" else "Outcome"]
        if value in classes:   # "Unknown" murmurs are not part of the task.
          expected[value] += len(r["Recording locations:"].split("+"))
    index = _index(task, folder, check_audio=False)
    fold = _check_official(task, index, expected)
    assert {index[r]["split"] for r in fold.test} == {"test"}   # The published test table.
  return check


def _zchsound(shared_data):
  task = tasks.get("zchsound_diagnosis")
  _check_official(task, _index(task, shared_data / "metadata" / "ZCHSound", check_audio=False),
                  {"NORMAL": 533, "VSD": 187, "ASD": 119, "PFO": 70, "PDA": 32})


# ----------------------------------------------------------------------------------------------------
# Real audio datasets (listing only).
# ----------------------------------------------------------------------------------------------------

def _physionet_index(shared_data, name):
  task = tasks.get(name)
  index = _index(task, shared_data / "physionet2016")
  assert _counts(task, index) == {"normal": 817, "abnormal": 665}   # README of shared/data
  return task, index


def _physionet_random(shared_data):
  task, index = _physionet_index(shared_data, "physionet_random")
  fold = tasks.make_folds(task, index).folds[0]
  for side in ("train", "valid", "test"):   # Random split: every database on every side.
    assert {index[r]["metadata"]["database"] for r in getattr(fold, side)} == set("abcdef")


def _physionet_within(shared_data):
  task, index = _physionet_index(shared_data, "physionet_within_db")
  folds = tasks.make_folds(task, index)
  assert folds.aggregate == "mean" and [f.name for f in folds.folds] == [f"database {x}" for x in "abcdef"]
  for fold, letter in zip(folds.folds, "abcdef"):
    rows = np.concatenate([fold.train, fold.valid, fold.test])
    assert {index[r]["metadata"]["database"] for r in rows} == {letter}
    assert sum(index[r]["metadata"]["database"] == letter for r in range(len(index))) == len(rows)


def _physionet_ldo(letter):
  def check(shared_data):
    task, index = _physionet_index(shared_data, f"physionet_ldo_{letter}")
    fold = tasks.make_folds(task, index).folds[0]
    assert {index[r]["metadata"]["database"] for r in fold.test} == {letter}
    assert letter not in {index[r]["metadata"]["database"] for r in np.r_[fold.train, fold.valid]}
    assert len(fold.test) == sum(r["metadata"]["database"] == letter for r in index)
    assert len(fold.train) + len(fold.valid) + len(fold.test) == len(index)
  return check


def _yaseen(shared_data):
  task = tasks.get("yaseen_valve")
  index = _index(task, shared_data / "yaseen2018")
  _check_official(task, index, {c: 200 for c in ("normal", "mitral_regurgitation", "mitral_stenosis",
                                                  "mitral_valve_prolapse")})


def _hls(name, label, part):
  def check(shared_data):
    task = tasks.get(name)
    index = _index(task, shared_data / "hls_cmds")
    table = _rows(shared_data / "hls_cmds" / f"{part}.csv")
    mapping = datasets.get_adapter("hls_cmds").LABEL_MAPS[label]
    assert _counts(task, index) == collections.Counter(mapping[r[f"{'Heart' if part == 'HS' else 'Lung'} Sound Type"]]
                                                       for r in table)
    folds = tasks.make_folds(task, index)
    assert folds.aggregate == "pooled" and len(folds.folds) == len(index) == 50
    assert sorted(int(f.test[0]) for f in folds.folds) == list(range(50))
    for fold in folds.folds:
      assert len(fold.test) == 1 and len(fold.train) + len(fold.valid) == 49
      _assert_disjoint(index, fold, "id")
    # The validation set is fixed (seeded) and keeps most of every class for training.
    valid = set(folds.folds[0].valid) | set(folds.folds[1].valid)
    assert 5 <= len(valid) <= 15
  return check


# ----------------------------------------------------------------------------------------------------
# Fixture layouts (datasets without public metadata here).
# ----------------------------------------------------------------------------------------------------

def _ukcovid(name, modality_ids):
  def check(tmp_path):
    fl.ukcovid(tmp_path)
    task = tasks.get(name)
    index = _index(task, tmp_path)
    assert {r["id"]: (r["split"], r["labels"]["covid"]) for r in index} == modality_ids
    fold = tasks.make_folds(task, index, check=False).folds[0]   # Too few rows for both classes.
    assert [index[r]["split"] for r in np.r_[fold.train, fold.valid, fold.test]] == [
        s for s in ("train", "valid", "test") for r in index if r["split"] == s]
    assert task.classes == ("negative", "positive")
  return check


def _coughvid(name, expected):
  def check(tmp_path):
    fl.coughvid(tmp_path)
    task = tasks.get(name)
    index = _index(task, tmp_path, check_audio=False, min_cough_detected=0.0)
    assert {r["id"]: r["labels"][task.label_key] for r in index if task.applies_to(r)} == expected
  return check


def _mmlung(name, label, modality):
  def check(tmp_path):
    facts = fl.mmlung(tmp_path, table="csv")
    task = tasks.get(name)
    assert task.is_regression and task.protocol == "loso" and task.head == "ols"
    index = _index(task, tmp_path)
    assert all(r["metadata"]["sound"] == modality for r in index)
    assert {r["subject_id"]: task.target(r["labels"]) for r in index} == {
        p: dict(zip(("fvc", "fev1", "fev1_fvc"), t))[label] for p, t in facts["targets"].items() if p != "10"}
    folds = tasks.make_folds(task, index)
    assert folds.aggregate == "per_fold" and len(folds.folds) == 3
    for fold in folds.folds:   # Least squares uses every other participant; no validation set.
      assert len(fold.valid) == 0 and len(fold.train) == 2 and len(fold.test) == 1
      _assert_disjoint(index, fold)
  return check


def _nosemic(tmp_path):
  facts = fl.nosemic(tmp_path)
  task = tasks.get("t19_nosemic_respiratory_rate")
  assert task.head == "mlp" and dict(task.probe)["l2"] == 0.1
  index = _index(task, tmp_path)
  assert len(index) == facts["n"] and {r["id"]: task.target(r["labels"]) for r in index}["4_1_2_18.5"] == 18.5
  folds = tasks.make_folds(task, index)
  assert [f.name for f in folds.folds] == [f"subject_id {u}" for u in ("4", "5", "6", "7")]
  for fold in folds.folds:
    _assert_disjoint(index, fold)
    assert len({index[r]["subject_id"] for r in fold.test}) == 1


def _demo(name):
  def check(tiny_corpus):
    from acula_jax.evaluators import features as features_lib
    task = tasks.get(name)
    index = features_lib.records_index(tiny_corpus / "records")
    sound_type = dict(task.filters)["sound_type"][0]
    assert all(r["metadata"]["sound_type"] == sound_type for r in index if task.applies_to(r))
    assert sum(task.applies_to(r) for r in index) == sum(r["metadata"]["sound_type"] == sound_type and
                                                        task.label_key in r["labels"] for r in index)
    fold = tasks.make_folds(task, index).folds[0]
    _assert_disjoint(index, fold)
    assert {index[r]["split"] for r in fold.test} == {"test"}
  return check


CASES = {
    "t1_ukcovid_exhalation": ("fixture", _ukcovid("t1_ukcovid_exhalation", {
        "p1_exhalation": ("train", "positive"), "p2_exhalation": ("valid", "negative"),
        "p5_exhalation": ("test", "positive")})),
    "t2_ukcovid_cough": ("fixture", _ukcovid("t2_ukcovid_cough", {"p1_cough": ("train", "positive"),
                                                                  "p5_cough": ("test", "positive")})),
    "t5_coughvid_covid": ("fixture", _coughvid("t5_coughvid_covid", {"aaa": "negative", "bbb": "positive",
                                                                     "ccc": "negative", "eee": "negative"})),
    "t6_coughvid_sex": ("fixture", _coughvid("t6_coughvid_sex", {"aaa": "male", "bbb": "female", "ccc": "male",
                                                                 "eee": "female"})),
    "t7_icbhi_copd": ("shared", _icbhi),
    "t8_coswara_smoker": ("shared", _coswara_smoker),
    "t9_coswara_sex": ("shared", _coswara_sex),
    "t10_kauh_obstructive": ("shared", _kauh),
    "t11_tr_copd_severity": ("shared", _tr),
    "t13_mmlung_fvc_breath": ("fixture", _mmlung("t13_mmlung_fvc_breath", "fvc", "deep_breath")),
    "t14_mmlung_fev1_breath": ("fixture", _mmlung("t14_mmlung_fev1_breath", "fev1", "deep_breath")),
    "t15_mmlung_fev1_fvc_breath": ("fixture", _mmlung("t15_mmlung_fev1_fvc_breath", "fev1_fvc", "deep_breath")),
    "t16_mmlung_fvc_vowel": ("fixture", _mmlung("t16_mmlung_fvc_vowel", "fvc", "vowel_o")),
    "t17_mmlung_fev1_vowel": ("fixture", _mmlung("t17_mmlung_fev1_vowel", "fev1", "vowel_o")),
    "t18_mmlung_fev1_fvc_vowel": ("fixture", _mmlung("t18_mmlung_fev1_fvc_vowel", "fev1_fvc", "vowel_o")),
    "t19_nosemic_respiratory_rate": ("fixture", _nosemic),
    "circor_murmur": ("shared", _circor("murmur", ("Absent", "Present"))),
    "circor_outcome": ("shared", _circor("outcome", ("Normal", "Abnormal"))),
    "zchsound_diagnosis": ("shared", _zchsound),
    "physionet_random": ("shared", _physionet_random),
    "physionet_within_db": ("shared", _physionet_within),
    "physionet_ldo_e": ("shared", _physionet_ldo("e")),
    "physionet_ldo_a": ("shared", _physionet_ldo("a")),
    "yaseen_valve": ("shared", _yaseen),
    "hls_heart": ("shared", _hls("hls_heart", "heart_sound", "HS")),
    "hls_lung": ("shared", _hls("hls_lung", "lung_sound", "LS")),
    "heart_murmur": ("corpus", _demo("heart_murmur")),
    "heart_diagnosis": ("corpus", _demo("heart_diagnosis")),
    "lung_sound": ("corpus", _demo("lung_sound")),
    "lung_diagnosis": ("corpus", _demo("lung_diagnosis")),
}


def test_every_registered_task_has_a_label_and_split_test():
  assert set(tasks.registry()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_task_labels_and_split(name, request, tmp_path):
  source, check = CASES[name]
  if source == "shared":
    check(request.getfixturevalue("shared_data"))
  elif source == "corpus":
    check(request.getfixturevalue("tiny_corpus"))
  else:
    check(tmp_path)


def test_registry_covers_the_opera_tasks_and_groups():
  reg = tasks.registry()
  opera = {t.opera_id: t for t in reg.values() if t.opera_id}
  assert sorted(opera, key=lambda s: int(s[1:])) == [f"T{i}" for i in (1, 2, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15,
                                                                        16, 17, 18, 19)]
  for task_id, task in opera.items():   # Labels come from the adapters' OPERA_TASKS.
    assert task.label_key == datasets.get_adapter(task.dataset).OPERA_TASKS[task_id][0]
    assert task.metric == ("mae" if task.is_regression else "auroc")
  groups = tasks.groups()
  assert len(groups["opera"]) == 16 and groups["cardiac"] == ["circor_murmur", "circor_outcome", "zchsound_diagnosis"]
  assert groups["acula"] == groups["opera"] + groups["cardiac"]
  assert [t.name for t in tasks.resolve("physionet,physionet_random,demo")] == groups["physionet"] + groups["demo"]
  assert tasks.get("t8_coswara_smoker").audio_seconds("opera_ce") == 2.0
  assert tasks.get("t8_coswara_smoker").audio_seconds("opera_ct") == 8.0
  assert tasks.get("t7_icbhi_copd").prepare_command("/d", "/root") == (
      "python -m acula_jax.data.prepare --dataset=icbhi --data_dir=/d --output=/root/icbhi_copd --option=task=copd")
  with pytest.raises(ValueError, match="unknown task"):
    tasks.resolve("t3_covid19sounds")


def test_ordered_classes_puts_the_negative_class_first():
  assert tasks.ordered_classes(["COPD", "Healthy"]) == ("Healthy", "COPD")
  assert tasks.ordered_classes([3, 1, 2]) == (1, 2, 3)
  assert tasks.ordered_classes(["smoker", "non-smoker"]) == ("non-smoker", "smoker")


# ----------------------------------------------------------------------------------------------------
# table: specs.
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(name="table_records", scope="module")
def table_records_fixture(tmp_path_factory):
  """Records as `prepare --dataset=table` writes them: a class label and a numeric target per row."""
  from acula_jax.data import records  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("table")
  rng = np.random.default_rng(0)
  examples = []
  for i in range(24):
    examples.append({"id": f"rec{i}", "subject_id": f"s{i // 2}", "split": ("train", "valid", "test")[i % 3],
                     "audio": (0.1 * rng.normal(size=800)).astype(np.float32), "sample_rate": 16000,
                     "num_samples": 800, "labels": {"diagnosis": ("asthma", "healthy")[i % 2],
                                                    "fev1": round(2.0 + 0.13 * i, 2), "grade": i % 3},
                     "metadata": {"age": 30 + i}})
  records.write_audio_records(root / "mine", examples, dataset="table")
  return root / "mine"


def test_table_spec_infers_the_kind(table_records):
  task = tasks.parse_spec(f"table:{table_records}:diagnosis")
  assert task.kind == tasks.CLASSIFICATION and task.classes == ("asthma", "healthy")
  assert task.records_dir == str(table_records) and task.name == "table_mine_diagnosis"
  regression = tasks.parse_spec(f"table:{table_records}:fev1")
  assert regression.is_regression and regression.metric == "mae" and regression.head == "mlp"
  few_numbers = tasks.parse_spec(f"table:{table_records}:grade")   # 3 distinct numbers: classes
  assert few_numbers.kind == tasks.CLASSIFICATION and few_numbers.classes == (0, 1, 2)
  forced = tasks.parse_spec(f"table:{table_records}:grade:regression")
  assert forced.is_regression
  assert tasks.parse_spec(f"table:{table_records}:fev1:classification").kind == tasks.CLASSIFICATION
  assert [t.name for t in tasks.resolve(f"heart_murmur,table:{table_records}:diagnosis")] == [
      "heart_murmur", "table_mine_diagnosis"]


def test_table_spec_errors(table_records):
  with pytest.raises(ValueError, match="expected table:DIR:LABEL_COLUMN"):
    tasks.parse_spec("table:onlyadir")
  with pytest.raises(errors.UsageError, match=r"no label column 'nope'; its label columns are \[.diagnosis., .fev1., .grade.\]"):
    tasks.parse_spec(f"table:{table_records}:nope")
  with pytest.raises(ValueError, match="non-numeric"):
    tasks.parse_spec(f"table:{table_records}:diagnosis:regression")


def test_official_protocol_carves_a_subject_wise_valid_split_when_missing():
  task = tasks.Task("t", "table", "mixed", "y", ("a", "b"), valid_fraction=0.25)
  index = [{"id": f"r{i}", "split": "test" if i >= 40 else "train", "subject_id": f"s{i // 2}",
            "labels": {"y": "ab"[i % 2]}, "metadata": {}} for i in range(48)]
  fold = tasks.make_folds(task, index).folds[0]
  assert len(fold.valid) and len(fold.train) + len(fold.valid) == 40 and len(fold.test) == 8
  _assert_disjoint(index, fold)
  assert tasks.make_folds(task, index).folds[0].valid.tolist() == fold.valid.tolist()   # Deterministic.


def test_folds_explain_missing_labels():
  task = tasks.get("heart_murmur")
  with pytest.raises(ValueError, match="no record carries label 'murmur'"):
    tasks.make_folds(task, [{"id": "x", "split": "train", "subject_id": "x", "labels": {}, "metadata": {}}])
