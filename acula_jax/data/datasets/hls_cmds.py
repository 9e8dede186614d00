r"""HLS-CMDS: heart and lung sounds recorded from a clinical auscultation manikin.

Source: Mendeley Data, doi:10.17632/8972jxbpmp.1 ("HLS-CMDS: Heart and Lung Sounds Dataset Recorded
from a Clinical Manikin using Digital Stethoscope"); check the record for its license and cite it.

Layout read (as published; 4 kHz mono, 15 s each):
  HS/*.wav + HS.csv    Gender, Heart Sound Type, Location, Heart Sound ID       (50 heart sounds)
  LS/*.wav + LS.csv    Gender, Lung Sound Type, Location, Lung Sound ID         (50 lung sounds)
  Mix/*.wav + Mix.csv  Gender, Heart Sound Type, Lung Sound Type, Location, Heart Sound ID,
                       Lung Sound ID, Mixed Sound ID                            (145 mixtures M*.wav)
Option `part=HS|LS|Mix` (or a comma list; default all three) selects the parts. Ids are
"{part}/{CSV id}", e.g. "HS/F_N_A", "LS/M_C_LUA", "Mix/M0001".

Labels (LABEL_MAPS, publisher's names -> snake case): `heart_sound` (HS, Mix: normal, murmurs by
timing, s3, s4, atrial_fibrillation, av_block, tachycardia) and `lung_sound` (LS, Mix: normal,
fine_crackles, coarse_crackles, wheezing, rhonchi, pleural_rub). Metadata: `sex` (F/M -> female/male:
the manikin's setting), `location` (auscultation site code as published: RUSB, LUSB, LLSB, Apex, RC,
LC for the heart; R/L upper/middle/lower anterior for the lungs), `sound_type` (heart/lung/mixed),
and for mixtures the component ids (`heart_component_id`, `lung_component_id`). The CSV's location
column is used as given, even where the id says otherwise (HS row F_T_RC has Location LC).

LS.csv names the crackle recordings differently from the files: `C_` (fine crackles) and `G_`
(coarse crackles) in the CSV are `FC_` and `CC_` on disk (LS_FILE_CODES). A CSV row without its
file and a file without a CSV row are skipped and counted; an unknown sound type is skipped too.

One manikin produced everything, so there are no subjects: subject_id = id. Split: seeded 70/15/15,
stratified by part and sound type (heart type for mixtures), keyed by file content so that the release's
byte-identical copies (Mix/M0111 = Mix/M0126) share a split. Caveat: mixtures are built from heart and
lung recordings whose ids (H0001, L0001) are not the HS/LS file names, so a sound heard in a training
mixture may recur in a test HS/LS recording when several parts are prepared together.
"""
import csv
import hashlib
import os

from acula_jax.data.datasets import common
from acula_jax.errors import DataError

NAME = "hls_cmds"
MODALITY = "mixed"
LABEL_MAPS = {
    "heart_sound": {
        "Normal": "normal",
        "Early Systolic Murmur": "early_systolic_murmur",
        "Mid Systolic Murmur": "mid_systolic_murmur",
        "Late Systolic Murmur": "late_systolic_murmur",
        "Late Diastolic Murmur": "late_diastolic_murmur",
        "S3": "s3",
        "S4": "s4",
        "Atrial Fibrillation": "atrial_fibrillation",
        "AV Block": "av_block",
        "Tachycardia": "tachycardia",
    },
    "lung_sound": {
        "Normal": "normal",
        "Fine Crackles": "fine_crackles",
        "Coarse Crackles": "coarse_crackles",
        "Wheezing": "wheezing",
        "Rhonchi": "rhonchi",
        "Pleural Rub": "pleural_rub",
    },
    "sex": {"F": "female", "M": "male"},  # metadata
}
# LS.csv sound-type code -> the code in the file name, where they differ.
LS_FILE_CODES = {"C": "FC", "G": "CC"}
PARTS = {
    "HS": dict(id_column="Heart Sound ID", sound_type="heart",
               labels={"heart_sound": "Heart Sound Type"}),
    "LS": dict(id_column="Lung Sound ID", sound_type="lung",
               labels={"lung_sound": "Lung Sound Type"}),
    "Mix": dict(id_column="Mixed Sound ID", sound_type="mixed",
                labels={"heart_sound": "Heart Sound Type", "lung_sound": "Lung Sound Type"},
                components={"heart_component_id": "Heart Sound ID", "lung_component_id": "Lung Sound ID"}),
}
FRACTIONS = (0.7, 0.15, 0.15)


def list_examples(data_dir, *, part="HS,LS,Mix", seed=0):
  """Example specs of the selected parts in `data_dir` (see the module docstring)."""
  data_dir = os.fspath(data_dir)
  specs, skipped = [], []
  for name in _parts(part):
    more_specs, more_skipped = _list_part(data_dir, name)
    specs += more_specs
    skipped += more_skipped
  groups = {}
  for spec in specs:
    stratum = (spec.id.split("/")[0], next(iter(spec.labels.values())))
    groups.setdefault(stratum, []).append(spec)
  # The release holds byte-identical files under two ids (Mix/M0111 = Mix/M0126): a file's content
  # is its split key, so copies share a split instead of leaking across.
  content = {spec.id: _file_digest(os.path.join(data_dir, spec.path)) for spec in specs}
  for group in groups.values():
    assignment = common.subject_split([content[s.id] for s in group], seed=int(seed), fractions=FRACTIONS)
    for spec in group:
      spec.split = assignment[content[spec.id]]
  specs.sort(key=lambda s: s.id)
  return specs, skipped


def _file_digest(path) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _parts(part) -> list[str]:
  names = part if isinstance(part, (list, tuple)) else [p.strip() for p in str(part).split(",") if p.strip()]
  unknown = [p for p in names if p not in PARTS]
  if unknown or not names:
    raise ValueError(f"part must be one or more of {', '.join(PARTS)}; got {part!r}")
  return list(dict.fromkeys(names))


def file_stem(part: str, csv_id: str) -> str:
  """The file name (without .wav) of a CSV id: LS crackle ids C_/G_ become FC_/CC_."""
  if part != "LS":
    return csv_id
  pieces = csv_id.split("_")
  if len(pieces) == 3 and pieces[1] in LS_FILE_CODES:
    pieces[1] = LS_FILE_CODES[pieces[1]]
  return "_".join(pieces)


def _read_table(path, required):
  """[(row number, line number, {column: stripped value})]; DataError naming the file when malformed."""
  if not os.path.isfile(path):
    raise DataError(path, "missing (the published layout has HS.csv, LS.csv and Mix.csv)")
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      reader = csv.DictReader(f)
      header = [h.strip() for h in reader.fieldnames or []]
      missing = [c for c in required if c not in header]
      if missing:
        raise DataError(path, f"missing column(s) {missing}; columns: {header}")
      reader.fieldnames = header
      rows = []
      for n, row in enumerate(reader, start=1):
        if None in row or None in row.values():
          raise DataError(path, f"row {n} (line {reader.line_num}): cell count differs from the header")
        rows.append((n, reader.line_num, {k: v.strip() for k, v in row.items()}))
  except (csv.Error, UnicodeDecodeError) as e:
    raise DataError(path, f"unparseable CSV ({e})") from e
  return rows


def _list_part(data_dir, part):
  """Specs and skipped entries of one part (HS, LS or Mix)."""
  info = PARTS[part]
  table = os.path.join(data_dir, f"{part}.csv")
  components = info.get("components", {})
  rows = _read_table(table, ["Gender", "Location", info["id_column"], *info["labels"].values(),
                             *components.values()])
  folder = os.path.join(data_dir, part)
  names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
  on_disk = {n[:-4]: n for n in names if n.lower().endswith(".wav")}  # stem -> file name
  specs, skipped, used = [], [], {}
  for n, line, row in rows:
    where = f"{table}:{line}"
    csv_id = row[info["id_column"]]
    stem = file_stem(part, csv_id)
    if stem in used:
      raise DataError(table, f"row {n} (line {line}): id {csv_id!r} repeats row {used[stem]}")
    used[stem] = n
    labels, bad = {}, None
    for key, column in info["labels"].items():
      value = LABEL_MAPS[key].get(row[column])
      bad = bad or (None if value else f"unknown {column} {row[column]!r}")
      labels[key] = value
    if bad:
      skipped.append(common.Skipped(where, f"{bad} for {csv_id}"))
      continue
    if stem not in on_disk:
      skipped.append(common.Skipped(where, f"audio file not found: {part}/{stem}.wav (id {csv_id})"))
      continue
    metadata = {"sex": LABEL_MAPS["sex"].get(row["Gender"], row["Gender"]), "location": row["Location"],
                "sound_type": info["sound_type"]}
    metadata.update({key: row[column] for key, column in components.items()})
    example_id = f"{part}/{csv_id}"
    specs.append(common.ExampleSpec(id=example_id, path=f"{part}/{on_disk[stem]}", subject_id=example_id,
                                    split="", labels=labels, metadata=metadata))
  for stem in sorted(set(on_disk) - set(used)):
    skipped.append(common.Skipped(os.path.join(folder, on_disk[stem]), f"no row in {part}.csv"))
  return specs, skipped
