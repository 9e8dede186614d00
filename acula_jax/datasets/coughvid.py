"""COUGHVID crowd-sourced coughs (Orlandic et al. 2021; Zenodo 4048312 / 7024894), as the publisher lays it out.

Layout relied on (`data_dir`):
  public_dataset/metadata_compiled.csv   columns used: uuid, cough_detected (0-1 classifier score),
      age, gender (female/male/other), respiratory_condition, fever_muscle_pain (True/False),
      status (healthy / symptomatic / COVID-19), and the expert columns diagnosis_1..3 (rendered
      only as metadata, not as labels)
  public_dataset/{uuid}.webm | .ogg   (+ {uuid}.json) - the published audio
  wav/{uuid}.wav                      optional conversion (OPERA converts with ffmpeg); preferred when present
metadata_compiled.csv may also sit directly in data_dir. Only .wav and .ogg decode with soundfile;
.webm files are listed with metadata["format"]="webm" and need conversion before ingestion.

Labels: `covid` (COVID-19 positive / healthy; OPERA T5, symptomatic has none), `sex`
(female/male; OPERA T6), `status` as published.
OPERA keeps recordings with cough_detected >= 0.8 (`min_cough_detected`), draws a fixed-size test set
and splits the rest 75/25 train/valid (uuid lists shipped as .npy). Here: seeded split by uuid
(CoughVID has no participant ids; a uuid is one recording), stratified by the task label,
default 60/20/20. The OPERA uuid lists are not reproduced.
"""

import collections
import csv
import os
import re

from acula_jax.datasets import common

NAME = "coughvid"
MODALITY = "cough"
SCHEMA = "cough"
OPERA_TASKS = {"T5": ("covid", "COVID-19 vs healthy from cough"), "T6": ("sex", "female vs male from cough")}
LABEL_MAPS = {
    "covid": {"COVID-19": "positive", "healthy": "negative"},
    "sex": {"female": "female", "male": "male"},
    "status": {"COVID-19": "COVID-19", "healthy": "healthy", "symptomatic": "symptomatic"},
    "flag": {"True": True, "False": False},
}
_AUDIO_EXT = (".wav", ".ogg", ".webm")



def _bool(value):
  """An adapter option given as a bool or as text ("true", "1", "yes"; prepare passes strings)."""
  return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y")


def _fractions(value):
  """(train, valid, test) fractions given as a tuple or as text ("0.7,0.1,0.2" or "0.7/0.1/0.2")."""
  return tuple(float(x) for x in re.split(r"[,/ ]+", value.strip())) if isinstance(value, str) else tuple(value)

def _metadata_path(data_dir):
  for path in (os.path.join(data_dir, "public_dataset", "metadata_compiled.csv"),
               os.path.join(data_dir, "metadata_compiled.csv")):
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"{data_dir}: metadata_compiled.csv not found (in public_dataset/ or the folder itself)")


def _find_audio(uuid, folders):
  for folder, exts in folders:
    for ext in exts:
      path = os.path.join(folder, uuid + ext)
      if os.path.isfile(path):
        return path
  return None


def _metadata(row):
  meta = {"dataset": NAME, "schema": SCHEMA, "sound": "cough"}
  try:
    meta["age"] = float(row["age"])
  except (KeyError, TypeError, ValueError):
    pass
  if row.get("gender") in LABEL_MAPS["sex"]:
    meta["sex"] = row["gender"]
  if row.get("status"):
    meta["covid_status"] = row["status"]
  symptoms = []
  if LABEL_MAPS["flag"].get(row.get("fever_muscle_pain", "")):
    symptoms.append("fever or muscle pain")
  if LABEL_MAPS["flag"].get(row.get("respiratory_condition", "")) is not None:
    meta["respiratory_condition"] = LABEL_MAPS["flag"][row["respiratory_condition"]]
  if row.get("fever_muscle_pain") in LABEL_MAPS["flag"]:
    meta["symptoms"] = symptoms
  return meta


def list_examples(data_dir, *, audio_dir=None, check_audio=True, task=None, min_cough_detected=0.8, seed=0,
                  fractions=(0.6, 0.2, 0.2)):
  """One spec per COUGHVID recording and the rows that cannot be used.

  Args:
    data_dir: the dataset folder (see the module docstring).
    audio_dir: folder with {uuid}.wav/.ogg/.webm; default data_dir/wav, then data_dir/public_dataset.
    check_audio: skip (and report) rows without an audio file.
    task: None, "covid" (T5) or "sex" (T6): keep only rows with that label.
    min_cough_detected: drop rows whose cough_detected score is lower (OPERA: 0.8).
    seed, fractions: split by uuid, stratified by the task label.
  """
  check_audio, fractions = _bool(check_audio), _fractions(fractions)
  min_cough_detected = float(min_cough_detected)
  if task not in (None, "covid", "sex"):
    raise ValueError(f"task must be None, 'covid' or 'sex', got {task!r}")
  data_dir = os.fspath(data_dir)
  folders = [(os.fspath(audio_dir), _AUDIO_EXT)] if audio_dir else [
      (os.path.join(data_dir, "wav"), (".wav",)), (os.path.join(data_dir, "public_dataset"), _AUDIO_EXT)]
  path = _metadata_path(data_dir)
  skipped, kept = [], []
  with open(path, encoding="utf-8-sig", newline="") as f:
    for rowno, row in enumerate(csv.DictReader(f), start=2):
      where, uuid = f"{path}:{rowno}", (row.get("uuid") or "").strip()
      try:
        score = float(row.get("cough_detected"))
      except (TypeError, ValueError):
        skipped.append(common.Skipped(where, f"unparseable cough_detected {row.get('cough_detected')!r}"))
        continue
      labels = {"status": row.get("status") or ""}
      if row.get("status") in LABEL_MAPS["covid"]:
        labels["covid"] = LABEL_MAPS["covid"][row["status"]]
      if row.get("gender") in LABEL_MAPS["sex"]:
        labels["sex"] = LABEL_MAPS["sex"][row["gender"]]
      audio = _find_audio(uuid, folders) if check_audio else None
      if not uuid:
        skipped.append(common.Skipped(where, "unparseable row (no uuid)"))
      elif score < min_cough_detected:
        skipped.append(common.Skipped(where, f"cough_detected {score:g} < {min_cough_detected:g}"))
      elif task and task not in labels:
        value = row.get("status" if task == "covid" else "gender")
        skipped.append(common.Skipped(where, f"{'no' if not value else 'unknown'} label for task {task}: {value!r}"))
      elif check_audio and audio is None:
        skipped.append(common.Skipped(where, f"missing audio file for uuid {uuid}"))
      else:
        kept.append((uuid, audio or os.path.join(folders[0][0], uuid + ".wav"), labels, row))
  groups = collections.defaultdict(list)
  for uuid, _, labels, _ in kept:
    groups[labels.get(task, "") if task else labels.get("covid", "")].append(uuid)
  assign = {}
  for key in sorted(groups):
    assign.update(common.subject_split(groups[key], seed=seed, fractions=fractions))
  specs = []
  for uuid, audio, labels, row in kept:
    meta = _metadata(row)
    if audio.endswith(".webm"):
      meta["format"] = "webm"
    if not labels["status"]:
      del labels["status"]
    specs.append(common.ExampleSpec(uuid, audio, uuid, assign[uuid], labels, meta))
  return specs, skipped
