"""NoseMic (University of Cambridge; distributed with OPERA): nasal breathing audio with respiratory rate.

Layout relied on (`data_dir`, as OPERA's datasets/nosemic README and processing script describe it):
  audio/{user}_{field2}_{field3}_{respiratory rate}.wav
The four underscore-separated fields are what OPERA parses: the user id (subject) and the label
(respiratory rate, breaths per minute) are used; the two middle fields are not documented and are
kept verbatim in metadata["recording_tags"] (never rendered in reports).

Labels (regression): `respiratory_rate`. OPERA task T19: respiratory-rate estimation, evaluated by
leave-one-user-out over users 4-14 and 17-21 (`heldout_subject`: that user is test, 20% of the other
users' recordings valid - subject-wise here - and the rest train). Without `heldout_subject` a seeded
subject split (`fractions`) is used.
"""

import os

from acula_jax.data.datasets import common

NAME = "nosemic"
MODALITY = "breath"
SCHEMA = "lung_function"
OPERA_TASKS = {"T19": ("respiratory_rate", "respiratory rate from nasal breathing audio, leave-one-user-out")}
OPERA_USERS = ("4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "17", "18", "19", "20", "21")
LABEL_MAPS = {"respiratory_rate": "float breaths/min from the last file-name field"}



def parse_name(name):
  """(user, tags, respiratory rate) of one NoseMic file name; ValueError when malformed."""
  stem, ext = os.path.splitext(name)
  fields = stem.split("_")
  if ext != ".wav" or len(fields) != 4 or not fields[0]:
    raise ValueError(f"expected <user>_<a>_<b>_<rate>.wav, got {name!r}")
  rate = float(fields[3])
  if not 0 < rate < 120:
    raise ValueError(f"implausible respiratory rate {rate} in {name!r}")
  return fields[0], fields[1:3], rate


def list_examples(data_dir, *, audio_dir=None, check_audio=True, heldout_subject=None, seed=0,
                  fractions=(0.7, 0.1, 0.2)):
  """One spec per NoseMic recording; malformed file names are skipped with the reason.

  Args:
    data_dir: the NoseMic folder (holding audio/).
    audio_dir: the folder of the .wav files; default data_dir/audio.
    check_audio: unused beyond listing (files are found by listing the folder); kept for symmetry.
    heldout_subject: leave-one-user-out fold (that user is the test set).
    seed, fractions: subject split when no user is held out.
  """
  fractions = common.option_fractions(fractions)
  del check_audio  # The recordings are discovered on disk, so they exist by construction.
  data_dir = os.fspath(data_dir)
  audio_dir = os.fspath(audio_dir) if audio_dir else os.path.join(data_dir, "audio")
  if not os.path.isdir(audio_dir):
    raise FileNotFoundError(f"{audio_dir}: NoseMic audio folder not found")
  skipped, kept = [], []
  for name in sorted(os.listdir(audio_dir)):
    try:
      kept.append((name, *parse_name(name)))
    except ValueError as e:
      skipped.append(common.Skipped(os.path.join(audio_dir, name), f"unparseable file name: {e}"))
  users = sorted({user for _, user, _, _ in kept}, key=lambda u: (len(u), u))
  if heldout_subject is None:
    assign = common.subject_split(users, seed=seed, fractions=fractions)
  else:
    if str(heldout_subject) not in users:
      raise ValueError(f"heldout_subject {heldout_subject!r} is not a user ({users})")
    assign = common.subject_split([u for u in users if u != str(heldout_subject)], seed=seed,
                                  fractions=(0.8, 0.2, 0.0))
    assign[str(heldout_subject)] = "test"
  specs = []
  for name, user, tags, rate in kept:
    meta = {"dataset": NAME, "schema": SCHEMA, "sound": "nasal breathing", "respiratory_rate": rate,
            "recording_tags": list(tags)}
    specs.append(common.ExampleSpec(os.path.splitext(name)[0], os.path.join(audio_dir, name), user, assign[user],
                                    {"respiratory_rate": rate}, meta))
  return specs, skipped
