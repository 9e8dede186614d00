"""ICBHI 2017 Respiratory Sound Database (Rocha et al. 2019), as published at bhichallenge.med.auth.gr.

Layout relied on (publisher's release, `data_dir`):
  ICBHI_final_database/{patient}_{rec}_{loc}_{mode}_{equipment}.wav   e.g. 101_1b1_Al_sc_Meditron.wav
  ICBHI_final_database/{same stem}.txt       one respiratory cycle a line: start end crackles wheezes
  ICBHI_challenge_train_test.txt             official split: "{stem}\\t{train|test}" (920 recordings)
  ICBHI_Challenge_diagnosis.txt              "{patient}\\t{diagnosis}"
  ICBHI_Challenge_demographic_information.txt  "{patient}\\t{age}\\t{sex}\\t{adult BMI}\\t{child weight}\\t
      {child height}" (NA when unknown)
or, without the annotation .txt files, the AcuLa per-cycle table
  icbhi_metadata_with_demographics_diagnosis.csv  Patient_ID, Recording_Index, Chest_Location,
      Acquisition_Mode, Equipment (spelled out), Cycle_Start, Cycle_End, Crackles, Wheezes, Age, Sex, Diagnosis
whose spelled-out location/mode/equipment are mapped back to the file-name codes (`LABEL_MAPS`).

Labels: `diagnosis` (8 classes as published), `copd` (OPERA task T7, only for COPD and Healthy
patients), recording-level `crackles`/`wheezes`/`lung_sound`; with `per_cycle=True` one spec per
annotated cycle (start_s/end_s) with that cycle's crackles/wheezes/lung_sound.

OPERA task: T7 "ICBHI COPD detection" = COPD vs Healthy, recording level, official train/test list
(OPERA draws its validation set from the official train recordings). Here `split="official"`
(default) keeps the official test list and draws `valid_fraction` of the official-train *patients*
(seeded, subject-wise) as validation; `split="subject"` ignores the list and splits patients
(stratified by diagnosis) with `fractions`. Note: the official list puts patients 156 and 218 in
both train and test; the official protocol is kept as published and the overlap is reported in
`official_overlap(...)`.
"""

import collections
import csv
import os

from acula_jax.data.datasets import common

NAME = "icbhi"
MODALITY = "lung"
SCHEMA = "lung"
OPERA_TASKS = {"T7": ("copd", "COPD vs healthy, recording level, official train/test split")}

LABEL_MAPS = {
    "chest_location": {"Tc": "trachea", "Al": "anterior left", "Ar": "anterior right", "Pl": "posterior left",
                       "Pr": "posterior right", "Ll": "lateral left", "Lr": "lateral right"},
    "acquisition_mode": {"sc": "sequential/single channel", "mc": "simultaneous/multichannel"},
    "equipment": {"AKGC417L": "AKG C417L microphone", "LittC2SE": "3M Littmann Classic II SE stethoscope",
                  "Litt3200": "3M Littmann 3200 electronic stethoscope",
                  "Meditron": "WelchAllyn Meditron Master Elite electronic stethoscope"},
    "diagnosis": {d: d for d in ("COPD", "Healthy", "URTI", "LRTI", "Bronchiectasis", "Bronchiolitis",
                                 "Pneumonia", "Asthma")},
    "copd": {"COPD": "COPD", "Healthy": "Healthy"},
    "lung_sound": {(0, 0): "normal", (1, 0): "crackle", (0, 1): "wheeze", (1, 1): "both"},
    # The AcuLa table spells codes out; these map its spellings back to the file-name codes.
    "table_chest_location": {"Trachea": "Tc", "Anterior left": "Al", "Anterior right": "Ar",
                             "Posterior left": "Pl", "Posterior right": "Pr", "Lateral left": "Ll",
                             "Lateral right": "Lr"},
    "table_acquisition_mode": {"Sequential/single channel": "sc", "Simultaneous/multichannel": "mc"},
    "table_equipment": {"AKG C417L Microphone": "AKGC417L", "3M Littmann Classic II SE Stethoscope": "LittC2SE",
                        "3M Littmann 3200 Electronic Stethoscope": "Litt3200",
                        "WelchAllyn Meditron Master Elite Electronic Stethoscope": "Meditron"},
}

AUDIO_FOLDER = "ICBHI_final_database"
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
DEMOGRAPHICS_FILE = "ICBHI_Challenge_demographic_information.txt"
TABLE_FILE = "icbhi_metadata_with_demographics_diagnosis.csv"



def _tsv(path):
  """(line number, fields) of a whitespace-separated text file, blank lines left out."""
  with open(path, encoding="utf-8-sig") as f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        yield lineno, line.split()


def _float(text):
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def _patients(data_dir, skipped):
  """{patient: {diagnosis, age, sex, bmi, ...}} from the publisher's diagnosis + demographics files."""
  out = collections.defaultdict(dict)
  path = os.path.join(data_dir, DIAGNOSIS_FILE)
  for lineno, fields in _tsv(path):
    if len(fields) != 2:
      skipped.append(common.Skipped(f"{path}:{lineno}", f"unparseable diagnosis line {fields}"))
      continue
    out[fields[0]]["diagnosis"] = fields[1]
  path = os.path.join(data_dir, DEMOGRAPHICS_FILE)
  if os.path.isfile(path):
    for lineno, fields in _tsv(path):
      if len(fields) != 6:
        skipped.append(common.Skipped(f"{path}:{lineno}", f"unparseable demographics line {fields}"))
        continue
      pid, age, sex, bmi, weight, height = fields
      out[pid].update(age=_float(age), sex={"F": "female", "M": "male"}.get(sex),
                      bmi=_float(bmi), child_weight_kg=_float(weight), child_height_cm=_float(height))
  return out


def _cycles_from_txt(path, skipped):
  """[(start, end, crackles, wheezes)] of one annotation file; bad lines are skipped with reasons."""
  cycles = []
  for lineno, fields in _tsv(path):
    try:
      start, end, crackles, wheezes = float(fields[0]), float(fields[1]), int(fields[2]), int(fields[3])
      if len(fields) != 4 or end <= start or start < 0 or crackles not in (0, 1) or wheezes not in (0, 1):
        raise ValueError(fields)
    except (ValueError, IndexError):
      skipped.append(common.Skipped(f"{path}:{lineno}", f"unparseable cycle annotation {fields}"))
      continue
    cycles.append((start, end, crackles, wheezes))
  return cycles


def _recordings_from_release(data_dir, audio_dir, skipped):
  """{stem: {cycles, patient fields}} from the annotation .txt files of the release."""
  patients = _patients(data_dir, skipped)
  recordings = {}
  for name in sorted(os.listdir(audio_dir)):
    stem, ext = os.path.splitext(name)
    if ext != ".txt" or stem.count("_") != 4:
      continue
    recordings[stem] = {"cycles": _cycles_from_txt(os.path.join(audio_dir, name), skipped),
                        **patients.get(stem.split("_")[0], {})}
  return recordings


def _recordings_from_table(path, skipped):
  """{stem: {cycles, patient fields}} from the AcuLa per-cycle table."""
  maps = (LABEL_MAPS["table_chest_location"], LABEL_MAPS["table_acquisition_mode"], LABEL_MAPS["table_equipment"])
  recordings = {}
  with open(path, encoding="utf-8-sig", newline="") as f:
    for rowno, row in enumerate(csv.DictReader(f), start=2):
      where = f"{path}:{rowno}"
      try:
        codes = [m[row[k]] for m, k in zip(maps, ("Chest_Location", "Acquisition_Mode", "Equipment"))]
      except KeyError as e:
        skipped.append(common.Skipped(where, f"unknown label {e}"))
        continue
      try:
        cycle = (float(row["Cycle_Start"]), float(row["Cycle_End"]), int(row["Crackles"]), int(row["Wheezes"]))
      except (TypeError, ValueError):
        skipped.append(common.Skipped(where, "unparseable cycle columns"))
        continue
      stem = "_".join([row["Patient_ID"], row["Recording_Index"], *codes])
      rec = recordings.setdefault(stem, {"cycles": [], "diagnosis": row["Diagnosis"] or None,
                                         "age": _float(row["Age"]),
                                         "sex": {"F": "female", "M": "male"}.get(row["Sex"])})
      rec["cycles"].append(cycle)
  return recordings


def read_official_split(path) -> dict:
  """{stem: "train"|"test"} from ICBHI_challenge_train_test.txt."""
  out = {}
  for lineno, fields in _tsv(path):
    if len(fields) != 2 or fields[1] not in ("train", "test"):
      raise ValueError(f"{path}:{lineno}: expected '<stem> train|test', got {fields}")
    out[fields[0]] = fields[1]
  return out


def official_overlap(split: dict) -> list:
  """Patients that the official list puts in both train and test."""
  seen = collections.defaultdict(set)
  for stem, s in split.items():
    seen[stem.split("_")[0]].add(s)
  return sorted(p for p, s in seen.items() if len(s) > 1)


def _assign_splits(recordings, data_dir, split, split_file, seed, fractions, valid_fraction):
  """{stem: split name or None (not in the official list)}."""
  if split == "subject":
    by_patient = {s.split("_")[0]: r.get("diagnosis") or "" for s, r in recordings.items()}
    groups = collections.defaultdict(list)
    for pid, dx in by_patient.items():
      groups[dx].append(pid)
    assign = {}
    for dx in sorted(groups):
      assign.update(common.subject_split(groups[dx], seed=seed, fractions=fractions))
    return {stem: assign[stem.split("_")[0]] for stem in recordings}
  if split != "official":
    raise ValueError(f"split must be 'official' or 'subject', got {split!r}")
  official = read_official_split(split_file or os.path.join(data_dir, SPLIT_FILE))
  train_patients = sorted({s.split("_")[0] for s, v in official.items() if v == "train"})
  valid = common.subject_split(train_patients, seed=seed, fractions=(1 - valid_fraction, valid_fraction, 0.0))
  out = {}
  for stem in recordings:
    s = official.get(stem)
    out[stem] = None if s is None else "test" if s == "test" else valid[stem.split("_")[0]]
  return out


def _labels(cycles, diagnosis):
  crackles = int(any(c[2] for c in cycles))
  wheezes = int(any(c[3] for c in cycles))
  labels = {"diagnosis": diagnosis, "crackles": crackles, "wheezes": wheezes,
            "lung_sound": LABEL_MAPS["lung_sound"][(crackles, wheezes)]}
  if diagnosis in LABEL_MAPS["copd"]:
    labels["copd"] = LABEL_MAPS["copd"][diagnosis]
  return labels


def _metadata(stem, rec):
  _, _, loc, mode, equipment = stem.split("_")
  meta = {"dataset": NAME, "schema": SCHEMA, "chest_location": LABEL_MAPS["chest_location"][loc],
          "acquisition_mode": LABEL_MAPS["acquisition_mode"][mode], "device": LABEL_MAPS["equipment"][equipment]}
  for key in ("age", "sex", "bmi", "child_weight_kg", "child_height_cm"):
    if rec.get(key) is not None:
      meta[key] = rec[key]
  return meta


def _specs_for(stem, rec, path, split, per_cycle):
  labels = _labels(rec["cycles"], rec["diagnosis"])
  meta = _metadata(stem, rec)
  subject = stem.split("_")[0]
  if not per_cycle:
    return [common.ExampleSpec(stem, path, subject, split, labels, meta)]
  specs = []
  for i, (start, end, crackles, wheezes) in enumerate(sorted(rec["cycles"])):
    cycle_labels = dict(labels, crackles=crackles, wheezes=wheezes,
                        lung_sound=LABEL_MAPS["lung_sound"][(crackles, wheezes)])
    specs.append(common.ExampleSpec(f"{stem}_c{i:03d}", path, subject, split, cycle_labels, dict(meta),
                                    start_s=start, end_s=end))
  return specs


def list_examples(data_dir, *, audio_dir=None, check_audio=True, per_cycle=False, split="official",
                  split_file=None, seed=0, valid_fraction=0.2, fractions=(0.6, 0.2, 0.2), task=None,
                  source="auto"):
  """Recordings (or cycles) of ICBHI 2017 and the rows that cannot be used.

  Args:
    data_dir: the release folder (see the module docstring), or a folder with the AcuLa table.
    audio_dir: folder of the .wav files; default data_dir/ICBHI_final_database (or data_dir).
    check_audio: skip (and report) recordings whose .wav is missing; False lists them regardless.
    per_cycle: one spec per annotated respiratory cycle instead of one per recording.
    split: "official" (ICBHI_challenge_train_test.txt + seeded subject-wise valid) or "subject".
    split_file: the official list, default data_dir/ICBHI_challenge_train_test.txt.
    seed, valid_fraction, fractions: split parameters (see the module docstring).
    task: None (every recording) or "copd" (T7: COPD and Healthy patients only).
    source: "release" (annotation .txt files), "table" (AcuLa CSV) or "auto" (release when present).
  """
  check_audio = common.option_bool(check_audio)
  per_cycle = common.option_bool(per_cycle)
  valid_fraction = float(valid_fraction)
  fractions = common.option_fractions(fractions)
  if task not in (None, "copd"):
    raise ValueError(f"task must be None or 'copd', got {task!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else (
      os.path.join(data_dir, AUDIO_FOLDER) if os.path.isdir(os.path.join(data_dir, AUDIO_FOLDER)) else data_dir)
  skipped = []
  has_release = os.path.isdir(audio_dir) and any(n.endswith(".txt") for n in os.listdir(audio_dir))
  if source == "auto":
    source = "release" if has_release else "table"
  if source == "release":
    recordings = _recordings_from_release(data_dir, audio_dir, skipped)
  elif source == "table":
    recordings = _recordings_from_table(os.path.join(data_dir, TABLE_FILE), skipped)
  else:
    raise ValueError(f"source must be 'auto', 'release' or 'table', got {source!r}")
  splits = _assign_splits(recordings, data_dir, split, split_file, seed, fractions, valid_fraction)
  specs = []
  for stem in sorted(recordings):
    rec = recordings[stem]
    path = os.path.join(audio_dir, stem + ".wav")
    _, _, loc, mode, equipment = stem.split("_")
    if (loc not in LABEL_MAPS["chest_location"] or mode not in LABEL_MAPS["acquisition_mode"]
        or equipment not in LABEL_MAPS["equipment"]):
      skipped.append(common.Skipped(stem, f"unknown label in file name ({loc}, {mode}, {equipment})"))
    elif rec.get("diagnosis") not in LABEL_MAPS["diagnosis"]:
      skipped.append(common.Skipped(stem, f"unknown label: diagnosis {rec.get('diagnosis')!r}"))
    elif not rec["cycles"]:
      skipped.append(common.Skipped(stem, "no usable cycle annotations"))
    elif splits[stem] is None:
      skipped.append(common.Skipped(stem, "not in the official train/test list"))
    elif task == "copd" and rec["diagnosis"] not in LABEL_MAPS["copd"]:
      skipped.append(common.Skipped(stem, f"not part of task copd (diagnosis {rec['diagnosis']})"))
    elif check_audio and not os.path.isfile(path):
      skipped.append(common.Skipped(path, "missing audio file"))
    else:
      specs.extend(_specs_for(stem, rec, path, splits[stem], per_cycle))
  return specs, skipped
