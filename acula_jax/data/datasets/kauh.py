"""KAUH lung sounds (Fraiwan et al. 2021; Mendeley Data jwyy9np4gv, King Abdullah University Hospital).

Layout relied on (`data_dir`): AudioFiles/*.wav, every fact encoded in the publisher's file name
    {filter}P{n}_{diagnosis},{sound type},{chest zone},{age},{sex}.wav
    e.g. "BP60_heart failure,Crep,P L L,83,F.wav"
  filter B/D/E = bell / diaphragm / extended stethoscope filter mode, so each subject P{n} has three
  recordings of one site; sound type codes N, C (crackles), Crep (crepitations), Bronchial, I/E
  (inspiratory/expiratory) + W (wheezes), B; chest zone = three ordered letters {A,P} {L,R} {L,M,U}
  (anterior/posterior, left/right, lower/middle/upper) - zones outside that pattern are kept as the
  raw code only. Optionally the AcuLa table metadata_kaudh.csv (ID, Diagnosis, Sound_Type, Location,
  Age, Gender, File_Name) lists the files; its spelled-out Location mistakes "L" for "Lower" in the
  side position, so the file-name codes are parsed instead.

Labels: `diagnosis` (normalised, `LABEL_MAPS["diagnosis"]`), `obstructive` (OPERA task T10:
healthy vs asthma/COPD; others have no such label), `crackles`, `wheezes`.

Split: subject-wise (subject = P{n}, all three filter recordings together), seeded, stratified by
diagnosis; OPERA uses a stratified subject split of 70/10/20 (train/valid/test), which is the default.
Note: OPERA matches COPD case-sensitively in the file name, so its T10 set leaves out the 3
recordings spelled "copd"; here they count as COPD.
"""

import collections
import csv
import os

from acula_jax.data.datasets import common

NAME = "kauh"
MODALITY = "lung"
SCHEMA = "lung"
OPERA_TASKS = {"T10": ("obstructive", "healthy vs obstructive (asthma or COPD), subject-wise split")}
AUDIO_FOLDER = "AudioFiles"
TABLE_FILE = "metadata_kaudh.csv"

LABEL_MAPS = {
    "filter": {"B": "bell", "D": "diaphragm", "E": "extended"},
    "diagnosis": {"n": "normal", "asthma": "asthma", "copd": "copd", "heart failure": "heart_failure",
                  "pneumonia": "pneumonia", "lung fibrosis": "lung_fibrosis", "bron": "bron",
                  "plueral effusion": "pleural_effusion", "pleural effusion": "pleural_effusion",
                  "heart failure + copd": "heart_failure+copd",
                  "heart failure + lung fibrosis": "heart_failure+lung_fibrosis",
                  "asthma and lung fibrosis": "asthma+lung_fibrosis"},
    "diagnosis_text": {"normal": "Healthy", "asthma": "asthma", "copd": "COPD", "heart_failure": "heart failure",
                       "pneumonia": "pneumonia", "lung_fibrosis": "lung fibrosis",
                       "bron": "BRON (as coded by the publisher)", "pleural_effusion": "pleural effusion",
                       "heart_failure+copd": "heart failure with COPD",
                       "heart_failure+lung_fibrosis": "heart failure with lung fibrosis",
                       "asthma+lung_fibrosis": "asthma with lung fibrosis"},
    "obstructive": {"normal": "healthy", "asthma": "obstructive", "copd": "obstructive",
                    "heart_failure+copd": "obstructive", "asthma+lung_fibrosis": "obstructive"},
    "sound_token": {"N": "normal", "C": "crackles", "Crep": "crepitations", "W": "wheezes", "Bronchial": "bronchial",
                    "B": "bronchial", "I": "inspiratory", "E": "expiratory"},
    "zone": ({"A": "anterior", "P": "posterior"}, {"L": "left", "R": "right"},
             {"L": "lower", "M": "middle", "U": "upper"}),
    "sex": {"F": "female", "M": "male"},
}



def _sound_type(code):
  """'I C E W' -> ('inspiratory crackles, expiratory wheezes', crackles, wheezes)."""
  words, phase = [], None
  for token in code.split():
    word = LABEL_MAPS["sound_token"].get(token)
    if word is None:
      raise KeyError(token)
    if word in ("inspiratory", "expiratory"):
      phase = word if phase is None else f"{phase} and {word}"
      continue
    words.append(f"{phase} {word}" if phase else word)
    phase = None
  text = ", ".join(words)
  return text, int("crackles" in text or "crepitations" in text), int("wheezes" in text)


def _zone(code):
  """'P L L' -> 'posterior left lower'; None when the code is outside the publisher's pattern."""
  tokens = code.split()
  maps = LABEL_MAPS["zone"]
  if len(tokens) == 3 and all(t in m for t, m in zip(tokens, maps)):
    return " ".join(m[t] for t, m in zip(tokens, maps))
  return None


def parse_file_name(name):
  """The facts of one KAUH file name; ValueError/KeyError when it does not follow the pattern."""
  stem = os.path.splitext(name)[0]
  rid, rest = stem.split("_", 1)
  diagnosis, sound, zone, age, sex = [p.strip() for p in rest.split(",")]
  if rid[:1] not in LABEL_MAPS["filter"] or rid[1:2] != "P" or not rid[2:].isdigit():
    raise ValueError(f"recording id {rid!r}")
  text, crackles, wheezes = _sound_type(sound)
  return {"id": rid, "subject": rid[2:], "filter": LABEL_MAPS["filter"][rid[0]],
          "diagnosis": LABEL_MAPS["diagnosis"][diagnosis.lower()], "sound_type": text, "crackles": crackles,
          "wheezes": wheezes, "chest_zone_code": zone, "chest_location": _zone(zone), "age": float(age),
          "sex": LABEL_MAPS["sex"][sex]}


def _file_names(data_dir, audio_dir, skipped):
  table = os.path.join(data_dir, TABLE_FILE)
  if os.path.isfile(table):
    with open(table, encoding="utf-8-sig", newline="") as f:
      return [(f"{table}:{i}", r.get("File_Name") or "") for i, r in enumerate(csv.DictReader(f), start=2)]
  if not os.path.isdir(audio_dir):
    raise FileNotFoundError(f"{audio_dir}: no KAUH audio folder and no {TABLE_FILE} in {data_dir}")
  return [(os.path.join(audio_dir, n), n) for n in sorted(os.listdir(audio_dir)) if n.endswith(".wav")]


def list_examples(data_dir, *, audio_dir=None, check_audio=True, seed=0, fractions=(0.7, 0.1, 0.2), task=None):
  """One spec per KAUH recording and the files that cannot be used.

  Args:
    data_dir: the release folder (with AudioFiles/), or a folder with metadata_kaudh.csv.
    audio_dir: folder of the .wav files; default data_dir/AudioFiles.
    check_audio: skip (and report) files listed in the table but missing on disk.
    seed, fractions: subject-wise split, stratified by diagnosis.
    task: None (every recording) or "obstructive" (T10: healthy, asthma and COPD subjects only).
  """
  check_audio = common.option_bool(check_audio)
  fractions = common.option_fractions(fractions)
  if task not in (None, "obstructive"):
    raise ValueError(f"task must be None or 'obstructive', got {task!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, AUDIO_FOLDER)
  skipped, parsed = [], []
  for where, name in _file_names(data_dir, audio_dir, skipped):
    try:
      parsed.append((where, name, parse_file_name(name)))
    except (ValueError, KeyError) as e:
      kind = "unknown label" if isinstance(e, KeyError) else "unparseable file name"
      skipped.append(common.Skipped(where, f"{kind} in {name!r}: {e}"))
  groups = collections.defaultdict(set)
  for _, _, facts in parsed:
    groups[facts["diagnosis"]].add(facts["subject"])
  assign = {}
  for dx in sorted(groups):
    assign.update(common.subject_split(sorted(groups[dx] - set(assign)), seed=seed, fractions=fractions))
  specs = []
  for where, name, facts in parsed:
    path = os.path.join(audio_dir, name)
    if task == "obstructive" and facts["diagnosis"] not in LABEL_MAPS["obstructive"]:
      skipped.append(common.Skipped(where, f"not part of task obstructive (diagnosis {facts['diagnosis']})"))
      continue
    if check_audio and not os.path.isfile(path):
      skipped.append(common.Skipped(path, "missing audio file"))
      continue
    labels = {"diagnosis": facts["diagnosis"], "crackles": facts["crackles"], "wheezes": facts["wheezes"]}
    if facts["diagnosis"] in LABEL_MAPS["obstructive"]:
      labels["obstructive"] = LABEL_MAPS["obstructive"][facts["diagnosis"]]
    meta = {"dataset": NAME, "schema": SCHEMA, "age": facts["age"], "sex": facts["sex"],
            "sound_type": facts["sound_type"], "chest_zone_code": facts["chest_zone_code"],
            "device": f"electronic stethoscope ({facts['filter']} filter)",
            "diagnosis": LABEL_MAPS["diagnosis_text"][facts["diagnosis"]]}
    if facts["chest_location"]:
      meta["chest_location"] = facts["chest_location"]
    specs.append(common.ExampleSpec(facts["id"], path, facts["subject"], assign[facts["subject"]], labels, meta))
  return specs, skipped
