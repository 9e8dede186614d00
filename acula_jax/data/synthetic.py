r"""The embedded demo corpus: labelled synthetic auscultation recordings, no downloads.

`generate_example(index, seed)` renders one 16 kHz clip of heart or lung sounds with labels and
clinical metadata; it depends only on `(index, seed)`, so a corpus is reproducible clip by clip
and can be regenerated anywhere. The demo trains a small MAE ViT + alignment on ~1000-2000 clips
and linear-probes it on `DEMO_TASKS`.

  python -m acula_jax.data.synthetic --output=workdir/demo/data/records --num_examples=1200 --seed=0

Corpus layout
-------------
* Subjects: clips `2k` and `2k+1` belong to subject `k` and are recorded at two different sites.
  Splits are assigned per subject (70/15/15, exactly so in every run of 20 subjects), so the
  splits are subject-disjoint.
* Conditions are balanced within each split: the subjects of a split walk through shuffled cycles
  of the 16 condition slots below (8 heart, 8 lung), so even a few hundred clips cover every class
  of every task in train and test.

Clinical model (all sounds are simulated, the reasoning is textbook auscultation)
-------------------------------------------------------------------------------
Heart (`heart_diagnosis`, slots per cycle):
  normal (2)                no murmur; a physiological S3 in some subjects under 30.
  aortic_stenosis (1)       harsh mid-systolic crescendo-decrescendo murmur, medium/high pitch, loudest
                            at the aortic area, grade 2-5, soft S2, sometimes an ejection click.
  mitral_regurgitation (1)  blowing holosystolic plateau murmur, high pitch, loudest at the apex
                            (mitral area), grade 1-4, sometimes an S3.
  aortic_regurgitation (1)  blowing early-diastolic decrescendo murmur, high pitch, aortic area.
  mitral_stenosis (1)       low-pitched rumbling diastolic murmur at the apex: mid-diastolic
                            decrescendo, or late-diastolic (presystolic) crescendo; loud S1, often
                            an opening snap.
  heart_failure (2)         no murmur, S3 gallop (always), S4 in half, faster heart rate.
  -> `murmur` present/absent is balanced 50/50; `murmur_timing` is systolic (AS, MR) or diastolic
     (AR, MS) and exists only when a murmur is present.
S1/S2 are damped 30-150 Hz transients; S1 is the louder one at the mitral/tricuspid sites, S2 at
the aortic/pulmonic sites. A murmur is band-limited noise (low 80-200, medium 150-400, high
300-700 Hz) under a per-beat envelope of its shape; its grade sets its level relative to S1 at the
site where it is loudest (`murmur_most_audible`) and it is 3-6 dB softer at the other sites.

Lung (`lung_diagnosis`, slots per cycle; `lung_sound` follows from it):
  healthy (2)               normal: vesicular breath sounds only.
  pneumonia (1)             crackles: coarse, early-inspiratory (some expiratory), focal (loudest at
                            one affected site), bronchial breathing in half.
  pulmonary_fibrosis (1)    crackles: fine, late-inspiratory, loudest at the bases.
  asthma (1)                wheezes: polyphonic high-pitched, expiratory (sometimes inspiratory too).
  bronchitis (1)            wheezes: monophonic low-pitched (rhonchi), inspiratory and expiratory.
  copd (2)                  both: expiratory wheezes + coarse early-inspiratory crackles, diminished
                            breath sounds, prolonged expiration.
  -> `lung_sound` normal/crackles/wheezes/both is balanced 25% each.
Breath noise is low-pass filtered noise under an inspiration/expiration envelope; crackles are
short damped transients (fine: 2-5 ms, 400-900 Hz; coarse: 8-20 ms, 120-350 Hz); wheezes are
gliding tones of 100-900 Hz with harmonics.

Nuisance factors (independent of the labels): two stethoscope models with different frequency
responses (`device`), faint breath noise in heart clips and faint heart sounds in lung clips,
handling thumps and taps in about half of the clips, background noise at 10-30 dB SNR, a random onset
within the cycle, a random duration of 6-10 s, and a random peak level (0.05-0.95), so that raw
energy says nothing about the labels.

Labels: heart clips {murmur, [murmur_timing], heart_diagnosis}; lung clips {lung_sound,
lung_diagnosis}. Metadata: sound_type, location, age, sex, device, then heart_rate, extra_sounds and
murmur_* fields, or respiratory_rate, breath_sounds, crackle_* and wheeze_* fields. Subject-level
facts (age, sex, diagnosis, murmur grade, ...) are shared by a subject's two clips; `murmur_grade` is
the grade at `murmur_most_audible`. `murmur_radiation` (AS: carotid arteries, MR: axilla) is
descriptive only: one site per clip cannot carry radiation. `synthesis` holds the nuisance draws
(SNR, level, handling artifacts, duration) for debugging; it is not a clinical fact and reports skip it.
"""

import dataclasses
import functools
import sys

from absl import app
from absl import flags
import numpy as np
from scipy import signal
import tqdm

from acula_jax import errors
from acula_jax.data import records

SAMPLE_RATE = 16000
DATASET = "synthetic"
CLIPS_PER_SUBJECT = 2
DURATION_RANGE_S = (6.0, 10.0)
SPLITS = ("train", "valid", "test")
# 14/3/3 of every 20 subjects: 70/15/15 exactly at every multiple of 20 subjects.
_SPLIT_BLOCK = ("train",) * 14 + ("valid",) * 3 + ("test",) * 3

# Stream tags keep the subject-level random draws apart from the per-clip ones (seed, index).
_SPLIT_STREAM = 0x5B117
_SLOT_STREAM = 0x5107
_SUBJECT_STREAM = 0x5B7EC7

HEART_DIAGNOSES = ("normal", "aortic_stenosis", "mitral_regurgitation", "aortic_regurgitation",
                   "mitral_stenosis", "heart_failure")
LUNG_DIAGNOSES = ("healthy", "pneumonia", "pulmonary_fibrosis", "asthma", "bronchitis", "copd")
LUNG_SOUNDS = ("normal", "crackles", "wheezes", "both")
HEART_LOCATIONS = ("aortic", "pulmonic", "tricuspid", "mitral")
LUNG_LOCATIONS = ("anterior left upper zone", "anterior right upper zone", "left lateral chest",
                  "right lateral chest", "posterior left base", "posterior right base")
# Condition slots of one balancing cycle: duplicates set the class balance (see module docstring).
_SLOTS = tuple(("heart", d) for d in ("normal", "normal", "aortic_stenosis", "mitral_regurgitation",
                                      "aortic_regurgitation", "mitral_stenosis", "heart_failure",
                                      "heart_failure")) + tuple(
    ("lung", d) for d in ("healthy", "healthy", "pneumonia", "pulmonary_fibrosis", "asthma",
                          "bronchitis", "copd", "copd"))


@dataclasses.dataclass(frozen=True)
class Task:
  """A probe task: which label to predict, its classes, and which clips it applies to."""
  name: str
  label_key: str
  classes: tuple
  sound_type: str

  def applies_to(self, example) -> bool:
    """Whether `example` (an audio-record dict) carries this task's label."""
    return (example["metadata"].get("sound_type") == self.sound_type
            and example["labels"].get(self.label_key) in self.classes)

  def label_index(self, labels) -> int:
    """The class index of a labels dict."""
    return self.classes.index(labels[self.label_key])


DEMO_TASKS = [
    Task("heart_murmur", "murmur", ("absent", "present"), "heart"),
    Task("heart_diagnosis", "heart_diagnosis", HEART_DIAGNOSES, "heart"),
    Task("lung_sound", "lung_sound", LUNG_SOUNDS, "lung"),
    Task("lung_diagnosis", "lung_diagnosis", LUNG_DIAGNOSES, "lung"),
]


# ----------------------------------------------------------------------------------------------------
# Subjects, splits and conditions.
# ----------------------------------------------------------------------------------------------------

def subject_of(index: int) -> int:
  """The subject number of clip `index`."""
  return index // CLIPS_PER_SUBJECT


def subject_split(subject: int, seed: int) -> tuple[str, int]:
  """(split, rank of the subject among the subjects of that split), computed in O(1)."""
  group, pos = divmod(subject, len(_SPLIT_BLOCK))
  order = np.random.default_rng((seed, _SPLIT_STREAM, group)).permutation(len(_SPLIT_BLOCK))
  block = [_SPLIT_BLOCK[i] for i in order]
  split = block[pos]
  return split, group * _SPLIT_BLOCK.count(split) + block[:pos].count(split)


def subject_condition(subject: int, seed: int) -> tuple[str, str, str]:
  """(split, sound_type, diagnosis): each split cycles through shuffled condition slots."""
  split, rank = subject_split(subject, seed)
  cycle, slot = divmod(rank, len(_SLOTS))
  order = np.random.default_rng((seed, _SLOT_STREAM, SPLITS.index(split), cycle)).permutation(len(_SLOTS))
  sound_type, diagnosis = _SLOTS[order[slot]]
  return split, sound_type, diagnosis


# ----------------------------------------------------------------------------------------------------
# Signal building blocks.
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _sos(sample_rate: int, kind: str, cutoff) -> np.ndarray:
  """A cached 2nd-order Butterworth section set; cut-offs are kept below Nyquist."""
  nyq = 0.5 * sample_rate
  cutoff = tuple(min(c, 0.95 * nyq) for c in np.atleast_1d(cutoff))
  sos = signal.butter(2, cutoff if len(cutoff) > 1 else cutoff[0], kind, fs=sample_rate, output="sos")
  return sos.astype(np.float32)  # float32 filtering: half the memory traffic, ample precision here.


def _rms(x) -> float:
  # Not np.dot: it hands strided input to BLAS threads, which is 10x slower on a busy machine.
  return float(np.sqrt(np.mean(np.square(x))))


def _white(rng, n) -> np.ndarray:
  """Zero-mean unit-variance white noise. Uniform, not Gaussian: 4x cheaper to draw, and every use
  is filtered, which makes it Gaussian again (central limit theorem)."""
  return (rng.random(n, dtype=np.float32) - np.float32(0.5)) * np.float32(np.sqrt(12.0))


def _band_noise(rng, n, sample_rate, band) -> np.ndarray:
  """Unit-RMS noise filtered to `band` (Hz)."""
  x = signal.sosfilt(_sos(sample_rate, "bandpass", tuple(band)), _white(rng, n))
  return x / (_rms(x[::4]) + 1e-12)  # Every 4th sample estimates the RMS well enough, for less work.


def _transient(sample_rate, freqs, amps, delays_s, tau_s, length_s, rng) -> np.ndarray:
  """A sum of damped sinusoids with a 2 ms attack, scaled to peak 1 (an S1, S2, click or crackle)."""
  t = np.arange(int(length_s * sample_rate), dtype=np.float32) / sample_rate
  out = np.zeros_like(t)
  for f, a, d in zip(freqs, amps, delays_s):
    td = np.maximum(t - d, 0.0)
    env = (1.0 - np.exp(-td / 0.002)) * np.exp(-td / tau_s)
    out += a * env * np.sin(2 * np.pi * f * td + rng.uniform(0, 2 * np.pi))
  return out / (np.abs(out).max() + 1e-12)


def _add(buf, start, wave, gain=1.0) -> None:
  """Adds `wave * gain` at sample `start`, clipped to the buffer (events may straddle the edges)."""
  lo, hi = max(start, 0), min(start + len(wave), len(buf))
  if lo < hi:
    buf[lo:hi] += gain * wave[lo - start:hi - start]


def _shape(name, m) -> np.ndarray:
  """Murmur envelope of `m` samples: crescendo, decrescendo, crescendo-decrescendo or plateau."""
  u = np.linspace(0.0, 1.0, m, dtype=np.float32)
  env = {"crescendo": 0.15 + 0.85 * u,
         "decrescendo": 1.0 - 0.85 * u,
         "crescendo-decrescendo": 1.0 - np.abs(2 * u - 1) * 0.9,
         "plateau": np.ones_like(u)}[name]
  ramp = min(m // 2, 80)  # 5 ms edges at 16 kHz, so the noise does not click on and off.
  if ramp:
    env[:ramp] *= np.linspace(0, 1, ramp)
    env[-ramp:] *= np.linspace(1, 0, ramp)
  return env


def _fill(env, start, stop, sample_rate, shape) -> None:
  """Adds one window's murmur envelope to `env` (seconds -> samples, clipped to the buffer)."""
  a, b = int(start * sample_rate), int(stop * sample_rate)
  if b - a >= 8:
    _add(env, a, _shape(shape, b - a))


# ----------------------------------------------------------------------------------------------------
# Heart sounds.
# ----------------------------------------------------------------------------------------------------

# Per diagnosis: murmur phase (None = no murmur), shapes, pitches, quality, best site, grade weights
# for grades 1-6, extra sounds with probabilities, heart-rate and age ranges, P(female).
_HEART = {
    "normal": dict(phase=None, hr=(55, 95), age=(5, 80), female=0.5, extras={}),
    "aortic_stenosis": dict(
        phase=("mid-systolic",), shapes=("crescendo-decrescendo",), pitch=("medium", "high"),
        pitch_p=(0.7, 0.3), quality="harsh", site="aortic", grades=(0, .25, .35, .25, .15, 0),
        radiation="carotid arteries", extras={"ejection click": 0.3}, hr=(55, 95), age=(60, 90),
        female=0.4),
    "mitral_regurgitation": dict(
        phase=("holosystolic",), shapes=("plateau",), pitch=("high",), pitch_p=(1.0,),
        quality="blowing", site="mitral", grades=(.1, .3, .4, .2, 0, 0), radiation="axilla",
        extras={"S3": 0.3}, hr=(60, 105), age=(45, 85), female=0.5),
    "aortic_regurgitation": dict(
        phase=("early-diastolic",), shapes=("decrescendo",), pitch=("high",), pitch_p=(1.0,),
        quality="blowing", site="aortic", grades=(.1, .4, .35, .15, 0, 0), radiation=None,
        extras={}, hr=(60, 100), age=(35, 80), female=0.3),
    "mitral_stenosis": dict(
        phase=("mid-diastolic", "late-diastolic"), shapes=("decrescendo", "crescendo"),
        pitch=("low",), pitch_p=(1.0,), quality="rumbling", site="mitral",
        grades=(.1, .4, .35, .15, 0, 0), radiation=None, extras={"opening snap": 0.6},
        hr=(65, 110), age=(25, 70), female=0.75),
    "heart_failure": dict(phase=None, hr=(85, 120), age=(55, 90), female=0.45,
                          extras={"S3": 1.0, "S4": 0.5}),
}
_PITCH_BANDS = {"low": (80.0, 200.0), "medium": (150.0, 400.0), "high": (300.0, 700.0)}
_PITCH_LOUDNESS = {"low": 3.0, "medium": 1.5, "high": 1.0}
# Murmur RMS relative to the S1 peak at its loudest site, per grade (about +3.5 dB a grade).
_GRADE_LEVEL = {g: 0.08 * 1.5 ** (g - 1) for g in range(1, 7)}


def _heart_subject(diagnosis, rng) -> dict:
  """Subject-level facts of a heart patient: demographics, heart rate, murmur, extra sounds."""
  p = _HEART[diagnosis]
  age = int(rng.integers(p["age"][0], p["age"][1] + 1))
  facts = {"age": age, "sex": "female" if rng.random() < p["female"] else "male",
           "base_hr": float(rng.uniform(*p["hr"]))}
  extras = [name for name, prob in p["extras"].items() if rng.random() < prob]
  if diagnosis == "normal" and age < 30 and rng.random() < 0.3:
    extras.append("S3")  # Physiological third sound of the young.
  facts["extra_sounds"] = extras
  if p["phase"] is None:
    facts["murmur"] = None
    return facts
  k = int(rng.integers(len(p["phase"])))
  facts["murmur"] = {
      "timing": "systolic" if p["phase"][k].endswith("systolic") else "diastolic",
      "phase": p["phase"][k],
      "shape": p["shapes"][k],
      "grade": int(rng.choice(np.arange(1, 7), p=p["grades"])),
      "pitch": str(rng.choice(p["pitch"], p=p["pitch_p"])),
      "quality": p["quality"],
      "most_audible": p["site"],
      "radiation": p["radiation"],
  }
  return facts


def _beat_times(duration, hr, rng) -> np.ndarray:
  """S1 onsets (s): random phase at t=0, 3% beat-to-beat jitter, one beat beyond each edge."""
  rr = 60.0 / hr
  n = int(duration / rr) + 3
  intervals = rr * np.clip(1.0 + 0.03 * rng.standard_normal(n), 0.85, 1.15)
  return -rng.uniform(0.0, rr) + np.concatenate([[0.0], np.cumsum(intervals)])


def _heart_templates(sample_rate, rng) -> dict:
  """S1 (mitral + tricuspid components), S2 (aortic + pulmonic) and extra-sound waveforms."""
  tr = functools.partial(_transient, sample_rate, rng=rng)
  return {
      "S1": tr((rng.uniform(40, 70), rng.uniform(70, 120)), (1.0, 0.7),
               (0.0, rng.uniform(0.015, 0.03)), rng.uniform(0.018, 0.028), 0.14),
      "S2": tr((rng.uniform(60, 100), rng.uniform(90, 150)), (1.0, 0.6),
               (0.0, rng.uniform(0.015, 0.04)), rng.uniform(0.012, 0.02), 0.11),
      "S3": tr((rng.uniform(25, 50),), (1.0,), (0.0,), 0.025, 0.1),
      "S4": tr((rng.uniform(25, 45),), (1.0,), (0.0,), 0.02, 0.08),
      "ejection click": tr((rng.uniform(150, 250),), (1.0,), (0.0,), 0.005, 0.03),
      "opening snap": tr((rng.uniform(120, 200),), (1.0,), (0.0,), 0.006, 0.03),
  }


# (delay after the anchor in s, anchor "S1"/"S2"/"next", relative gain) of each extra sound.
_EXTRA_TIMING = {"S3": ((0.12, 0.18), "S2", 0.4), "S4": ((-0.1, -0.07), "next", 0.3),
                 "ejection click": ((0.05, 0.08), "S1", 0.45), "opening snap": ((0.06, 0.1), "S2", 0.45)}


def _murmur_window(phase, s1, s2, nxt):
  """(start, stop) in seconds of the murmur in one cardiac cycle."""
  dia = nxt - s2
  return {"holosystolic": (s1 + 0.03, s2),
          "mid-systolic": (s1 + 0.06, s2 - 0.04),
          "early-diastolic": (s2 + 0.03, s2 + 0.03 + 0.6 * dia),
          "mid-diastolic": (s2 + 0.08, s2 + 0.08 + 0.6 * dia),
          "late-diastolic": (nxt - 0.45 * dia, nxt - 0.01)}[phase]


def _heart_clip(subject, diagnosis, location, n, sample_rate, rng, *, gain=1.0):
  """Renders heart sounds at one site; returns (wave, mean heart rate in bpm)."""
  duration = n / sample_rate
  hr = subject["base_hr"] * rng.uniform(0.95, 1.05)
  beats = _beat_times(duration, hr, rng)
  tpl = _heart_templates(sample_rate, rng)
  base = location in ("aortic", "pulmonic")
  s1_gain = rng.uniform(0.5, 0.8) if base else 1.0
  s2_gain = rng.uniform(0.9, 1.2) if base else rng.uniform(0.45, 0.7)
  if diagnosis == "aortic_stenosis":
    s2_gain *= 0.6  # Calcified valve: soft A2.
  if diagnosis == "mitral_stenosis":
    s1_gain *= 1.3  # Loud S1.
  wave = np.zeros(n, np.float32)
  murmur = subject["murmur"]
  env = np.zeros(n, np.float32) if murmur else None
  for s1, nxt in zip(beats[:-1], beats[1:]):
    s2 = s1 + 0.35 * np.sqrt(nxt - s1) + rng.normal(0, 0.005)  # Systole shortens as the rate rises.
    jitter = rng.uniform(0.85, 1.15, size=2)
    _add(wave, int(s1 * sample_rate), tpl["S1"], gain * s1_gain * jitter[0])
    _add(wave, int(s2 * sample_rate), tpl["S2"], gain * s2_gain * jitter[1])
    for name in subject["extra_sounds"]:
      (lo, hi), anchor, rel = _EXTRA_TIMING[name]
      t = {"S1": s1, "S2": s2, "next": nxt}[anchor] + rng.uniform(lo, hi)
      _add(wave, int(t * sample_rate), tpl[name], gain * rel * jitter[0])
    if murmur:
      start, stop = _murmur_window(murmur["phase"], s1, s2, nxt)
      _fill(env, start, stop, sample_rate, murmur["shape"])
  if murmur:
    level = _GRADE_LEVEL[murmur["grade"]] * gain
    if location != murmur["most_audible"]:
      level *= rng.uniform(0.5, 0.7)  # 3-6 dB softer away from the loudest site.
    # Grades are perceived loudness and hearing is less sensitive at low frequencies (equal-loudness
    # contours), so a low-pitched rumble of a given grade carries more energy than a high-pitched one.
    level *= _PITCH_LOUDNESS[murmur["pitch"]]
    band = _PITCH_BANDS[murmur["pitch"]]
    noise = _band_noise(rng, n, sample_rate, band)
    if murmur["quality"] == "harsh":  # Harsh = rough: a fast irregular amplitude modulation.
      t = np.arange(n, dtype=np.float32) / sample_rate
      noise *= 1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(25, 45) * t)
    wave += level * env * noise
  return wave, 60.0 * (len(beats) - 1) / (beats[-1] - beats[0])


# ----------------------------------------------------------------------------------------------------
# Lung sounds.
# ----------------------------------------------------------------------------------------------------

# crackles: (type, timing) or None; wheeze: (type, f0 range Hz, timing) or None; focus: where the
# adventitious sounds are loudest ("focal" = one random site, "bases", None = diffuse).
_LUNG = {
    "healthy": dict(crackles=None, wheeze=None, rr=(12, 20), age=(5, 80), female=0.5, ie=2.0,
                    breath=("vesicular",), focus=None),
    "pneumonia": dict(crackles=("coarse", "early-inspiratory and expiratory"), wheeze=None,
                      rr=(18, 30), age=(2, 90), female=0.45, ie=2.0,
                      breath=("vesicular", "bronchial"), focus="focal"),
    "pulmonary_fibrosis": dict(crackles=("fine", "late-inspiratory"), wheeze=None, rr=(16, 26),
                               age=(55, 85), female=0.35, ie=2.0, breath=("vesicular",),
                               focus="bases"),
    "asthma": dict(crackles=None, wheeze=("polyphonic", (350.0, 900.0), "expiratory"), rr=(16, 28),
                   age=(5, 55), female=0.55, ie=2.5, breath=("vesicular",), focus=None),
    "bronchitis": dict(crackles=None, wheeze=("monophonic", (100.0, 220.0), "inspiratory and expiratory"),
                       rr=(14, 24), age=(18, 75), female=0.5, ie=2.0, breath=("vesicular",),
                       focus=None),
    "copd": dict(crackles=("coarse", "early-inspiratory"),
                 wheeze=("monophonic", (200.0, 500.0), "expiratory"), rr=(16, 28), age=(50, 85),
                 female=0.4, ie=3.0, breath=("diminished",), focus=None),
}
_LUNG_SOUND_OF = {"healthy": "normal", "pneumonia": "crackles", "pulmonary_fibrosis": "crackles",
                  "asthma": "wheezes", "bronchitis": "wheezes", "copd": "both"}


def _lung_subject(diagnosis, rng) -> dict:
  """Subject-level facts of a lung patient."""
  p = _LUNG[diagnosis]
  facts = {"age": int(rng.integers(p["age"][0], p["age"][1] + 1)),
           "sex": "female" if rng.random() < p["female"] else "male",
           "base_rr": float(rng.uniform(*p["rr"])),
           "breath_sounds": str(rng.choice(p["breath"])),
           "focus": str(rng.choice(LUNG_LOCATIONS[2:])) if p["focus"] == "focal" else p["focus"]}
  if p["wheeze"]:
    kind, (lo, hi), timing = p["wheeze"]
    if diagnosis == "copd" and rng.random() < 0.4:
      kind = "polyphonic"
    f0 = float(rng.uniform(lo, hi))
    facts["wheeze"] = {"type": kind, "f0": f0, "pitch": "high" if f0 >= 300 else "low", "timing": timing}
  else:
    facts["wheeze"] = None
  facts["crackles"] = dict(zip(("type", "timing"), p["crackles"])) if p["crackles"] else None
  return facts


def _site_gain(focus, location, rng) -> float:
  """How loud the adventitious sounds are at `location` given where the disease is."""
  if focus is None:
    return rng.uniform(0.8, 1.0)
  if focus == "bases":
    return 1.0 if "base" in location else rng.uniform(0.4, 0.6)
  if location == focus:
    return 1.0
  same_side = ("left" in focus) == ("left" in location)
  return rng.uniform(0.55, 0.75) if same_side else rng.uniform(0.3, 0.45)


def _breath_cycles(duration, rr, ie, rng):
  """[(inspiration start, inspiration end, expiration end)] in s, random phase at t=0."""
  period = 60.0 / rr
  cycles, t = [], -rng.uniform(0.0, period)
  while t < duration:
    p = period * rng.uniform(0.92, 1.08)
    ti = p / (1.0 + ie)  # I:E = 1:ie; obstruction prolongs expiration.
    cycles.append((t, t + ti, t + p))
    t += p
  return cycles


def _breath_noise(cycles, n, sample_rate, kind, rng, gain=1.0) -> np.ndarray:
  """Breath noise: filtered noise under an inspiration (loud) / expiration (soft) envelope."""
  env = np.zeros(n, np.float32)
  exp_level = {"vesicular": 0.35, "bronchial": 0.9, "diminished": 0.25}[kind]
  for t0, t1, t2 in cycles:
    a, b, c = (int(t * sample_rate) for t in (t0, t1, t1 + 0.75 * (t2 - t1)))
    if b > a:
      _add(env, a, np.abs(np.sin(np.linspace(0, np.pi, b - a, dtype=np.float32))) ** 1.5)
    if c > b:
      _add(env, b, exp_level * np.sin(np.linspace(0, np.pi, c - b, dtype=np.float32)))
  band = (150.0, 1000.0) if kind == "bronchial" else (100.0, 500.0)
  return gain * env * _band_noise(rng, n, sample_rate, band)


def _crackle(kind, sample_rate, rng) -> np.ndarray:
  """One crackle: a sharp initial deflection ringing down, fine (short, high) or coarse."""
  if kind == "fine":
    f, tau = rng.uniform(400, 900), rng.uniform(0.0008, 0.0015)
  else:
    f, tau = rng.uniform(120, 350), rng.uniform(0.003, 0.006)
  return _transient(sample_rate, (f,), (1.0,), (0.0,), tau, 4 * tau + 0.002, rng) * rng.choice((-1, 1))


def _add_crackles(wave, cycles, crackles, sample_rate, level, rng) -> None:
  for t0, t1, t2 in cycles:
    if crackles["type"] == "fine":  # Many, late in inspiration.
      times = t0 + (t1 - t0) * rng.beta(5, 2, size=rng.poisson(18))
    else:  # Fewer, early in inspiration; some in expiration.
      times = t0 + (t1 - t0) * rng.beta(2, 4, size=rng.poisson(10))
      if "expiratory" in crackles["timing"]:
        times = np.concatenate([times, t1 + (t2 - t1) * rng.uniform(0, 0.5, size=rng.poisson(1.5))])
    for t in times:
      _add(wave, int(t * sample_rate), _crackle(crackles["type"], sample_rate, rng),
           level * rng.uniform(2.5, 5.0))


def _tone(f0, glide, m, sample_rate, harmonics) -> np.ndarray:
  """A gliding tone of `m` samples with harmonics and 30 ms fades."""
  f = f0 * np.linspace(1.0, glide, m)
  phase = (2 * np.pi / sample_rate * np.cumsum(f)).astype(np.float32)
  out = sum(a * np.sin(k * phase) for k, a in enumerate(harmonics, start=1))
  ramp = min(m // 2, int(0.03 * sample_rate))
  fade = np.ones(m, np.float32)
  fade[:ramp], fade[m - ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
  return out * fade


def _add_wheezes(wave, cycles, wheeze, sample_rate, level, rng) -> None:
  low = wheeze["pitch"] == "low"
  harmonics = (1.0, 0.6, 0.3) if low else (1.0, 0.35, 0.1)  # Rhonchi are rich in harmonics.
  for t0, t1, t2 in cycles:
    spans = [(t1 + (t2 - t1) * rng.uniform(0.05, 0.25), t1 + (t2 - t1) * rng.uniform(0.6, 0.9))]
    if "inspiratory" in wheeze["timing"] or rng.random() < 0.25:
      spans.append((t0 + (t1 - t0) * rng.uniform(0.1, 0.3), t0 + (t1 - t0) * rng.uniform(0.7, 0.95)))
    for a, b in spans:
      if rng.random() < 0.15:
        continue  # Not every breath wheezes.
      m = int((b - a) * sample_rate)
      tones = 1 if wheeze["type"] == "monophonic" else int(rng.integers(2, 4))
      for i in range(tones):
        f0 = wheeze["f0"] * (rng.uniform(1.15, 1.7) ** i) * rng.uniform(0.93, 1.07)
        tone = _tone(f0, rng.uniform(0.85, 1.15), m, sample_rate, harmonics)
        _add(wave, int(a * sample_rate), tone, level * rng.uniform(0.8, 1.6) / np.sqrt(tones))


def _lung_clip(subject, diagnosis, location, n, sample_rate, rng):
  """Renders lung sounds at one site; returns (wave, respiratory rate per minute)."""
  rr = subject["base_rr"] * rng.uniform(0.95, 1.05)
  cycles = _breath_cycles(n / sample_rate, rr, _LUNG[diagnosis]["ie"], rng)
  wave = _breath_noise(cycles, n, sample_rate, subject["breath_sounds"], rng)
  # Adventitious sounds are scaled to the breath noise's peak RMS (inspiration, envelope 1).
  site = _site_gain(subject["focus"], location, rng)
  if subject["crackles"]:
    _add_crackles(wave, cycles, subject["crackles"], sample_rate, site, rng)
  if subject["wheeze"]:
    _add_wheezes(wave, cycles, subject["wheeze"], sample_rate, 0.8 * site, rng)
  return wave, rr


# ----------------------------------------------------------------------------------------------------
# Recording chain: device, background, handling, level.
# ----------------------------------------------------------------------------------------------------

DEVICES = ("stethoscope-A", "stethoscope-B")


def _device_filter(wave, device, sample_rate) -> np.ndarray:
  """A: bell-like (keeps lows, rolls off above 600 Hz); B: diaphragm-like (cuts below 120 Hz)."""
  if device == "stethoscope-A":
    return signal.sosfilt(_sos(sample_rate, "lowpass", 600.0), wave)
  return signal.sosfilt(_sos(sample_rate, "bandpass", (120.0, 2000.0)), wave)


def _record(wave, device, sample_rate, rng) -> tuple[np.ndarray, dict]:
  """Device response, handling thumps, background noise and a random level; returns (audio, draws)."""
  n = len(wave)
  x = _device_filter(wave, device, sample_rate)
  sig = _rms(x)
  # Stethoscope handling, anywhere in the clip and often the loudest thing in it: low knocks
  # (thumps) and short contact taps. Scaled to the clip's peak, so that the peak-to-RMS ratio says
  # little about crackles (taps look alike at the sample level but are few and not tied to breaths).
  clip_peak = np.abs(x).max()
  thumps = int(rng.integers(1, 3)) if rng.random() < 0.3 else 0
  taps = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
  for i in range(thumps + taps):
    if i < thumps:
      f, tau, length = rng.uniform(8, 25), rng.uniform(0.03, 0.08), 0.3
    else:
      f, tau, length = rng.uniform(150, 1000), rng.uniform(0.0005, 0.003), 0.015
    artifact = _transient(sample_rate, (f,), (1.0,), (0.0,), tau, length, rng)
    _add(x, int(rng.integers(0, n)), artifact, clip_peak * np.exp(rng.uniform(np.log(0.3), np.log(2.0))))
  snr_db = float(rng.uniform(10.0, 30.0))
  # Background: a low-frequency rumble (one-pole low-pass) plus white hiss in random proportion,
  # as one filter (b0 + b1/z) / (1 - p/z) whose white-noise RMS gain is known in closed form.
  p = 0.985
  hiss = rng.uniform(0.2, 1.0) * (1 - p) / np.sqrt(1 - p * p)  # Relative to the rumble RMS.
  b = (hiss + 1.0 - p, -hiss * p)
  gain = np.sqrt(b[0] ** 2 + (b[0] * p + b[1]) ** 2 / (1 - p * p))
  noise = signal.lfilter(np.float32(b), np.float32((1.0, -p)), _white(rng, n))
  x = x + noise * (sig / gain * 10 ** (-snr_db / 20))
  peak = float(np.exp(rng.uniform(np.log(0.05), np.log(0.95))))
  x = x * (peak / (np.abs(x).max() + 1e-12))
  return x.astype(np.float32), {"snr_db": round(snr_db, 2), "peak": round(peak, 4),
                                 "handling_thumps": thumps, "handling_taps": taps}


# ----------------------------------------------------------------------------------------------------
# Examples.
# ----------------------------------------------------------------------------------------------------

def _subject_facts(subject, seed, sound_type, diagnosis) -> dict:
  rng = np.random.default_rng((seed, _SUBJECT_STREAM, subject))
  sites = HEART_LOCATIONS if sound_type == "heart" else LUNG_LOCATIONS
  facts = (_heart_subject if sound_type == "heart" else _lung_subject)(diagnosis, rng)
  facts["sites"] = [sites[i] for i in rng.permutation(len(sites))[:CLIPS_PER_SUBJECT]]
  return facts


def _heart_fields(facts, diagnosis, hr) -> tuple[dict, dict]:
  """(labels, metadata fields) of a heart clip."""
  murmur = facts["murmur"]
  labels = {"murmur": "present" if murmur else "absent", "heart_diagnosis": diagnosis}
  meta = {"heart_rate": int(round(hr)), "extra_sounds": list(facts["extra_sounds"]),
          "murmur": labels["murmur"]}
  if murmur:
    labels["murmur_timing"] = murmur["timing"]
    meta.update({f"murmur_{k}": v for k, v in murmur.items() if v is not None})
  return labels, meta


def _lung_fields(facts, diagnosis, rr) -> tuple[dict, dict]:
  """(labels, metadata fields) of a lung clip."""
  labels = {"lung_sound": _LUNG_SOUND_OF[diagnosis], "lung_diagnosis": diagnosis}
  meta = {"respiratory_rate": int(round(rr)), "breath_sounds": facts["breath_sounds"],
          "crackles": "present" if facts["crackles"] else "absent",
          "wheezes": "present" if facts["wheeze"] else "absent"}
  if facts["crackles"]:
    meta.update(crackle_type=facts["crackles"]["type"], crackle_timing=facts["crackles"]["timing"])
  if facts["wheeze"]:
    w = facts["wheeze"]
    meta.update(wheeze_type=w["type"], wheeze_pitch=w["pitch"], wheeze_timing=w["timing"])
  if facts["focus"] and facts["crackles"]:
    meta["crackle_location"] = "both bases" if facts["focus"] == "bases" else facts["focus"]
  return labels, meta


def generate_example(index: int, seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s=None) -> dict:
  """Renders clip `index` of the corpus `seed` as an audio-record dict (see module docstring).

  Args:
    index: clip number (>= 0); clips 2k and 2k+1 share subject k.
    seed: corpus seed (>= 0).
    sample_rate: output rate in Hz (>= 4000; the sounds are designed for 16 kHz).
    duration_s: clip length in seconds; None draws 6-10 s per clip.

  Returns:
    dict with id, dataset, subject_id, split, audio (float32 in [-1, 1]), sample_rate, num_samples,
    labels and metadata.
  """
  if index < 0 or seed < 0:
    raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
  if sample_rate < 4000:  # Wheezes, crackles and device filters reach 2 kHz.
    raise ValueError(f"sample_rate must be >= 4000 Hz, got {sample_rate}")
  subject = subject_of(index)
  split, sound_type, diagnosis = subject_condition(subject, seed)
  facts = _subject_facts(subject, seed, sound_type, diagnosis)
  rng = np.random.default_rng((seed, index))
  duration = float(duration_s) if duration_s is not None else float(rng.uniform(*DURATION_RANGE_S))
  n = int(round(duration * sample_rate))
  if n < 1:
    raise ValueError(f"duration_s={duration_s} gives no samples")
  location = facts["sites"][index % CLIPS_PER_SUBJECT]
  device = str(rng.choice(DEVICES))
  if sound_type == "heart":
    wave, hr = _heart_clip(facts, diagnosis, location, n, sample_rate, rng)
    # Breathing is always faintly audible on the chest.
    cycles = _breath_cycles(duration, rng.uniform(12, 20), 2.0, rng)
    wave += _breath_noise(cycles, n, sample_rate, "vesicular", rng, gain=rng.uniform(0.02, 0.08))
    labels, fields = _heart_fields(facts, diagnosis, hr)
  else:
    wave, rr = _lung_clip(facts, diagnosis, location, n, sample_rate, rng)
    # So is the heart, more so on the left front.
    heart = {"base_hr": rng.uniform(60, 90), "extra_sounds": [], "murmur": None}
    level = rng.uniform(0.1, 0.5) if "left" in location else rng.uniform(0.03, 0.2)
    wave += _heart_clip(heart, "normal", "mitral", n, sample_rate, rng, gain=level)[0]
    labels, fields = _lung_fields(facts, diagnosis, rr)
  audio, draws = _record(wave, device, sample_rate, rng)
  metadata = {"sound_type": sound_type, "location": location, "age": facts["age"],
              "sex": facts["sex"], "device": device, **fields,
              "synthesis": {**draws, "duration_s": round(n / sample_rate, 3)}}
  return {"id": f"syn-{index:06d}", "dataset": DATASET, "subject_id": f"syn-subject-{subject:05d}",
          "split": split, "audio": audio, "sample_rate": int(sample_rate), "num_samples": n,
          "labels": labels, "metadata": metadata}


def generate_corpus(num_examples: int, seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s=None,
                    start: int = 0):
  """Yields clips `start .. start + num_examples - 1` of the corpus `seed`."""
  for index in range(start, start + num_examples):
    yield generate_example(index, seed, sample_rate=sample_rate, duration_s=duration_s)


# ----------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------

def _define_flags():
  """CLI flags, defined only when run as a script so that importing this module defines none."""
  flags.DEFINE_string("output", None, "Directory for the ArrayRecord shards + manifest.json.")
  flags.DEFINE_integer("num_examples", 1200, "Number of clips.")
  flags.DEFINE_integer("seed", 0, "Corpus seed.")
  flags.DEFINE_float("duration_s", None, "Clip length in s (default: random 6-10 s per clip).")
  flags.DEFINE_integer("num_shards", 4, "Shards per split.")
  flags.mark_flag_as_required("output")


def main(argv):
  del argv
  cfg = flags.FLAGS
  if cfg.num_examples < 1:
    raise app.UsageError("--num_examples must be >= 1")
  examples = tqdm.tqdm(generate_corpus(cfg.num_examples, cfg.seed, duration_s=cfg.duration_s),
                       total=cfg.num_examples, desc="synthetic clips", unit="clip")
  manifest = records.write_audio_records(cfg.output, examples, dataset=DATASET, num_shards=cfg.num_shards)
  print(f"wrote {manifest['num_examples']} clips to {cfg.output}: {manifest['counts']}", file=sys.stderr)


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
