"""Tests of the rule-based reports and of report files (JSONL, CSV, the real CirCor tables)."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from acula_jax.text import reports
from acula_jax.data import synthetic
from acula_jax.errors import DataError
from acula_jax.text.reports import read_reports, report_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first(diagnosis, *, seed=0):
  """The first synthetic clip (0.1 s: only its metadata matters) with this diagnosis."""
  for i in range(200):
    ex = synthetic.generate_example(i, seed, duration_s=0.1)
    if diagnosis in (ex["labels"].get("heart_diagnosis"), ex["labels"].get("lung_diagnosis")):
      return ex
  raise AssertionError(diagnosis)


def test_phrasings_vary_with_seed_but_facts_stay():
  ex = _first("aortic_stenosis")
  meta = ex["metadata"]
  texts = {report_for(meta, ex["labels"], seed=s) for s in range(12)}
  assert len(texts) >= 4
  grade = meta["murmur_grade"]
  roman = ("I", "II", "III", "IV", "V", "VI")[grade - 1]
  for text in texts:
    assert f"{grade}/6" in text or f"{roman}/VI" in text, text
    sex_words = {"female": ("female", "woman"), "male": ("male", "man")}[meta["sex"]]
    assert str(meta["age"]) in text and re.search(rf"\b({'|'.join(sex_words)})\b", text, re.I), text
    assert f"{meta['heart_rate']}" in text
    assert "aortic stenosis" in text and "aortic area" in text
    assert meta["murmur_pitch"] in text and meta["device"] in text


def test_reports_are_deterministic():
  ex = _first("copd")
  assert report_for(ex["metadata"], ex["labels"], seed=3) == report_for(ex["metadata"], ex["labels"], seed=3)


def test_every_synthetic_condition_is_reported():
  expected = {"normal": ["no", "murmur"], "heart_failure": ["S3", "heart failure"],
              "mitral_regurgitation": ["mitral regurgitation", "mitral area"],
              "aortic_regurgitation": ["aortic regurgitation", "diastolic"],
              "mitral_stenosis": ["mitral stenosis", "low"],
              "healthy": ["vesicular", "normal lung sounds"],
              "pneumonia": ["coarse", "crackles", "pneumonia"],
              "pulmonary_fibrosis": ["fine", "crackles", "pulmonary fibrosis"],
              "asthma": ["polyphonic", "wheez", "asthma"], "bronchitis": ["low-pitched", "wheez"],
              "copd": ["crackles", "wheez", "COPD"]}
  for dx, words in expected.items():
    ex = _first(dx)
    for seed in range(3):
      text = report_for(ex["metadata"], ex["labels"], seed=seed)
      for word in words:
        assert word.lower() in text.lower(), (dx, word, text)


def test_no_split_or_id_leaks():
  meta = {"age": 50, "sex": "male", "split": "test", "id": "syn-000123", "subject_id": "subj-77",
          "Patient ID": 98765, "synthesis": {"snr_db": 12.5}, "dataset": "synthetic"}
  for seed in range(5):
    text = report_for(meta, {"split": "valid", "murmur": "absent"}, seed=seed)
    for leak in ("test", "valid", "syn-000123", "subj-77", "98765", "12.5", "split", "synthetic"):
      assert leak not in text, (leak, text)
  for i in range(40):
    ex = synthetic.generate_example(i, 0, duration_s=0.1)
    text = report_for(ex["metadata"], ex["labels"], seed=0)
    assert ex["id"] not in text and ex["subject_id"] not in text
    assert not re.search(r"\b(train|valid|test|split|snr)\b", text, re.I), text


def test_unknown_keys_rendered_and_missing_omitted():
  text = report_for({"age": 40, "Pregnancy status": "False", "weird_field": "abc", "Height:": 98.0,
                     "Weight": float("nan"), "notes": None, "tags": ["x", "y"]}, {"Outcome": "Abnormal"},
                    seed=0)
  assert "Pregnancy status: False." in text
  assert "Weird field: abc." in text and "Height: 98." in text and "Tags: x, y." in text
  assert "Outcome: Abnormal." in text
  assert "40" in text and not re.search(r"\bnan\b", text, re.I) and "None" not in text and "Notes" not in text
  assert report_for({"sex": "F"}, {}, seed=0) in ("Female patient.", "Sex: female.")
  assert report_for({}, {}, seed=0)  # Never empty.


def test_labels_alone_make_a_report():
  text = report_for({}, {"lung_sound": "both", "diagnosis": "URTI", "murmur": "Unknown"}, seed=1)
  assert "crackles and wheezes" in text.lower() and "upper respiratory tract infection" in text
  assert "unknown" in text.lower()


def test_real_circor_metadata_renders(shared_data):
  path = shared_data / "metadata" / "circor_dataset" / "training_data.csv"
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))[:50]
  for row in rows:
    text = report_for(row, {}, seed=0)
    assert not re.search(r"\bnan\b", text, re.I), text
    assert not re.search(rf"\b{re.escape(row['Patient ID'])}\b", text), text
    assert row["Sex"].lower() in text.lower()
    if row["Murmur"] == "Present":
      assert "Murmur present" in text or "murmur" in text.lower()


# ----------------------------------------------------------------------------------------------------
# read_reports.
# ----------------------------------------------------------------------------------------------------

def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return path


def test_read_jsonl(tmp_path):
  path = _write(tmp_path / "r.jsonl", '{"id": "a", "report": "One."}\n\n{"id": 7, "report": " Two. "}\n')
  assert read_reports(path) == [("a", "One."), ("7", "Two.")]


@pytest.mark.parametrize("text, message", [
    ('{"id": "a", "report": "x"}\n{"id": "b", "report": ""}\n', "line 2: missing or empty report"),
    ('{"id": "a", "report": "x"}\n{"id": "b"}\n', "line 2: missing or empty report"),
    ('{"id": "a", "report": "x"}\n{"id": "a", "report": "y"}\n', "line 2: duplicate id 'a'"),
    ('{"id": "a", "report": "x"}\n{"id": "b", "report": \n', "line 2: malformed JSON"),
    ('["a", "x"]\n', "line 1: expected a JSON object"),
    ('{"report": "x"}\n', "line 1: missing or empty id"),
    ("", "no reports"),
    ("\n  \n", "no reports"),
])
def test_read_jsonl_errors_name_file_and_line(tmp_path, text, message):
  path = _write(tmp_path / "bad.jsonl", text)
  with pytest.raises(DataError, match=re.escape(message)) as e:
    read_reports(path)
  assert str(path) in str(e.value)


def test_read_csv(tmp_path):
  path = _write(tmp_path / "r.csv", 'id,report,Gen_Report\na,"One, with comma.","G1"\nb,"Two\nlines.",G2\n')
  assert read_reports(path) == [("a", "One, with comma."), ("b", "Two\nlines.")]
  assert read_reports(path, column="Gen_Report") == [("a", "G1"), ("b", "G2")]
  other = _write(tmp_path / "p.csv", "Patient_ID,Meta_Report\n1,M1\n2,M2\n")
  assert read_reports(other, column="Meta_Report") == [("1", "M1"), ("2", "M2")]


@pytest.mark.parametrize("text, kwargs, message", [
    ("id,report\na,x\nb,\n", {}, "row 2 (line 3): missing or empty report"),
    ("id,report\na,x\na,y\n", {}, "row 2 (line 3): duplicate id 'a' (first at row 1 (line 2))"),
    ("id,text\na,x\n", {}, "no report column 'report'"),
    ("id,report\na,x\n", {"column": "Gen_Report"}, "no report column 'Gen_Report'"),
    ("name,report\na,x\n", {}, "no id column"),
    ("id,report\na,x,extra\n", {}, "row 1 (line 2): more cells than columns"),
    ("", {}, "empty file"),
    ("id,report\n", {}, "no reports"),
])
def test_read_csv_errors_name_file_and_row(tmp_path, text, kwargs, message):
  path = _write(tmp_path / "bad.csv", text)
  with pytest.raises(DataError, match=re.escape(message)) as e:
    read_reports(path, **kwargs)
  assert str(path) in str(e.value)


def test_read_missing_file_or_unknown_type(tmp_path):
  with pytest.raises(DataError, match="not found"):
    read_reports(tmp_path / "nope.jsonl")
  with pytest.raises(DataError, match="unsupported"):
    read_reports(_write(tmp_path / "r.txt", "a\n"))


def test_real_circor_report_tables(shared_data):
  paths = sorted((shared_data / "metadata" / "circor_dataset").glob("*_report.csv"))
  assert paths, "no CirCor *_report.csv found"
  for path in paths:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    for column in ("Gen_Report", "Meta_Report"):
      got = read_reports(path, column=column)
      assert [i for i, _ in got] == [r["Patient_ID"] for r in rows]
      assert [t for _, t in got] == [r[column].strip() for r in rows]
    with pytest.raises(DataError, match="no report column 'report'"):
      read_reports(path)


# ----------------------------------------------------------------------------------------------------
# write_reports and the CLI.
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
  from acula_jax.data import records
  out = tmp_path_factory.mktemp("records")
  records.write_audio_records(out, synthetic.generate_corpus(40, 0, duration_s=0.2), dataset="synthetic",
                              num_shards=2)
  return out


def test_write_reports_covers_the_train_split(records_dir, tmp_path):
  out = tmp_path / "sub" / "reports.jsonl"
  count = reports.write_reports(records_dir, out, splits=("train",), seed=1)
  got = dict(read_reports(out))
  want = {e["id"]: e for e in synthetic.generate_corpus(40, 0, duration_s=0.2) if e["split"] == "train"}
  assert count == len(got) == len(want) and set(got) == set(want)
  for example_id, text in got.items():
    assert text == report_for(want[example_id]["metadata"], want[example_id]["labels"], seed=1)


def test_cli(records_dir, tmp_path):
  out = tmp_path / "reports.jsonl"
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "acula_jax.text.reports", f"--records={records_dir}",
                         f"--output={out}", "--splits=train,valid"], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=120)
  assert proc.returncode == 0, proc.stderr
  manifest = json.loads((records_dir / "manifest.json").read_text())
  expected = manifest["counts"]["train"] + manifest["counts"]["valid"]
  assert f"wrote {expected} reports" in proc.stderr
  assert len(read_reports(out)) == expected


def test_reports_of_several_folders_and_duplicate_ids(records_dir, tmp_path):
  from acula_jax.data import records
  other = tmp_path / "other"
  examples = list(synthetic.generate_corpus(40, 1, duration_s=0.2))
  for e in examples:
    e["id"] = f"second-{e['id']}"
  records.write_audio_records(other, examples, dataset="synthetic")
  out = tmp_path / "both.jsonl"
  count = reports.write_reports(f"{records_dir},{other}", out, splits=("train",))
  first = reports.write_reports(records_dir, tmp_path / "first.jsonl", splits=("train",))
  second = sum(e["split"] == "train" for e in examples)
  assert count == first + second == len(read_reports(out))
  # The same folder twice: every id repeats, and the join by id would be ambiguous.
  with pytest.raises(DataError, match="occurs twice"):
    reports.write_reports(f"{records_dir},{records_dir}", tmp_path / "dup.jsonl", splits=("train",))
  assert not (tmp_path / "dup.jsonl").exists()
