r"""What repeated cross-validation and a second probe add to an evaluation, on the real-data table.

  .venv/bin/python benchmarks/eval_protocol_cost.py --workdir=workdir/real

Runs `acula_jax.evaluators` on the real-data experiment's 7 tasks with 6 feature sets (log-mel, eGeMAPS and
four encoders of benchmarks/real_data.py) into a scratch folder that shares the experiment's feature
cache (features are computed once per recording whatever the protocol), in turns: OPERA's protocol with
its probe, then repeated_cv:5:4 with the OPERA and logistic-regression probes and one paired comparison.
Prints and writes (WORKDIR/eval_protocol_cost.json) each wall time; the cost of the protocol and the
second probe is the difference.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import real_data

ENCODERS = ("MAE pretrained (before alignment)", real_data.CONTROL, "AcuLa linear CKA + MAE",
            "AcuLa contrastive + MAE")


def evaluate_command(work: pathlib.Path, out: pathlib.Path, encoders: dict, extra: list) -> list:
  return [sys.executable, "-m", "acula_jax.evaluators.main", f"--workdir={out}", f"--tasks={','.join(real_data.TASKS)}",
          f"--data_root={work / 'eval_records'}", "--baselines=logmel,egemaps", "--tsne_points=0",
          *[f"--encoder={name}={encoders[name]}" for name in ENCODERS], *extra]


def timed(command: list, log: pathlib.Path) -> float:
  start = time.perf_counter()
  with log.open("w") as f:
    subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=real_data.REPO)
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="workdir/real")
  args = parser.parse_args(argv)
  work = pathlib.Path(args.workdir).resolve()
  encoders = {name: str(path) for name, path in real_data.finished_encoders(work).items()}
  missing = [n for n in ENCODERS if n not in encoders]
  if missing:
    raise SystemExit(f"run benchmarks/real_data.py first: no finished {missing} in {work}")
  out = work / "protocol_cost"
  cache = out / "eval" / "features"
  if not cache.exists():
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.symlink_to(work / "eval_all" / "eval" / "features")
  cross_validation = ["--protocol=repeated_cv:5:4", "--probes=opera,logreg",
                      f"--compare=AcuLa linear CKA + MAE:{real_data.CONTROL}"]
  runs = {"official, opera": [], "repeated_cv:5:4, opera+logreg, 1 comparison": cross_validation}
  seconds = {}
  for k, (name, extra) in enumerate(runs.items()):
    seconds[name] = round(timed(evaluate_command(work, out, encoders, extra), work / f"protocol_cost_{k}.log"), 1)
    print(f"{name}: {seconds[name]} s", flush=True)
  seconds["added"] = round(seconds["repeated_cv:5:4, opera+logreg, 1 comparison"] - seconds["official, opera"], 1)
  print(json.dumps(seconds, indent=2))
  (work / "eval_protocol_cost.json").write_text(json.dumps(seconds, indent=2))


if __name__ == "__main__":
  main()
