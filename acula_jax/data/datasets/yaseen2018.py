r"""Yaseen, Son & Kwon 2018 heart-sound classes (valve disease), one folder per class.

Source: "Classification of Heart Sound Signal Using Multiple Features", Applied Sciences 8(12):2344
(2018); the recordings were published openly by the authors with the paper (no license file; cite
the paper).

Layout read: DATA_DIR/{AS,MR,MS,MVP,N}/*.wav (8 kHz mono, 1.2-4 s, 200 per class; the shared copy
lacks AS, which is used when present). The class is the folder: label `valve_class` via LABEL_MAPS
(N -> normal, MR -> mitral_regurgitation, MS -> mitral_stenosis, MVP -> mitral_valve_prolapse,
AS -> aortic_stenosis). Metadata: `dataset` and `schema` "heart" (they select the heart report
template) and `diagnosis`, the class in words (LABEL_MAPS["diagnosis"]), which that template
states. Subjects are not published, so subject_id = the file's id (its name without .wav), and
recordings of one person could sit on both sides of a split.

Split: seeded 70/15/15 by recording, stratified by class (`common.subject_split` per class).
Options: `seed`, `limit=N` (N recordings evenly spaced over the sorted ids, for smoke tests; splits are
assigned first). Non-wav files in class folders and unknown folders are skipped and counted.
The set is saturated (log-mel statistics reach 0.995 macro AUROC): use it as a sanity check only.
"""
import os

from acula_jax.data.datasets import common
from acula_jax.errors import DataError

NAME = "yaseen2018"
MODALITY = "heart"
SCHEMA = "heart"  # acula_jax.text.report_templates
LABEL_MAPS = {
    "valve_class": {
        "N": "normal",
        "MR": "mitral_regurgitation",
        "MS": "mitral_stenosis",
        "MVP": "mitral_valve_prolapse",
        "AS": "aortic_stenosis",
    },
    # metadata, for the reports
    "diagnosis": {
        "N": "normal",
        "MR": "mitral regurgitation",
        "MS": "mitral stenosis",
        "MVP": "mitral valve prolapse",
        "AS": "aortic stenosis",
    },
}
FRACTIONS = (0.7, 0.15, 0.15)


def list_examples(data_dir, *, seed=0, limit=None):
  """Example specs of the class folders in `data_dir` (see the module docstring)."""
  data_dir = os.fspath(data_dir)
  classes = LABEL_MAPS["valve_class"]
  specs, skipped, seen = [], [], {}
  for folder in sorted(os.listdir(data_dir)):
    full = os.path.join(data_dir, folder)
    if not os.path.isdir(full):
      continue  # README and other top-level files are not recordings.
    if folder not in classes:
      skipped.append(common.Skipped(full, f"unknown class folder (known: {', '.join(classes)})"))
      continue
    for name in sorted(os.listdir(full)):
      path = f"{folder}/{name}"
      if not name.lower().endswith(".wav"):
        skipped.append(common.Skipped(os.path.join(data_dir, path), "not a .wav file"))
        continue
      example_id = name[:-4]
      if example_id in seen:
        raise DataError(os.path.join(data_dir, path), f"id {example_id!r} also used by {seen[example_id]}")
      seen[example_id] = path
      specs.append(common.ExampleSpec(
          id=example_id, path=path, subject_id=example_id, split="",
          labels={"valve_class": classes[folder]},
          metadata={"dataset": NAME, "schema": SCHEMA, "diagnosis": LABEL_MAPS["diagnosis"][folder]}))
  if not specs:
    raise DataError(data_dir, f"no class folders with .wav files (expected {', '.join(classes)})")
  for label in set(s.labels["valve_class"] for s in specs):
    group = [s for s in specs if s.labels["valve_class"] == label]
    assignment = common.subject_split([s.id for s in group], seed=int(seed), fractions=FRACTIONS)
    for spec in group:
      spec.split = assignment[spec.id]
  specs.sort(key=lambda s: s.id)
  return common.evenly_spaced(specs, limit), skipped
