"""COUGHVID crowd-sourced coughs (Orlandic et al. 2021; Zenodo 4048312 / 7024894), as the publisher lays it out.

Layout relied on (`data_dir`):
  public_dataset/metadata_compiled.csv   columns used: uuid, cough_detected (0-1 classifier score),
      age, gender (female/male/other), respiratory_condition, fever_muscle_pain (True/False),
      status (healthy / symptomatic / COVID-19), and the expert columns diagnosis_1..3 (rendered
      only as metadata, not as labels)
  public_dataset/{uuid}.webm | .ogg   (+ {uuid}.json) - the published audio
  wav/{uuid}.wav                      optional conversion (OPERA converts with ffmpeg); preferred when present.
      OPERA's converter (datasets/coughvid/coughvid_wav.py) cuts 5 characters off every name, so an
      .ogg becomes wav/{uuid minus its last character}.wav; that name is found too.
metadata_compiled.csv may also sit directly in data_dir. Only .wav and .ogg decode with soundfile;
.webm files are listed with metadata["format"]="webm" and need conversion before ingestion.

Labels: `covid` (COVID-19 positive / healthy; OPERA T5, symptomatic has none), `sex`
(female/male; OPERA T6), `status` as published.

Splits (`split`):
  "seeded"  (default) by uuid (CoughVID has no participant ids; a uuid is one recording), stratified
            by the task label, `fractions` default 60/20/20, after dropping cough_detected < 0.8.
  "opera"   OPERA's fixed T5/T6 split, read from the uuid lists OPERA ships (they cannot be recomputed:
            they were drawn with pandas from OPERA's own copy of the metadata). `--option=opera_split_dir=
            PATH` names a folder holding, as in the OPERA repository's datasets/coughvid/ (PATH may also
            be an OPERA checkout; its datasets/coughvid/ is then used):
              coughvid__train_uuids.npy        -> train
              coughvid__val_uuids.npy          -> valid
              coughvid_gender_test_uuids.npy   -> test
            from https://github.com/evelyn0414/OPERA/tree/main/datasets/coughvid (raw files:
            https://raw.githubusercontent.com/evelyn0414/OPERA/main/datasets/coughvid/<name>).
            What OPERA does (datasets/coughvid/coughvid_split.py, src/benchmark/processing/
            coughvid_processing.py): keep cough_detected >= 0.8; test = pandas sample of 1031 female +
            1924 male uuids (random_state=0); the rest is split 75/25 train/valid (sklearn
            train_test_split, random_state=100), whatever the gender or status; both tasks then keep the
            uuids of the three lists that carry their label (T5: COVID-19/healthy, T6: female/male); a
            listed uuid in neither the train nor the valid list is test. The fourth file,
            coughvid_covid_test_uuids.npy (a 2237 healthy + 172 COVID-19 subsample of the test list), is
            loaded by coughvid_processing.py but never used, so it is not read here. Checked: the three
            lists with OPERA's copy of metadata_compiled.csv give OPERA's shipped
            feature/coughvid_eval/split_{covid,gender}.npy exactly (6175 and 7263 recordings).
            The lists are object arrays (np.save of a pandas column), which np.load reads only with
            allow_pickle=True, i.e. by running whatever the pickle says. They are read instead with a
            restricted unpickler (`read_id_list`) that resolves only numpy's array reconstruction
            (numpy ndarray, dtype, _reconstruct; _codecs.encode for protocol-2 pickles) and refuses any
            other global, and the result must be a flat array of str; plain '<U' arrays go through
            np.load(allow_pickle=False). A list file that is missing, or a listed uuid absent from
            metadata_compiled.csv, is an error naming the file; a uuid of the dataset in none of the lists
            is skipped ("not in OPERA's split lists") and counted. min_cough_detected still applies (the
            lists hold exactly the 10746 uuids with cough_detected >= 0.8 of OPERA's copy of the metadata,
            so with the same table it removes nothing).
"""

import codecs
import collections
import csv
import os
import pickle

import numpy as np

from acula_jax.data.datasets import common

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
SPLITS = ("seeded", "opera")
OPERA_SPLIT_FILES = (("coughvid__train_uuids.npy", "train"), ("coughvid__val_uuids.npy", "valid"),
                     ("coughvid_gender_test_uuids.npy", "test"))
OPERA_SPLIT_URL = "https://github.com/evelyn0414/OPERA/tree/main/datasets/coughvid"


class _ArrayOnlyUnpickler(pickle.Unpickler):
  """Unpickles what np.save writes for an object array and nothing else: no other global resolves."""
  _RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]   # numpy's _reconstruct, whatever module it lives in
  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
              ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
              ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
              ("_codecs", "encode"): codecs.encode}   # how protocol-2 pickles spell bytes

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"refusing {module}.{name} (only numpy arrays of str are read)")
    return self._ALLOWED[(module, name)]

  def persistent_load(self, pid):
    raise pickle.UnpicklingError("refusing a persistent id")


def read_id_list(path):
  """The ids of a 1-D (or N x 1) .npy array of strings, object arrays included, never running pickle code."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
      try:
        array = _ArrayOnlyUnpickler(f).load()
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"{path}: not a numpy array of str ({e})") from e
    else:
      array = None
  if array is None:
    array = np.load(path, allow_pickle=False)
  if not isinstance(array, np.ndarray) or array.shape != shape or array.ndim not in (1, 2) or (
      array.ndim == 2 and array.shape[1] != 1):
    raise ValueError(f"{path}: expected a 1-D (or N x 1) array of ids, got shape {getattr(array, 'shape', None)}")
  ids = array.reshape(-1).tolist()
  if not all(isinstance(x, str) for x in ids):
    raise ValueError(f"{path}: expected an array of str ids")
  return ids


def opera_split(opera_split_dir, known_uuids):
  """{uuid: "train" | "valid" | "test"} from OPERA's three uuid lists (see the module docstring).

  Raises FileNotFoundError naming a missing list, ValueError naming a list that holds a uuid twice, a
  uuid of another list, or a uuid not in `known_uuids` (the uuids of metadata_compiled.csv).
  """
  return common.opera_split_lists(
      opera_split_dir, OPERA_SPLIT_FILES, subfolder=os.path.join("datasets", "coughvid"), url=OPERA_SPLIT_URL,
      read=read_id_list, known=known_uuids, what="uuid",
      known_where="metadata_compiled.csv (another COUGHVID release?)")


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
  for folder, exts in folders:   # OPERA's converter names an .ogg's wav after uuid[:-1].
    path = os.path.join(folder, uuid[:-1] + ".wav")
    if ".wav" in exts and len(uuid) > 1 and os.path.isfile(path):
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


def list_examples(data_dir, *, audio_dir=None, check_audio=True, task=None, min_cough_detected=0.8,
                  split="seeded", opera_split_dir=None, seed=0, fractions=(0.6, 0.2, 0.2)):
  """One spec per COUGHVID recording and the rows that cannot be used.

  Args:
    data_dir: the dataset folder (see the module docstring).
    audio_dir: folder with {uuid}.wav/.ogg/.webm; default data_dir/wav, then data_dir/public_dataset.
    check_audio: skip (and report) rows without an audio file.
    task: None, "covid" (T5) or "sex" (T6): keep only rows with that label.
    min_cough_detected: drop rows whose cough_detected score is lower (OPERA: 0.8).
    split: "seeded" (default) or "opera" (OPERA's uuid lists; see the module docstring).
    opera_split_dir: for split="opera", the folder with OPERA's coughvid uuid lists (or an OPERA checkout).
    seed, fractions: split="seeded": split by uuid, stratified by the task label.
  """
  check_audio, fractions = common.option_bool(check_audio), common.option_fractions(fractions)
  min_cough_detected = float(min_cough_detected)
  if task not in (None, "covid", "sex"):
    raise ValueError(f"task must be None, 'covid' or 'sex', got {task!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  data_dir = os.fspath(data_dir)
  folders = [(os.fspath(audio_dir), _AUDIO_EXT)] if audio_dir else [
      (os.path.join(data_dir, "wav"), (".wav",)), (os.path.join(data_dir, "public_dataset"), _AUDIO_EXT)]
  path = _metadata_path(data_dir)
  skipped, kept = [], []
  with open(path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.DictReader(f))
  opera = opera_split(opera_split_dir, {(r.get("uuid") or "").strip() for r in rows}) if split == "opera" else None
  for rowno, row in enumerate(rows, start=2):
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
    elif opera is not None and uuid not in opera:
      skipped.append(common.Skipped(where, f"uuid {uuid} not in OPERA's split lists"))
    elif check_audio and audio is None:
      skipped.append(common.Skipped(where, f"missing audio file for uuid {uuid}"))
    else:
      kept.append((uuid, audio or os.path.join(folders[0][0], uuid + ".wav"), labels, row))
  if opera is not None:
    assign = opera
  else:
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
