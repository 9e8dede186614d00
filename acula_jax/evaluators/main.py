r"""Evaluation CLI: the linear probe (and with --zeroshot, zero-shot and retrieval) of encoders and baselines.

  python -m acula_jax.evaluators.main --workdir=W --tasks=acula,physionet --data_root=PREPARED_ROOT
  python -m acula_jax.evaluators.main --workdir=W --tasks=t7_icbhi_copd --data_root=ROOT \
      --encoder=opera_gt --checkpoint=EXPORT_DIR          # an encoder never aligned
  python -m acula_jax.evaluators.main --workdir=W --tasks=physionet --data_root=ROOT \
      --encoder=before=W0/export --encoder=after=W/export  # a comparison table
  python -m acula_jax.evaluators.main --workdir=W --tasks=table:/my/records:diagnosis

Without --encoder, the encoders of W are used: its export (the trained encoder) and, when its config
names one, the `init_from` export it started from. `--data_root` holds one prepared records folder per
task family (`acula_jax.evaluators.tasks`: each task's `records` name and the `prepare` command that makes it).

The evaluation itself: `linear_probe` (features from `features`, tables from `report`), `zeroshot`.
"""
import json
import pathlib

from acula_jax import errors
from acula_jax.audio import frontends
from acula_jax.evaluators import baselines
from acula_jax.evaluators import probe
from acula_jax.evaluators import scoring
from acula_jax.evaluators import tasks as tasks_lib
from acula_jax.evaluators import features as features_lib
from acula_jax.evaluators import linear_probe
from acula_jax.evaluators import zeroshot


def parse_compare(values) -> tuple:
  """((A, B), ...) from --compare=A:B items (names may hold anything but ':')."""
  pairs = []
  for value in values:
    a, sep, b = value.partition(":")
    if not sep or not a.strip() or not b.strip() or ":" in b:
      raise errors.UsageError(f"--compare={value}: expected A:B, two encoder or baseline names")
    pairs.append((a.strip(), b.strip()))
  return tuple(pairs)


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


def workdir_encoders(workdir) -> list:
  """[(name, export path)] of a training workdir: its init_from export (if any) and its own export."""
  workdir = pathlib.Path(workdir)
  out = []
  config_path = workdir / "config.json"
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  init = config.get("init_from")
  if init and any((pathlib.Path(init) / sub / "manifest.json").is_file() for sub in ("", "export")):
    out.append((f"init from {init}", init))
  if (workdir / "export" / "manifest.json").is_file():
    loss = config.get("loss", {})
    aligned = config.get("data", {}).get("teacher_dir") and loss.get("align_weight", 1.0) > 0
    out.append((f"aligned ({loss.get('alignment', '?')})" if aligned else "trained", str(workdir / "export")))
  return out


def _define_flags():
  """CLI flags, defined only when linear_probe.run as a program (importing this module defines none)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Results go to WORKDIR/eval; its encoders are used by default.")
  flags.DEFINE_string("tasks", "demo", "Comma-separated tasks, groups or table:DIR:LABEL specs.")
  flags.DEFINE_string("data_root", "", "Folder holding one prepared records folder per task family.")
  flags.DEFINE_multi_string("encoder", [], "name=EXPORT_DIR (repeatable), or a name with --checkpoint.")
  flags.DEFINE_string("checkpoint", "", "Export directory for a bare --encoder=NAME.")
  flags.DEFINE_string("baselines", "logmel,egemaps", "Feature baselines: logmel, egemaps, compare.")
  flags.DEFINE_integer("seeds", 5, "Probe seeds.")
  flags.DEFINE_integer("epochs", 64, "Probe epochs.")
  flags.DEFINE_integer("feature_batch_size", 32, "Chunks per encoder call.")
  flags.DEFINE_integer("tsne_points", 600, "At most this many recordings per t-SNE map (0: no maps).")
  flags.DEFINE_enum("aggregate", features_lib.Setup.aggregate, scoring.AGGREGATES,
                    "Score recordings, subjects (each subject's recordings as one) or both; auto: both "
                    "where some subject has several recordings in a task, else recording.")
  flags.DEFINE_enum("subject_score", features_lib.Setup.subject_score, scoring.SUBJECT_SCORES,
                    "A subject's score: the mean or the max of its recordings' class probabilities.")
  flags.DEFINE_integer("bootstrap", features_lib.Setup.bootstrap,
                       "Subject resamples behind each 95% interval (0: no intervals).")
  flags.DEFINE_string("protocol", features_lib.Setup.protocol,
                      "official: each task's own split (OPERA's); cv:K: subject-grouped, label-stratified K-fold; "
                      "repeated_cv:K:R: R repetitions of it with other fold seeds. Leave-one-out and per-database "
                      "tasks keep their protocol.")
  flags.DEFINE_list("probes", list(features_lib.Setup.probes),
                    "opera: OPERA's linear probe (Adam, 64 epochs, best validation epoch); logreg: L2 logistic "
                    "regression with C chosen by inner subject-grouped CV. Several: side by side.")
  flags.DEFINE_multi_string("compare", [], "A:B (repeatable): paired differences A - B per task on the same folds "
                            "and subjects, with a paired-bootstrap 95% interval and p-value.")
  flags.DEFINE_bool("zeroshot", False, "Also linear_probe.run zero-shot classification and retrieval (needs export/heads).")
  flags.mark_flags_as_required(["workdir"])


def _cli_setup(cfg) -> features_lib.Setup:
  workdir = pathlib.Path(cfg.workdir)
  saved = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").is_file() else {}
  audio_config = saved.get("audio") or dict(frontends.OPERA_LOG_MEL)
  probe_config, _ = linear_probe.base_probe_config(probe.OPERA_PROTOCOL)
  probe_config["epochs"] = cfg.epochs
  pairs = parse_encoders(cfg.encoder, cfg.checkpoint) if cfg.encoder else workdir_encoders(workdir)
  # Only a workdir's own pair (its init_from export and its aligned export) is "before and after alignment".
  aligned_pair = not cfg.encoder and len(pairs) == 2 and pairs[1][0].startswith("aligned")
  encoders = [features_lib.from_export(name, path) for name, path in pairs]
  gt_window = frontends.num_samples_for_frames(256, audio_config.get("hop", 512))
  names = [n.strip() for n in cfg.baselines.split(",") if n.strip()]
  return features_lib.Setup(encoders=encoders,
               baselines=baselines.build(names, audio_config, gt_window, batch_size=cfg.feature_batch_size),
               audio_config=audio_config, probe_config=probe_config, seeds=cfg.seeds,
               out_dir=workdir / "eval", feature_batch_size=cfg.feature_batch_size, data_root=cfg.data_root,
               tsne_points=cfg.tsne_points, aggregate=cfg.aggregate, subject_score=cfg.subject_score,
               bootstrap=cfg.bootstrap, comparison="alignment" if aligned_pair else "", protocol=cfg.protocol,
               probes=tuple(cfg.probes), compare=parse_compare(cfg.compare))


def _main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS
  setup = _cli_setup(cfg)
  task_list = tasks_lib.resolve(cfg.tasks, cache_dir=setup.out_dir / "features")
  if not setup.encoders and not setup.baselines:
    raise app.UsageError("nothing to evaluate: no --encoder, no export in --workdir and no --baselines")
  linear_probe.run(task_list, setup)
  if cfg.zeroshot:
    zeroshot.run_cli(cfg.workdir, task_list, setup)


def main():
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(errors.one_line_errors(_main))


if __name__ == "__main__":
  main()
