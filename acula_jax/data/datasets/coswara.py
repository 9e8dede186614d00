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

Splits (`split`):
  "opera"   OPERA's T8/T9 split, recomputed from the dataset's own metadata (no OPERA files needed).
            What OPERA does (github.com/evelyn0414/OPERA, src/benchmark/processing/coswara_processing.py
            and src/benchmark/linear_eval.py, linear_evaluation_coswara): walk combined_data.csv in file
            order; per modality drop quality-0 files (annotations) and three ids hard-coded as broken
            (OPERA_EXCLUDED); keep participants with a label that are usable in BOTH modalities of a pair
            (cough-heavy + cough-shallow, breathing-deep + breathing-shallow: "aligned" lists); code
            the label male 0 / female 1, non-smoker 0 / smoker 1; test = sklearn
            train_test_split(test_size=0.2, random_state=1337, stratify=label) of that list; valid =
            train_test_split(test_size=0.2, random_state=1337, stratify) of the train part, in the order
            train_test_split returned it. Reproduced here step by step, so the assignment is identical.
            Verified on Coswara-Data (github.com/iiscleap/Coswara-Data, master of 2023-06:
            combined_data.csv + annotations/): the aligned lists (cough: 2496 participants for sex, 948
            for smoker; breathing: 2123 and 713; same order and labels) and the test sets equal OPERA's
            shipped feature/coswara_eval/{cough,breathing}_aligned_{filenames,*_label,train_test_split}
            _*.npy exactly (set ACULA_COSWARA_DATA to rerun the cough check in the tests). OPERA's valid
            part is not shipped: it is recomputed the same way, and equals what linear_evaluation_coswara
            draws from OPERA's own shipped arrays.
            The split needs the *membership* OPERA had: with AcuLa's two tables (no annotations) the
            quality filter cannot be applied, the list is longer and the assignment differs from
            OPERA's (a warning says so). Audio is checked after the split, so a missing file drops only
            that participant (skipped, counted) and leaves everyone else's assignment as OPERA's.
            OPERA also ships a "google" test split (google_*_cough_split.npy, to compare with HeAR);
            its `--mapgoogle` flag is never passed to linear_evaluation_coswara, so the reported
            T8/T9 use the split above, which is the one reproduced.
  "seeded"  one recording per participant and modality, so splits are subject-wise by construction;
            seeded (common.subject_split), stratified by the task label, default 64/16/20.
  "auto"    (default) "opera" when `task` is sex/smoker and `modality` is one of OPERA's pairs,
            otherwise "seeded" (OPERA defines no split without a task label).
"""

import collections
import csv
import os
import warnings

import numpy as np

from acula_jax.data.datasets import common

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
    "opera_code": {"sex": {"male": 0, "female": 1}, "smoker": {"non-smoker": 0, "smoker": 1}},
    "symptom": {"cough": "cough", "cold": "cold", "fever": "fever", "bd": "breathing difficulty",
                "st": "sore throat", "ftg": "fatigue", "mp": "muscle pain", "loss_of_smell": "loss of smell",
                "diarrhoea": "diarrhoea"},
}
SPLITS = ("auto", "opera", "seeded")
# OPERA's "aligned" pairs: a participant counts only when usable in both modalities of the pair.
OPERA_PAIRS = {"cough-heavy": "cough-shallow", "cough-shallow": "cough-heavy",
               "breathing-deep": "breathing-shallow", "breathing-shallow": "breathing-deep"}
# Ids coswara_processing.py leaves out (audio not working / missing in the release), per modality.
OPERA_EXCLUDED = {"C7Km0KttQRMMM6UoyocajfgZAOB3": MODALITIES, "kgjTguvo3vZJTO7F1qO9GxEicbA3": MODALITIES,
                  "9hftEYixyhP1Neeq3fB7ZwITQC53": ("cough-shallow",)}
OPERA_TEST_SIZE, OPERA_VALID_SIZE, OPERA_RANDOM_STATE = 0.2, 0.2, 1337


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


def _annotation_path(data_dir, modality):
  return os.path.join(data_dir, "annotations", f"{modality}_labels.csv")


def _quality(data_dir, modality):
  """{id: quality} from annotations/{modality}_labels.csv; empty when the file is absent."""
  path = _annotation_path(data_dir, modality)
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


def opera_split(participants, task, modality, quality, pair_quality, min_quality=1):
  """OPERA's T8/T9 assignment (see the module docstring) and why participants are out of it.

  Args:
    participants: {id: raw row} in combined_data.csv order (the order matters: it is OPERA's list order).
    task: "sex" or "smoker".
    modality: one of OPERA_PAIRS; quality / pair_quality: {id: quality} of it and of its pair.
    min_quality: OPERA drops quality 0, i.e. min_quality=1.

  Returns:
    ({id: "train" | "valid" | "test"}, {id: reason}); participants without a task label are in neither.
  """
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  pair = OPERA_PAIRS[modality]
  members, codes, reasons = [], [], {}
  for pid, row in participants.items():
    labels = _labels(row)
    if task not in labels:
      continue
    excluded = [m for m in (modality, pair) if m in OPERA_EXCLUDED.get(pid, ())]
    if excluded:
      reasons[pid] = f"excluded by OPERA ({excluded[0]} audio listed as not working in coswara_processing.py)"
    elif quality.get(pid, min_quality) < min_quality:
      reasons[pid] = f"{modality} quality {quality[pid]} < {min_quality}"
    elif pair_quality.get(pid, min_quality) < min_quality:
      reasons[pid] = (f"{pair} quality {pair_quality[pid]} < {min_quality} (OPERA keeps participants usable in "
                      f"both {modality} and {pair})")
    else:
      members.append(pid)
      codes.append(LABEL_MAPS["opera_code"][task][labels[task]])
  codes = np.asarray(codes)
  try:
    train, test = train_test_split(np.arange(len(members)), test_size=OPERA_TEST_SIZE,
                                   random_state=OPERA_RANDOM_STATE, stratify=codes)
    train, valid = train_test_split(train, test_size=OPERA_VALID_SIZE, random_state=OPERA_RANDOM_STATE,
                                    stratify=codes[train])
  except ValueError as e:
    raise ValueError(f"OPERA's split of {len(members)} participants ({task}, {modality}) failed: {e}") from e
  assign = {}
  for name, indices in (("train", train), ("valid", valid), ("test", test)):
    assign.update((members[i], name) for i in indices)
  return assign, reasons


def list_examples(data_dir, *, audio_dir=None, check_audio=True, modality="cough-shallow", task=None,
                  min_quality=1, split="auto", seed=0, fractions=(0.64, 0.16, 0.2)):
  """One spec per participant recording of `modality` and the participants that cannot be used.

  Args:
    data_dir: the Coswara-Data folder (combined_data.csv, annotations/), or AcuLa's tables.
    audio_dir: the extracted audio root; default data_dir/Extracted_data.
    check_audio: skip (and report) participants without the modality's .wav.
    modality: one of MODALITIES.
    task: None, "sex" (T9) or "smoker" (T8): keep only participants with that label.
    min_quality: drop files whose annotation quality is below this (when annotations exist).
    split: "auto" (default), "opera" (OPERA's T8/T9 split, needs `task` and a paired modality) or
      "seeded" (see the module docstring).
    seed, fractions: the seeded participant split, stratified by the task label (split="seeded").
  """
  check_audio, min_quality, fractions = common.option_bool(check_audio), int(min_quality), common.option_fractions(fractions)
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if task not in (None, "sex", "smoker"):
    raise ValueError(f"task must be None, 'sex' or 'smoker', got {task!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if split == "auto":
    split = "opera" if task and modality in OPERA_PAIRS else "seeded"
  if split == "opera" and not (task and modality in OPERA_PAIRS):
    raise ValueError(f"split='opera' needs task 'sex' or 'smoker' and a modality in {sorted(OPERA_PAIRS)}, "
                     f"got task={task!r}, modality={modality!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, "Extracted_data")
  skipped = []
  participants = _participants(data_dir, skipped)
  quality = _quality(data_dir, modality)
  audio = _audio_index(audio_dir, modality) if check_audio else {}
  opera_out = {}
  if split == "opera":
    pair = OPERA_PAIRS[modality]
    absent = [path for path in (_annotation_path(data_dir, modality), _annotation_path(data_dir, pair))
              if not os.path.isfile(path)]
    if absent:
      warnings.warn(f"coswara split='opera' without {', '.join(absent)}: OPERA's quality filter cannot be "
                    "applied, so the participant list and the assignment differ from OPERA's", stacklevel=2)
    assign, opera_out = opera_split(participants, task, modality, quality, _quality(data_dir, pair), min_quality)
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
    elif pid in opera_out:
      skipped.append(common.Skipped(pid, opera_out[pid]))
    elif check_audio and pid not in audio:
      skipped.append(common.Skipped(pid, f"missing audio file ({modality}.wav)"))
    else:
      kept.append((pid, row, labels))
  if split == "seeded":
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
