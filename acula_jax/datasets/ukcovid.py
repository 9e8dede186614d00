"""UK COVID-19 Vocal Audio Dataset, open-access edition (Budd et al. 2024; Zenodo 10043978, UKHSA).

Layout relied on (`data_dir`):
  participant_metadata.csv  participant_identifier, covid_test_result (Positive / Negative /
      Unknown/Void), age (band), gender, smoker_status, respiratory_condition_asthma,
      respiratory_condition_other, symptom_* (0/1 columns: symptom_cough_any,
      symptom_new_continuous_cough, symptom_shortness_of_breath, symptom_sore_throat,
      symptom_runny_or_blocked_nose, symptom_fatigue, ...)
  audio_metadata.csv        participant_identifier, {exhalation,cough,three_cough}_file_name and
      _size (bytes; <= 44 means no audio was recorded), _length, _sample_rate, _channels
  train_test_splits.csv     participant_identifier, splits (train / val / test / long), plus the
      other published split columns (original_splits, matched_train_splits, ...)
  audio/{file name}         the .wav files
Only the columns above are read; any symptom_* column is rendered as a symptom when it is 1/True.

Labels: `covid` (positive / negative from the PCR-linked covid_test_result; Unknown/Void -> skipped).
OPERA tasks T1 (exhalation) and T2 (cough): COVID-19 detection with the publisher's `splits` column
(train / val / test; OPERA also subsamples participants, not reproduced). The longitudinal test set
("long") is skipped unless `include_longitudinal=True` (then it is test). `split_column` picks another
published split column ("original_splits"; values train/val/test).
"""

import csv
import os

from acula_jax.datasets import common

NAME = "ukcovid"
MODALITY = "cough"
SCHEMA = "cough"
OPERA_TASKS = {"T1": ("covid", "COVID-19 detection from exhalation"), "T2": ("covid", "COVID-19 detection from cough")}
MODALITIES = ("exhalation", "cough", "three_cough")
LABEL_MAPS = {
    "covid": {"Positive": "positive", "Negative": "negative"},
    "split": {"train": "train", "val": "valid", "validation": "valid", "test": "test", "long": "test"},
    "flag": {"1": True, "1.0": True, "True": True, "TRUE": True, "Yes": True,
             "0": False, "0.0": False, "False": False, "FALSE": False, "No": False},
    "smoker": {"Current smoker": True, "current": True, "Never smoked": False, "never": False,
               "Ex-smoker": False, "ex": False},
}



def _bool(value):
  """An adapter option given as a bool or as text ("true", "1", "yes"; prepare passes strings)."""
  return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y")


def _table(path):
  """{participant_identifier: row} of one metadata CSV."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: UK COVID-19 metadata table not found")
  with open(path, encoding="utf-8-sig", newline="") as f:
    return {r["participant_identifier"].strip(): r for r in csv.DictReader(f) if r.get("participant_identifier")}


def _metadata(participant, modality):
  meta = {"dataset": NAME, "schema": SCHEMA, "sound": modality}
  if participant.get("age"):
    meta["age_group"] = f"aged {participant['age']}"
  gender = (participant.get("gender") or "").strip().lower()
  if gender in ("female", "male"):
    meta["sex"] = gender
  symptoms = [k[len("symptom_"):].replace("_any", "").replace("_", " ") for k, v in participant.items()
              if k.startswith("symptom_") and LABEL_MAPS["flag"].get((v or "").strip())]
  if any(k.startswith("symptom_") for k in participant):
    meta["symptoms"] = symptoms
  smoker = LABEL_MAPS["smoker"].get((participant.get("smoker_status") or "").strip())
  if smoker is not None:
    meta["smoker"] = smoker
  if LABEL_MAPS["flag"].get((participant.get("respiratory_condition_asthma") or "").strip()):
    meta["asthma"] = True
  meta["covid_test_result"] = participant["covid_test_result"]
  return meta


def list_examples(data_dir, *, audio_dir=None, check_audio=True, modality="exhalation", split_column="splits",
                  include_longitudinal=False):
  """One spec per participant recording of `modality` and the participants that cannot be used.

  Args:
    data_dir: folder with the three metadata CSVs (and audio/ by default).
    audio_dir: folder of the .wav files; default data_dir/audio.
    check_audio: skip (and report) recordings whose file is missing.
    modality: "exhalation" (T1), "cough" (T2) or "three_cough".
    split_column: the train_test_splits.csv column to follow.
    include_longitudinal: keep the "long" test set (as test).
  """
  check_audio, include_longitudinal = _bool(check_audio), _bool(include_longitudinal)
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, "audio")
  participants = _table(os.path.join(data_dir, "participant_metadata.csv"))
  audio = _table(os.path.join(data_dir, "audio_metadata.csv"))
  splits = _table(os.path.join(data_dir, "train_test_splits.csv"))
  skipped, specs = [], []
  for pid in sorted(audio):
    row, part = audio[pid], participants.get(pid)
    name = (row.get(f"{modality}_file_name") or "").strip()
    split = (splits.get(pid, {}).get(split_column) or "").strip()
    try:
      size = float(row.get(f"{modality}_size") or 0)
    except ValueError:
      size = 0.0
    if part is None:
      skipped.append(common.Skipped(pid, "no participant_metadata row"))
    elif part.get("covid_test_result") not in LABEL_MAPS["covid"]:
      skipped.append(common.Skipped(pid, f"unknown label: covid_test_result {part.get('covid_test_result')!r}"))
    elif not name or size <= 44:
      skipped.append(common.Skipped(pid, f"no {modality} recording (size {size:g} bytes)"))
    elif split not in LABEL_MAPS["split"]:
      skipped.append(common.Skipped(pid, f"not in a {split_column} split ({split!r})"))
    elif split == "long" and not include_longitudinal:
      skipped.append(common.Skipped(pid, "longitudinal test set (include_longitudinal=False)"))
    elif check_audio and not os.path.isfile(os.path.join(audio_dir, name)):
      skipped.append(common.Skipped(os.path.join(audio_dir, name), "missing audio file"))
    else:
      labels = {"covid": LABEL_MAPS["covid"][part["covid_test_result"]]}
      specs.append(common.ExampleSpec(f"{pid}_{modality}", os.path.join(audio_dir, name), pid,
                                      LABEL_MAPS["split"][split], labels, _metadata(part, modality)))
  return specs, skipped
