"""ZCHSound paediatric heart sounds with congenital heart disease (Jia et al., IEEE TBME 2024).

Layout relied on (`data_dir`, as unpacked from the publisher's ZCHSound.zip):
  clean Heartsound Data/ZCH0001.wav ...          941 clean recordings (one per child)
  Noise Heartsound Data Details/ZCH0942.wav ...  318 noisy recordings
  Clean Heartsound Data Details.csv, Noise Heartsound Data Details.csv
      semicolon-separated: fileName;gender;age(days);diagnosis  (diagnosis NORMAL, ASD, VSD, PFO, PDA)
  Audio may also sit in one sub-folder per class (clean Heartsound Data/ASD/ZCH0534.wav); both work.
or the AcuLa table zch_metadata.csv (fileName, diagnosis spelled out, Data_Type Clean/Noise).

Labels: `diagnosis` (NORMAL/ASD/VSD/PFO/PDA), `chd` (abnormal = any defect, normal).
One recording per participant (publisher's design), so the file stem is the subject id.
Split: seeded, stratified by diagnosis, 64/16/20 (as the OPERA-style heart benchmark scripts do);
`subset` picks "clean" (default, the benchmark set), "noisy" or "both". OPERA defines no ZCHSound task.
"""

import collections
import csv
import os

from acula_jax.data.datasets import common

NAME = "zchsound"
MODALITY = "heart"
SCHEMA = "heart"
OPERA_TASKS = {}
SUBSETS = {"clean": ("clean Heartsound Data", "Clean Heartsound Data Details.csv", "Clean"),
           "noisy": ("Noise Heartsound Data Details", "Noise Heartsound Data Details.csv", "Noise")}
TABLE_FILE = "zch_metadata.csv"
LABEL_MAPS = {
    "diagnosis": {"NORMAL": "NORMAL", "ASD": "ASD", "VSD": "VSD", "PFO": "PFO", "PDA": "PDA",
                  "Normal": "NORMAL", "Atrial septal defect": "ASD", "Ventricular septal defect": "VSD",
                  "Patent foramen ovale": "PFO", "Patent ductus arteriosus": "PDA"},
    "chd": {"NORMAL": "normal", "ASD": "abnormal", "VSD": "abnormal", "PFO": "abnormal", "PDA": "abnormal"},
    "sex": {"M": "male", "F": "female"},
    "quality": {"Clean": "clean", "Noise": "noise"},
}



def _details(path, subset, skipped):
  """[(where, file name, row dict)] of one publisher details file (semicolon-separated)."""
  out = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    for rowno, row in enumerate(csv.DictReader(f, delimiter=";"), start=2):
      name = (row.get("fileName") or "").strip()
      if not name:
        skipped.append(common.Skipped(f"{path}:{rowno}", "unparseable row (no fileName)"))
        continue
      out.append((f"{path}:{rowno}", name, {"subset": subset, "diagnosis": (row.get("diagnosis") or "").strip(),
                                             "sex": (row.get("gender") or "").strip(),
                                             "age_days": (row.get("age(days)") or "").strip()}))
  return out


def _rows(data_dir, subsets, skipped):
  table = os.path.join(data_dir, TABLE_FILE)
  have_details = any(os.path.isfile(os.path.join(data_dir, SUBSETS[s][1])) for s in subsets)
  if not have_details and os.path.isfile(table):
    out = []
    with open(table, encoding="utf-8-sig", newline="") as f:
      for rowno, row in enumerate(csv.DictReader(f), start=2):
        subset = {"Clean": "clean", "Noise": "noisy"}.get((row.get("Data_Type") or "").strip())
        if subset is None:
          skipped.append(common.Skipped(f"{table}:{rowno}", f"unknown label: Data_Type {row.get('Data_Type')!r}"))
        elif subset in subsets:
          out.append((f"{table}:{rowno}", row["fileName"].strip(), {"subset": subset,
                                                                    "diagnosis": row["diagnosis"].strip()}))
    return out
  out = []
  for s in subsets:
    path = os.path.join(data_dir, SUBSETS[s][1])
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: ZCHSound details table not found")
    out += _details(path, s, skipped)
  return out


def _audio_index(folder):
  """{file name: path} of the .wav files in a subset folder, flat or in per-class sub-folders."""
  index = {}
  for root, _, files in os.walk(folder):
    for name in files:
      if name.endswith(".wav"):
        index.setdefault(name, os.path.join(root, name))
  return index


def list_examples(data_dir, *, audio_dir=None, check_audio=True, subset="clean", seed=0,
                  fractions=(0.64, 0.16, 0.2)):
  """One spec per ZCHSound recording and the rows that cannot be used.

  Args:
    data_dir: the unpacked release (details CSVs and audio folders) or a folder with zch_metadata.csv.
    audio_dir: folder holding the subset folders; default data_dir.
    check_audio: skip (and report) rows whose .wav is missing.
    subset: "clean", "noisy" or "both".
    seed, fractions: split parameters (stratified by diagnosis).
  """
  check_audio = common.option_bool(check_audio)
  fractions = common.option_fractions(fractions)
  subsets = {"clean": ("clean",), "noisy": ("noisy",), "both": ("clean", "noisy")}.get(subset)
  if subsets is None:
    raise ValueError(f"subset must be 'clean', 'noisy' or 'both', got {subset!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else data_dir
  skipped, rows = [], []
  for where, name, row in _rows(data_dir, subsets, skipped):
    dx = LABEL_MAPS["diagnosis"].get(row["diagnosis"])
    if dx is None:
      skipped.append(common.Skipped(where, f"unknown label: diagnosis {row['diagnosis']!r}"))
    else:
      rows.append((where, name, dict(row, diagnosis=dx)))
  groups = collections.defaultdict(list)
  for _, name, row in rows:
    groups[row["diagnosis"]].append(os.path.splitext(name)[0])
  assign = {}
  for dx in sorted(groups):
    assign.update(common.subject_split(groups[dx], seed=seed, fractions=fractions))
  indices = {s: _audio_index(os.path.join(audio_dir, SUBSETS[s][0])) for s in subsets} if check_audio else {}
  specs = []
  for where, name, row in rows:
    stem = os.path.splitext(name)[0]
    path = indices.get(row["subset"], {}).get(name) or os.path.join(audio_dir, SUBSETS[row["subset"]][0], name)
    if check_audio and name not in indices[row["subset"]]:
      skipped.append(common.Skipped(path, "missing audio file"))
      continue
    meta = {"dataset": NAME, "schema": SCHEMA, "diagnosis": row["diagnosis"],
            "recording_quality": SUBSETS[row["subset"]][2]}
    if row.get("sex") in LABEL_MAPS["sex"]:
      meta["sex"] = LABEL_MAPS["sex"][row["sex"]]
    try:
      meta["age_days"] = float(row["age_days"])
    except (KeyError, ValueError):
      pass
    labels = {"diagnosis": row["diagnosis"], "chd": LABEL_MAPS["chd"][row["diagnosis"]]}
    specs.append(common.ExampleSpec(stem, path, stem, assign[stem], labels, meta))
  return specs, skipped
