r"""Rule-based report templates per metadata schema (heart, lung, cough/breath, lung function).

`reports.report_for` dispatches here when an example's metadata names a `schema` (or a `dataset`
listed in `SCHEMA_BY_DATASET`); anything else keeps the generic renderer of `acula_jax.text.reports`.

A template states only the clinical facts it knows by name (murmur, crackles, COVID-19 status,
spirometry, ...), in several phrasings chosen by `pick` (seeded by `report_for`), and never renders
bookkeeping: ids, file names, campaigns, splits or fields it does not know. Fields are looked up by
normalised name (`norm_key`), so "Systolic murmur timing" and "systolic_murmur_timing" both work.

Schemas and the fields they read:
  heart: age / age_group / age_days, sex, height, weight, pregnancy_status, recording_location,
         murmur, murmur_locations, most_audible_location, {systolic,diastolic}_murmur_{timing,shape,
         grading,pitch,quality}, outcome, diagnosis (ZCHSound CHD classes), recording_quality.
  lung:  age, sex, chest_location, device, acquisition_mode, sound_type, crackles, wheezes,
         record_annotation, events, diagnosis, disease, copd_severity.
  cough: sound, age, sex, covid_status, covid_test_result, symptoms, smoker, asthma,
         respiratory_condition.
  lung_function: sound, age, sex, fvc, fev1, fev1_fvc, respiratory_rate.
"""

import math
import re

SCHEMA_BY_DATASET = {
    "circor": "heart", "zchsound": "heart", "physionet2016": "heart", "yaseen2018": "heart",
    "icbhi": "lung", "kauh": "lung", "sprsound": "lung", "respiratory_tr": "lung",
    "coswara": "cough", "coughvid": "cough", "ukcovid": "cough",
    "mmlung": "lung_function", "nosemic": "lung_function",
}

_VALVES = {"av": "aortic", "pv": "pulmonic", "tv": "tricuspid", "mv": "mitral", "phc": "other"}
_VALVE_AREA = {"av": "aortic area", "pv": "pulmonic area", "tv": "tricuspid area",
               "mv": "mitral area", "phc": "an additional site"}
_CHD = {"asd": "atrial septal defect", "vsd": "ventricular septal defect",
        "pda": "patent ductus arteriosus", "pfo": "patent foramen ovale"}
_ROMAN = ("I", "II", "III", "IV", "V", "VI")
_YES = ("yes", "y", "true", "1", "present", "positive", "p")
_NO = ("no", "n", "false", "0", "absent", "negative")


def norm_key(key) -> str:
  """'Most audible location:' -> 'most_audible_location', so tables with other spellings match."""
  return re.sub(r"[^a-z0-9]+", "_", str(key).lower()).strip("_")


def missing(value) -> bool:
  """A metadata value that says nothing: None, NaN, an empty collection, or '', 'nan', 'none', 'n/a'..."""
  if value is None:
    return True
  if isinstance(value, float) and math.isnan(value):
    return True
  if isinstance(value, (list, tuple, set)) and not value:
    return True
  return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null", "n/a", "na")


def _number(value):
  if isinstance(value, bool):
    return None
  try:
    out = float(str(value).replace("*", "").strip())
  except (TypeError, ValueError):
    return None
  return out if math.isfinite(out) else None


def _flag(value):
  """True / False for yes-no style values, None when unknown."""
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  return True if text in _YES else False if text in _NO else None


def _cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def _join(items):
  items = [i for i in items if i]
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _article(word: str) -> str:
  """'a' or 'an' by pronunciation, including numbers such as 8, 11, 18 and 80-89."""
  lead = re.match(r"\d+", word)
  if lead:
    digits = lead.group(0)
    return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
  return "an" if word[:1].lower() in "aeiou" else "a"


class _Fields:
  """Normalised view of metadata and labels (metadata wins); missing values read as None."""

  def __init__(self, metadata, labels):
    self._d = {}
    for source in (labels or {}, metadata or {}):
      for key, value in source.items():
        if not missing(value):
          self._d[norm_key(key)] = value

  def get(self, *names):
    for name in names:
      if name in self._d:
        return self._d[name]
    return None


def schema_for(metadata, labels=None):
  """The template schema of an example: metadata['schema'], else by metadata['dataset'], else None."""
  for source in (metadata or {}, labels or {}):
    schema = source.get("schema")
    if isinstance(schema, str) and schema in TEMPLATES:
      return schema
    dataset = source.get("dataset")
    if isinstance(dataset, str) and dataset in SCHEMA_BY_DATASET:
      return SCHEMA_BY_DATASET[dataset]
  return None


# ----------------------------------------------------------------------------------------------------
# Shared sentences.
# ----------------------------------------------------------------------------------------------------

def _sex(f):
  sex = f.get("sex", "gender")
  if sex is None:
    return None
  s = str(sex).strip().lower()
  return {"f": "female", "female": "female", "1": None, "m": "male", "male": "male"}.get(s, None)


def _demographics(f, pick):
  """'A 7-year-old girl.' from age (years), age_days or an age group, and sex."""
  sex = _sex(f)
  years = _number(f.get("age", "age_years"))
  days = _number(f.get("age_days"))
  if years is None and days is not None:
    years = days / 365.25
  group = f.get("age_group")
  if years is None and f.get("age") is not None and group is None:
    group = f.get("age")
  if years is not None:
    if years < 2:
      months = max(1, round(years * 12))
      adj, txt = f"{months}-month-old", f"{months} months"
    else:
      adj, txt = f"{years:.0f}-year-old", f"{years:.0f} years"
    noun = {"female": "girl" if years < 18 else "woman", "male": "boy" if years < 18 else "man"}.get(sex)
    art = _cap(_article(adj))
    if noun is None:
      return pick([f"{art} {adj} patient.", f"Patient aged {txt}."])
    return pick([f"{art} {adj} {sex} patient.", f"Patient: {adj} {noun}.", f"{_cap(sex)}, {txt} old."])
  if group is not None:
    group = str(group).strip().lower()
    if sex is None:
      return pick([f"Age group: {group}.", f"The patient is {_article(group)} {group}."])
    return pick([f"{_cap(sex)} {group}.", f"The patient is {_article(sex)} {sex} {group}.",
                 f"Patient: {sex}, {group}."])
  if sex is not None:
    return pick([f"{_cap(sex)} patient.", f"Sex: {sex}."])
  return None


# ----------------------------------------------------------------------------------------------------
# Heart.
# ----------------------------------------------------------------------------------------------------

def _valves(codes, *, area=False):
  names = []
  for code in str(codes).replace(",", "+").split("+"):
    code = code.strip().lower()
    if code:
      names.append((_VALVE_AREA if area else _VALVES).get(code, code))
  return list(dict.fromkeys(names))


def _grade(value):
  """(n, denominator) of 'III/VI', 'II/IV', '3/6'; None when unreadable."""
  text = str(value).strip().upper().replace("GRADE", "").strip()
  num, _, den = text.partition("/")
  num = num.strip()
  n = _ROMAN.index(num) + 1 if num in _ROMAN else _number(num)
  if n is None:
    return None
  den = den.strip()
  d = _ROMAN.index(den) + 1 if den in _ROMAN else (_number(den) or 6)
  return int(n), int(d)


def _murmur_phase(f, phase, pick):
  """One sentence about the systolic or diastolic murmur, or None when the phase has no details."""
  timing = f.get(f"{phase}_murmur_timing")
  if timing is None:
    return None
  shape = f.get(f"{phase}_murmur_shape")
  grade = f.get(f"{phase}_murmur_grading")
  pitch = f.get(f"{phase}_murmur_pitch")
  quality = f.get(f"{phase}_murmur_quality")
  timing = str(timing).strip().lower()
  shape_txt = str(shape).strip().lower() if shape is not None else ""
  if shape_txt == "diamond":
    shape_txt = pick(["diamond-shaped", "crescendo-decrescendo (diamond)"])
  g = _grade(grade) if grade is not None else None
  roman = f"{_ROMAN[g[0] - 1]}/{_ROMAN[g[1] - 1]}" if g and 1 <= g[0] <= 6 and 1 <= g[1] <= 6 else None
  pitch_txt = f"{str(pitch).strip().lower()}-pitched" if pitch is not None else ""
  quality_txt = str(quality).strip().lower() if quality is not None else ""
  core = " ".join(w for w in (timing, shape_txt, "murmur") if w)
  variants = [
      _cap(core) + (f", grade {roman}" if roman else "") + (f", {_join([pitch_txt, quality_txt])}"
                                                             if pitch_txt or quality_txt else "") + ".",
      f"{_cap(_article(core))} {' '.join(w for w in (quality_txt, pitch_txt, core) if w)}"
      + (f" graded {roman}" if roman else "") + " is heard.",
  ]
  items = [f"timing {timing}", f"shape {shape_txt}" if shape_txt else "", f"grade {roman}" if roman else "",
           f"pitch {str(pitch).strip().lower()}" if pitch is not None else "",
           f"quality {quality_txt}" if quality_txt else ""]
  variants.append(f"{_cap(phase)} murmur: " + ", ".join(i for i in items if i) + ".")
  return pick(variants)


def _murmur(f, pick):
  present = f.get("murmur")
  if present is None:
    return None
  state = str(present).strip().lower()
  if state in ("absent", "no", "false", "0"):
    return pick(["No murmur is heard.", "There is no audible murmur.", "Murmur absent."])
  if state in ("unknown", "uncertain"):
    return pick(["The presence of a murmur could not be determined.",
                 "Murmur status is unknown (uncertain on auscultation).",
                 "It is unclear whether a murmur is present."])
  out = [pick(["A heart murmur is present.", "Murmur present.", "A murmur is heard."])]
  out += [s for s in (_murmur_phase(f, "systolic", pick), _murmur_phase(f, "diastolic", pick)) if s]
  loudest = f.get("most_audible_location")
  if loudest is not None:
    area = _join(_valves(loudest, area=True))
    out.append(pick([f"It is loudest over the {area}.", f"Most audible at the {area}."]))
  where = f.get("murmur_locations")
  if where is not None:
    names = _valves(where)
    out.append(pick([f"Audible over the {_join(names)} areas.",
                     f"The murmur is heard at the {_join(names)} auscultation sites."]))
  here = f.get("murmur_here")
  if here is not None and str(here).lower() == "absent":
    out.append(pick(["It is not audible at this recording site.", "Not heard at this site."]))
  return " ".join(out)


def _heart_site(f, pick):
  site = f.get("recording_location", "location")
  if site is None:
    return None
  area = _join(_valves(site, area=True))
  return pick([f"Heart sounds recorded over the {area}.", f"Cardiac auscultation at the {area}.",
               f"Phonocardiogram from the {area}."])


def _heart_body(f, pick):
  out = []
  height, weight = _number(f.get("height")), _number(f.get("weight"))
  if height is not None and weight is not None:
    out.append(pick([f"Height {height:g} cm, weight {weight:g} kg.", f"Weight {weight:g} kg, height {height:g} cm."]))
  preg = f.get("pregnancy_status")
  if preg is not None and _flag(preg):
    out.append(pick(["The patient is pregnant.", "Pregnant at the time of recording."]))
  return " ".join(out) or None


def _heart_impression(f, pick):
  out = []
  dx = f.get("diagnosis")
  if dx is not None:
    key = str(dx).strip().lower()
    name = _CHD.get(key, key)
    if name in ("normal", "healthy"):
      out.append(pick(["No structural heart disease.", "Normal heart; no congenital defect.",
                       "Impression: normal heart sounds."]))
    else:
      out.append(pick([f"Diagnosis: {name}.", f"Findings consistent with {name}.",
                       f"Congenital heart disease: {name}."]))
  outcome = f.get("outcome")
  if outcome is not None:
    o = str(outcome).strip().lower()
    out.append(pick([f"Clinical outcome: {o}.", f"Overall cardiac assessment is {o}.",
                     f"The outcome of the clinical evaluation was {o}."]))
  quality = f.get("recording_quality")
  if quality is not None and str(quality).strip().lower() in ("noise", "noisy"):
    out.append(pick(["The recording contains background noise.", "Noisy recording."]))
  return " ".join(out) or None


def heart_report(f, pick):
  return [_demographics(f, pick), _heart_body(f, pick), _heart_site(f, pick), _murmur(f, pick),
          _heart_impression(f, pick)]


# ----------------------------------------------------------------------------------------------------
# Lung.
# ----------------------------------------------------------------------------------------------------

_RECORD_ANNOTATION = {
    "normal": "no adventitious sounds", "cas": "continuous adventitious sounds (wheezes or rhonchi)",
    "das": "discontinuous adventitious sounds (crackles)",
    "cas & das": "both continuous and discontinuous adventitious sounds",
}


def _lung_site(f, pick):
  where, device = f.get("chest_location", "location"), f.get("device", "equipment")
  if where is None and device is None:
    return None
  s = pick(["Lung sounds recorded", "Chest auscultation", "Breath sounds recorded"])
  if where is not None:
    s += f" {pick(['over the', 'at the'])} {str(where).strip()}"
  if device is not None:
    s += f" {pick(['with', 'using'])} {device}"
  return s + "."


def _adventitious(f, pick):
  crackles, wheezes = f.get("crackles"), f.get("wheezes")
  out = []
  sound = f.get("sound_type")
  if sound is not None:
    s = str(sound).strip().lower()
    if s == "normal":
      out.append(pick(["Normal breath sounds.", "Vesicular breath sounds without added sounds."]))
    else:
      out.append(pick([f"Auscultation reveals {s}.", f"Adventitious sounds: {s}.", f"{_cap(s)} are heard."]))
  if sound is None and (crackles is not None or wheezes is not None):
    c, w = _flag(crackles) if crackles is not None else None, _flag(wheezes) if wheezes is not None else None
    if c and w:
      out.append(pick(["Crackles and wheezes are present.", "Both crackles and wheezes are heard."]))
    elif c:
      out.append(pick(["Crackles are heard" + ("; no wheezes." if w is False else "."), "Crackles present."]))
    elif w:
      out.append(pick(["Wheezes are heard" + ("; no crackles." if c is False else "."), "Wheezes present."]))
    elif c is False and w is False:
      out.append(pick(["No crackles or wheezes.", "No adventitious sounds.", "Crackles and wheezes are absent."]))
  record = f.get("record_annotation")
  if record is not None:
    r = _RECORD_ANNOTATION.get(str(record).strip().lower(), str(record).strip().lower())
    out.append(pick([f"Recording-level finding: {r}.", f"Overall, {r}."]))
  events = f.get("events")
  if isinstance(events, (list, tuple)) and events:
    kinds = [str(e).strip().lower() for e in dict.fromkeys(events) if str(e).strip().lower() != "normal"]
    if kinds:
      out.append(pick([f"Respiratory events include {_join(kinds)}.", f"Events annotated: {_join(kinds)}."]))
  return " ".join(out) or None


def _lung_impression(f, pick):
  out = []
  stage = f.get("copd_severity")
  if stage is not None:
    out.append(pick([f"COPD severity stage {stage} on a 0-4 scale.", f"COPD stage {stage} (0-4)."]))
  for key in ("diagnosis", "disease"):
    dx = f.get(key)
    if dx is None:
      continue
    name = str(dx).strip()
    low = name.lower()
    if low in ("healthy", "normal", "control group", "n"):
      out.append(pick(["No respiratory disease (healthy control).", "Impression: healthy.",
                       "Findings within normal limits."]))
    else:
      name = {"copd": "chronic obstructive pulmonary disease (COPD)", "urti": "upper respiratory tract infection",
              "lrti": "lower respiratory tract infection"}.get(low, name if name.isupper() else low)
      out.append(pick([f"Impression: {name}.", f"Findings consistent with {name}.", f"Diagnosis: {name}."]))
    break
  return " ".join(out) or None


def lung_report(f, pick):
  return [_demographics(f, pick), _lung_site(f, pick), _adventitious(f, pick), _lung_impression(f, pick)]


# ----------------------------------------------------------------------------------------------------
# Cough / breath.
# ----------------------------------------------------------------------------------------------------

_SOUNDS = {"cough": "cough", "cough-heavy": "deep cough", "cough-shallow": "shallow cough",
           "breathing-deep": "deep breathing", "breathing-shallow": "shallow breathing",
           "exhalation": "exhalation", "three_cough": "three coughs", "deep_breath": "deep breath",
           "vowel_o": "sustained vowel /o/"}


def _sound(f, pick):
  sound = f.get("sound")
  if sound is None:
    return None
  s = _SOUNDS.get(str(sound).strip().lower(), str(sound).strip().lower().replace("_", " "))
  return pick([f"Recording of {_article(s)} {s}.", f"Audio: {s}.", f"{_cap(s)} recording."])


def _covid(f, pick):
  status = f.get("covid_status", "covid_test_result", "status")
  if status is None:
    return None
  s = str(status).strip().lower().replace("_", " ")
  if s in ("positive", "covid-19", "covid", "p") or s.startswith("positive"):
    detail = s.replace("positive", "").strip()
    detail = f" ({detail})" if detail else ""
    return pick([f"COVID-19 positive{detail}.", f"The participant tested positive for COVID-19{detail}.",
                 f"SARS-CoV-2 infection confirmed{detail}."])
  if s in ("negative", "n", "healthy"):
    return pick(["No COVID-19 infection.", "COVID-19 negative.", "The participant did not have COVID-19."])
  if s == "symptomatic":
    return pick(["Symptomatic, COVID-19 not confirmed.", "Respiratory symptoms without a COVID-19 diagnosis."])
  return pick([f"Health status: {s}.", f"Reported status: {s}."])


def _symptoms(f, pick):
  out = []
  symptoms = f.get("symptoms")
  if isinstance(symptoms, str):
    symptoms = [s for s in re.split(r"[;,]", symptoms) if s.strip()]
  if isinstance(symptoms, (list, tuple)):
    names = [str(s).strip().lower().replace("_", " ") for s in symptoms if str(s).strip()]
    if names:
      out.append(pick([f"Reported symptoms: {_join(names)}.", f"Symptoms include {_join(names)}."]))
    elif symptoms == []:
      out.append(pick(["No symptoms reported.", "Asymptomatic."]))
  smoker = f.get("smoker")
  if smoker is not None and _flag(smoker) is not None:
    out.append(pick(["Current smoker.", "The participant smokes."]) if _flag(smoker)
               else pick(["Non-smoker.", "The participant does not smoke."]))
  asthma = f.get("asthma")
  if asthma is not None and _flag(asthma):
    out.append(pick(["History of asthma.", "Known asthma."]))
  cond = f.get("respiratory_condition")
  if cond is not None and _flag(cond) is not None:
    out.append(pick(["Has a pre-existing respiratory condition.", "Known respiratory condition."])
               if _flag(cond) else pick(["No known respiratory condition."]))
  return " ".join(out) or None


def cough_report(f, pick):
  return [_sound(f, pick), _demographics(f, pick), _symptoms(f, pick), _covid(f, pick)]


# ----------------------------------------------------------------------------------------------------
# Lung function.
# ----------------------------------------------------------------------------------------------------

def _spirometry(f, pick):
  fvc, fev1, ratio = _number(f.get("fvc")), _number(f.get("fev1")), _number(f.get("fev1_fvc"))
  out = []
  if fev1 is not None:
    out.append(pick([f"FEV1 {fev1:.2f} L.", f"Forced expiratory volume in one second: {fev1:.2f} L."]))
  if fvc is not None:
    out.append(pick([f"FVC {fvc:.2f} L.", f"Forced vital capacity: {fvc:.2f} L."]))
  if ratio is not None:
    r = ratio / 100 if ratio > 1.5 else ratio  # Published both as a fraction and as a percentage.
    note = pick([" (obstructive pattern)", ", suggesting airflow obstruction"]) if r < 0.7 else ""
    out.append(pick([f"FEV1/FVC ratio {r:.2f}{note}.", f"FEV1/FVC {r * 100:.0f}%{note}."]))
  rr = _number(f.get("respiratory_rate"))
  if rr is not None:
    note = " (tachypnoea)" if rr > 20 else ""
    out.append(pick([f"Respiratory rate {rr:g} breaths per minute{note}.", f"Breathing at {rr:g}/min{note}."]))
  return " ".join(out) or None


def lung_function_report(f, pick):
  return [_sound(f, pick), _demographics(f, pick), _spirometry(f, pick)]


TEMPLATES = {"heart": heart_report, "lung": lung_report, "cough": cough_report,
             "lung_function": lung_function_report}


def render(schema, metadata, labels, pick) -> str:
  """The report of one example under `schema`; `pick(options)` chooses a phrasing."""
  if schema not in TEMPLATES:
    raise ValueError(f"unknown report schema {schema!r}; known: {sorted(TEMPLATES)}")
  sentences = TEMPLATES[schema](_Fields(metadata, labels), pick)
  return " ".join(s for s in sentences if s) or "No findings recorded."
