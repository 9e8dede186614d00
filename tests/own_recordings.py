"""A user's own study, generated: a table of 30 subjects x 3 auscultation sites, with the usual flaws.

Labels: `diagnosis` (normal / murmur, one per subject) and `murmur_audible` (yes / no, per recording:
a murmur patient's murmur is heard at one site only, so that label differs between a subject's
recordings). Flaws: one row whose file is missing, one 4 kHz file, one stereo file.
"""
import csv
import pathlib

import numpy as np
import soundfile as sf

NUM_SUBJECTS = 30
SITES = ("aortic", "mitral", "tricuspid")
RATE = 8000
SECONDS = 2.5
MISSING = "s07_tricuspid.wav"
LOW_RATE = "s03_mitral.wav"
STEREO = "s05_aortic.wav"


def _heart_sound(rng, murmur: bool, rate: int) -> np.ndarray:
  """Two thumps per beat at 70-90 bpm, breath-like noise, and a 150-400 Hz systolic murmur if asked."""
  n = int(SECONDS * rate)
  t = np.arange(n) / rate
  beat = 60.0 / rng.uniform(70, 90)
  wave = 0.02 * rng.normal(size=n)
  for start in np.arange(rng.uniform(0, beat), SECONDS, beat):
    for offset, freq in ((0.0, 50.0), (0.3 * beat, 70.0)):
      local = t - start - offset
      on = (local >= 0) & (local < 0.08)
      wave[on] += 0.5 * np.sin(2 * np.pi * freq * local[on]) * np.exp(-local[on] / 0.02)
    if murmur:
      local = t - start - 0.05
      on = (local >= 0) & (local < 0.25 * beat)
      wave[on] += 0.15 * np.sin(2 * np.pi * rng.uniform(150, 400) * local[on]) * rng.normal(1, 0.3, on.sum())
  return (0.8 * wave / np.abs(wave).max()).astype(np.float32)


def write(data_dir) -> pathlib.Path:
  """Writes the audio files and table.csv under `data_dir`; returns the table's path."""
  data_dir = pathlib.Path(data_dir)
  (data_dir / "audio").mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  rows = []
  for s in range(NUM_SUBJECTS):
    diagnosis = "murmur" if s % 2 else "normal"
    loud_site = SITES[s % 3]
    age = int(rng.integers(20, 80))
    for site in SITES:
      audible = diagnosis == "murmur" and site == loud_site
      name = f"s{s:02d}_{site}.wav"
      rows.append({"path": f"audio/{name}", "subject_id": f"s{s:02d}", "diagnosis": diagnosis,
                   "murmur_audible": "yes" if audible else "no", "site": site, "age": age})
      if name == MISSING:
        continue
      rate = 4000 if name == LOW_RATE else RATE
      wave = _heart_sound(rng, audible, rate)
      if name == STEREO:
        wave = np.stack([wave, 0.9 * wave], axis=1)
      sf.write(data_dir / "audio" / name, wave, rate)
  table = data_dir / "table.csv"
  with table.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return table
