"""MMLung (Mosuily et al.; on request from the authors): smartphone audio with spirometry of 40 participants.

Layout relied on (`data_dir`, as described by OPERA's datasets/mmlung README and extract script):
  Trimmed Data from phone/{task folder}/{participant}_{suffix}.wav
      deep breath: 9_3_deepbreath/{i}_deepbreaths.wav   vowel /o/: 5_2_O_single/{i}_vowelo.wav
      (other task folders exist; OPERA and this adapter use these two)
  spirometry_ground_truth/{participant}_*.xls   FVC in cell B23, FEV1 in B24, FEV1/FVC in B25 (read
      with xlrd; a file xlrd cannot read is skipped, with the reason, in the manifest)
  All_path.xlsx (OPERA's extract_mmlung.py output) or All_path.csv with the same columns:
      Spirometry_file, Deep_Breath_file, O_Single_file, FVC, FEV1, FEV1/FVC - read without extra
      packages; the participant is the Spirometry_file stem before its first "_".
Audio paths are always built from the layout above (the table's paths are not trusted).
Phone recordings may be stereo: ingest with audio.load_audio(..., downmix=True).

Labels (regression): `fvc`, `fev1` (litres), `fev1_fvc` (as published). OPERA tasks T13-T15: FVC,
FEV1, FEV1/FVC from deep breath; T16-T18: the same from vowel /o/ (`modality`), evaluated by
leave-one-participant-out (`heldout_subject`: that participant is test, 11% of the others valid, the
rest train). Without `heldout_subject` a seeded subject split (`fractions`) is used.
"""

import csv
import glob
import os
import re
import xml.etree.ElementTree as ET
import zipfile

from acula_jax.data.datasets import common

NAME = "mmlung"
MODALITY = "breath"
SCHEMA = "lung_function"
OPERA_TASKS = {"T13": ("fvc", "deep_breath"), "T14": ("fev1", "deep_breath"), "T15": ("fev1_fvc", "deep_breath"),
               "T16": ("fvc", "vowel_o"), "T17": ("fev1", "vowel_o"), "T18": ("fev1_fvc", "vowel_o")}
AUDIO_FOLDER = "Trimmed Data from phone"
TASK_FOLDERS = {"deep_breath": ("9_3_deepbreath", "deepbreaths"), "vowel_o": ("5_2_O_single", "vowelo")}
LABEL_MAPS = {"columns": {"FVC": "fvc", "FEV1": "fev1", "FEV1/FVC": "fev1_fvc"},
              "xls_cells": {"fvc": (22, 1), "fev1": (23, 1), "fev1_fvc": (24, 1)}}
_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"



def _column_index(ref):
  letters = re.match(r"[A-Z]+", ref).group(0)
  n = 0
  for ch in letters:
    n = n * 26 + ord(ch) - 64
  return n - 1


def read_xlsx(path, sheet="xl/worksheets/sheet1.xml"):
  """Rows of the first sheet of an .xlsx file as dicts keyed by the header row (stdlib only)."""
  with zipfile.ZipFile(path) as z:
    shared = []
    if "xl/sharedStrings.xml" in z.namelist():
      for si in ET.fromstring(z.read("xl/sharedStrings.xml")).iter(f"{_NS}si"):
        shared.append("".join(t.text or "" for t in si.iter(f"{_NS}t")))
    grid = []
    for row in ET.fromstring(z.read(sheet)).iter(f"{_NS}row"):
      cells = {}
      for c in row.iter(f"{_NS}c"):
        kind, v = c.get("t"), c.find(f"{_NS}v")
        if kind == "s":
          value = shared[int(v.text)]
        elif kind == "inlineStr":
          value = "".join(t.text or "" for t in c.iter(f"{_NS}t"))
        else:
          value = v.text if v is not None else ""
        cells[_column_index(c.get("r"))] = value
      grid.append([cells.get(i, "") for i in range(max(cells) + 1)] if cells else [])
  header = [str(h) for h in grid[0]] if grid else []
  return [dict(zip(header, r)) for r in grid[1:]]


def _number(value):
  try:
    return float(str(value).replace("*", "").strip())
  except (TypeError, ValueError):
    return None


def _from_table(data_dir, skipped):
  """{participant: targets} from All_path.xlsx / All_path.csv, or None when neither exists."""
  for name in ("All_path.xlsx", "All_path.csv"):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
      continue
    if name.endswith(".csv"):
      with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    else:
      rows = read_xlsx(path)
    out = {}
    for rowno, row in enumerate(rows, start=2):
      pid = os.path.basename(str(row.get("Spirometry_file") or "")).split("_")[0].split(".")[0]
      targets = {key: _number(row.get(col)) for col, key in LABEL_MAPS["columns"].items()}
      if not pid or any(v is None for v in targets.values()):
        skipped.append(common.Skipped(f"{path}:{rowno}", f"unparseable row (participant {pid!r}, {targets})"))
      else:
        out[pid] = targets
    return out
  return None


def _from_xls(data_dir, skipped):
  """{participant: targets} from spirometry_ground_truth/*.xls; unreadable files are skipped and listed."""
  paths = sorted(glob.glob(os.path.join(data_dir, "spirometry_ground_truth", "*.xls")))
  if not paths:
    raise FileNotFoundError(f"{data_dir}: no All_path.xlsx/.csv and no spirometry_ground_truth/*.xls")
  import xlrd  # pylint: disable=import-outside-toplevel  (a dependency; only this layout needs it)
  out = {}
  for path in paths:
    try:
      sheet = xlrd.open_workbook(path).sheet_by_index(0)
      targets = {k: _number(sheet.cell_value(r, c)) for k, (r, c) in LABEL_MAPS["xls_cells"].items()}
    except (xlrd.XLRDError, OSError, IndexError, ValueError) as e:  # not an .xls, or too few rows
      skipped.append(common.Skipped(path, f"unreadable spirometry spreadsheet ({type(e).__name__}: {e})"))
      continue
    if any(v is None for v in targets.values()):
      skipped.append(common.Skipped(path, f"unparseable spirometry cells {targets}"))
    else:
      out[os.path.basename(path).split("_")[0].split(".")[0]] = targets
  return out


def _splits(participants, heldout_subject, seed, fractions):
  if heldout_subject is None:
    return common.subject_split(participants, seed=seed, fractions=fractions)
  heldout_subject = str(heldout_subject)
  if heldout_subject not in participants:
    raise ValueError(f"heldout_subject {heldout_subject!r} is not a participant ({participants})")
  rest = [p for p in participants if p != heldout_subject]
  out = common.subject_split(rest, seed=seed, fractions=(0.89, 0.11, 0.0))
  out[heldout_subject] = "test"
  return out


def list_examples(data_dir, *, audio_dir=None, check_audio=True, modality="deep_breath", heldout_subject=None,
                  seed=0, fractions=(0.7, 0.1, 0.2)):
  """One spec per participant recording of `modality` with spirometry targets.

  Args:
    data_dir: the MMLung folder (see the module docstring).
    audio_dir: the "Trimmed Data from phone" folder; default inside data_dir.
    check_audio: skip (and report) participants whose recording is missing.
    modality: "deep_breath" (T13-T15) or "vowel_o" (T16-T18).
    heldout_subject: leave-one-participant-out fold (that participant is the test set).
    seed, fractions: subject split when no participant is held out.
  """
  check_audio, fractions = common.option_bool(check_audio), common.option_fractions(fractions)
  if modality not in TASK_FOLDERS:
    raise ValueError(f"modality must be one of {sorted(TASK_FOLDERS)}, got {modality!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, AUDIO_FOLDER)
  skipped = []
  targets = _from_table(data_dir, skipped)
  if targets is None:
    targets = _from_xls(data_dir, skipped)
  folder, suffix = TASK_FOLDERS[modality]
  kept = []
  for pid in sorted(targets, key=lambda p: (len(p), p)):
    path = os.path.join(audio_dir, folder, f"{pid}_{suffix}.wav")
    if check_audio and not os.path.isfile(path):
      skipped.append(common.Skipped(path, "missing audio file"))
    else:
      kept.append((pid, path))
  assign = _splits([p for p, _ in kept], heldout_subject, seed, fractions)
  specs = []
  for pid, path in kept:
    meta = {"dataset": NAME, "schema": SCHEMA, "sound": modality, **targets[pid]}
    specs.append(common.ExampleSpec(f"{pid}_{modality}", path, pid, assign[pid], dict(targets[pid]), meta))
  return specs, skipped
