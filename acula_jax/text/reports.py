r"""Rule-based clinical reports from an example's metadata and labels, and report files.

The reports are the text side of AcuLa's alignment: a frozen language model embeds them and the
audio encoder learns to match those embeddings. They state only what the metadata and labels say,
in several phrasings per fact (picked deterministically from the seed and the facts themselves, so
two clips with the same findings need not read alike), and never the split, ids or other
bookkeeping, so no test-time shortcut leaks into the text.

`report_for` knows the fields of `acula_jax.data.synthetic` (demographics, site, device, rates, murmur,
extra sounds, crackles, wheezes, diagnosis) and renders any other field as "Key: value." sentences,
so real tables (CirCor, ICBHI, ...) work unchanged; missing or NaN fields are left out. Examples whose
metadata names a `schema` (or a `dataset` the dataset adapters set) go to the per-schema templates of
`acula_jax.text.report_templates` instead (heart, lung, cough, lung_function).

  python -m acula_jax.text.reports --records=DIR --output=FILE.jsonl --splits=train

`read_reports` reads such JSONL files, or CSV files with an id column and a report column (e.g. the
CirCor `*_report.csv` tables with `Meta_Report` / `Gen_Report`).
"""

import csv
import json
import math
import os
import sys
import zlib

from absl import flags
import numpy as np
import tqdm

from acula_jax import errors
from acula_jax import fileio
from acula_jax.data import records
from acula_jax.errors import DataError
from acula_jax.text import report_templates

# Never stated, whatever the dataset: bookkeeping and anything that could reveal the split.
_NEVER = frozenset({"id", "split", "subject", "dataset", "synthesis", "sample_rate", "num_samples",
                    "path", "file", "filename", "fold", "duration_s", "sound_file", "schema",
                    # provenance that acula_jax.data.prepare adds to every record's metadata
                    "source_path", "original_sample_rate", "segment_start_s", "segment_end_s",
                    "recording_id", "chunk_number"})
_ID_COLUMNS = ("id", "Patient_ID", "patient_id", "Patient ID")

_HEART_SITES = {"aortic": "aortic area", "av": "aortic area", "pulmonic": "pulmonic area",
                "pv": "pulmonic area", "tricuspid": "tricuspid area", "tv": "tricuspid area",
                "mitral": "mitral area (apex)", "mv": "mitral area (apex)", "apex": "apex"}
_ROMAN = ("I", "II", "III", "IV", "V", "VI")
_EXTRA_SOUNDS = {
    "s3": ("an S3", "a third heart sound (S3)", "an S3 gallop"),
    "s4": ("an S4", "a fourth heart sound (S4)", "an S4 gallop"),
    "ejection click": ("an ejection click", "a systolic ejection click"),
    "opening snap": ("an opening snap", "an early-diastolic opening snap"),
}
# What "normal" / "healthy" says, by the recording's modality (see `modality_of`).
_NORMAL = {"heart": "normal heart sounds", "lung": "normal lung sounds", "breath": "normal breath sounds",
           "cough": "no abnormality in the cough", None: "no abnormal findings"}
# Field values that name a modality: sound_type / modality / body_site columns, or a site name.
_MODALITY_WORDS = {
    "heart": "heart", "cardiac": "heart", "pcg": "heart", "heart_sound": "heart",
    "lung": "lung", "chest": "lung", "respiratory": "lung", "lung_sound": "lung",
    "breath": "breath", "breathing": "breath", "breathing_deep": "breath", "breathing_shallow": "breath",
    "exhalation": "breath", "deep_breath": "breath",
    "cough": "cough", "cough_heavy": "cough", "cough_shallow": "cough", "three_cough": "cough"}
_MODALITY_FIELDS = ("modality", "sound_type", "body_site", "site", "sound", "recording_type")
_DIAGNOSES = {
    "aortic_stenosis": "aortic stenosis", "mitral_regurgitation": "mitral regurgitation",
    "aortic_regurgitation": "aortic regurgitation", "mitral_stenosis": "mitral stenosis",
    "heart_failure": "heart failure", "pulmonary_fibrosis": "pulmonary fibrosis",
    "copd": "chronic obstructive pulmonary disease (COPD)", "urti": "upper respiratory tract infection",
    "lrti": "lower respiratory tract infection",
}


def _fmt(value) -> str:
  """A value as report text: lists joined, floats without trailing zeros, bools as yes/no."""
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return ", ".join(_fmt(v) for v in value if not report_templates.missing(v))
  if isinstance(value, dict):
    return ", ".join(f"{_fmt(k)} {_fmt(v)}" for k, v in value.items() if not report_templates.missing(v))
  return str(value).strip().replace("_", " ")


def _pretty(key) -> str:
  text = str(key).strip().rstrip(":").replace("_", " ").strip()
  return text[:1].upper() + text[1:]


def _cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def _number(value):
  """float(value) for numbers and numeric strings, else None."""
  if isinstance(value, bool):
    return None
  try:
    out = float(value)
  except (TypeError, ValueError):
    return None
  return out if math.isfinite(out) else None


class _Facts:
  """The merged fields of one example, handed out at most once each (the rest renders generically)."""

  def __init__(self, metadata, labels):
    self._items = {}
    for source in (labels or {}, metadata or {}):  # Metadata wins over a label of the same name.
      for key, value in source.items():
        norm = report_templates.norm_key(key)
        if report_templates.missing(value) or norm in _NEVER or norm.endswith(("_id", "_number")):
          continue
        self._items[norm] = (key, value)

  def take(self, *names):
    """The value of the first present name among `names` (all of them are consumed), or None."""
    found = None
    for name in names:
      item = self._items.pop(name, None)
      if item is not None and found is None:
        found = item[1]
    return found

  def rest(self):
    """(original key, value) of every field not taken, in their original order."""
    return list(self._items.values())


# ----------------------------------------------------------------------------------------------------
# Sentences, one group of facts each. `pick` chooses among phrasings.
# ----------------------------------------------------------------------------------------------------

def _sex_words(sex, age):
  """(adjective, noun) for a sex value, e.g. ('female', 'woman'); None when unknown."""
  if sex is None:
    return None
  s = str(sex).strip().lower()
  young = age is not None and age < 18
  if s in ("f", "female", "woman", "girl"):
    return "female", "girl" if young else "woman"
  if s in ("m", "male", "man", "boy"):
    return "male", "boy" if young else "man"
  return s, f"{s} patient"


def _demographics(f, pick):
  age, sex = f.take("age", "age_years"), f.take("sex", "gender")
  years = _number(age)
  words = _sex_words(sex, years)
  if years is not None:
    months = round(years * 12)
    age_adj = f"{months}-month-old" if years < 2 else f"{years:g}-year-old"
    age_txt = f"{months} months" if years < 2 else f"{years:g} years"
    if words is None:
      return pick([f"A {age_adj} patient.", f"Age: {age_txt}."])
    adj, noun = words
    return pick([f"A {age_adj} {adj} patient.", f"Patient: {age_adj} {noun}.", f"{_cap(adj)}, {age_txt} old."])
  if age is not None:  # An age group such as "Child".
    group = _fmt(age).lower()
    if words is None:
      return pick([f"Age group: {group}.", f"The patient is in the {group} age group."])
    return pick([f"Patient: {words[0]}, {group}.", f"A {words[0]} patient ({group}).",
                 f"{_cap(words[0])} {group}."])
  if words is not None:
    return pick([f"{_cap(words[0])} patient.", f"Sex: {words[0]}."])
  return None


def _site_name(location, sound_type):
  text = _fmt(location)
  if sound_type != "lung":
    return _HEART_SITES.get(text.lower(), text)
  return text


def _recording(f, pick):
  sound_type = f.take("sound_type")
  sound_type = None if sound_type is None else str(sound_type).lower()
  location = f.take("location", "recording_location", "chest_location", "auscultation_location")
  device = f.take("device", "stethoscope", "equipment", "recording_device")
  what = {"heart": ("Heart sounds recorded", "Cardiac auscultation", "Heart sound recording"),
          "lung": ("Lung sounds recorded", "Chest auscultation", "Breath sound recording")}.get(
              sound_type, (f"{_cap(_fmt(sound_type))} sounds recorded",) if sound_type else ("Auscultation",))
  if location is None and device is None and sound_type is None:
    return None
  parts = [pick(what)]
  if location is not None:
    parts.append(f"{pick(['over', 'at'])} the {_site_name(location, sound_type)}")
  if device is not None:
    dev = _fmt(device)
    parts.append(pick([f"with {dev}", f"using {dev}", f"({dev})"]))
  return " ".join(parts) + "."


def _rates(f, pick):
  out = []
  hr = _number(f.take("heart_rate", "hr"))
  if hr is not None:
    note = " (tachycardic)" if hr > 100 else " (bradycardic)" if hr < 60 else ""
    out.append(pick([f"Heart rate {hr:g} bpm{note}.", f"Rate about {hr:g} beats per minute{note}.",
                     f"HR {hr:g}/min{note}."]))
  rr = _number(f.take("respiratory_rate", "rr"))
  if rr is not None:
    note = " (tachypnoeic)" if rr > 20 else ""
    out.append(pick([f"Respiratory rate {rr:g}/min{note}.", f"Breathing at {rr:g} breaths per minute{note}.",
                     f"RR {rr:g} per minute{note}."]))
  return " ".join(out) or None


def _extra_sounds(f, pick):
  extras = f.take("extra_sounds", "added_sounds")
  if extras is None:
    return None
  extras = [extras] if isinstance(extras, str) else list(extras)
  if not extras:
    return pick(["No extra heart sounds.", "S1 and S2 without added sounds.", "No gallop or click."])
  names = [pick(_EXTRA_SOUNDS.get(str(e).lower(), (f"{_fmt(e)}",))) for e in extras]
  joined = " and ".join(names)
  return pick([f"{_cap(joined)} {'is' if len(names) == 1 else 'are'} heard.", f"There is {joined}.",
               f"Added sounds: {joined}."])


def _grade(value):
  """(n, roman) of a murmur grade given as 3, '3', 'III', 'III/VI' or '3/6'; None if unreadable."""
  text = str(value).strip().upper().split("/")[0].replace("GRADE", "").strip()
  if text in _ROMAN:
    n = _ROMAN.index(text) + 1
  else:
    n = _number(text)
    n = int(n) if n is not None and n == int(n) else None
  return (n, _ROMAN[n - 1]) if n is not None and 1 <= n <= 6 else None


def _murmur(f, pick):
  present = f.take("murmur")
  fields = {k: f.take(f"murmur_{k}") for k in ("timing", "phase", "shape", "grade", "pitch", "quality",
                                               "most_audible", "radiation")}
  if present is None and all(v is None for v in fields.values()):
    return None
  state = _fmt(present).lower() if present is not None else "present"
  if state in ("absent", "no", "false", "0"):
    return pick(["No murmur.", "No murmurs are heard.", "There is no audible murmur."])
  if state not in ("present", "yes", "true", "1"):
    return pick([f"Murmur: {state}.", f"Murmur status {state}."])
  phase = _fmt(fields["phase"] or fields["timing"] or "")
  shape = _fmt(fields["shape"]) if fields["shape"] is not None else ""
  if shape == "crescendo-decrescendo":
    shape = pick(["crescendo-decrescendo", "diamond-shaped"])
  grade = _grade(fields["grade"]) if fields["grade"] is not None else None
  pitch = f"{_fmt(fields['pitch'])}-pitched" if fields["pitch"] is not None else ""
  quality = _fmt(fields["quality"]) if fields["quality"] is not None else ""
  site = _site_name(fields["most_audible"], "heart") if fields["most_audible"] is not None else None
  radiation = _fmt(fields["radiation"]) if fields["radiation"] is not None else None

  def words(*ws):
    return " ".join(w for w in ws if w)

  variants = []
  # 1: "Grade III/VI holosystolic plateau murmur, high-pitched and blowing, loudest at the apex."
  head = words(f"Grade {grade[1]}/VI" if grade else "", phase, shape, "murmur")
  tail = " and ".join(w for w in (pitch, quality) if w)
  s = _cap(head) + (f", {tail}" if tail else "")
  s += f", loudest at the {site}" if site else ""
  s += f", radiating to the {radiation}" if radiation else ""
  variants.append(s + ".")
  # 2: "A blowing holosystolic murmur (grade 3/6) is heard best over the mitral area."
  s = words(quality, phase, shape, "murmur")
  s = f"{'An' if s[0] in 'aeiou' else 'A'} {s}" + (f" (grade {grade[0]}/6)" if grade else "")
  s += f" is heard best over the {site}" if site else " is heard"
  s += "." + (f" It is {pitch}." if pitch else "") + (f" It radiates to the {radiation}." if radiation else "")
  variants.append(s)
  # 3: "Murmur present: holosystolic, plateau, grade III/VI, high pitch, blowing quality, ..."
  items = [phase, shape, f"grade {grade[1]}/VI" if grade else "",
           f"{_fmt(fields['pitch'])} pitch" if fields["pitch"] is not None else "",
           f"{quality} quality" if quality else "", f"most audible at the {site}" if site else "",
           f"radiation to the {radiation}" if radiation else ""]
  variants.append("Murmur present" + (": " + ", ".join(i for i in items if i) if any(items) else "") + ".")
  return pick(variants)


def _breath_sounds(f, pick):
  kind = f.take("breath_sounds")
  if kind is None:
    return None
  kind = _fmt(kind).lower()
  return pick([f"{_cap(kind)} breath sounds.", f"Breath sounds are {kind}."])


def _crackles(f, pick):
  state = f.take("crackles")
  kind, timing = f.take("crackle_type"), f.take("crackle_timing")
  where = f.take("crackle_location")
  if state is None and kind is None:
    return None
  state = _fmt(state).lower() if state is not None else "present"
  if state in ("absent", "no", "false", "0"):
    return "absent"
  desc = " ".join(_fmt(x) for x in (kind, timing) if x is not None)
  at = ""
  if where is not None:
    where = _fmt(where)
    at = f" at {where}" if where.startswith("both") else f" {pick(['over the', 'at the'])} {where}"
  if not desc:
    return pick([f"Crackles are heard{at}.", f"Crackles present{at}."])
  return pick([f"{_cap(desc)} crackles{at}.", f"Crackles ({desc}){at}.", f"There are {desc} crackles{at}."])


def _wheezes(f, pick):
  state = f.take("wheezes")
  kind, pitch, timing = f.take("wheeze_type"), f.take("wheeze_pitch"), f.take("wheeze_timing")
  if state is None and kind is None:
    return None
  state = _fmt(state).lower() if state is not None else "present"
  if state in ("absent", "no", "false", "0"):
    return "absent"
  pitch = f"{_fmt(pitch)}-pitched" if pitch is not None else None
  parts = [_fmt(x) for x in (kind, pitch, timing) if x is not None]
  rhonchi = pitch == "low-pitched" and pick([True, False])
  noun = "wheezes (rhonchi)" if rhonchi else "wheezes"
  if not parts:
    return pick([f"{_cap(noun)} are heard.", f"{_cap(noun)} present."])
  return pick([f"{_cap(' '.join(parts))} {noun}.", f"{_cap(noun)}: {', '.join(parts)}.",
               f"There are {' '.join(parts)} {noun}."])


def _lung_findings(f, pick):
  out = [_breath_sounds(f, pick)]
  crackles, wheezes = _crackles(f, pick), _wheezes(f, pick)
  if crackles == "absent" and wheezes == "absent":
    out.append(pick(["No crackles or wheezes.", "No adventitious sounds.", "Crackles and wheezes are absent."]))
  else:
    out += [{"absent": pick(["No crackles.", "Crackles absent."])}.get(crackles, crackles),
            {"absent": pick(["No wheezes.", "Wheezes absent."])}.get(wheezes, wheezes)]
  sound = f.take("lung_sound")  # A label; rendered only when the findings above were not given.
  if sound is not None and crackles is None and wheezes is None:
    sound = _fmt(sound).lower()
    out.append({"normal": pick(["No adventitious sounds.", "No crackles or wheezes."]),
                "both": pick(["Crackles and wheezes are present.", "Both crackles and wheezes are heard."]),
                }.get(sound, pick([f"{_cap(sound)} present.", f"Adventitious sounds: {sound}."])))
  return " ".join(s for s in out if s) or None


def modality_of(metadata: dict, labels: dict) -> str | None:
  """heart, lung, breath or cough, from a field that names it (or a heart-valve / chest site); None."""
  fields = {report_templates.norm_key(k): v for source in (labels or {}, metadata or {}) for k, v in source.items()
            if not report_templates.missing(v)}
  for key in _MODALITY_FIELDS:
    if key in fields and report_templates.norm_key(fields[key]) in _MODALITY_WORDS:
      return _MODALITY_WORDS[report_templates.norm_key(fields[key])]
  for key in ("location", "recording_location", "auscultation_location"):
    if key in fields and str(fields[key]).strip().lower() in _HEART_SITES:
      return "heart"
  if "chest_location" in fields:
    return "lung"
  return None


def _impression(f, pick, modality):
  out = []
  for key, own_modality in (("heart_diagnosis", "heart"), ("lung_diagnosis", "lung"), ("diagnosis", modality)):
    dx = f.take(key)
    if dx is None:
      continue
    is_normal = report_templates.norm_key(dx) in ("normal", "healthy")
    name = _NORMAL[own_modality] if is_normal else _DIAGNOSES.get(report_templates.norm_key(dx), _fmt(dx))
    if is_normal:
      out.append(pick([f"Impression: {name}.", f"Findings within normal limits ({name}).", f"{_cap(name)}."]))
    else:
      out.append(pick([f"Impression: {name}.", f"Findings consistent with {name}.", f"Suggestive of {name}."]))
  return " ".join(out) or None


def report_for(metadata: dict, labels: dict, *, seed: int = 0) -> str:
  """A short clinical report of an example's metadata and labels.

  Args:
    metadata: the example's metadata (any keys; unknown ones become "Key: value." sentences).
    labels: the example's labels (e.g. murmur, heart_diagnosis); metadata wins on shared keys.
    seed: selects among phrasings, together with the facts themselves.

  Returns:
    The report text; never mentions the split, ids or other bookkeeping fields.
  """
  facts = _Facts(metadata, labels)
  modality = modality_of(metadata, labels)
  content = json.dumps({"m": metadata, "l": labels}, sort_keys=True, default=str).encode()
  rng = np.random.default_rng((int(seed) % 2**32, zlib.crc32(content)))

  def pick(options):
    return options[int(rng.integers(len(options)))]

  schema = report_templates.schema_for(metadata, labels)
  if schema is not None:  # A dataset with a schema template (see acula_jax.text.report_templates).
    return report_templates.render(schema, metadata, labels, pick)
  sentences = [_demographics(facts, pick), _recording(facts, pick), _rates(facts, pick),
               _extra_sounds(facts, pick), _murmur(facts, pick), _lung_findings(facts, pick)]
  # Diagnoses go last as the impression; whatever is left is stated plainly before it.
  impression = _impression(facts, pick, modality)
  for key, value in facts.rest():
    text = _fmt(value)
    if text:
      sentences.append(f"{_pretty(key)}: {text}.")
  sentences.append(impression)
  return " ".join(s for s in sentences if s) or "No findings recorded."


# ----------------------------------------------------------------------------------------------------
# Report files.
# ----------------------------------------------------------------------------------------------------

def write_reports(records_dir, output, *, splits=("train",), seed=0, progress=False) -> int:
  """Writes one JSONL line {"id", "report"} per example of `splits`; returns the count.

  The file appears atomically (written to a temporary name, then renamed).
  """
  sources = [records.open_split(records_dir, split) for split in splits]
  total = sum(len(s) for s in sources)
  rows = (source[i] for source in sources for i in range(len(source)))
  if progress:
    rows = tqdm.tqdm(rows, total=total, desc="reports", unit="report")
  output = os.fspath(output)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  count = 0
  seen = set()
  with fileio.atomic_output(output) as out:
    for ex in rows:
      if ex["id"] in seen:  # the teacher join is by id: two folders must not share one
        raise DataError(str(records_dir), f"example id {ex['id']!r} occurs twice (ids must be unique "
                                          "across the records folders and splits)")
      seen.add(ex["id"])
      report = report_for(ex["metadata"], ex["labels"], seed=seed)
      out.write(json.dumps({"id": ex["id"], "report": report}, ensure_ascii=False) + "\n")
      count += 1
  return count


def _add_row(rows, seen, path, where, example_id, report):
  """Checks one (id, report) row and appends it; DataError naming the file and line/row."""
  example_id = "" if report_templates.missing(example_id) else str(example_id).strip()
  if not example_id:
    raise DataError(path, f"{where}: missing or empty id")
  if not isinstance(report, str) or not report.strip():
    raise DataError(path, f"{where}: missing or empty report for id {example_id!r}")
  if example_id in seen:
    raise DataError(path, f"{where}: duplicate id {example_id!r} (first at {seen[example_id]})")
  seen[example_id] = where
  rows.append((example_id, report.strip()))


def _read_jsonl(path, column):
  rows, seen = [], {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(path, f"line {lineno}: malformed JSON ({e.msg})") from e
      if not isinstance(obj, dict):
        raise DataError(path, f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
      _add_row(rows, seen, path, f"line {lineno}", obj.get("id"), obj.get(column))
  return rows


def _read_csv(path, column, id_column):
  rows, seen = [], {}
  with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: drop a BOM from spreadsheet exports.
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    if not header:
      raise DataError(path, "empty file (no header row)")
    id_column = id_column or next((c for c in _ID_COLUMNS if c in header), None)
    if id_column not in header:
      raise DataError(path, f"no id column (looked for {id_column or list(_ID_COLUMNS)}); columns: {header}")
    if column not in header:
      raise DataError(path, f"no report column {column!r}; columns: {header}")
    for rowno, row in enumerate(reader, start=1):
      if None in row:  # More cells than header columns.
        raise DataError(path, f"row {rowno} (line {reader.line_num}): more cells than columns")
      _add_row(rows, seen, path, f"row {rowno} (line {reader.line_num})", row.get(id_column), row.get(column))
  return rows


def read_reports(path, *, column="report", id_column=None) -> list[tuple[str, str]]:
  """Reads (id, report) pairs from a .jsonl or .csv file.

  Args:
    path: a JSONL file with one {"id": ..., column: ...} object per line, or a CSV file with an id
      column and `column` (e.g. "report", "Gen_Report", "Meta_Report").
    column: the report field / column.
    id_column: CSV id column; default the first of id, Patient_ID, patient_id, "Patient ID".

  Raises:
    DataError naming the file (and line/row): missing file, unknown extension, malformed line,
    missing column, missing/empty id or report, duplicate id, or no reports at all.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(path, "report file not found")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".jsonl":
    rows = _read_jsonl(path, column)
  elif ext == ".csv":
    rows = _read_csv(path, column, id_column)
  else:
    raise DataError(path, f"unsupported report file type {ext!r} (expected .jsonl or .csv)")
  if not rows:
    raise DataError(path, "no reports in file")
  return rows


# ----------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------

def _define_flags():
  """CLI flags, defined only when run as a script so that importing this module defines none."""
  flags.DEFINE_string("records", None, "Audio records folder, or several comma-separated (records.write_audio_records).")
  flags.DEFINE_string("output", None, "Output JSONL file.")
  flags.DEFINE_list("splits", ["train"], "Splits to write reports for (alignment uses train only).")
  flags.DEFINE_integer("seed", 0, "Phrasing seed.")
  flags.mark_flags_as_required(["records", "output"])


def main(argv):
  del argv
  cfg = flags.FLAGS
  count = write_reports(cfg.records, cfg.output, splits=tuple(cfg.splits), seed=cfg.seed, progress=True)
  print(f"wrote {count} reports to {cfg.output}", file=sys.stderr)


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
