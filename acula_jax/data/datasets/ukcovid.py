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
OPERA tasks T1 (exhalation) and T2 (cough): COVID-19 detection.

Splits (`split`):
  "published" (default) the publisher's `splits` column (train / val / test). The longitudinal test set
            ("long") is skipped unless `include_longitudinal=True` (then it is test). `split_column` picks
            another published split column ("original_splits"; values train/val/test).
  "opera"   OPERA's T1/T2 split: a subsample of the published split, 1000 train / 500 valid / 1000 test
            recordings per modality, read from the file-name lists OPERA ships (how they were drawn is not
            in OPERA's code, so they cannot be recomputed). `--option=opera_split_dir=PATH` names a folder
            holding, as in the OPERA repository's datasets/covidUK/ (PATH may also be an OPERA checkout;
            its datasets/covidUK/ is then used):
              {modality}_training_files_downsample.npy  -> train
              {modality}_val_files_downsample.npy       -> valid
              {modality}_testing_files_downsample.npy   -> test      (modality: exhalation or cough)
            from https://github.com/evelyn0414/OPERA/tree/main/datasets/covidUK (raw files:
            https://raw.githubusercontent.com/evelyn0414/OPERA/main/datasets/covidUK/<name>).
            What OPERA does (src/benchmark/processing/coviduk_processing.py, process_label): walk
            audio_metadata.csv, keep a recording when its {modality}_file_name is in one of the three
            lists, label it from covid_test_result (Negative 0 / Positive 1), split = the list it is in;
            train_test_splits.csv is not read (datasets/covidUK/covidUK_split.py had built the full
            per-split lists {modality}_{training,val,testing}_files.npy from its `splits` column).
            The lists are plain '<U45' arrays, read with np.load(allow_pickle=False). Checked on OPERA's
            files: each of the 2500 entries per modality sits in the same split in the full lists, and the
            three lists give the split of OPERA's shipped feature/coviduk_eval/split_{exhalation,cough}.npy
            (1000/500/1000). OPERA's copies of the publisher's tables were not in the snapshot read, so the
            full lists were not compared with the `splits` column here. A list file that is missing, or a
            listed file name absent from audio_metadata.csv's {modality}_file_name column, is an error
            naming the list; a recording in none of the lists is skipped ("not in OPERA's downsampled split
            lists") and counted; a listed recording is still skipped (and counted) for the reasons above:
            unknown label, size <= 44 bytes, missing audio. train_test_splits.csv is not read.
"""

import csv
import os

import numpy as np

from acula_jax.data.datasets import common

NAME = "ukcovid"
MODALITY = "cough"
SCHEMA = "cough"
OPERA_TASKS = {"T1": ("covid", "COVID-19 detection from exhalation"), "T2": ("covid", "COVID-19 detection from cough")}
MODALITIES = ("exhalation", "cough", "three_cough")
SPLITS = ("published", "opera")
OPERA_MODALITIES = ("exhalation", "cough")
OPERA_SPLIT_FILES = (("{}_training_files_downsample.npy", "train"), ("{}_val_files_downsample.npy", "valid"),
                     ("{}_testing_files_downsample.npy", "test"))
OPERA_SPLIT_URL = "https://github.com/evelyn0414/OPERA/tree/main/datasets/covidUK"
LABEL_MAPS = {
    "covid": {"Positive": "positive", "Negative": "negative"},
    "split": {"train": "train", "val": "valid", "validation": "valid", "test": "test", "long": "test"},
    "flag": {"1": True, "1.0": True, "True": True, "TRUE": True, "Yes": True,
             "0": False, "0.0": False, "False": False, "FALSE": False, "No": False},
    "smoker": {"Current smoker": True, "current": True, "Never smoked": False, "never": False,
               "Ex-smoker": False, "ex": False},
}



def _table(path):
  """{participant_identifier: row} of one metadata CSV."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: UK COVID-19 metadata table not found")
  with open(path, encoding="utf-8-sig", newline="") as f:
    return {r["participant_identifier"].strip(): r for r in csv.DictReader(f) if r.get("participant_identifier")}


def _read_names(path):
  """The file names of one OPERA list: a 1-D (or N x 1) array of str, read without pickle."""
  try:
    array = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f"{path}: not a plain numpy array of str ({e})") from e
  if array.dtype.kind != "U" or array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
    raise ValueError(f"{path}: expected a 1-D (or N x 1) array of file names, got {array.dtype} {array.shape}")
  return [str(x) for x in array.reshape(-1)]


def opera_split(opera_split_dir, modality, known_names):
  """{file name: "train" | "valid" | "test"} from OPERA's downsampled lists (see the module docstring).

  Raises FileNotFoundError naming a missing list, ValueError naming a list that holds a name twice, a
  name of another list, or a name not in `known_names` (audio_metadata.csv's {modality}_file_name).
  """
  if modality not in OPERA_MODALITIES:
    raise ValueError(f"split='opera' is defined for modality {OPERA_MODALITIES}, got {modality!r}")
  files = [(pattern.format(modality), split) for pattern, split in OPERA_SPLIT_FILES]
  return common.opera_split_lists(
      opera_split_dir, files, subfolder=os.path.join("datasets", "covidUK"), url=OPERA_SPLIT_URL,
      read=_read_names, known=known_names, what="file name",
      known_where=f"audio_metadata.csv's {modality}_file_name")


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


def list_examples(data_dir, *, audio_dir=None, check_audio=True, modality="exhalation", split="published",
                  opera_split_dir=None, split_column="splits", include_longitudinal=False):
  """One spec per participant recording of `modality` and the participants that cannot be used.

  Args:
    data_dir: folder with the three metadata CSVs (and audio/ by default).
    audio_dir: folder of the .wav files; default data_dir/audio.
    check_audio: skip (and report) recordings whose file is missing.
    modality: "exhalation" (T1), "cough" (T2) or "three_cough".
    split: "published" (default; the `split_column` of train_test_splits.csv) or "opera" (OPERA's
      downsampled file lists; see the module docstring).
    opera_split_dir: for split="opera", the folder with OPERA's covidUK lists (or an OPERA checkout).
    split_column: the train_test_splits.csv column to follow (split="published").
    include_longitudinal: keep the "long" test set (as test; split="published").
  """
  check_audio, include_longitudinal = common.option_bool(check_audio), common.option_bool(include_longitudinal)
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, "audio")
  participants = _table(os.path.join(data_dir, "participant_metadata.csv"))
  audio = _table(os.path.join(data_dir, "audio_metadata.csv"))
  opera = None
  if split == "opera":
    known = {(r.get(f"{modality}_file_name") or "").strip() for r in audio.values()}
    opera = opera_split(opera_split_dir, modality, known - {""})
  else:
    splits = _table(os.path.join(data_dir, "train_test_splits.csv"))
  skipped, specs = [], []
  for pid in sorted(audio):
    row, part = audio[pid], participants.get(pid)
    name = (row.get(f"{modality}_file_name") or "").strip()
    published = "" if opera is not None else (splits.get(pid, {}).get(split_column) or "").strip()
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
    elif opera is not None and name not in opera:
      skipped.append(common.Skipped(pid, f"{name} not in OPERA's downsampled split lists"))
    elif opera is None and published not in LABEL_MAPS["split"]:
      skipped.append(common.Skipped(pid, f"not in a {split_column} split ({published!r})"))
    elif published == "long" and not include_longitudinal:
      skipped.append(common.Skipped(pid, "longitudinal test set (include_longitudinal=False)"))
    elif check_audio and not os.path.isfile(os.path.join(audio_dir, name)):
      skipped.append(common.Skipped(os.path.join(audio_dir, name), "missing audio file"))
    else:
      labels = {"covid": LABEL_MAPS["covid"][part["covid_test_result"]]}
      assigned = opera[name] if opera is not None else LABEL_MAPS["split"][published]
      specs.append(common.ExampleSpec(f"{pid}_{modality}", os.path.join(audio_dir, name), pid,
                                      assigned, labels, _metadata(part, modality)))
  return specs, skipped
