"""Coswara (Sharma et al. 2020; github.com/iiscleap/Coswara-Data): crowd-sourced breath, cough and voice.

Layout relied on (`data_dir`, the publisher's repository after running its extract_data.py):
  combined_data.csv          one row per participant; columns used: id, a (age), g (gender:
                             male/female/other/pnts), covid_status, smoker (True/False/y/n), asthma,
                             cough, cold, fever, bd, st, ftg, mp, loss_of_smell, diarrhoea, cld,
                             pneumonia, ht, diabetes, ihd (True/False symptom and condition flags)
  annotations/{modality}_labels.csv   "FILENAME, QUALITY": {id}_{modality}, 0 (bad) / 1 / 2
  Extracted_data/{date}/{id}/{modality}.wav   modality in breathing-deep, breathing-shallow,
                             cough-heavy, cough-shallow, counting-fast, counting-normal, vowel-a/e/o
Without combined_data.csv, AcuLa's tables gender_classification.csv (id, gender) and
smoker_classification.csv (id, smoker yes/no) are read instead (they carry only those two labels).

Labels: `sex` (female/male; OPERA T9), `smoker` (smoker/non-smoker; OPERA T8) where known,
`covid_status` as published. OPERA's T8/T9 use the cough-shallow modality (default `modality`),
drop quality-0 files (`min_quality=1`) and participants without a usable label.

Split: one recording per participant and modality, so splits are subject-wise by construction;
seeded, stratified by the task label (`task`), default 64/16/20 like OPERA's 80/20 test split with
20% of train held out for validation. OPERA's "Google" test split is a fixed list not reproduced here.
"""

import collections
import csv
import os
import re

from acula_jax.datasets import common

NAME = "coswara"
MODALITY = "cough"
SCHEMA = "cough"
OPERA_TASKS = {"T8": ("smoker", "smoker detection, cough-shallow"), "T9": ("sex", "sex detection, cough-shallow")}
MODALITIES = ("breathing-deep", "breathing-shallow", "cough-heavy", "cough-shallow", "counting-fast",
              "counting-normal", "vowel-a", "vowel-e", "vowel-o")
LABEL_MAPS = {
    "sex": {"female": "female", "male": "male", "Female": "female", "Male": "male"},
    "sex_excluded": ("pnts", "other", "Other", ""),
    "smoker": {"True": "smoker", "TRUE": "smoker", "y": "smoker", "yes": "smoker",
               "False": "non-smoker", "FALSE": "non-smoker", "n": "non-smoker", "no": "non-smoker"},
    "flag": {"True": True, "TRUE": True, "y": True, "False": False, "FALSE": False, "n": False},
    "symptom": {"cough": "cough", "cold": "cold", "fever": "fever", "bd": "breathing difficulty",
                "st": "sore throat", "ftg": "fatigue", "mp": "muscle pain", "loss_of_smell": "loss of smell",
                "diarrhoea": "diarrhoea"},
}



def _bool(value):
  """An adapter option given as a bool or as text ("true", "1", "yes"; prepare passes strings)."""
  return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y")


def _fractions(value):
  """(train, valid, test) fractions given as a tuple or as text ("0.7,0.1,0.2" or "0.7/0.1/0.2")."""
  return tuple(float(x) for x in re.split(r"[,/ ]+", value.strip())) if isinstance(value, str) else tuple(value)

def _participants(data_dir, skipped):
  """{id: raw row} from combined_data.csv, or from AcuLa's two tables."""
  combined = os.path.join(data_dir, "combined_data.csv")
  out = {}
  if os.path.isfile(combined):
    with open(combined, encoding="utf-8-sig", newline="") as f:
      for rowno, row in enumerate(csv.DictReader(f), start=2):
        if not (row.get("id") or "").strip():
          skipped.append(common.Skipped(f"{combined}:{rowno}", "unparseable row (no id)"))
        else:
          out[row["id"].strip()] = row
    return out
  for name, column, key in (("gender_classification.csv", "gender", "g"), ("smoker_classification.csv", "smoker",
                                                                             "smoker")):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
      continue
    with open(path, encoding="utf-8-sig", newline="") as f:
      for rowno, row in enumerate(csv.DictReader(f), start=2):
        if not (row.get("id") or "").strip():
          skipped.append(common.Skipped(f"{path}:{rowno}", "unparseable row (no id)"))
        else:
          out.setdefault(row["id"].strip(), {"id": row["id"].strip()})[key] = (row.get(column) or "").strip()
  if not out:
    raise FileNotFoundError(f"{data_dir}: no combined_data.csv (or AcuLa gender/smoker tables)")
  return out


def _quality(data_dir, modality):
  """{id: quality} from annotations/{modality}_labels.csv; empty when the file is absent."""
  path = os.path.join(data_dir, "annotations", f"{modality}_labels.csv")
  out = {}
  if os.path.isfile(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
      for row in csv.reader(f):
        if len(row) == 2 and row[1].strip().isdigit():
          out[row[0].strip().rsplit("_", 1)[0]] = int(row[1])
  return out


def _audio_index(audio_dir, modality):
  """{id: path} of Extracted_data/{date}/{id}/{modality}.wav."""
  index = {}
  if os.path.isdir(audio_dir):
    for date in sorted(os.listdir(audio_dir)):
      folder = os.path.join(audio_dir, date)
      for pid in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, pid, modality + ".wav")
        if os.path.isfile(path):
          index.setdefault(pid, path)
  return index


def _labels(row):
  labels = {}
  g = (row.get("g") or "").strip()
  if g in LABEL_MAPS["sex"]:
    labels["sex"] = LABEL_MAPS["sex"][g]
  s = (row.get("smoker") or "").strip()
  if s in LABEL_MAPS["smoker"]:
    labels["smoker"] = LABEL_MAPS["smoker"][s]
  if (row.get("covid_status") or "").strip():
    labels["covid_status"] = row["covid_status"].strip()
  return labels


def _metadata(row, labels, modality):
  meta = {"dataset": NAME, "schema": SCHEMA, "sound": modality}
  try:
    meta["age"] = float(row.get("a"))
  except (TypeError, ValueError):
    pass
  if "sex" in labels:
    meta["sex"] = labels["sex"]
  if "smoker" in labels:
    meta["smoker"] = labels["smoker"] == "smoker"
  if "covid_status" in labels:
    meta["covid_status"] = labels["covid_status"]
  flags = {k: LABEL_MAPS["flag"].get((row.get(k) or "").strip()) for k in LABEL_MAPS["symptom"]}
  if any(v is not None for v in flags.values()):
    meta["symptoms"] = [LABEL_MAPS["symptom"][k] for k, v in flags.items() if v]
  if LABEL_MAPS["flag"].get((row.get("asthma") or "").strip()):
    meta["asthma"] = True
  return meta


def list_examples(data_dir, *, audio_dir=None, check_audio=True, modality="cough-shallow", task=None,
                  min_quality=1, seed=0, fractions=(0.64, 0.16, 0.2)):
  """One spec per participant recording of `modality` and the participants that cannot be used.

  Args:
    data_dir: the Coswara-Data folder (combined_data.csv, annotations/), or AcuLa's tables.
    audio_dir: the extracted audio root; default data_dir/Extracted_data.
    check_audio: skip (and report) participants without the modality's .wav.
    modality: one of MODALITIES.
    task: None, "sex" (T9) or "smoker" (T8): keep only participants with that label.
    min_quality: drop files whose annotation quality is below this (when annotations exist).
    seed, fractions: participant split, stratified by the task label.
  """
  check_audio, min_quality, fractions = _bool(check_audio), int(min_quality), _fractions(fractions)
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if task not in (None, "sex", "smoker"):
    raise ValueError(f"task must be None, 'sex' or 'smoker', got {task!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, "Extracted_data")
  skipped = []
  participants = _participants(data_dir, skipped)
  quality = _quality(data_dir, modality)
  audio = _audio_index(audio_dir, modality) if check_audio else {}
  kept = []
  for pid in sorted(participants):
    row = participants[pid]
    labels = _labels(row)
    if task and task not in labels:
      value = row.get("g" if task == "sex" else "smoker")
      reason = "no label" if not value else f"unknown label {value!r}"
      skipped.append(common.Skipped(pid, f"{reason} for task {task}"))
    elif pid in quality and quality[pid] < min_quality:
      skipped.append(common.Skipped(pid, f"{modality} quality {quality[pid]} < {min_quality}"))
    elif check_audio and pid not in audio:
      skipped.append(common.Skipped(pid, f"missing audio file ({modality}.wav)"))
    else:
      kept.append((pid, row, labels))
  groups = collections.defaultdict(list)
  for pid, _, labels in kept:
    groups[labels.get(task, "") if task else labels.get("sex", "")].append(pid)
  assign = {}
  for key in sorted(groups):
    assign.update(common.subject_split(groups[key], seed=seed, fractions=fractions))
  specs = []
  for pid, row, labels in kept:
    path = audio.get(pid) or os.path.join(audio_dir, "*", pid, modality + ".wav")
    specs.append(common.ExampleSpec(f"{pid}_{modality}", path, pid, assign[pid], labels,
                                    _metadata(row, labels, modality)))
  return specs, skipped
