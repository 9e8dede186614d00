"""Dataset adapters: real metadata tables (counts, labels, subject-wise splits, determinism) and fake layouts."""

import collections
import csv
import os
import pathlib
import shutil
import warnings

import numpy as np
import pytest

import fixtures_layouts as fl
from acula_jax.data.datasets import get_adapter

ALL = ("icbhi", "circor", "kauh", "sprsound", "zchsound", "respiratory_tr", "coswara", "coughvid", "ukcovid",
       "mmlung", "nosemic")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
  return fl.all_layouts(str(tmp_path_factory.mktemp("layouts")))


def _meta(shared_data, name):
  return shared_data / "metadata" / name


def _rows(path):
  with open(path, encoding="utf-8-sig", newline="") as f:
    return list(csv.DictReader(f))


def _assert_subject_disjoint(specs):
  splits = collections.defaultdict(set)
  for s in specs:
    splits[s.subject_id].add(s.split)
  crossing = {k: v for k, v in splits.items() if len(v) > 1}
  assert not crossing, f"subjects in several splits: {list(crossing.items())[:5]}"


def _assert_deterministic(name, data_dir, **kw):
  adapter = get_adapter(name)
  a, _ = adapter.list_examples(data_dir, **kw)
  b, _ = adapter.list_examples(data_dir, **kw)
  assert [(s.id, s.split, s.labels) for s in a] == [(s.id, s.split, s.labels) for s in b]
  c, _ = adapter.list_examples(data_dir, **dict(kw, seed=kw.get("seed", 0) + 1))
  assert [s.split for s in a] != [s.split for s in c]   # The seed matters.


def test_every_adapter_declares_the_interface():
  for name in ALL:
    adapter = get_adapter(name)
    assert adapter.NAME == name and adapter.MODALITY in ("heart", "lung", "cough", "breath", "mixed")
    assert isinstance(adapter.LABEL_MAPS, dict) and adapter.LABEL_MAPS
    assert "Layout relied on" in adapter.__doc__ and callable(adapter.list_examples)


# ----------------------------------------------------------------------------------------------------
# Real metadata tables (no audio: check_audio=False).
# ----------------------------------------------------------------------------------------------------

def test_icbhi_real_table(shared_data):
  data = _meta(shared_data, "ICBHI")
  icbhi = get_adapter("icbhi")
  specs, skipped = icbhi.list_examples(data, check_audio=False, split="subject")
  assert not skipped and len(specs) == 920 and len({s.subject_id for s in specs}) == 126
  per_patient = collections.Counter({s.subject_id: s.labels["diagnosis"] for s in specs}.values())
  assert per_patient == {"COPD": 64, "Healthy": 26, "URTI": 14, "Bronchiectasis": 7, "Pneumonia": 6,
                         "Bronchiolitis": 6, "LRTI": 2, "Asthma": 1}
  _assert_subject_disjoint(specs)
  assert {s.split for s in specs} == {"train", "valid", "test"}
  cycles, _ = icbhi.list_examples(data, check_audio=False, split="subject", per_cycle=True)
  rows = _rows(data / icbhi.TABLE_FILE)
  assert len(cycles) == len(rows) == 6898
  assert sum(c.labels["crackles"] for c in cycles) == sum(int(r["Crackles"]) for r in rows)
  assert sum(c.labels["wheezes"] for c in cycles) == sum(int(r["Wheezes"]) for r in rows)
  assert all(0 <= c.start_s < c.end_s for c in cycles)
  copd, skipped = icbhi.list_examples(data, check_audio=False, split="subject", task="copd")
  expected = collections.Counter(s.labels["diagnosis"] for s in specs if s.labels["diagnosis"] in ("COPD", "Healthy"))
  assert collections.Counter(s.labels["copd"] for s in copd) == expected
  assert len(skipped) == 920 - len(copd) and all("not part of task copd" in k.reason for k in skipped)
  _assert_deterministic("icbhi", data, check_audio=False, split="subject")


def test_circor_real_tables(shared_data):
  data = _meta(shared_data, "circor_dataset")
  specs, skipped = get_adapter("circor").list_examples(data, check_audio=False)
  assert not skipped
  patients = {s: _rows(data / f"{t}.csv") for s, t in (("train", "training_data"), ("valid", "validation_data"),
                                                       ("test", "test_data"))}
  assert {k: len(v) for k, v in patients.items()} == {"train": 942, "valid": 149, "test": 477}
  assert len(specs) == sum(len(r["Recording locations:"].split("+")) for v in patients.values() for r in v)
  for split, rows in patients.items():   # Official split, patient-level labels as published.
    got = {s.id.split("_")[0]: s.labels["murmur"] for s in specs if s.split == split}
    assert got == {r["Patient ID"]: r["Murmur"] for r in rows}
  _assert_subject_disjoint(specs)   # Including the campaign links (Additional ID).
  linked = [s for s in specs if s.subject_id != s.id.split("_")[0]]
  assert linked and all(min(s.subject_id, s.id.split("_")[0], key=lambda x: (len(x), x)) == s.subject_id
                        for s in linked)
  for s in specs:
    if s.labels["murmur"] == "Present":
      assert s.labels["murmur_here"] in ("Present", "Absent")
  subject, _ = get_adapter("circor").list_examples(data, check_audio=False, split="subject")
  _assert_subject_disjoint(subject)
  _assert_deterministic("circor", data, check_audio=False, split="subject")


def test_kauh_real_table(shared_data):
  data = _meta(shared_data, "KAUH")
  kauh = get_adapter("kauh")
  specs, skipped = kauh.list_examples(data, check_audio=False)
  assert not skipped and len(specs) == 336 and len({s.subject_id for s in specs}) == 112
  assert all(n == 3 for n in collections.Counter(s.subject_id for s in specs).values())
  counts = collections.Counter(s.labels["diagnosis"] for s in specs)
  assert counts["normal"] == 105 and counts["asthma"] == 96 and counts["copd"] == 27
  _assert_subject_disjoint(specs)
  t10, skipped = kauh.list_examples(data, check_audio=False, task="obstructive")
  # OPERA counts 129 obstructive: its case-sensitive "COPD" match drops the 3 recordings spelled "copd".
  assert collections.Counter(s.labels["obstructive"] for s in t10) == {"healthy": 105, "obstructive": 132}
  by_id = {s.id: s for s in specs}
  assert by_id["BP52"].metadata["chest_location"] == "posterior left lower"   # Table: "Posterior Lower Lower".
  assert by_id["BP33"].labels["wheezes"] == 1 and by_id["BP33"].metadata["sound_type"] == "expiratory wheezes"
  _assert_deterministic("kauh", data, check_audio=False)


def test_respiratory_tr_real_table(shared_data):
  data = _meta(shared_data, "TR")
  specs, skipped = get_adapter("respiratory_tr").list_examples(data, check_audio=False)
  assert not skipped and len(specs) == 504 and len({s.subject_id for s in specs}) == 42
  assert collections.Counter(s.labels["copd_severity"] for s in specs) == {4: 204, 3: 84, 2: 84, 0: 72, 1: 60}
  _assert_subject_disjoint(specs)
  train_levels = {s.labels["copd_severity"] for s in specs if s.split == "train"}
  assert train_levels == {0, 1, 2, 3, 4}   # Stratified by severity.
  _assert_deterministic("respiratory_tr", data, check_audio=False)


def test_zchsound_real_table(shared_data):
  data = _meta(shared_data, "ZCHSound")
  zch = get_adapter("zchsound")
  clean, skipped = zch.list_examples(data, check_audio=False)
  assert not skipped and len(clean) == 941
  assert collections.Counter(s.labels["diagnosis"] for s in clean) == {"NORMAL": 533, "VSD": 187, "ASD": 119,
                                                                       "PFO": 70, "PDA": 32}
  both, _ = zch.list_examples(data, check_audio=False, subset="both")
  assert len(both) == 1259 and len({s.id for s in both}) == 1259
  _assert_deterministic("zchsound", data, check_audio=False)


def test_coswara_real_tables(shared_data):
  data = _meta(shared_data, "Coswara")
  coswara = get_adapter("coswara")
  sex, skipped = coswara.list_examples(data, check_audio=False, task="sex", split="seeded")
  assert len(sex) == 2744 and [k.reason for k in skipped] == ["unknown label 'other' for task sex"] * 2
  assert collections.Counter(s.labels["sex"] for s in sex) == {"male": 1900, "female": 844}
  smoker, skipped = coswara.list_examples(data, check_audio=False, task="smoker", split="seeded")
  assert collections.Counter(s.labels["smoker"] for s in smoker) == {"non-smoker": 861, "smoker": 225}
  assert len(skipped) == 2746 - 1086
  for split in ("train", "valid", "test"):   # Stratified: both classes in every split.
    assert {s.labels["smoker"] for s in smoker if s.split == split} == {"smoker", "non-smoker"}
  _assert_deterministic("coswara", data, check_audio=False, task="smoker", split="seeded")


# OPERA's T8/T9 split, recomputed independently of the adapter: OPERA's coswara_processing.py keeps
# participants in combined_data.csv order, drops three ids it hard-codes (the third only for cough-shallow)
# and quality-0 files of both cough modalities; linear_eval.py then draws test and valid with sklearn.
_OPERA_COSWARA_EXCLUDED = {"C7Km0KttQRMMM6UoyocajfgZAOB3": "all", "kgjTguvo3vZJTO7F1qO9GxEicbA3": "all",
                           "9hftEYixyhP1Neeq3fB7ZwITQC53": "cough-shallow"}


def _opera_coswara_reference(ids_in_order, codes):
  """{id: split} as OPERA's linear_evaluation_coswara cuts its feature arrays (map_google=False)."""
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
  ids, codes = np.asarray(ids_in_order), np.asarray(codes)
  x_train, x_test, y_train, _ = train_test_split(ids, codes, test_size=0.2, random_state=1337, stratify=codes)
  x_train, x_valid, _, _ = train_test_split(x_train, y_train, test_size=0.2, random_state=1337, stratify=y_train)
  return {**{i: "train" for i in x_train}, **{i: "valid" for i in x_valid}, **{i: "test" for i in x_test}}


def test_coswara_opera_split_real_tables(shared_data):
  """The AcuLa tables keep combined_data.csv's order; without annotations the quality filter is off (warned)."""
  data = _meta(shared_data, "Coswara")
  coswara = get_adapter("coswara")
  for task, table, column, codes in (("sex", "gender_classification.csv", "gender", {"male": 0, "female": 1}),
                                     ("smoker", "smoker_classification.csv", "smoker", {"no": 0, "yes": 1})):
    rows = [r for r in _rows(data / table) if r[column] in codes]
    kept = [r for r in rows if r["id"] not in _OPERA_COSWARA_EXCLUDED]
    want = _opera_coswara_reference([r["id"] for r in kept], [codes[r[column]] for r in kept])
    with pytest.warns(UserWarning, match="quality filter cannot be applied"):
      specs, skipped = coswara.list_examples(data, check_audio=False, task=task, split="opera")
    assert {s.subject_id: s.split for s in specs} == want
    excluded = [k for k in skipped if k.reason.startswith("excluded by OPERA")]
    assert sorted(k.where for k in excluded) == sorted({r["id"] for r in rows} & set(_OPERA_COSWARA_EXCLUDED))
    assert len(specs) + len(skipped) == len(_rows(data / "gender_classification.csv"))   # nothing lost silently
    with pytest.warns(UserWarning):   # "auto" (the default) is OPERA's split when a task is given; no seed.
      default, _ = coswara.list_examples(data, check_audio=False, task=task, seed=7)
    assert [(s.id, s.split) for s in default] == [(s.id, s.split) for s in specs]
  counts = collections.Counter(want.values())   # smoker: 1085 participants, 20% test, 20% of the rest valid.
  assert counts == {"train": 694, "valid": 174, "test": 217}


_COSWARA_OPERA_TEST_SETS = {   # From OPERA's feature/coswara_eval/cough_aligned_*_w_cough-shallow.npy.
    "sex": (2496, 500, "8ee00de093bbfdc0baf38df9f64a98837ea3c456d6d140610591c8ddbf404f93"),
    "smoker": (948, 190, "075fb485c7e9e5721bfc1413265739a64ad2cb59ca677b469a39f80efd398826")}


@pytest.mark.skipif(not os.environ.get("ACULA_COSWARA_DATA"), reason="set ACULA_COSWARA_DATA to a Coswara-Data "
                    "checkout (combined_data.csv, annotations/) to compare with OPERA's shipped split")
def test_coswara_opera_split_equals_operas_shipped_split():
  import hashlib  # pylint: disable=import-outside-toplevel
  for task, (n, n_test, digest) in _COSWARA_OPERA_TEST_SETS.items():
    specs, _ = get_adapter("coswara").list_examples(os.environ["ACULA_COSWARA_DATA"], check_audio=False,
                                                   task=task, split="opera")
    test = sorted(s.subject_id for s in specs if s.split == "test")
    assert (len(specs), len(test), hashlib.sha256("\n".join(test).encode()).hexdigest()) == (n, n_test, digest)


def test_sprsound_disease_lookup_from_real_tables(shared_data):
  from acula_jax.data.datasets import sprsound  # pylint: disable=import-outside-toplevel
  skipped = []
  diseases = sprsound._diseases(str(_meta(shared_data, "SPRSound")), skipped)  # pylint: disable=protected-access
  assert not skipped and len(diseases) == 288
  assert collections.Counter(diseases.values())["Control Group"] > 0


# ----------------------------------------------------------------------------------------------------
# Fake layouts with audio: skipped rows are reported with reasons, specs point at real files.
# ----------------------------------------------------------------------------------------------------

def _reasons(skipped):
  return sorted(k.reason.split(":")[0].split(" (")[0] for k in skipped)


def _check_paths(specs):
  for s in specs:
    assert os.path.isfile(s.path), s.path


def test_icbhi_release_layout(layouts):
  folder, facts = layouts["icbhi"]
  icbhi = get_adapter("icbhi")
  specs, skipped = icbhi.list_examples(folder)
  assert [s.id for s in specs] == facts["usable"]
  _check_paths(specs)
  assert {s.id: s.split for s in specs}["101_1b1_Al_sc_Meditron"] == "test"
  assert {s.split for s in specs if s.id.startswith(("102", "103", "105"))} <= {"train", "valid"}
  assert _reasons(skipped) == sorted(["unparseable cycle annotation ['bad', 'line', 'here']",
                                      "unparseable cycle annotation ['2.0', '1.0', '0', '0']", "missing audio file",
                                      "unknown label in file name", "not in the official train/test list"])
  meta = specs[0].metadata
  assert meta["age"] == 3 and meta["sex"] == "female" and meta["chest_location"] == "anterior left"
  assert "bmi" not in meta and meta["child_height_cm"] == 99
  cycles, _ = icbhi.list_examples(folder, per_cycle=True)
  c101 = [c for c in cycles if c.id.startswith("101_")]
  assert len(c101) == facts["cycles_101"] and [c.labels["lung_sound"] for c in c101] == ["normal", "crackle", "both"]
  assert (c101[1].start_s, c101[1].end_s) == (1.5, 3.2)
  assert len([c for c in cycles if c.id.startswith("103_")]) == facts["cycles_103"]
  copd, _ = icbhi.list_examples(folder, task="copd")
  assert {s.labels["copd"] for s in copd} == {"COPD", "Healthy"} and len(copd) == 4
  assert icbhi.official_overlap(icbhi.read_official_split(os.path.join(folder, icbhi.SPLIT_FILE))) == []
  with pytest.raises(ValueError, match="task"):
    icbhi.list_examples(folder, task="asthma")


def test_circor_layout(layouts):
  folder, facts = layouts["circor"]
  specs, skipped = get_adapter("circor").list_examples(folder)
  assert {s.id for s in specs} == facts["recordings"]
  _check_paths(specs)
  assert {s.split for s in specs if s.id.startswith("50001")} == {"valid"}
  assert {s.subject_id for s in specs if s.id.startswith(("2530", "50001"))} == {"2530"}   # Linked campaign ids.
  assert _reasons(skipped) == ["missing audio file", "unknown label", "unknown label"]
  by_id = {s.id: s for s in specs}
  assert by_id["9979_AV"].labels["murmur_here"] == "Present" and by_id["9979_PV"].labels["murmur_here"] == "Absent"
  assert by_id["9979_AV"].metadata["systolic_murmur_grading"] == "III/VI"
  assert by_id["2530_PV_2"].metadata["recording_location"] == "PV"


def test_kauh_layout(layouts):
  folder, facts = layouts["kauh"]
  specs, skipped = get_adapter("kauh").list_examples(folder)
  assert len(specs) == facts["n"] and {s.subject_id for s in specs} == facts["subjects"]
  _check_paths(specs)
  _assert_subject_disjoint(specs)
  assert _reasons(skipped) == ["unknown label in 'BP99_Flu,N,P L L,40,M.wav'", "unparseable file name in 'junk.wav'"]
  by_id = {s.id: s for s in specs}
  assert "chest_location" not in by_id["BP52"].metadata and by_id["BP52"].metadata["chest_zone_code"] == "P L R"
  assert by_id["DP71"].labels == {"diagnosis": "copd", "crackles": 1, "wheezes": 1, "obstructive": "obstructive"}
  assert by_id["DP71"].metadata["sound_type"] == "inspiratory crackles, expiratory wheezes"


def test_respiratory_tr_layout(layouts):
  folder, facts = layouts["respiratory_tr"]
  specs, skipped = get_adapter("respiratory_tr").list_examples(folder)
  assert len(specs) == facts["usable"]
  _check_paths(specs)
  assert _reasons(skipped) == ["no label for patient 'H077' in " + os.path.join(folder, "Labels.csv")] * 2 + [
      "unknown label"] * 2


def test_zchsound_layout(layouts):
  folder, facts = layouts["zchsound"]
  zch = get_adapter("zchsound")
  specs, skipped = zch.list_examples(folder)
  assert len(specs) == facts["clean_usable"]
  _check_paths(specs)
  assert _reasons(skipped) == ["missing audio file", "unknown label"]
  assert {s.id: s.metadata["age_days"] for s in specs}["ZCH0002"] == 186
  noisy, _ = zch.list_examples(folder, subset="noisy")
  assert [s.id for s in noisy] == ["ZCH0942"] and noisy[0].metadata["recording_quality"] == "Noise"


def test_sprsound_layout(layouts):
  folder, facts = layouts["sprsound"]
  spr = get_adapter("sprsound")
  specs, skipped = spr.list_examples(folder)
  assert collections.Counter(s.split for s in specs if s.split != "valid") + collections.Counter(
      "train" for s in specs if s.split == "valid") == {"train": facts["train"], "test": facts["test"]}
  _check_paths(specs)
  assert _reasons(skipped) == ["intra-patient test set", "missing audio file", "poor quality recording",
                               "unknown label"]
  by_id = {s.id: s for s in specs}
  assert by_id["65058931_3.4_1_p2_1086"].labels["disease"] == "Asthma"
  assert by_id["65058931_3.4_1_p2_1086"].metadata["sex"] == "female"
  events, _ = spr.list_examples(folder, per_cycle=True)
  e = [x for x in events if x.id.startswith("65058931_3.4_1_p2_1086")]
  assert [(x.start_s, x.end_s, x.labels["event_type"]) for x in e] == [(0.1, 0.9, "Normal"), (1.0, 1.8, "Wheeze")]
  intra, _ = spr.list_examples(folder, intra_test=True)
  assert any(s.metadata.get("test_set") == "intra" and s.split == "test" for s in intra)


def test_coswara_layout(layouts):
  folder, facts = layouts["coswara"]
  coswara = get_adapter("coswara")
  sex, skipped = coswara.list_examples(folder, task="sex", split="seeded")
  assert {s.subject_id for s in sex} == facts["sex_usable"]
  _check_paths(sex)
  assert _reasons(skipped) == ["cough-shallow quality 0 < 1", "missing audio file", "unknown label 'pnts' for task sex"]
  smoker, _ = coswara.list_examples(folder, task="smoker", split="seeded")
  assert {s.subject_id for s in smoker} == facts["smoker_usable"]
  u2 = {s.subject_id: s for s in sex}["u2"]
  assert u2.metadata["symptoms"] == ["cough", "fever"] and u2.metadata["asthma"] is True


def test_coughvid_layout(layouts):
  folder, _ = layouts["coughvid"]
  coughvid = get_adapter("coughvid")
  specs, skipped = coughvid.list_examples(folder)
  assert sorted(s.id for s in specs) == ["aaa", "bbb", "ddd"]
  _check_paths(specs)
  assert {s.id: s.path.rsplit(".", 1)[1] for s in specs} == {"aaa": "wav", "bbb": "webm", "ddd": "wav"}
  assert {s.id: s.metadata.get("format") for s in specs}["bbb"] == "webm"
  assert _reasons(skipped) == ["cough_detected 0.5 < 0.8", "missing audio file for uuid eee",
                               "unparseable cough_detected 'notanumber'"]
  covid, skipped = coughvid.list_examples(folder, task="covid")
  assert {s.id: s.labels["covid"] for s in covid} == {"aaa": "negative", "bbb": "positive"}
  assert any("label for task covid" in k.reason for k in skipped)


def test_ukcovid_layout(layouts):
  folder, _ = layouts["ukcovid"]
  uk = get_adapter("ukcovid")
  specs, skipped = uk.list_examples(folder)
  assert {s.id: (s.split, s.labels["covid"]) for s in specs} == {
      "p1_exhalation": ("train", "positive"), "p2_exhalation": ("valid", "negative"),
      "p5_exhalation": ("test", "positive")}
  _check_paths(specs)
  assert _reasons(skipped) == ["longitudinal test set", "missing audio file", "unknown label"]
  cough, skipped = uk.list_examples(folder, modality="cough")
  assert sorted(s.id for s in cough) == ["p1_cough", "p5_cough"]
  assert any(k.reason.startswith("no cough recording") for k in skipped)
  longitudinal, _ = uk.list_examples(folder, include_longitudinal=True, check_audio=False)
  assert {s.id: s.split for s in longitudinal}["p4_exhalation"] == "test"


# ----------------------------------------------------------------------------------------------------
# OPERA's splits (split="opera") on small layouts with OPERA's file names and formats, written per test.
# ----------------------------------------------------------------------------------------------------

def _write(path, text):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _coswara_opera_layout(root):
  """25 participants with both cough annotations; returns OPERA's list order and label codes."""
  root = pathlib.Path(root)
  ids = [f"p{i:02d}" for i in range(24)] + ["kgjTguvo3vZJTO7F1qO9GxEicbA3"]   # the last: hard-coded by OPERA
  sexes = {pid: "female" if i % 3 == 0 else "male" for i, pid in enumerate(ids)}
  sexes["p05"] = "pnts"
  order = list(reversed(ids))   # combined_data.csv order, not sorted: OPERA's split depends on it
  _write(root / "combined_data.csv", "id,a,covid_status,g,smoker\n" +
         "".join(f"{pid},30,healthy,{sexes[pid]},\n" for pid in order))
  bad = {"cough-shallow": "p01", "cough-heavy": "p02"}   # quality 0 in one modality of the pair only
  for modality in ("cough-shallow", "cough-heavy"):
    _write(root / "annotations" / f"{modality}_labels.csv", "FILENAME, QUALITY\n" +
           "".join(f"{pid}_{modality},{0 if bad[modality] == pid else 2}\n" for pid in ids))
  for pid in ids:
    if pid != "p03":   # p03's cough-shallow audio is missing
      fl.write_wav(root / "Extracted_data" / "20200101" / pid / "cough-shallow.wav", seconds=0.01)
  members = [pid for pid in order if pid not in ("p01", "p02", "p05", "kgjTguvo3vZJTO7F1qO9GxEicbA3")]
  return members, [int(sexes[pid] == "female") for pid in members]


def test_coswara_opera_split_layout(tmp_path):
  members, codes = _coswara_opera_layout(tmp_path)
  coswara = get_adapter("coswara")
  with warnings.catch_warnings():
    warnings.simplefilter("error")   # both annotation files exist: no approximation warning
    specs, skipped = coswara.list_examples(tmp_path, task="sex", split="opera")
    listed, _ = coswara.list_examples(tmp_path, task="sex", split="opera", check_audio=False)
  want = _opera_coswara_reference(members, codes)
  assert {s.subject_id: s.split for s in listed} == want
  # Audio is checked after the split: p03 is dropped (counted) and nobody else moves.
  assert {s.subject_id: s.split for s in specs} == {k: v for k, v in want.items() if k != "p03"}
  _check_paths(specs)
  assert {k.where: k.reason.split(" (")[0] for k in skipped} == {
      "p01": "cough-shallow quality 0 < 1", "p02": "cough-heavy quality 0 < 1", "p03": "missing audio file",
      "p05": "unknown label 'pnts' for task sex", "kgjTguvo3vZJTO7F1qO9GxEicbA3": "excluded by OPERA"}
  assert len(specs) + len(skipped) == 25
  with pytest.raises(ValueError, match="needs task"):
    coswara.list_examples(tmp_path, split="opera")
  with pytest.raises(ValueError, match="needs task"):
    coswara.list_examples(tmp_path, task="sex", modality="vowel-a", split="opera")
  auto, _ = coswara.list_examples(tmp_path, check_audio=False)   # no task: "auto" is the seeded split
  seeded, _ = coswara.list_examples(tmp_path, check_audio=False, split="seeded")
  assert [(s.id, s.split) for s in auto] == [(s.id, s.split) for s in seeded] and len(seeded) == 24


def _save_object_npy(path, ids):
  """What OPERA's coughvid_split.py wrote: np.save of a pandas column, an object array (pickled)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, np.array(ids, dtype=object), allow_pickle=True)
  return path


def _coughvid_opera_layout(root):
  """COUGHVID metadata, wav/ (one OPERA-style truncated name) and OPERA's lists under datasets/coughvid/."""
  root = pathlib.Path(root)
  rows = [("u-train-f", 0.9, "female", "healthy"), ("u-train-m", 0.95, "male", "COVID-19"),
          ("u-train-x", 0.9, "", "healthy"), ("u-val-f", 0.99, "female", "healthy"),
          ("u-test-m", 0.9, "male", "COVID-19"), ("u-test-s", 0.9, "female", "symptomatic"),
          ("u-unlisted", 0.9, "male", "healthy"), ("u-low", 0.2, "male", "healthy")]
  _write(root / "data" / "public_dataset" / "metadata_compiled.csv",
         "uuid,datetime,cough_detected,age,gender,respiratory_condition,fever_muscle_pain,status\n" +
         "".join(f"{u},2020-04-13T21:30:59,{c},30,{g},False,False,{st}\n" for u, c, g, st in rows))
  for uuid, *_ in rows:
    fl.write_wav(root / "data" / "wav" / f"{uuid if uuid != 'u-test-m' else uuid[:-1]}.wav", seconds=0.01)
  opera = root / "OPERA" / "datasets" / "coughvid"
  _save_object_npy(opera / "coughvid__train_uuids.npy", ["u-train-f", "u-train-m", "u-train-x"])
  np.save(opera / "coughvid__val_uuids.npy", np.array(["u-val-f"]))   # a plain '<U' array reads too
  _save_object_npy(opera / "coughvid_gender_test_uuids.npy", ["u-test-m", "u-test-s"])
  return root / "data", root / "OPERA"


def test_coughvid_opera_split_from_operas_uuid_lists(tmp_path):
  data, opera = _coughvid_opera_layout(tmp_path)
  coughvid = get_adapter("coughvid")
  specs, skipped = coughvid.list_examples(data, split="opera", opera_split_dir=opera)
  assert {s.id: s.split for s in specs} == {"u-train-f": "train", "u-train-m": "train", "u-train-x": "train",
                                            "u-val-f": "valid", "u-test-m": "test", "u-test-s": "test"}
  _check_paths(specs)   # u-test-m's wav carries OPERA's truncated name
  assert {s.id: os.path.basename(s.path) for s in specs}["u-test-m"] == "u-test-.wav"
  assert [(k.where.rsplit(":", 1)[1], k.reason) for k in skipped] == [
      ("8", "uuid u-unlisted not in OPERA's split lists"), ("9", "cough_detected 0.2 < 0.8")]
  covid, skipped = coughvid.list_examples(data, task="covid", split="opera", opera_split_dir=opera / "datasets" /
                                          "coughvid")   # the folder itself works as well as the checkout
  assert {s.id: (s.split, s.labels["covid"]) for s in covid} == {
      "u-train-f": ("train", "negative"), "u-train-m": ("train", "positive"), "u-train-x": ("train", "negative"),
      "u-val-f": ("valid", "negative"), "u-test-m": ("test", "positive")}
  assert len(covid) + len(skipped) == 8
  sex, _ = coughvid.list_examples(data, task="sex", split="opera", opera_split_dir=opera)
  assert {s.id: s.split for s in sex} == {"u-train-f": "train", "u-train-m": "train", "u-val-f": "valid",
                                          "u-test-m": "test", "u-test-s": "test"}
  # Through prepare's option parsing, as --option=split=opera --option=opera_split_dir=PATH gives them.
  from acula_jax.data import prepare  # pylint: disable=import-outside-toplevel
  via_cli, _ = prepare.call_adapter(coughvid, str(data), {"split": "opera", "opera_split_dir": str(opera),
                                                          "task": "sex"}, seed=3)
  assert [(s.id, s.split) for s in via_cli] == [(s.id, s.split) for s in sex]


def test_coughvid_opera_split_errors(tmp_path):
  data, opera = _coughvid_opera_layout(tmp_path)
  coughvid = get_adapter("coughvid")
  with pytest.raises(ValueError, match="opera_split_dir"):
    coughvid.list_examples(data, split="opera")
  lists = opera / "datasets" / "coughvid"
  _save_object_npy(lists / "coughvid__val_uuids.npy", ["u-val-f", "not-a-coughvid-uuid"])
  with pytest.raises(ValueError, match=r"coughvid__val_uuids\.npy: 1 uuid\(s\) not in metadata_compiled.csv"):
    coughvid.list_examples(data, split="opera", opera_split_dir=opera)
  _save_object_npy(lists / "coughvid__val_uuids.npy", ["u-val-f", "u-train-f"])
  with pytest.raises(ValueError, match="also listed in"):
    coughvid.list_examples(data, split="opera", opera_split_dir=opera)
  _save_object_npy(lists / "coughvid__val_uuids.npy", ["u-val-f"])
  (lists / "coughvid_gender_test_uuids.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"coughvid_gender_test_uuids\.npy"):
    coughvid.list_examples(data, split="opera", opera_split_dir=opera)


def test_coughvid_id_lists_never_run_pickle_code(tmp_path):
  """An object .npy whose pickle would call open() is refused, and open() is not called."""
  import pickle  # pylint: disable=import-outside-toplevel
  marker = tmp_path / "pwned"

  class Payload:
    def __reduce__(self):
      return (open, (str(marker), "w"))

  path = tmp_path / "coughvid__train_uuids.npy"
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    pickle.dump(np.array([Payload()], dtype=object), f, protocol=3)   # np.save's protocol
  from acula_jax.data.datasets import coughvid  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"refusing \w+\.open"):
    coughvid.read_id_list(path)
  assert not marker.exists()
  assert coughvid.read_id_list(_save_object_npy(tmp_path / "ok.npy", ["a", "b"])) == ["a", "b"]
  with open(tmp_path / "protocol2.npy", "wb") as f:   # an older writer's pickle spells bytes with _codecs
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
    pickle.dump(np.array(["a", "b"], dtype=object), f, protocol=2)
  assert coughvid.read_id_list(tmp_path / "protocol2.npy") == ["a", "b"]
  np.save(tmp_path / "column.npy", np.array([["a"], ["b"]]))   # N x 1, as OPERA's full covidUK lists
  assert coughvid.read_id_list(tmp_path / "column.npy") == ["a", "b"]
  _save_object_npy(tmp_path / "ints.npy", [1, 2])
  with pytest.raises(ValueError, match="array of str"):
    coughvid.read_id_list(tmp_path / "ints.npy")


def _ukcovid_opera_lists(root, lists):
  """OPERA's exhalation lists (train, val, test), '<U45' arrays as shipped, in an OPERA-checkout layout."""
  folder = pathlib.Path(root) / "datasets" / "covidUK"
  folder.mkdir(parents=True, exist_ok=True)
  for part, names in zip(("training", "val", "testing"), lists):
    np.save(folder / f"exhalation_{part}_files_downsample.npy", np.array(names, dtype="<U45"))
  return pathlib.Path(root)


def test_ukcovid_opera_split_from_operas_file_lists(layouts, tmp_path):
  folder, _ = layouts["ukcovid"]
  uk = get_adapter("ukcovid")
  opera = _ukcovid_opera_lists(tmp_path / "OPERA", (["p2_exh.wav", "p4_exh.wav"], ["p1_exh.wav"],
                                                    ["p5_exh.wav", "p3_exh.wav"]))
  specs, skipped = uk.list_examples(folder, split="opera", opera_split_dir=opera)
  # OPERA's lists override the publisher's column: p2 (val there) is train, p4 (long) is train, p1 valid.
  assert {s.id: s.split for s in specs} == {"p1_exhalation": "valid", "p2_exhalation": "train",
                                            "p4_exhalation": "train", "p5_exhalation": "test"}
  assert {k.where: k.reason.split(":")[0] for k in skipped} == {
      "p3": "unknown label", "p6": "p6_exh.wav not in OPERA's downsampled split lists"}
  assert len(specs) + len(skipped) == 6
  no_published = tmp_path / "no_published_split"   # train_test_splits.csv is not read for OPERA's split
  shutil.copytree(folder, no_published)
  (no_published / "train_test_splits.csv").unlink()
  again, _ = uk.list_examples(no_published, split="opera", opera_split_dir=opera / "datasets" / "covidUK",
                              audio_dir=pathlib.Path(folder) / "audio")
  assert [(s.id, s.split) for s in again] == [(s.id, s.split) for s in specs]


def test_ukcovid_opera_split_errors(layouts, tmp_path):
  folder, _ = layouts["ukcovid"]
  uk = get_adapter("ukcovid")
  with pytest.raises(ValueError, match="opera_split_dir"):
    uk.list_examples(folder, split="opera")
  with pytest.raises(ValueError, match="modality"):
    uk.list_examples(folder, split="opera", modality="three_cough", opera_split_dir=tmp_path)
  opera = _ukcovid_opera_lists(tmp_path / "a", (["p2_exh.wav"], ["p1_exh.wav", "p9_exh.wav"], ["p5_exh.wav"]))
  with pytest.raises(ValueError, match=r"exhalation_val_files_downsample\.npy: 1 file name\(s\) not in"):
    uk.list_examples(folder, split="opera", opera_split_dir=opera)
  opera = _ukcovid_opera_lists(tmp_path / "b", (["p2_exh.wav"], ["p1_exh.wav"], ["p1_exh.wav"]))
  with pytest.raises(ValueError, match="also listed in"):
    uk.list_examples(folder, split="opera", opera_split_dir=opera)
  with pytest.raises(FileNotFoundError, match=r"cough_training_files_downsample\.npy"):
    uk.list_examples(folder, split="opera", modality="cough", opera_split_dir=opera)


@pytest.mark.parametrize("table", ["xlsx", "csv"])
def test_mmlung_layout(tmp_path, table):
  facts = fl.mmlung(tmp_path, table=table)
  mm = get_adapter("mmlung")
  specs, skipped = mm.list_examples(tmp_path, modality="vowel_o")
  assert {s.subject_id: s.labels for s in specs} == {
      p: dict(zip(("fvc", "fev1", "fev1_fvc"), t)) for p, t in facts["targets"].items() if p != "10"}
  _check_paths(specs)
  assert _reasons(skipped) == ["missing audio file", "unparseable row"]
  fold, _ = mm.list_examples(tmp_path, heldout_subject="2")
  assert [s.subject_id for s in fold if s.split == "test"] == ["2"]
  assert {s.split for s in fold if s.subject_id != "2"} <= {"train", "valid"}


def test_mmlung_per_participant_xls(tmp_path):
  """Without All_path, targets come from each participant's .xls; an unreadable one is skipped, named."""
  facts = fl.mmlung(tmp_path, table="xls")
  specs, skipped = get_adapter("mmlung").list_examples(tmp_path, modality="vowel_o")
  want = {p: dict(zip(("fvc", "fev1", "fev1_fvc"), t)) for p, t in facts["targets"].items() if p != "10"}
  assert {s.subject_id: s.labels for s in specs} == want
  unreadable = [k for k in skipped if k.where.endswith("12_spiro.xls")]
  assert len(unreadable) == 1 and unreadable[0].reason.startswith("unreadable spirometry spreadsheet")


def test_nosemic_layout(layouts):
  folder, facts = layouts["nosemic"]
  nm = get_adapter("nosemic")
  specs, skipped = nm.list_examples(folder)
  assert len(specs) == facts["n"] and len(skipped) == 2
  assert {s.id: s.labels["respiratory_rate"] for s in specs}["4_1_2_18.5"] == 18.5
  _assert_subject_disjoint(specs)
  fold, _ = nm.list_examples(folder, heldout_subject=5)
  assert {s.subject_id for s in fold if s.split == "test"} == {"5"}


def test_missing_audio_can_be_ignored_for_metadata_only_listing(layouts):
  folder, _ = layouts["icbhi"]
  specs, skipped = get_adapter("icbhi").list_examples(folder, check_audio=False)
  assert "106_1b1_Pl_sc_AKGC417L" in {s.id for s in specs}
  assert "missing audio file" not in {k.reason for k in skipped}


def test_specs_load_as_audio(layouts):
  from acula_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  folder, _ = layouts["kauh"]
  specs, _ = get_adapter("kauh").list_examples(folder)
  wave = audio_io.load_audio(specs[0].path)
  assert wave.ndim == 1 and wave.size == 800   # 0.05 s resampled to 16 kHz.


def test_string_options_as_prepare_passes_them(layouts):
  folder, _ = layouts["icbhi"]
  specs, skipped = get_adapter("icbhi").list_examples(folder, check_audio="false", per_cycle="true",
                                                      valid_fraction="0.5", seed="1")
  assert "missing audio file" not in {k.reason for k in skipped} and all(s.end_s for s in specs)
  folder, _ = layouts["kauh"]
  a, _ = get_adapter("kauh").list_examples(folder, fractions="0.5,0.25,0.25", seed="2")
  b, _ = get_adapter("kauh").list_examples(folder, fractions=(0.5, 0.25, 0.25), seed=2)
  assert [s.split for s in a] == [s.split for s in b]


def test_prepare_ingests_an_adapter_layout(layouts, tmp_path):
  prepare = pytest.importorskip("acula_jax.data.prepare")
  from acula_jax.data import records  # pylint: disable=import-outside-toplevel
  folder, facts = layouts["kauh"]
  prepare.prepare("kauh", folder, tmp_path / "out", num_shards=1, seed=0, progress=False)
  manifest = records.read_manifest(tmp_path / "out")
  assert sum(manifest["counts"].values()) == facts["n"] and len(manifest["skipped"]) == 2
