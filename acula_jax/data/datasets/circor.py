"""CirCor DigiScope phonocardiogram dataset (Oliveira et al. 2022; PhysioNet circor-heart-sound 1.0.3).

Layout relied on (`data_dir`):
  training_data.csv, validation_data.csv, test_data.csv   one row per patient, PhysioNet columns:
      Patient ID, Recording locations:, Age, Sex, Height, Weight, Pregnancy status, Murmur,
      Murmur locations, Most audible location, {Systolic,Diastolic} murmur {timing,shape,grading,
      pitch,quality}, Outcome, Campaign, Additional ID
  training_data/, validation_data/, test_data/            {pid}_{loc}.wav (+ .hea, .tsv) and {pid}.txt;
      a location recorded more than once is {pid}_{loc}_{n}.wav (n = 1, 2, ...). When {pid}.txt is
      present its "LOC HEA WAV TSV" lines name the files and win over the derived names.
PhysioNet 1.0.3 publishes the training part only; the validation/test tables (as used by AcuLa, e.g.
/shared/data/metadata/circor_dataset) are used when present.

Labels: `murmur` (Present/Absent/Unknown, patient level), `outcome` (Normal/Abnormal), and
`murmur_here` (Present when the recording's location is in "Murmur locations", Absent when not,
Unknown when the patient's murmur is unknown). One spec per recording (patient x location).

Splits: `split="official"` uses the three tables as train/valid/test (checked subject-disjoint on the
real tables, including the "Additional ID" links between campaigns); `split="subject"` splits
patients seeded and stratified by murmur; `"auto"` = official when the validation/test tables exist.
The subject id merges a patient's two campaign ids (the smaller of Patient ID / Additional ID).
OPERA defines no CirCor task; AcuLa reports murmur detection (and outcome) on it.
"""

import collections
import csv
import os

from acula_jax.data.datasets import common

NAME = "circor"
MODALITY = "heart"
SCHEMA = "heart"
OPERA_TASKS = {}
SPLIT_TABLES = {"train": "training_data", "valid": "validation_data", "test": "test_data"}

LABEL_MAPS = {
    "murmur": {"Present": "Present", "Absent": "Absent", "Unknown": "Unknown"},
    "outcome": {"Normal": "Normal", "Abnormal": "Abnormal"},
    "location": {"AV": "aortic valve", "PV": "pulmonary valve", "TV": "tricuspid valve", "MV": "mitral valve",
                 "Phc": "other"},
    "sex": {"Female": "female", "Male": "male"},
}
# Published columns copied into the metadata (key = normalised column name).
_META_COLUMNS = ("Age", "Sex", "Height", "Weight", "Pregnancy status", "Murmur locations", "Most audible location",
                 "Systolic murmur timing", "Systolic murmur shape", "Systolic murmur grading",
                 "Systolic murmur pitch", "Systolic murmur quality", "Diastolic murmur timing",
                 "Diastolic murmur shape", "Diastolic murmur grading", "Diastolic murmur pitch",
                 "Diastolic murmur quality", "Campaign")



def _present(value) -> bool:
  return value is not None and value.strip().lower() not in ("", "nan", "none")


def _key(column) -> str:
  return column.strip().rstrip(":").lower().replace(" ", "_")


def _file_names(pid, locations):
  """[(location, wav name)] from 'AV+PV+PV+MV': repeated locations get _1, _2, ... suffixes."""
  counts = collections.Counter(locations)
  seen = collections.Counter()
  out = []
  for loc in locations:
    seen[loc] += 1
    out.append((loc, f"{pid}_{loc}.wav" if counts[loc] == 1 else f"{pid}_{loc}_{seen[loc]}.wav"))
  return out


def _file_names_from_txt(path):
  """[(location, wav name)] from the patient's .txt header lines, or None when unreadable."""
  out = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for line in lines[1:]:
    fields = line.split()
    if line.startswith("#") or len(fields) < 3:
      continue
    out.append((fields[0], fields[2]))
  return out or None


def _metadata(row):
  meta = {"dataset": NAME, "schema": SCHEMA}
  for column in _META_COLUMNS:
    if _present(row.get(column)):
      meta[_key(column)] = row[column].strip()
  if "age" in meta:
    meta["age_group"] = meta.pop("age")
  if "sex" in meta:
    meta["sex"] = LABEL_MAPS["sex"].get(meta["sex"], meta["sex"].lower())
  for column in ("height", "weight"):
    if column in meta:
      try:
        meta[column] = float(meta[column])
      except ValueError:
        del meta[column]
  return meta


def _read_table(path, split, skipped):
  """[(row number, row, split)] of one patient table; rows with unknown labels are skipped."""
  rows = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    for rowno, row in enumerate(csv.DictReader(f), start=2):
      where = f"{path}:{rowno}"
      if not _present(row.get("Patient ID")) or not _present(row.get("Recording locations:")):
        skipped.append(common.Skipped(where, "unparseable row (no Patient ID or Recording locations)"))
      elif row.get("Murmur") not in LABEL_MAPS["murmur"] or row.get("Outcome") not in LABEL_MAPS["outcome"]:
        skipped.append(common.Skipped(where, f"unknown label: Murmur={row.get('Murmur')!r} "
                                             f"Outcome={row.get('Outcome')!r}"))
      else:
        rows.append((where, row, split))
  return rows


def _subject(row):
  ids = [row["Patient ID"].strip()]
  if _present(row.get("Additional ID")):
    ids.append(row["Additional ID"].strip())
  return min(ids, key=lambda s: (len(s), s))


def _subject_splits(rows, seed, fractions):
  groups = collections.defaultdict(set)
  for _, row, _ in rows:
    groups[row["Murmur"]].add(_subject(row))
  out = {}
  for murmur in sorted(groups):
    out.update(common.subject_split(sorted(groups[murmur]), seed=seed, fractions=fractions))
  return out


def _murmur_here(row, loc):
  if row["Murmur"] != "Present":
    return row["Murmur"]
  return "Present" if loc in row.get("Murmur locations", "").split("+") else "Absent"


def list_examples(data_dir, *, audio_dir=None, check_audio=True, split="auto", seed=0,
                  fractions=(0.64, 0.16, 0.2)):
  """One spec per CirCor recording and the rows that cannot be used.

  Args:
    data_dir: folder with the *_data.csv tables (and, by default, the *_data/ audio folders).
    audio_dir: folder holding the training_data/ ... folders; default data_dir.
    check_audio: skip (and report) recordings whose .wav is missing.
    split: "official", "subject" or "auto" (see the module docstring).
    seed, fractions: subject-wise split parameters (split="subject").
  """
  check_audio = common.option_bool(check_audio)
  fractions = common.option_fractions(fractions)
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else data_dir
  skipped, rows = [], []
  tables = {s: os.path.join(data_dir, f"{t}.csv") for s, t in SPLIT_TABLES.items()}
  if not os.path.isfile(tables["train"]):
    raise FileNotFoundError(f"{tables['train']}: CirCor training table not found")
  for s, path in tables.items():
    if os.path.isfile(path):
      rows += _read_table(path, s, skipped)
  if split == "auto":
    split = "official" if all(os.path.isfile(p) for p in tables.values()) else "subject"
  if split not in ("official", "subject"):
    raise ValueError(f"split must be 'auto', 'official' or 'subject', got {split!r}")
  by_subject = _subject_splits(rows, seed, fractions) if split == "subject" else None
  specs = []
  for where, row, table_split in rows:
    pid = row["Patient ID"].strip()
    folder = os.path.join(audio_dir, SPLIT_TABLES[table_split])
    txt = os.path.join(folder, f"{pid}.txt")
    files = (_file_names_from_txt(txt) if check_audio and os.path.isfile(txt) else None) or _file_names(
        pid, row["Recording locations:"].strip().split("+"))
    meta = _metadata(row)
    s = table_split if by_subject is None else by_subject[_subject(row)]
    for loc, wav in files:
      path = os.path.join(folder, wav)
      if loc not in LABEL_MAPS["location"]:
        skipped.append(common.Skipped(f"{where} ({wav})", f"unknown label: recording location {loc!r}"))
      elif check_audio and not os.path.isfile(path):
        skipped.append(common.Skipped(path, "missing audio file"))
      else:
        labels = {"murmur": row["Murmur"], "outcome": row["Outcome"], "murmur_here": _murmur_here(row, loc)}
        specs.append(common.ExampleSpec(os.path.splitext(wav)[0], path, _subject(row), s, labels,
                                        dict(meta, recording_location=loc)))
  return specs, skipped
