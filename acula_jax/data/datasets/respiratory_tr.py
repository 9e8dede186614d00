"""RespiratoryDatabase@TR (Altan et al.; Mendeley Data p9z4h98s6j): 12-channel lung sounds of COPD patients.

Layout relied on (`data_dir`):
  RespiratoryDatabase@TR/{patient}_{channel}.wav   e.g. H010_L5.wav; channels L1-L6, R1-R6 (12 a patient)
  Labels.csv ("Patient ID,Diagnosis," with COPD0..COPD4, as shipped with OPERA from the publisher's
  Labels.xlsx) or the AcuLa table tr_metadata.csv (Patient_ID, File_Name, Diagnosis).
With Labels.csv the recordings are the .wav files found in the audio folder; with tr_metadata.csv
they are its File_Name rows.

Labels: `copd_severity` 0-4 (GOLD-like severity published as COPD0..COPD4; OPERA task T11 is this
5-class problem), `channel` (L1..R6, metadata only).

Split: subject-wise (all 12 channels of a patient together), seeded, stratified by severity; OPERA
uses 64/16/20 (train/valid/test) stratified patient splits, the default here.
"""

import collections
import csv
import os
import re

from acula_jax.data.datasets import common

NAME = "respiratory_tr"
MODALITY = "lung"
SCHEMA = "lung"
OPERA_TASKS = {"T11": ("copd_severity", "COPD severity COPD0-COPD4, subject-wise split")}
AUDIO_FOLDER = "RespiratoryDatabase@TR"
LABEL_MAPS = {
    "copd_severity": {f"COPD{i}": i for i in range(5)},
    "channel": {f"{side}{i}": f"{word} hemithorax (channel {side}{i})"
                for side, word in (("L", "left"), ("R", "right")) for i in range(1, 7)},
}
_FILE = re.compile(r"^(H\d{3})_([LR]\d)\.wav$")



def _rows(path, skipped):
  """[(where, patient, file name or None, diagnosis)] of Labels.csv or tr_metadata.csv."""
  out = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    for rowno, row in enumerate(csv.DictReader(f), start=2):
      where = f"{path}:{rowno}"
      pid = (row.get("Patient ID") or row.get("Patient_ID") or "").strip()
      if not pid:
        skipped.append(common.Skipped(where, "unparseable row (no patient id)"))
        continue
      out.append((where, pid, (row.get("File_Name") or "").strip() or None, (row.get("Diagnosis") or "").strip()))
  return out


def _recordings(data_dir, audio_dir, skipped):
  """[(where, patient, file name, diagnosis)]: one entry per recording."""
  table = os.path.join(data_dir, "tr_metadata.csv")
  if os.path.isfile(table):
    return _rows(table, skipped)
  labels = os.path.join(data_dir, "Labels.csv")
  if not os.path.isfile(labels):
    raise FileNotFoundError(f"{data_dir}: neither Labels.csv nor tr_metadata.csv found")
  diagnosis = {pid: (where, dx) for where, pid, _, dx in _rows(labels, skipped)}
  out = []
  for name in sorted(os.listdir(audio_dir)) if os.path.isdir(audio_dir) else []:
    if not name.endswith(".wav"):
      continue
    pid = name.split("_")[0]
    if pid not in diagnosis:
      skipped.append(common.Skipped(os.path.join(audio_dir, name), f"no label for patient {pid!r} in {labels}"))
      continue
    out.append((os.path.join(audio_dir, name), pid, name, diagnosis[pid][1]))
  return out


def list_examples(data_dir, *, audio_dir=None, check_audio=True, seed=0, fractions=(0.64, 0.16, 0.2)):
  """One spec per RespiratoryDatabase@TR channel recording and the rows that cannot be used.

  Args:
    data_dir: folder with Labels.csv (or tr_metadata.csv) and, by default, RespiratoryDatabase@TR/.
    audio_dir: folder of the .wav files; default data_dir/RespiratoryDatabase@TR.
    check_audio: skip (and report) recordings whose .wav is missing.
    seed, fractions: subject-wise split, stratified by COPD severity.
  """
  check_audio = common.option_bool(check_audio)
  fractions = common.option_fractions(fractions)
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, AUDIO_FOLDER)
  skipped, rows = [], []
  for where, pid, name, dx in _recordings(data_dir, audio_dir, skipped):
    m = _FILE.match(name or "")
    if dx not in LABEL_MAPS["copd_severity"]:
      skipped.append(common.Skipped(where, f"unknown label: Diagnosis {dx!r}"))
    elif m is None or m.group(1) != pid:
      skipped.append(common.Skipped(where, f"unparseable file name {name!r} for patient {pid!r}"))
    else:
      rows.append((pid, name, m.group(2), LABEL_MAPS["copd_severity"][dx]))
  groups = collections.defaultdict(set)
  for pid, _, _, severity in rows:
    groups[severity].add(pid)
  assign = {}
  for severity in sorted(groups):
    assign.update(common.subject_split(sorted(groups[severity]), seed=seed, fractions=fractions))
  specs = []
  for pid, name, channel, severity in rows:
    path = os.path.join(audio_dir, name)
    if check_audio and not os.path.isfile(path):
      skipped.append(common.Skipped(path, "missing audio file"))
      continue
    meta = {"dataset": NAME, "schema": SCHEMA, "channel": channel,
            "chest_location": LABEL_MAPS["channel"][channel], "copd_severity": severity,
            "device": "Littmann 3200 electronic stethoscope"}
    specs.append(common.ExampleSpec(os.path.splitext(name)[0], path, pid, assign[pid],
                                    {"copd_severity": severity}, meta))
  return specs, skipped
