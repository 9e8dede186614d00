r"""Evaluation CLI: the evaluators (`--evals`) on encoders and feature baselines.

  python -m acula_jax.evaluators.main --workdir=W --tasks=acula,physionet --data_root=PREPARED_ROOT
  python -m acula_jax.evaluators.main --workdir=W --tasks=t7_icbhi_copd --data_root=ROOT \
      --encoder=opera_gt --checkpoint=EXPORT_DIR          # an encoder never aligned
  python -m acula_jax.evaluators.main --workdir=W --tasks=physionet --data_root=ROOT \
      --encoder=before=W0/export --encoder=after=W/export  # a comparison table
  python -m acula_jax.evaluators.main --workdir=W --tasks=table:/my/records:diagnosis
  python -m acula_jax.evaluators.main --workdir=W --tasks=demo --evals=linear_probe,zeroshot,retrieval

Without --encoder, the encoders of W are used: its export (the trained encoder) and, when its config
names one, the `init_from` export it started from. `--data_root` holds one prepared records folder per
task family (`acula_jax.evaluators.tasks`: each task's `records` name and the `prepare` command that makes it).

Each of `--evals` is an evaluator of this package (`evaluators.EVALUATORS`) configured from the flags;
results go to W/eval/.
"""
import json
import pathlib

from absl import app
from absl import flags

from acula_jax import errors
from acula_jax import evaluators
from acula_jax.audio import frontends
from acula_jax.evaluators import linear_probe
from acula_jax.evaluators import scoring


def parse_encoders(values, checkpoint: str = "") -> list:
  """[(name, path)] from --encoder=name=path items; a bare --encoder=name takes --checkpoint."""
  out = []
  for value in values:
    name, sep, path = value.partition("=")
    if not sep:
      if not checkpoint:
        raise ValueError(f"--encoder={value} needs --checkpoint=EXPORT_DIR (or use --encoder=name=path)")
      path = checkpoint
    out.append((name.strip(), path.strip()))
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ValueError(f"encoder names must be unique, got {names}")
  return out


def _define_flags():
  """CLI flags, defined only when run as a program (importing this module defines none)."""
  defaults = linear_probe.default_config()
  flags.DEFINE_list("evals", ["linear_probe"], f"Evaluators to run, of {list(evaluators.EVALUATORS)}.")
  flags.DEFINE_string("workdir", None, "Results go to WORKDIR/eval; its encoders are used by default.")
  flags.DEFINE_string("tasks", "demo", "Comma-separated tasks, groups or table:DIR:LABEL specs.")
  flags.DEFINE_string("data_root", "", "Folder holding one prepared records folder per task family.")
  flags.DEFINE_multi_string("encoder", [], "name=EXPORT_DIR (repeatable), or a name with --checkpoint.")
  flags.DEFINE_string("checkpoint", "", "Export directory for a bare --encoder=NAME.")
  flags.DEFINE_string("baselines", "logmel,egemaps", "Feature baselines: logmel, egemaps, compare.")
  flags.DEFINE_integer("seeds", defaults.probe.seeds, "Probe seeds.")
  flags.DEFINE_integer("epochs", defaults.probe.epochs, "Probe epochs.")
  flags.DEFINE_integer("feature_batch_size", defaults.feature_batch_size, "Chunks per encoder call.")
  flags.DEFINE_integer("tsne_points", defaults.tsne_points, "At most this many recordings per t-SNE map (0: no maps).")
  flags.DEFINE_enum("aggregate", defaults.aggregate, scoring.AGGREGATES,
                    "Score recordings, subjects (each subject's recordings as one) or both; auto: both "
                    "where some subject has several recordings in a task, else recording.")
  flags.DEFINE_enum("subject_score", defaults.subject_score, scoring.SUBJECT_SCORES,
                    "A subject's score: the mean or the max of its recordings' class probabilities.")
  flags.DEFINE_integer("bootstrap", defaults.bootstrap, "Subject resamples behind each 95% interval (0: no intervals).")
  flags.DEFINE_string("protocol", defaults.protocol,
                      "official: each task's own split (OPERA's); cv:K: subject-grouped, label-stratified K-fold; "
                      "repeated_cv:K:R: R repetitions of it with other fold seeds. Leave-one-out and per-database "
                      "tasks keep their protocol.")
  flags.DEFINE_list("probes", list(defaults.probes),
                    "opera: OPERA's linear probe (Adam, 64 epochs, best validation epoch); logreg: L2 logistic "
                    "regression with C chosen by inner subject-grouped CV. Several: side by side.")
  flags.DEFINE_multi_string("compare", [], "A:B (repeatable): paired differences A - B per task on the same folds "
                            "and subjects, with a paired-bootstrap 95% interval and p-value.")
  flags.mark_flags_as_required(["workdir"])


def evals_from_flags(cfg) -> dict:
  """name -> evaluator config, from the flags."""
  out = {}
  for kind in cfg.evals:
    config = evaluators.default_config(kind, tasks=cfg.tasks, data_root=cfg.data_root,
                                       feature_batch_size=cfg.feature_batch_size)
    if kind == "linear_probe":
      config.update(baselines=tuple(n.strip() for n in cfg.baselines.split(",") if n.strip()),
                    tsne_points=cfg.tsne_points, aggregate=cfg.aggregate, subject_score=cfg.subject_score,
                    bootstrap=cfg.bootstrap, protocol=cfg.protocol, probes=tuple(cfg.probes),
                    compare=tuple(cfg.compare))
      config.probe.update(seeds=cfg.seeds, epochs=cfg.epochs)
    out[kind] = config
  return out


def context_from_workdir(workdir, aligned_pair: bool) -> evaluators.Context:
  """The front end of the run in `workdir` (its config.json), else OPERA's log-mel."""
  workdir = pathlib.Path(workdir)
  saved = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").is_file() else {}
  return evaluators.Context(audio_config=saved.get("audio") or dict(frontends.OPERA_LOG_MEL),
                            out_dir=workdir / "eval", comparison="alignment" if aligned_pair else "")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS
  encoders = (parse_encoders(cfg.encoder, cfg.checkpoint) if cfg.encoder
              else evaluators.workdir_encoders(cfg.workdir))
  # Only a workdir's own pair (its init_from export and its aligned export) is "before and after alignment".
  aligned_pair = not cfg.encoder and len(encoders) == 2 and encoders[1][0].startswith("aligned")
  evaluators.run_all(evals_from_flags(cfg), encoders, context_from_workdir(cfg.workdir, aligned_pair))


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
