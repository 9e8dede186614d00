"""SPRSound, SJTU paediatric respiratory sounds (Zhang et al., IEEE TBioCAS 2022; BioCAS challenges).

Layout relied on (`data_dir`, the publisher's GitHub release): folders ending in `_wav` and `_json`
holding `{patient}_{age}_{gender}_{location}_{recording}.wav` + a `.json` of the same stem, e.g.
  BioCAS2022/train2022_wav/65058931_3.4_1_p2_1086.wav, BioCAS2022/train2022_json/....json
  BioCAS2022/test2022_wav/..., BioCAS2022/test2022_json/{inter_test_json,intra_test_json}/....json
(also the older train_wav/train_json naming and AcuLa's train_classification_wav/_json). The JSON
holds "record_annotation" (Normal, CAS, DAS, CAS & DAS, Poor Quality; "recording_annotation" in the
README is accepted too) and "event_annotation" [{start, end (ms, strings), type}]. gender 0 male /
1 female; location p1 left posterior, p2 left lateral, p3 right posterior, p4 right lateral (p5-p8
"additional" from 2024). Patient diagnoses come from `Patient Summary/SPRSound_patient_summary.csv`
(patient_num, disease, age, gender) or, failing that, AcuLa's metadata_*_classification_updated.csv
(Patient_Num, ..., disease), searched anywhere under data_dir.

Labels: `record_annotation`, `adventitious` (normal / adventitious, challenge task 2-1 without the
poor-quality class), `disease` when known; with `per_cycle=True` one spec per annotated respiratory
event (start_s/end_s) labelled `event_type`. Poor Quality recordings are skipped with that reason.

Split: JSON under a folder whose name starts with "train" -> train (with a seeded subject-wise
`valid_fraction` of its patients as valid); "test"/"valid" folders -> test. The intra-patient test set
(`intra` in its folder name) reuses training patients by design; it is skipped unless
`intra_test=True` (then it is test, knowingly not subject-disjoint). OPERA has no SPRSound task;
AcuLa uses SPRSound for alignment.
"""

import csv
import json
import os

from acula_jax.data.datasets import common

NAME = "sprsound"
MODALITY = "lung"
SCHEMA = "lung"
OPERA_TASKS = {}
LABEL_MAPS = {
    "record_annotation": {"Normal": "Normal", "CAS": "CAS", "DAS": "DAS", "CAS & DAS": "CAS & DAS"},
    "adventitious": {"Normal": "normal", "CAS": "adventitious", "DAS": "adventitious", "CAS & DAS": "adventitious"},
    "event_type": {t: t for t in ("Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle", "Fine Crackle",
                                  "Wheeze+Crackle")},
    "gender": {"0": "male", "1": "female"},
    "location": {"p1": "left posterior chest", "p2": "left lateral chest", "p3": "right posterior chest",
                 "p4": "right lateral chest", "p5": "additional site 5", "p6": "additional site 6",
                 "p7": "additional site 7", "p8": "additional site 8"},
}
_SUMMARY_FILES = ("SPRSound_patient_summary.csv",)



def _diseases(data_dir, skipped):
  """{patient: disease} from the patient summary (or AcuLa's classification tables)."""
  out, sources = {}, []
  for root, _, files in os.walk(data_dir):
    for name in sorted(files):
      if name in _SUMMARY_FILES or (name.startswith("metadata_") and name.endswith("classification_updated.csv")):
        sources.append(os.path.join(root, name))
  for path in sorted(sources, key=lambda p: os.path.basename(p) not in _SUMMARY_FILES):
    with open(path, encoding="utf-8-sig", newline="") as f:
      for rowno, row in enumerate(csv.DictReader(f), start=2):
        pid = (row.get("patient_num") or row.get("Patient_Num") or "").strip()
        disease = (row.get("disease") or "").strip()
        if not pid or not disease:
          skipped.append(common.Skipped(f"{path}:{rowno}", "unparseable row (no patient or disease)"))
        elif out.setdefault(pid, disease) != disease:
          skipped.append(common.Skipped(f"{path}:{rowno}", f"conflicting disease for patient {pid}"))
  return out


def _json_files(data_dir):
  """[(json path, split tag)] for every annotation file under a *_json folder."""
  out = []
  for root, _, files in os.walk(data_dir):
    parts = os.path.relpath(root, data_dir).split(os.sep)
    tops = [p for p in parts if p.endswith("_json")]
    if not tops:
      continue
    tag = "train" if tops[0].startswith("train") else "intra" if any("intra" in p for p in parts) else "test"
    out += [(os.path.join(root, n), tag) for n in sorted(files) if n.endswith(".json")]
  return out


def _wav_index(roots):
  index = {}
  for root in roots:
    for folder, _, files in os.walk(root):
      for name in files:
        if name.endswith(".wav"):
          index.setdefault(name[:-4], os.path.join(folder, name))
  return index


def parse_name(stem):
  """{patient, age, sex, location} of a SPRSound file stem; ValueError/KeyError when malformed."""
  pid, age, gender, loc, rec = stem.split("_")
  if not pid or not rec:
    raise ValueError(f"anonymised or malformed name {stem!r}")
  return {"patient": pid, "age": float(age), "sex": LABEL_MAPS["gender"][gender],
          "chest_location": LABEL_MAPS["location"][loc]}


def _read_json(path):
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  record = data.get("record_annotation", data.get("recording_annotation"))
  events = [(float(e["start"]) / 1000, float(e["end"]) / 1000, e["type"]) for e in data.get("event_annotation", [])]
  return record, sorted(events)


def _check(stem, record, events):
  """None when usable, else the reason to skip."""
  if record == "Poor Quality":
    return "poor quality recording (record_annotation)"
  if record not in LABEL_MAPS["record_annotation"]:
    return f"unknown label: record_annotation {record!r}"
  bad = [t for _, _, t in events if t not in LABEL_MAPS["event_type"]]
  if bad:
    return f"unknown label: event type {bad[0]!r}"
  if any(end <= start for start, end, _ in events):
    return "unparseable event (end <= start)"
  return None


def list_examples(data_dir, *, audio_dir=None, check_audio=True, per_cycle=False, intra_test=False, seed=0,
                  valid_fraction=0.2):
  """Recordings (or respiratory events) of SPRSound and the files that cannot be used.

  Args:
    data_dir: the release folder (searched recursively for *_json / *_wav folders).
    audio_dir: where to look for the .wav files (recursively); default data_dir.
    check_audio: skip (and report) annotations whose .wav is missing.
    per_cycle: one spec per annotated event instead of one per recording.
    intra_test: also list the intra-patient test set (not subject-disjoint from train).
    seed, valid_fraction: subject-wise valid split drawn from the training patients.
  """
  check_audio, per_cycle, intra_test = common.option_bool(check_audio), common.option_bool(per_cycle), common.option_bool(intra_test)
  valid_fraction = float(valid_fraction)
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else data_dir
  skipped = []
  diseases = _diseases(data_dir, skipped)
  wavs = _wav_index([audio_dir]) if check_audio else {}
  entries = []
  for path, tag in _json_files(data_dir):
    stem = os.path.basename(path)[:-5]
    if tag == "intra" and not intra_test:
      skipped.append(common.Skipped(path, "intra-patient test set (patients overlap train; intra_test=False)"))
      continue
    try:
      facts = parse_name(stem)
      record, events = _read_json(path)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
      skipped.append(common.Skipped(path, f"unparseable annotation or file name: {e!r}"))
      continue
    reason = _check(stem, record, events)
    if reason:
      skipped.append(common.Skipped(path, reason))
    elif check_audio and stem not in wavs:
      skipped.append(common.Skipped(path, "missing audio file"))
    else:
      entries.append((stem, tag, facts, record, events))
  train_patients = sorted({f["patient"] for _, tag, f, _, _ in entries if tag == "train"})
  valid = common.subject_split(train_patients, seed=seed, fractions=(1 - valid_fraction, valid_fraction, 0.0))
  specs = []
  for stem, tag, facts, record, events in entries:
    split = valid[facts["patient"]] if tag == "train" else "test"
    path = wavs.get(stem) or os.path.join(audio_dir, stem + ".wav")
    labels = {"record_annotation": record, "adventitious": LABEL_MAPS["adventitious"][record]}
    meta = {"dataset": NAME, "schema": SCHEMA, "age": facts["age"], "sex": facts["sex"],
            "chest_location": facts["chest_location"], "device": "Yunting model II stethoscope",
            "record_annotation": record, "events": [t for _, _, t in events]}
    if facts["patient"] in diseases:
      labels["disease"] = meta["disease"] = diseases[facts["patient"]]
    if tag == "intra":
      meta["test_set"] = "intra"
    if not per_cycle:
      specs.append(common.ExampleSpec(stem, path, facts["patient"], split, labels, meta))
      continue
    for i, (start, end, kind) in enumerate(events):
      specs.append(common.ExampleSpec(f"{stem}_e{i:03d}", path, facts["patient"], split,
                                      dict(labels, event_type=kind), dict(meta, events=[kind]),
                                      start_s=start, end_s=end))
  return specs, skipped
