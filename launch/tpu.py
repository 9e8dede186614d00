#!/usr/bin/env python3
r"""Train acula_jax on a Cloud TPU VM (single host or a multi-host pod slice) from your laptop.

  python launch/tpu.py create  --name=acula-v4-32 --zone=us-central2-b --accelerator_type=v4-32 [--queued]
  python launch/tpu.py install --name=acula-v4-32 --zone=us-central2-b
  python launch/tpu.py run     --name=acula-v4-32 --zone=us-central2-b --accelerator_type=v4-32 \
      --config=configs/acula.py --workdir=gs://BUCKET/acula/run1 -- --config.data.records_dir=gs://...
  python launch/tpu.py tail    --name=acula-v4-32 --zone=us-central2-b --worker=0 --follow
  python launch/tpu.py delete  --name=acula-v4-32 --zone=us-central2-b [--queued]

Every subcommand only wraps `gcloud`; `--dry-run` (the default when ACULA_DRY_RUN=1) prints the exact
commands instead of running them. Only the Python standard library is needed on the laptop.
"""
import argparse
import datetime
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from acula_jax.tools import accelerators  # pylint: disable=g-import-not-at-top,wrong-import-position  (stdlib only)

# Runtime (software) versions Cloud TPU recommends for JAX, per TPU generation.
DEFAULT_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_WORKER = re.compile(r"^(all|[0-9]+)$")

# Where `install` puts things on every worker (home directory of the ssh user).
REMOTE_REPO = "~/acula_jax"
REMOTE_VENV = "~/acula_venv"
REMOTE_LOGS = "~/acula_logs"
JAX_TPU = "jax[tpu]>=0.10,<0.11"  # the jax range setup.py pins, with libtpu


class UsageError(Exception):
  """A bad argument; reported as `tpu.py SUBCOMMAND: error: ...` with exit status 2."""


def num_hosts(accelerator_type: str) -> int:
  """TPU VM hosts of a slice (the catalogue in acula_jax/tools/accelerators.py)."""
  try:
    return accelerators.num_hosts(accelerator_type)
  except ValueError as e:
    raise UsageError(f"--accelerator_type: {e}") from None


def _dry_run_default() -> bool:
  return os.environ.get("ACULA_DRY_RUN", "").strip().lower() in ("1", "true", "yes", "on")


def _gcloud_where(args) -> list:
  where = [f"--zone={args.zone}"]
  if args.project:
    where.append(f"--project={args.project}")
  return where


def _ssh(args, worker, remote_command) -> list:
  return (["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--worker={worker}"]
          + _gcloud_where(args) + [f"--command={remote_command}"])


def _check_common(args):
  if not args.name:
    raise UsageError("--name is required: the TPU VM (or queued resource) name, e.g. --name=acula-v4-32")
  if not _NAME.match(args.name):
    raise UsageError(f"--name={args.name!r} is not a valid TPU name: lowercase letters, digits and "
                     "hyphens, starting with a letter, at most 63 characters")
  if not args.zone:
    raise UsageError("--zone is required, e.g. --zone=us-central2-b (v4) or --zone=us-west4-a (v5e)")


# ----------------------------------------------------------------------------------------------------
# Subcommands: each returns the list of commands (argv lists, or comment strings starting with '#').


def cmd_create(args) -> list:
  if not args.accelerator_type:
    raise UsageError("--accelerator_type is required, e.g. --accelerator_type=v4-32 or v5litepod-16")
  hosts = num_hosts(args.accelerator_type)
  family = args.accelerator_type.rsplit("-", 1)[0]
  version = args.version or DEFAULT_VERSIONS[family]
  if args.spot and args.preemptible:
    raise UsageError("pass only one of --spot and --preemptible (--spot is the newer, preferred one)")
  if args.queued and args.preemptible:
    raise UsageError("queued resources take --spot, not --preemptible")
  if args.valid_until_duration and not args.queued:
    raise UsageError("--valid_until_duration only applies to queued resources (add --queued)")
  tier = ["--spot"] if args.spot else ["--preemptible"] if args.preemptible else []
  if args.reserved:
    tier.append("--reserved")
  if args.queued:
    cmd = (["gcloud", "compute", "tpus", "queued-resources", "create", args.name,
            f"--node-id={args.name}"] + _gcloud_where(args)
           + [f"--accelerator-type={args.accelerator_type}", f"--runtime-version={version}"] + tier)
    if args.valid_until_duration:
      cmd.append(f"--valid-until-duration={args.valid_until_duration}")
    follow_up = (f"# {hosts} host(s). The request waits in a queue; it is ready when this says ACTIVE: "
                 + shlex.join(["gcloud", "compute", "tpus", "queued-resources", "describe", args.name]
                              + _gcloud_where(args) + ["--format=value(state.state)"]))
  else:
    cmd = (["gcloud", "compute", "tpus", "tpu-vm", "create", args.name] + _gcloud_where(args)
           + [f"--accelerator-type={args.accelerator_type}", f"--version={version}"] + tier)
    follow_up = f"# {hosts} host(s). Next: python launch/tpu.py install --name={args.name} --zone={args.zone}"
  return [cmd, follow_up]


def cmd_install(args) -> list:
  commands = []
  if args.git_url:
    fetch = [f"rm -rf {REMOTE_REPO}",
             shlex.join(["git", "clone", "--depth=1", f"--branch={args.git_ref}", args.git_url])
             + f" {REMOTE_REPO}"]
  else:
    archive = os.path.join(tempfile.gettempdir(), f"acula_jax-{args.name}.tar.gz")
    commands.append("# Copies the committed HEAD of this checkout (commit or stash local edits first).")
    commands.append(["git", "-C", str(REPO), "archive", "--format=tar.gz", "--prefix=acula_jax/",
                     f"--output={archive}", "HEAD"])
    commands.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", archive,
                     f"{args.name}:acula_jax.tar.gz", "--worker=all"] + _gcloud_where(args))
    fetch = [f"rm -rf {REMOTE_REPO}", "tar -xzf ~/acula_jax.tar.gz -C ~"]
  python = shlex.quote(args.python)
  steps = [
      # TPU images are Ubuntu 22.04 (Python 3.10); the package needs >= 3.11.
      f"(command -v {python} >/dev/null || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive"
      f" apt-get install -y -qq {python} {python}-venv))",
      *fetch,
      f"{python} -m venv {REMOTE_VENV}",
      f"{REMOTE_VENV}/bin/pip install -q --upgrade pip",
      f"{REMOTE_VENV}/bin/pip install -q -e {REMOTE_REPO} {shlex.quote(args.jax)}",
      f"{REMOTE_VENV}/bin/python -c \"import acula_jax, jax; print(jax.__version__)\"",
      "echo \"$(hostname): installed\"",
  ]
  commands.append(_ssh(args, "all", " && ".join(steps)))
  return commands


def _check_workdir(args):
  if args.workdir.startswith("gs://"):
    return
  if args.accelerator_type and num_hosts(args.accelerator_type) == 1:
    return
  hosts = (f"{args.accelerator_type} has {num_hosts(args.accelerator_type)} hosts"
           if args.accelerator_type else "the slice may have several hosts (pass --accelerator_type)")
  raise UsageError(
      f"--workdir must be a gs:// path for a multi-host TPU slice, got {args.workdir!r}: {hosts}, and "
      "every host must see the same checkpoints and write to one place. Use e.g. "
      "--workdir=gs://BUCKET/acula/RUN (a local path is accepted only with a single-host "
      "--accelerator_type such as v4-8).")


def cmd_run(args) -> list:
  if not args.config:
    raise UsageError("--config is required, e.g. --config=configs/acula.py:loss=linear_cka")
  if not args.workdir:
    raise UsageError("--workdir is required, e.g. --workdir=gs://BUCKET/acula/run1")
  _check_workdir(args)
  config_file = args.config.split(":", 1)[0]
  if not os.path.isabs(config_file) and not config_file.startswith("~") \
      and not (REPO / config_file).is_file():
    raise UsageError(f"--config file {config_file!r} is not in this checkout ({REPO}); paths are "
                     f"relative to the repository root, which `install` copies to {REMOTE_REPO}")
  for item in args.env:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
      raise UsageError(f"--env expects KEY=VALUE, got {item!r}")
  extra = args.main_args
  if {"--dry-run", "--dry_run"} & set(extra):
    raise UsageError("--dry-run after `--` would go to acula_jax.main; put it before the `--`")
  run_name = args.run_name or "acula-" + datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y%m%d-%H%M%S")
  if not re.match(r"^[A-Za-z0-9_.-]+$", run_name):
    raise UsageError(f"--run_name may only use letters, digits, '.', '_' and '-', got {run_name!r}")
  log = f"{REMOTE_LOGS}/{run_name}.$(hostname).log"  # one file per host, on that host
  main = shlex.join(["-m", "acula_jax.main", f"--config={args.config}", f"--workdir={args.workdir}",
                     "--distributed"] + extra)
  env = ("env " + " ".join(shlex.quote(item) for item in args.env) + " ") if args.env else ""
  # `~` must stay unquoted so that the remote shell expands it.
  remote = (f"mkdir -p {REMOTE_LOGS} && cd {REMOTE_REPO} && "
            f"{{ nohup {env}{REMOTE_VENV}/bin/python {main} > {log} 2>&1 < /dev/null & }} && "
            f"echo \"$(hostname): started pid $! -> {log}\" && "
            f"ln -sf {log} {REMOTE_LOGS}/latest.log")
  return [
      f"# Starts the same command on every worker; each host logs to {REMOTE_LOGS}/{run_name}.<hostname>.log",
      _ssh(args, "all", remote),
      f"# Follow it: python launch/tpu.py tail --name={args.name} --zone={args.zone} --worker=0 --follow",
  ]


def cmd_tail(args) -> list:
  if not _WORKER.match(args.worker):
    raise UsageError(f"--worker must be a worker index (0, 1, ...) or 'all', got {args.worker!r}")
  if args.follow and args.worker == "all":
    raise UsageError("--follow needs one worker (e.g. --worker=0); without --follow, --worker=all "
                     "prints the end of every host's log")
  if args.lines < 1:
    raise UsageError("--lines must be >= 1")
  log = f"{REMOTE_LOGS}/{args.run_name}.$(hostname).log" if args.run_name else f"{REMOTE_LOGS}/latest.log"
  tail = f"tail -n {args.lines}{' -F' if args.follow else ''} {log}"
  if args.worker == "all":
    tail = f"echo \"== $(hostname) ==\"; {tail}"
  return [_ssh(args, args.worker, tail)]


def cmd_delete(args) -> list:
  if args.queued:
    # --force also deletes the TPU VM the queued resource created.
    cmd = (["gcloud", "compute", "tpus", "queued-resources", "delete", args.name]
           + _gcloud_where(args) + ["--force"])
  else:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name] + _gcloud_where(args)
  if args.yes:
    cmd.append("--quiet")
  return [cmd]


# ----------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--name", help="TPU VM / queued-resource name (required)")
  common.add_argument("--zone", help="e.g. us-central2-b (required)")
  common.add_argument("--project", help="GCP project (default: gcloud's configured project)")
  common.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      default=_dry_run_default(),
                      help="print the commands instead of running them (default when ACULA_DRY_RUN=1)")

  parser = argparse.ArgumentParser(
      prog="tpu.py", description=__doc__.splitlines()[0],
      epilog="\n".join(__doc__.splitlines()[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="subcommand", metavar="{create,install,run,tail,delete}")
  sub.required = True

  create = sub.add_parser("create", parents=[common], help="create a TPU VM or a queued resource",
                          description="Create a TPU VM (`tpu-vm create`) or, with --queued, a queued "
                                      "resource that becomes a TPU VM when capacity is free.")
  create.add_argument("--accelerator_type", "--accelerator-type", dest="accelerator_type",
                      help="e.g. v4-8 (1 host), v4-32 (4 hosts), v5litepod-16 (4 hosts), v6e-8 (required)")
  create.add_argument("--version", help="TPU runtime version (default per family: "
                      + ", ".join(f"{k}: {v}" for k, v in DEFAULT_VERSIONS.items()) + ")")
  create.add_argument("--queued", action="store_true",
                      help="create a queued resource (gcloud compute tpus queued-resources create)")
  create.add_argument("--spot", action="store_true", help="Spot capacity (preemptible, cheaper)")
  create.add_argument("--preemptible", action="store_true",
                      help="legacy preemptible TPU VM (not with --queued; prefer --spot)")
  create.add_argument("--reserved", action="store_true", help="use reserved capacity")
  create.add_argument("--valid_until_duration", "--valid-until-duration", dest="valid_until_duration",
                      help="queued resources only: give up if not provisioned within, e.g. 6h")
  create.set_defaults(fn=cmd_create, subparser=create)

  install = sub.add_parser("install", parents=[common], help="install acula_jax on every worker",
                           description="Copy this checkout's HEAD (or clone --git_url) to every worker "
                                       f"as {REMOTE_REPO} and pip install it with {JAX_TPU!r} into "
                                       f"{REMOTE_VENV}, over `tpu-vm ssh --worker=all`.")
  install.add_argument("--git_url", help="clone this repository on the workers instead of copying "
                       "the local checkout")
  install.add_argument("--git_ref", default="main", help="branch or tag for --git_url (default: main)")
  install.add_argument("--python", default="python3.11",
                       help="interpreter for the venv (>= 3.11; apt-installed if missing)")
  install.add_argument("--jax", default=JAX_TPU, help=f"jax requirement (default: {JAX_TPU!r})")
  install.set_defaults(fn=cmd_install, subparser=install)

  run = sub.add_parser("run", parents=[common], help="start training on every worker (nohup)",
                       description="Start `python -m acula_jax.main --config=... --workdir=... "
                                   "--distributed` on every worker in the background; each host logs "
                                   f"to {REMOTE_LOGS}/RUN_NAME.HOSTNAME.log. Arguments after `--` go "
                                   "to acula_jax.main (e.g. -- --config.batch_size=384).",
                       usage="tpu.py run --name=NAME --zone=ZONE --config=CONFIG --workdir=gs://... "
                             "[options] [-- MAIN_FLAGS ...]")
  run.add_argument("--config", help="config file relative to the repo root, with variants and "
                   "overrides as acula_jax.main takes it (required)")
  run.add_argument("--workdir", help="gs://BUCKET/PATH shared by all hosts (required)")
  run.add_argument("--accelerator_type", "--accelerator-type", dest="accelerator_type",
                   help="the slice type; with a single-host type a local --workdir is allowed")
  run.add_argument("--run_name", help="names the log files (default: acula-UTC_TIMESTAMP)")
  run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the training processes (repeatable)")
  run.set_defaults(fn=cmd_run, subparser=run)

  tail = sub.add_parser("tail", parents=[common], help="show a worker's training log",
                        description=f"Print the end of {REMOTE_LOGS}/latest.log (or --run_name's log) "
                                    "on one worker, or on all of them.")
  tail.add_argument("--worker", default="0", help="worker index, or 'all' (default: 0)")
  tail.add_argument("--run_name", help="a run started by `run` (default: the latest)")
  tail.add_argument("--lines", type=int, default=100, help="lines to show (default: 100)")
  tail.add_argument("--follow", "-f", action="store_true", help="keep following (one worker only)")
  tail.set_defaults(fn=cmd_tail, subparser=tail)

  delete = sub.add_parser("delete", parents=[common], help="delete the TPU VM or queued resource",
                          description="Delete the TPU VM, or with --queued the queued resource and "
                                      "its TPU VM. gcloud asks for confirmation unless --yes.")
  delete.add_argument("--queued", action="store_true", help="it was created with create --queued")
  delete.add_argument("--yes", action="store_true", help="do not ask for confirmation (--quiet)")
  delete.set_defaults(fn=cmd_delete, subparser=delete)
  return parser


def _show(command) -> str:
  return command if isinstance(command, str) else shlex.join(command)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  # Everything after the first `--` belongs to acula_jax.main (only `run` takes it).
  main_args = []
  if "--" in argv:
    argv, main_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  parser = build_parser()
  args = parser.parse_args(argv)
  args.main_args = main_args
  try:
    if main_args and args.subcommand != "run":
      raise UsageError(f"only `run` takes arguments after `--`, got {shlex.join(main_args)}")
    _check_common(args)
    commands = args.fn(args)
  except UsageError as e:
    args.subparser.error(str(e))
  if args.dry_run:
    for command in commands:
      print(_show(command))
    return 0
  if shutil.which("gcloud") is None:
    print("tpu.py: error: gcloud not found; install the Google Cloud CLI, or use --dry-run",
          file=sys.stderr)
    return 1
  for command in commands:
    if isinstance(command, str):
      print(command, flush=True)
      continue
    print("+ " + _show(command), file=sys.stderr, flush=True)
    result = subprocess.run(command)
    if result.returncode:
      print(f"tpu.py: error: command failed with exit status {result.returncode}: {_show(command)}",
            file=sys.stderr)
      return result.returncode
  return 0


if __name__ == "__main__":
  sys.exit(main())
