"""What a workdir remembers about the runs in it: their config, and a history of every start.

`config.json` is the config of the run that created the workdir and is never overwritten; every start
appends a line to `config_history.jsonl` (time, step it started from, the fields it changed). A rerun
whose config differs from `config.json` in a field that changes the model, the objective or the data
is refused, naming the fields: resuming it would mix two experiments in one set of checkpoints and
metrics. Fields in `SAFE_TO_CHANGE` (step counts, logging, checkpoint cadence, evaluation, device
layout) may change and are recorded.
"""
import datetime
import json
import pathlib

from acula_jax import errors
from acula_jax import fileio

CONFIG = "config.json"
HISTORY = "config_history.jsonl"
# Dotted prefixes of the fields a resumed run may change.
SAFE_TO_CHANGE = ("num_train_steps", "num_epochs", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints", "evals", "data.num_workers", "mesh", "param_sharding", "resume",
                  "init_from")


def _flatten(tree, prefix="") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}; an empty dict stays a leaf."""
  if not isinstance(tree, dict) or not tree:
    return {prefix[:-1]: tree}
  return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}


def _as_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def changed_fields(saved: dict, current: dict) -> dict:
  """Dotted field -> (saved value, current value) for every field that differs."""
  old, new = _flatten(saved), _flatten(current)
  missing = object()
  return {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
          if old.get(key, missing) != new.get(key, missing)}


def _is_safe(field: str) -> bool:
  return any(field == p or field.startswith(p + ".") for p in SAFE_TO_CHANGE)


def check_config(config, workdir) -> dict:
  """Refuses (UsageError) a config that differs from the workdir's in an unsafe field.

  Returns the safe changes (field -> (old, new)); {} for a new workdir.
  """
  path = pathlib.Path(workdir) / CONFIG
  if not path.is_file():
    return {}
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.DataError(path, f"not valid JSON ({e}); move the workdir aside or fix the file") from e
  changes = changed_fields(saved, _as_json(config))
  unsafe = {k: v for k, v in changes.items() if not _is_safe(k)}
  if unsafe:
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(unsafe.items())[:8])
    more = f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
    raise errors.UsageError(
        f"{workdir} holds a run of another config ({listed}{more}). Resuming would mix the two runs. "
        f"Use a new --workdir, or continue from this run on purpose with --workdir=NEW "
        f"--config.resume={workdir}")
  return {k: v for k, v in changes.items() if _is_safe(k)}


def record_start(config, workdir, start_step: int, changes: dict) -> None:
  """Writes config.json for a new workdir (never over an existing one) and appends the start."""
  workdir = pathlib.Path(workdir)
  if not (workdir / CONFIG).exists():
    fileio.write_text_atomic(workdir / CONFIG, config.to_json_best_effort(indent=2))
  entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "start_step": int(start_step),
           "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.items()}}
  with open(workdir / HISTORY, "a", encoding="utf-8") as f:
    f.write(json.dumps(entry, default=str) + "\n")
