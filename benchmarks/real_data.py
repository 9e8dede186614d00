r"""Does language alignment help on real recordings? The whole experiment, one command.

  .venv/bin/python benchmarks/real_data.py --data_dir=../shared/data --workdir=workdir/real

Stages (each skipped when its output exists, so a rerun resumes; every command is logged to
WORKDIR/logs/ and listed in WORKDIR/real_data.json):
1. records: PhysioNet 2016 (all six databases, seeded random split stratified by database and label),
   Yaseen 2018, HLS-CMDS HS and LS, prepared for the probes (WORKDIR/eval_records); and the encoder's
   training corpus: PhysioNet databases b, c, d, f (WORKDIR/train_records) + Yaseen 2018, split `train`.
2. reports of the corpus's training split (rule-based, from metadata and labels), MiniLM teacher.
3. MAE pretraining from scratch (configs/real_data.py:stage=pretrain), then alignment runs starting
   from it (RUNS): each loss with and without the MAE term, `visible` alignment features, and a control
   that continues MAE alone for the same number of steps.
4. Probes on every task of TASKS for every encoder next to the log-mel/duration and openSMILE eGeMAPS
   baselines, in one table (WORKDIR/eval_all/eval/results.md): by default repeated subject-grouped
   5-fold CV x 4 (--protocol) with OPERA's linear probe (5 seeds) and a tuned logistic regression
   (--probes), 95% subject-bootstrap intervals, and every AcuLa run compared with the MAE-only control
   of its training seed (paired differences on the same folds and subjects).
5. Leakage check: no example of any probe task's test side is in the encoder's training corpus or
   in the teacher table (raises if one is).
6. The cost of the alignment features: one jitted step of `full` (second unmasked pass, the authors')
   and `visible` (the masked pass's visible tokens), alternated in this process, same batch.

Why this split of the data (no test example may be seen in pretraining or alignment):
- PhysioNet's random and within-database protocols share the records' split: its test side is the
  union of the per-database test sides (same seeded hash, stratified by database and label). The
  leave-database-out protocols test on all of database e and all of database a. So the corpus takes
  only the `train` split of databases b, c, d, f. (PhysioNet has no patient ids; a subject repeated
  within a database can still fall on both sides of the within-database split, as in every use of
  this dataset; leave-database-out has no such overlap.)
- Yaseen 2018: `train` split only (test = its seeded test split).
- HLS-CMDS is probed leave-one-out, so every recording is a test recording once: it is not in the corpus.
"""
import argparse
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable

TASKS = ("physionet_random", "physionet_within_db", "physionet_ldo_e", "physionet_ldo_a", "yaseen_valve",
         "hls_heart", "hls_lung")
# Eval records folder name (tasks.Task.records) -> (adapter, prepare options).
EVAL_RECORDS = {
    "physionet2016": ("physionet2016", ["split=random"]),
    "yaseen2018": ("yaseen2018", []),
    "hls_cmds_hs": ("hls_cmds", ["part=HS"]),
    "hls_cmds_ls": ("hls_cmds", ["part=LS"]),
}
CORPUS_PHYSIONET_DATABASES = "bcdf"  # a and e are the leave-database-out test sets
# Encoder name in the table -> configs/real_data.py variant (align stage, started from the MAE encoder).
RUNS = {
    "MAE, continued (control)": "text=false",
    "AcuLa linear CKA + MAE": "loss=linear_cka",
    "AcuLa linear CKA, no MAE": "loss=linear_cka,mae=false",
    "AcuLa contrastive + MAE": "loss=contrastive",
    "AcuLa contrastive, no MAE": "loss=contrastive,mae=false",
    "AcuLa reference Gram + MAE": "loss=reference_gram",
    "AcuLa reference Gram, no MAE": "loss=reference_gram,mae=false",
    "AcuLa linear CKA + MAE, visible features": "loss=linear_cka,features=visible",
}
PRETRAINED = "MAE pretrained (before alignment)"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--data_dir", default="../shared/data",
                      help="holds physionet2016/, yaseen2018/, hls_cmds/ in their published layouts")
  parser.add_argument("--workdir", default="workdir/real")
  parser.add_argument("--runs", default="all", help="run names of RUNS separated by ';' (they hold commas), or all")
  parser.add_argument("--seed", type=int, default=0,
                      help="training seed of the alignment runs (0: the first; others go to *_seedN "
                           "folders and get ' [seed N]' in the table, which holds every run on disk)")
  parser.add_argument("--pretrain_steps", type=int, default=0, help="0: configs/real_data.py's")
  parser.add_argument("--align_steps", type=int, default=0, help="0: configs/real_data.py's")
  parser.add_argument("--baselines", default="logmel,egemaps")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--tsne_points", type=int, default=300)
  parser.add_argument("--protocol", default="repeated_cv:5:4",
                      help="evaluate --protocol (official: OPERA's single split per task)")
  parser.add_argument("--probes", default="opera,logreg", help="evaluate --probes")
  parser.add_argument("--step_timing_rounds", type=int, default=5,
                      help="alternated timing rounds of full vs visible steps (0: skip)")
  parser.add_argument("--extra", action="append", default=[],
                      help="extra --config.x=y override for every training run (repeatable)")
  return parser.parse_args(argv)


class Runner:
  """Runs stage commands (logged to WORKDIR/logs/NAME.log) and keeps the list for the results file."""

  def __init__(self, workdir: pathlib.Path):
    self.logs = workdir / "logs"
    self.logs.mkdir(parents=True, exist_ok=True)
    self.commands = []

  def __call__(self, name: str, args: list, *, done: pathlib.Path, env=None):
    command = " ".join(shlex.quote(str(a)) for a in args)
    self.commands.append({"stage": name, "command": command})
    if done.exists():
      print(f"[skip] {name}: {done} exists", flush=True)
      return
    print(f"[run ] {name}: {command}", flush=True)
    start = time.time()
    with open(self.logs / f"{_slug(name)}.log", "w") as log:
      result = subprocess.run(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    if result.returncode:
      raise RuntimeError(f"stage {name!r} failed (exit {result.returncode}); see {self.logs / _slug(name)}.log")
    self.commands[-1]["seconds"] = round(time.time() - start, 1)
    print(f"       {time.time() - start:.0f} s", flush=True)


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def prepare_records(run: Runner, data_dir: pathlib.Path, work: pathlib.Path) -> list:
  """Eval records for every task and the corpus folders; returns the corpus folders."""
  for folder, (dataset, options) in EVAL_RECORDS.items():
    out = work / "eval_records" / folder
    run(f"prepare {folder}", [PY, "-m", "acula_jax.data.prepare", f"--dataset={dataset}",
                              f"--data_dir={data_dir / dataset}", f"--output={out}", "--workers=2",
                              *[f"--option={o}" for o in options]], done=out / "manifest.json")
  physionet = work / "train_records" / f"physionet2016_{CORPUS_PHYSIONET_DATABASES}"
  run("prepare corpus physionet2016", [
      PY, "-m", "acula_jax.data.prepare", "--dataset=physionet2016", f"--data_dir={data_dir / 'physionet2016'}",
      f"--output={physionet}", "--option=split=random", f"--option=databases={CORPUS_PHYSIONET_DATABASES}",
      "--workers=2"], done=physionet / "manifest.json")
  return [physionet, work / "eval_records" / "yaseen2018"]


def _override(key, value) -> str:
  return f"--config.{key}={value}"


def _run_dir(work: pathlib.Path, name: str, seed: int) -> pathlib.Path:
  return work / "align" / (_slug(name) + (f"_seed{seed}" if seed else ""))


def _table_name(name: str, seed: int) -> str:
  return f"{name} [seed {seed}]" if seed else name


def finished_encoders(work: pathlib.Path) -> dict:
  """{table name: export dir} of the MAE encoder and every finished alignment run, any seed, RUNS order."""
  encoders = {PRETRAINED: work / "pretrain" / "export"}
  for name in RUNS:
    seeds = []
    for folder in (work / "align").glob(_slug(name) + "*"):
      match = re.fullmatch(re.escape(_slug(name)) + r"(?:_seed(\d+))?", folder.name)
      if match and (folder / "export" / "manifest.json").is_file():
        seeds.append(int(match.group(1) or 0))
    encoders.update({_table_name(name, seed): _run_dir(work, name, seed) / "export" for seed in sorted(seeds)})
  return encoders


def train_encoders(run: Runner, work: pathlib.Path, corpus: list, teacher: pathlib.Path, args):
  """MAE pretraining, then every selected alignment run (at `args.seed`)."""
  records = ",".join(map(str, corpus))
  common = [_override("data.records_dir", records)] + [e if e.startswith("--") else f"--{e}" for e in args.extra]
  pretrain = work / "pretrain"
  steps = [_override("num_train_steps", args.pretrain_steps)] if args.pretrain_steps else []
  run("pretrain (MAE)", [PY, "-m", "acula_jax.main", "--config=configs/real_data.py:stage=pretrain",
                         f"--workdir={pretrain}", *common, *steps], done=pretrain / "export" / "manifest.json")
  names = list(RUNS) if args.runs == "all" else [n.strip() for n in args.runs.split(";") if n.strip()]
  unknown = sorted(set(names) - set(RUNS))
  if unknown:
    raise ValueError(f"unknown runs {unknown}; known: {list(RUNS)}")
  for name in names:
    variant = RUNS[name]
    out = _run_dir(work, name, args.seed)
    steps = [_override("num_train_steps", args.align_steps)] if args.align_steps else []
    text = [] if "text=false" in variant else [_override("data.teacher_dir", teacher)]
    seed = [_override("seed", args.seed)] if args.seed else []
    run(_table_name(name, args.seed), [
        PY, "-m", "acula_jax.main", f"--config=configs/real_data.py:{variant}", f"--workdir={out}", *common,
        *text, _override("init_from", pretrain), *steps, *seed], done=out / "export" / "manifest.json")


CONTROL = "MAE, continued (control)"


def comparisons(encoders: dict) -> list:
  """--compare pairs: every AcuLa run against the control of its own training seed (same length)."""
  seed_of = lambda name: int(re.search(r"\[seed (\d+)\]$", name).group(1)) if "[seed" in name else 0
  controls = {seed_of(n): n for n in encoders if n.startswith(CONTROL)}
  return [(n, controls[seed_of(n)]) for n in encoders if n.startswith("AcuLa") and seed_of(n) in controls]


def check_no_leak(corpus: list, teacher: pathlib.Path, eval_root: pathlib.Path, cache: pathlib.Path,
                  task_names=TASKS) -> dict:
  """Raises if any probe task's test example is in the corpus (training split) or the teacher table."""
  sys.path.insert(0, str(REPO))
  from acula_jax.evaluators import features as features_lib
  from acula_jax.data import records
  from acula_jax.data import teacher as teacher_lib
  from acula_jax.evaluators import tasks as tasks_lib
  corpus_ids = set()
  for folder in corpus:
    source = records.open_split(folder, "train")
    corpus_ids.update(source[i]["id"] for i in range(len(source)))
  teacher_ids = {row["id"] for row in teacher_lib.TeacherTable(teacher).rows()}
  if not teacher_ids <= corpus_ids:
    raise AssertionError(f"{len(teacher_ids - corpus_ids)} teacher ids are not training-split corpus ids")
  out = {"corpus_examples": len(corpus_ids), "teacher_examples": len(teacher_ids), "tasks": {}}
  for name in task_names:
    task = tasks_lib.get(name)
    index = features_lib.records_index(eval_root / task.records, cache)
    folds = tasks_lib.make_folds(task, index)
    test_ids = {index[r]["id"] for fold in folds.folds for r in fold.test}
    leaked = sorted(test_ids & (corpus_ids | teacher_ids))
    if leaked:
      raise AssertionError(f"task {name}: {len(leaked)} test examples are in the training corpus, "
                           f"e.g. {leaked[:5]}")
    out["tasks"][name] = {"test_examples": len(test_ids), "in_corpus": 0}
  return out


def time_align_features(work: pathlib.Path, teacher: pathlib.Path, rounds: int) -> dict:
  """s/step of full vs visible alignment features: same model, batch and key, alternated."""
  sys.path.insert(0, str(REPO))
  import jax
  from flax import nnx

  from acula_jax import input_pipeline
  from acula_jax import sharding
  from acula_jax import train
  from acula_jax.data import teacher as teacher_lib
  from acula_jax.models import acula
  from configs import real_data

  text_dim = teacher_lib.TeacherTable(teacher).dim
  mesh = sharding.make_mesh()
  steps = {}
  for features in ("full", "visible"):
    config = real_data.get_config(f"features={features}")
    model = acula.AculaModel(config, text_dim, rngs=nnx.Rngs(config.seed))
    tx, _ = train.create_optimizer(config, total_steps=1000)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    step = train.make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))
    steps[features] = [step, jax.device_put(state, state_sharding)]
  rng = np.random.default_rng(0)
  batch = sharding.shard_batch({
      "audio": (rng.standard_normal((config.batch_size, input_pipeline.clip_samples(config))) * 0.1
                ).astype(np.float32),
      "text_embedding": rng.standard_normal((config.batch_size, text_dim)).astype(np.float32)}, mesh)
  times = {k: [] for k in steps}
  for i in range(rounds + 1):  # round 0 compiles
    for features, holder in steps.items():
      start = time.perf_counter()
      holder[1], metrics = holder[0](holder[1], batch, jax.random.key(i))
      jax.block_until_ready(metrics)
      if i:
        times[features].append(time.perf_counter() - start)
  best = {k: min(v) for k, v in times.items()}
  return {"batch": config.batch_size, "clip_frames": config.data.clip_frames, "rounds": rounds,
          "s_per_step": best, "examples_per_s": {k: config.batch_size / v for k, v in best.items()},
          "visible_over_full_speed": best["full"] / best["visible"]}


def run_metrics(export_dir: pathlib.Path) -> dict:
  """Last logged losses and median examples/s of a training run (its metrics.jsonl)."""
  path = export_dir.parent / "metrics.jsonl"
  if not path.is_file():
    return {}
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  train_rows = [r for r in rows if "examples_per_sec" in r]
  if not train_rows:
    return {}
  last = train_rows[-1]
  return {"steps": last.get("step"), "examples_per_sec_median": float(np.median(
      [r["examples_per_sec"] for r in train_rows[1:] or train_rows])),
          **{k: last[k] for k in last if k.endswith("loss")}}


def _short(cell: dict) -> str:
  return f"{cell['mean']:.3f} [{cell['ci95'][0]:.2f}, {cell['ci95'][1]:.2f}]" if "ci95" in cell else f"{cell['mean']:.3f}"


def summary_tables(results: dict) -> list:
  """Markdown lines: per probe, feature sets x tasks (mean [95% interval]); then per probe, each
  comparison's difference per task and over tasks (* where the interval excludes 0)."""
  tasks = list(results["tasks"])
  lines = []
  for probe_name in results.get("probes", ["opera"]):
    suffix = f" · {probe_name}" if len(results.get("probes", [])) > 1 else ""
    columns = [c for c in results["encoders"] if c.endswith(suffix)]
    lines += ["", f"**{probe_name} probe** ({results.get('protocol', 'official')})", "",
              "| features | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for column in columns:
      cells = [_short(results["tasks"][t][column]) if column in results["tasks"][t] else "-" for t in tasks]
      lines.append(f"| {column[:len(column) - len(suffix)] if suffix else column} | " + " | ".join(cells) + " |")
  for probe_name in results.get("probes", ["opera"]):
    rows = [(pair, by_probe[probe_name]["recording"]) for pair, by_probe in results.get("comparisons", {}).items()
            if probe_name in by_probe and "recording" in by_probe[probe_name]]
    if not rows:
      continue
    lines += ["", f"**AcuLa run minus the control of its seed, {probe_name} probe** (difference [95% interval], "
              "* excludes 0)", "", "| run | " + " | ".join(tasks) + " | mean over tasks |",
              "|---" * (len(tasks) + 2) + "|"]
    for pair, entry in rows:
      cell = lambda r: f"{r['diff']:+.3f}{'*' if r['excludes_zero'] else ''} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"
      cells = [cell(entry["tasks"][t]) if t in entry["tasks"] else "-" for t in tasks]
      lines.append(f"| {pair.split(' vs ')[0]} | " + " | ".join(cells) + f" | {cell(entry['mean_over_tasks'])} |")
  return lines


def write_summary(work: pathlib.Path, summary: dict):
  results = json.loads((work / "eval_all" / "eval" / "results.json").read_text())
  summary["results"] = results["tasks"]
  (work / "real_data.json").write_text(json.dumps(summary, indent=2, default=str))
  lines = ["# Real-data experiment", *summary_tables(results), "", (work / "eval_all" / "eval" / "results.md").read_text(), "",
           "## Training runs", "", "| encoder | steps | examples/s (median) | last losses |", "|---|---|---|---|"]
  for name, metrics in summary["training"].items():
    losses = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.endswith("loss"))
    lines.append(f"| {name} | {metrics.get('steps', '')} | {metrics.get('examples_per_sec_median', 0):.1f} "
                 f"| {losses} |")
  timing = summary.get("align_features_timing")
  if timing:
    lines += ["", "## Alignment features: full vs visible (one step, same batch, alternated)", "",
              f"batch {timing['batch']}, {timing['clip_frames']} frames, best of {timing['rounds']}: "
              f"full {timing['s_per_step']['full']:.3f} s/step, visible {timing['s_per_step']['visible']:.3f} "
              f"s/step: visible is {timing['visible_over_full_speed']:.2f}x as fast"]
  leak = summary["leakage_check"]
  lines += ["", "## Leakage check", "", f"corpus {leak['corpus_examples']} training-split recordings, "
            f"teacher table {leak['teacher_examples']}; test examples found in them: 0 for every task ("
            + ", ".join(f"{k}: {v['test_examples']} test" for k, v in leak["tasks"].items()) + ")"]
  (work / "real_data.md").write_text("\n".join(lines) + "\n")
  print(f"wrote {work / 'real_data.md'} and {work / 'real_data.json'}")


def main(argv=None):
  args = parse_args(argv)
  work = pathlib.Path(args.workdir).resolve()
  data_dir = pathlib.Path(args.data_dir).resolve()
  run = Runner(work)
  started = time.time()
  corpus = prepare_records(run, data_dir, work)
  reports, teacher = work / "reports.jsonl", work / "teacher"
  run("reports", [PY, "-m", "acula_jax.text.reports", f"--records={','.join(map(str, corpus))}",
                  f"--output={reports}", "--splits=train"], done=reports)
  run("teacher (MiniLM)", [PY, "-m", "acula_jax.text.precompute", "--config=configs/teacher/minilm.py",
                           f"--reports={reports}", f"--output={teacher}"], done=teacher / "manifest.json",
      env={"HF_HUB_OFFLINE": "1"})
  leak = check_no_leak(corpus, teacher, work / "eval_records", work / "eval_all" / "eval" / "features")
  train_encoders(run, work, corpus, teacher, args)
  encoders = finished_encoders(work)
  eval_dir = work / "eval_all"
  # The table holds every finished run; it is redone when that set changes (cached features are reused).
  done = eval_dir / "eval" / "done.json"
  evaluated = json.loads(done.read_text()) if done.is_file() else None
  wanted = {"encoders": sorted(encoders), "protocol": args.protocol, "probes": args.probes}
  if evaluated != wanted:
    done.unlink(missing_ok=True)
  run("evaluate", [PY, "-m", "acula_jax.evaluators.main", f"--workdir={eval_dir}", f"--tasks={','.join(TASKS)}",
                   f"--data_root={work / 'eval_records'}", f"--baselines={args.baselines}",
                   f"--seeds={args.seeds}", f"--tsne_points={args.tsne_points}", f"--protocol={args.protocol}",
                   f"--probes={args.probes}", *[f"--encoder={name}={path}" for name, path in encoders.items()],
                   *[f"--compare={a}:{b}" for a, b in comparisons(encoders)]], done=done)
  done.write_text(json.dumps(wanted))
  summary = {"commands": run.commands, "leakage_check": leak,
             "training": {name: run_metrics(path) for name, path in encoders.items()},
             "wall_seconds_this_invocation": round(time.time() - started, 1)}
  if args.step_timing_rounds:
    summary["align_features_timing"] = time_align_features(work, teacher, args.step_timing_rounds)
  write_summary(work, summary)


if __name__ == "__main__":
  main()
