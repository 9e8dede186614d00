"""Evaluators by name, as big_vision's `config.evals`.

`config.evals.<name>` is one evaluator: `{"type": KIND, ...its settings}`, KIND one of `EVALUATORS`,
each a module of this package with `default_config()` (`base_config` and its own settings, with their
defaults) and `Evaluator`:

  results = get_evaluator(kind)(config_entry, context).run(encoders)   # encoders: [(name, export dir)]

Evaluators read encoders from their exports on disk: training runs its config's evaluators after its
export, on `workdir_encoders` (the `init_from` export it started from and its own), so nothing of
evaluation stays in device memory while it trains; the evaluation CLI (`evaluators.main`) runs the
ones its flags name.
"""
import dataclasses
import importlib
import json
import pathlib

import ml_collections

from acula_jax import errors

EVALUATORS = ("linear_probe", "zeroshot", "retrieval")


@dataclasses.dataclass(frozen=True)
class Context:
  """What a run tells its evaluators."""
  audio_config: dict               # the run's front end (config.audio)
  out_dir: pathlib.Path            # results and the feature cache go here
  default_window: int | None = None  # chunk length (samples) for encoders without fixed input frames
  fallback_records: str = ""       # records of tasks that name none (training: config.data.records_dir)
  comparison: str = ""             # "alignment": the encoders are a run's starting point and aligned result


def _module(kind: str):
  if kind not in EVALUATORS:
    raise errors.UsageError(f"unknown evaluator type {kind!r}; available: {', '.join(EVALUATORS)}")
  return importlib.import_module(f"acula_jax.evaluators.{kind}")


def get_evaluator(kind: str):
  """The `Evaluator` class of evaluator type `kind`."""
  return _module(kind).Evaluator


def base_config(kind: str, **settings):
  """The settings every evaluator type has (its own `default_config` adds the rest)."""
  return ml_collections.ConfigDict(dict(
      type=kind,
      tasks="",                   # task names, groups or table:DIR:LABEL specs (tasks.resolve); "": off
      data_root="",               # prepared records per task family; "" = the run's records
      feature_batch_size=32,      # chunks per encoder call
      **settings))


def default_config(kind: str, **overrides):
  """The settings of evaluator type `kind`, with their defaults (and `overrides`)."""
  config = _module(kind).default_config()
  config.update(overrides)
  return config


def run_all(evals, encoders: list, context: Context) -> dict:
  """Runs every evaluator of `evals` (name -> config entry) that names tasks on `encoders`; name -> its
  results. `--config.evals.<name>.tasks=` turns one off."""
  return {name: get_evaluator(entry.type)(entry, context).run(encoders)
          for name, entry in evals.items() if entry.tasks}


def workdir_encoders(workdir) -> list:
  """[(name, export dir)] of a training workdir: the `init_from` export it started from (when it has
  one) and its own export."""
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  out = []
  init = config.get("init_from")
  if init and any((pathlib.Path(init) / sub / "manifest.json").is_file() for sub in ("", "export")):
    out.append((f"init from {init}", init))
  if (workdir / "export" / "manifest.json").is_file():
    loss = config.get("loss", {})
    aligned = config.get("data", {}).get("teacher_dir") and loss.get("align_weight", 1.0) > 0
    out.append((f"aligned ({loss.get('alignment', '?')})" if aligned else "trained", str(workdir / "export")))
  return out
