"""The launch scripts (launch/): their --help, the commands they print in dry-run mode, argument errors.

Nothing here reaches a cloud or a cluster: every script runs with ACULA_DRY_RUN=1 and with stubs named
gcloud, sbatch, srun and nvidia-smi first on PATH that fail loudly if a dry run ever calls them.
"""
import importlib.util
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
STUBBED = ("gcloud", "sbatch", "srun", "nvidia-smi")
STUB_MARK = "STUB CALLED"
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory):
  """A PATH whose gcloud/sbatch/srun/nvidia-smi only complain and exit 97."""
  bin_dir = tmp_path_factory.mktemp("stub_bin")
  for name in STUBBED:
    stub = bin_dir / name
    stub.write_text(f"#!/bin/sh\necho '{STUB_MARK}: {name}' >&2\nexit 97\n")
    stub.chmod(0o755)
  return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture
def launch(stub_path, tmp_path):
  """Runs a launch script; returns the CompletedProcess (text, stdout and stderr captured)."""

  def run(script, *args, dry_env=True, cwd=None, env=None):
    full_env = dict(os.environ, PATH=stub_path)
    full_env.pop("ACULA_DRY_RUN", None)
    if dry_env:
      full_env["ACULA_DRY_RUN"] = "1"
    full_env.update(env or {})
    path = LAUNCH / script
    argv = [sys.executable, str(path)] if script.endswith(".py") else [BASH, str(path)]
    proc = subprocess.run(argv + list(args), env=full_env, cwd=cwd or tmp_path, text=True,
                          capture_output=True, timeout=60)
    assert STUB_MARK not in proc.stderr, f"a dry run called a real tool:\n{proc.stderr}"
    return proc

  return run


@pytest.fixture
def tpu_main(stub_path, monkeypatch, capsys):
  """launch/tpu.py's main() in this process (fast, for the many small cases): -> (status, out, err).

  The subprocess tests below cover the script as a user runs it; these only save interpreter starts.
  """
  spec = importlib.util.spec_from_file_location("acula_launch_tpu", LAUNCH / "tpu.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  monkeypatch.setenv("ACULA_DRY_RUN", "1")
  monkeypatch.setenv("PATH", stub_path)

  def no_subprocess(*args, **kwargs):
    raise AssertionError(f"a dry run tried to run {args}")

  monkeypatch.setattr(module.subprocess, "run", no_subprocess)

  def run(*argv):
    try:
      status = module.main(list(argv))
    except SystemExit as e:
      status = e.code
    out, err = capsys.readouterr()
    return status, out, err

  return run


def _commands(stdout):
  """The printed commands (comments dropped), each split into argv."""
  return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def _remote(argv):
  """The --command=... of a `gcloud ... tpu-vm ssh` argv."""
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return command


# ----------------------------------------------------------------------------------------------------
# Cloud TPU


@pytest.mark.parametrize("sub", ["create", "install", "run", "tail", "delete"])
def test_tpu_help(tpu_main, sub):
  status, out, _ = tpu_main(sub, "--help")
  assert status == 0
  assert f"usage: tpu.py {sub}" in out
  for flag in ("--name", "--zone", "--dry-run"):
    assert flag in out


def test_tpu_subcommand_help_subprocess(launch):
  proc = launch("tpu.py", "run", "--help")
  assert proc.returncode == 0, proc.stderr
  for flag in ("--config", "--workdir", "--accelerator_type", "--run_name", "--env", "-- MAIN_FLAGS"):
    assert flag in proc.stdout


def test_tpu_top_level_help_lists_subcommands(launch):
  proc = launch("tpu.py", "--help")
  assert proc.returncode == 0
  for sub in ("create", "install", "run", "tail", "delete"):
    assert sub in proc.stdout
  assert "ACULA_DRY_RUN" in proc.stdout


def test_tpu_create_vm(launch):
  proc = launch("tpu.py", "create", "--name=acula-v4", "--zone=us-central2-b",
                "--accelerator_type=v4-32", "--preemptible", "--project=my-project")
  assert proc.returncode == 0, proc.stderr
  [cmd] = _commands(proc.stdout)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "acula-v4", "--zone=us-central2-b",
                 "--project=my-project", "--accelerator-type=v4-32",
                 "--version=tpu-ubuntu2204-base", "--preemptible"]
  assert "4 host(s)" in proc.stdout


def test_tpu_create_queued_resource(launch):
  proc = launch("tpu.py", "create", "--name=acula-v5e", "--zone=us-west4-a",
                "--accelerator-type=v5litepod-16", "--queued", "--spot", "--valid_until_duration=6h")
  assert proc.returncode == 0, proc.stderr
  [cmd] = _commands(proc.stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "acula-v5e"]
  for flag in ("--node-id=acula-v5e", "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
               "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--valid-until-duration=6h"):
    assert flag in cmd
  assert "--preemptible" not in cmd
  assert "4 host(s)" in proc.stdout and "queued-resources describe acula-v5e" in proc.stdout


def test_tpu_create_explicit_version(launch):
  proc = launch("tpu.py", "create", "--name=t", "--zone=z", "--accelerator_type=v6e-8",
                "--version=v2-alpha-tpuv6e-custom")
  [cmd] = _commands(proc.stdout)
  assert "--version=v2-alpha-tpuv6e-custom" in cmd and "1 host(s)" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--zone=z", "--accelerator_type=v4-8"], "--name is required"),
    (["--name=Bad_Name", "--zone=z", "--accelerator_type=v4-8"], "not a valid TPU name"),
    (["--name=t", "--accelerator_type=v4-8"], "--zone is required"),
    (["--name=t", "--zone=z"], "--accelerator_type is required"),
    (["--name=t", "--zone=z", "--accelerator_type=v9-8"], "--accelerator_type: unknown accelerator type"),
    (["--name=t", "--zone=z", "--accelerator_type=v5litepod-6"], "powers of two chips"),
    (["--name=t", "--zone=z", "--accelerator_type=v4-8", "--spot", "--preemptible"], "only one of"),
    (["--name=t", "--zone=z", "--accelerator_type=v4-8", "--queued", "--preemptible"],
     "queued resources take --spot"),
    (["--name=t", "--zone=z", "--accelerator_type=v4-8", "--valid_until_duration=1h"], "add --queued"),
])
def test_tpu_create_errors(tpu_main, args, message):
  status, out, err = tpu_main("create", *args)
  assert status == 2
  assert message in err and "usage: tpu.py create" in err
  assert out == ""


def test_tpu_error_subprocess(launch):
  proc = launch("tpu.py", "run", "--zone=z", "--config=configs/acula.py", "--workdir=gs://b/r")
  assert proc.returncode == 2 and proc.stdout == ""
  assert "tpu.py run: error: --name is required" in proc.stderr


def test_tpu_install_copies_checkout_to_all_workers(launch):
  proc = launch("tpu.py", "install", "--name=acula-v4", "--zone=us-central2-b")
  assert proc.returncode == 0, proc.stderr
  archive, scp, ssh = _commands(proc.stdout)
  assert archive[:4] == ["git", "-C", str(REPO), "archive"] and archive[-1] == "HEAD"
  tarball = [a for a in archive if a.startswith("--output=")][0][len("--output="):]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert tarball in scp and "acula-v4:acula_jax.tar.gz" in scp and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "acula-v4"]
  assert "--worker=all" in ssh and "--zone=us-central2-b" in ssh
  remote = _remote(ssh)
  assert "tar -xzf ~/acula_jax.tar.gz" in remote
  assert "python3.11 -m venv ~/acula_venv" in remote
  assert "~/acula_venv/bin/pip install -q -e ~/acula_jax 'jax[tpu]>=0.10,<0.11'" in remote
  subprocess.run([BASH, "-n", "-c", remote], check=True)  # valid shell on the workers


def test_tpu_install_from_git(launch):
  proc = launch("tpu.py", "install", "--name=t", "--zone=z", "--git_url=https://example.com/acula.git",
                "--git_ref=v1")
  [ssh] = _commands(proc.stdout)
  assert "--worker=all" in ssh
  assert "git clone --depth=1 --branch=v1 https://example.com/acula.git ~/acula_jax" in _remote(ssh)


def test_tpu_run_on_all_workers_with_per_host_logs(launch):
  proc = launch("tpu.py", "run", "--name=acula-v4", "--zone=us-central2-b", "--accelerator_type=v4-32",
                "--config=configs/acula.py:loss=linear_cka", "--workdir=gs://my-bucket/acula/run1",
                "--run_name=run1", "--env=JAX_COMPILATION_CACHE_DIR=gs://my-bucket/cache",
                "--", "--config.data.records_dir=gs://my-bucket/records", "--config.batch_size=384")
  assert proc.returncode == 0, proc.stderr
  [ssh] = _commands(proc.stdout)
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "acula-v4"]
  assert "--worker=all" in ssh
  remote = _remote(ssh)
  subprocess.run([BASH, "-n", "-c", remote], check=True)
  main = ("~/acula_venv/bin/python -m acula_jax.main --config=configs/acula.py:loss=linear_cka "
          "--workdir=gs://my-bucket/acula/run1 --distributed "
          "--config.data.records_dir=gs://my-bucket/records --config.batch_size=384")
  assert main in remote
  assert "nohup env JAX_COMPILATION_CACHE_DIR=gs://my-bucket/cache " + main in remote
  # One log per host, on that host; `$(hostname)` is expanded by the worker's shell.
  assert "> ~/acula_logs/run1.$(hostname).log 2>&1 < /dev/null &" in remote
  assert "ln -sf ~/acula_logs/run1.$(hostname).log ~/acula_logs/latest.log" in remote
  assert "cd ~/acula_jax" in remote


def test_tpu_run_remote_command_starts_in_background(launch, tmp_path):
  """Runs the generated remote command with a fake ~ and python: it returns at once, one log per host."""
  proc = launch("tpu.py", "run", "--name=t", "--zone=z", "--config=configs/acula.py",
                "--workdir=gs://b/r", "--run_name=r", "--", "--flag=1")
  remote = _remote(_commands(proc.stdout)[0])
  home = tmp_path / "home"
  (home / "acula_jax").mkdir(parents=True)
  fake_python = home / "acula_venv" / "bin" / "python"
  fake_python.parent.mkdir(parents=True)
  fake_python.write_text('#!/bin/sh\necho "args: $*"\n')
  fake_python.chmod(0o755)
  out = subprocess.run([BASH, "-c", remote], env=dict(os.environ, HOME=str(home)), text=True,
                       capture_output=True, timeout=30, check=True)
  assert "started pid" in out.stdout
  log = home / "acula_logs" / f"r.{socket.gethostname()}.log"
  for _ in range(200):
    if log.exists() and log.read_text():
      break
    time.sleep(0.05)
  assert log.read_text().strip() == ("args: -m acula_jax.main --config=configs/acula.py "
                                     "--workdir=gs://b/r --distributed --flag=1")
  assert (home / "acula_logs" / "latest.log").resolve() == log.resolve()


@pytest.mark.parametrize("args, message", [
    (["--config=configs/acula.py", "--workdir=/home/me/run"], "--workdir must be a gs:// path"),
    (["--config=configs/acula.py", "--workdir=/home/me/run", "--accelerator_type=v4-32"],
     "v4-32 has 4 hosts"),
    (["--config=configs/acula.py", "--workdir=gs://b/r", "--", "--dry-run"], "put it before the `--`"),
    (["--workdir=gs://b/r"], "--config is required"),
    (["--config=configs/acula.py"], "--workdir is required"),
    (["--config=configs/nope.py", "--workdir=gs://b/r"], "not in this checkout"),
    (["--config=configs/acula.py", "--workdir=gs://b/r", "--env=NOEQUALS"], "KEY=VALUE"),
])
def test_tpu_run_errors(tpu_main, args, message):
  status, out, err = tpu_main("run", "--name=t", "--zone=z", *args)
  assert status == 2, out
  assert message in err


def test_tpu_run_local_workdir_ok_on_single_host(launch):
  proc = launch("tpu.py", "run", "--name=t", "--zone=z", "--accelerator_type=v4-8",
                "--config=configs/demo.py", "--workdir=/home/me/run")
  assert proc.returncode == 0, proc.stderr
  assert "--workdir=/home/me/run --distributed" in _remote(_commands(proc.stdout)[0])


def test_tpu_tail(launch):
  proc = launch("tpu.py", "tail", "--name=t", "--zone=z", "--worker=3", "--lines=50", "--follow",
                "--run_name=run1")
  [ssh] = _commands(proc.stdout)
  assert "--worker=3" in ssh
  assert _remote(ssh) == "tail -n 50 -F ~/acula_logs/run1.$(hostname).log"
  proc = launch("tpu.py", "tail", "--name=t", "--zone=z", "--worker=all")
  [ssh] = _commands(proc.stdout)
  assert "--worker=all" in ssh and "tail -n 100 ~/acula_logs/latest.log" in _remote(ssh)
  proc = launch("tpu.py", "tail", "--name=t", "--zone=z", "--worker=all", "--follow")
  assert proc.returncode == 2 and "--follow needs one worker" in proc.stderr
  proc = launch("tpu.py", "tail", "--name=t", "--zone=z", "--worker=x")
  assert proc.returncode == 2 and "--worker must be" in proc.stderr


def test_tpu_delete(launch):
  [cmd] = _commands(launch("tpu.py", "delete", "--name=t", "--zone=z", "--queued", "--yes").stdout)
  assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "delete", "t", "--zone=z", "--force",
                 "--quiet"]
  [cmd] = _commands(launch("tpu.py", "delete", "--name=t", "--zone=z").stdout)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t", "--zone=z"]


def test_tpu_dry_run_flag_without_env(launch):
  """--dry-run alone (ACULA_DRY_RUN unset) prints and calls nothing."""
  proc = launch("tpu.py", "delete", "--name=t", "--zone=z", "--dry-run", dry_env=False)
  assert proc.returncode == 0 and proc.stdout.startswith("gcloud compute tpus tpu-vm delete t")


def test_tpu_without_dry_run_calls_gcloud(stub_path):
  """Without a dry run the script does call gcloud (here the stub) and reports its failure."""
  env = dict(os.environ, PATH=stub_path)
  env.pop("ACULA_DRY_RUN", None)
  proc = subprocess.run([sys.executable, str(LAUNCH / "tpu.py"), "delete", "--name=t", "--zone=z"],
                        env=env, text=True, capture_output=True, timeout=60)
  assert proc.returncode == 97 and f"{STUB_MARK}: gcloud" in proc.stderr
  assert "command failed with exit status 97" in proc.stderr


# ----------------------------------------------------------------------------------------------------
# One GPU host


def test_gpu_local_help(launch):
  proc = launch("gpu_local.sh", "--help")
  assert proc.returncode == 0
  for flag in ("--config", "--workdir", "--gpus", "--dry-run", "--background"):
    assert flag in proc.stdout


def test_gpu_local_dry_run(launch):
  proc = launch("gpu_local.sh", "--config=configs/acula.py:loss=linear_cka", "--workdir=/data/run1",
                "--gpus=0,1,2,3", "--run_name=r1", "--", "--config.batch_size=96",
                "--config.data.records_dir=/data/my records")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == f"cd {REPO}" and lines[1] == "mkdir -p logs"
  cmd = shlex.split(lines[2])
  host = socket.gethostname()
  assert cmd[:3] == ["env", "CUDA_VISIBLE_DEVICES=0,1,2,3", ".venv/bin/python"
                     if (REPO / ".venv/bin/python").exists() else "python3"]
  assert cmd[3:9] == ["-m", "acula_jax.main", "--config=configs/acula.py:loss=linear_cka",
                      "--workdir=/data/run1", "--config.batch_size=96",
                      "--config.data.records_dir=/data/my records"]
  assert "--distributed" not in cmd  # one process on one host
  assert cmd[-3:] == ["|", "tee", f"logs/r1.{host}.log"]


def test_gpu_local_background(launch):
  proc = launch("gpu_local.sh", "--config=configs/demo.py", "--workdir=w", "--background",
                "--run_name=r", "--log_dir=/var/log/acula", "--mem_fraction=0.9", "--python=python3")
  line = proc.stdout.splitlines()[2]
  assert line.startswith("nohup env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 python3 -m acula_jax.main")
  assert line.endswith(f"> /var/log/acula/r.{socket.gethostname()}.log 2>&1 < /dev/null &")


@pytest.mark.parametrize("args, message", [
    (["--workdir=w"], "--config is required"),
    (["--config=configs/demo.py"], "--workdir is required"),
    (["--config=configs/nope.py", "--workdir=w"], "not found"),
    (["--config=configs/demo.py", "--workdir=w", "--gpus=all"], "--gpus must be"),
    (["--config", "configs/demo.py"], "needs a value"),
    (["--config=configs/demo.py", "--workdir=w", "--bogus"], "unknown argument"),
    (["--config=configs/demo.py", "--workdir=w", "--", "--dry-run"], "put it before"),
])
def test_gpu_local_errors(launch, args, message):
  proc = launch("gpu_local.sh", *args)
  assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


def test_gpu_local_needs_a_gpu_when_not_dry(launch, tmp_path):
  # A PATH with only what the script needs before its GPU check (and certainly no nvidia-smi).
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("dirname", "hostname", "date"):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  proc = launch("gpu_local.sh", "--config=configs/demo.py", "--workdir=w", dry_env=False,
                env={"PATH": str(bin_dir)})
  assert proc.returncode == 2 and "nvidia-smi not found" in proc.stderr


# ----------------------------------------------------------------------------------------------------
# SLURM


def test_slurm_help(launch):
  proc = launch("slurm.sh", "--help")
  assert proc.returncode == 0
  for flag in ("--nodes", "--gpus_per_node", "--tasks_per_node", "--partition", "--dry-run"):
    assert flag in proc.stdout
  proc = launch("slurm.sbatch", "--help")
  assert proc.returncode == 0 and "JAX_LOCAL_DEVICE_IDS" in proc.stdout


def test_slurm_submit_dry_run(launch):
  proc = launch("slurm.sh", "--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--account=acct",
                "--time=12:00:00", "--config=configs/acula.py:loss=linear_cka",
                "--workdir=/shared/acula/run1", "--", "--config.batch_size=384")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[:2] == [f"cd {REPO}", "mkdir -p logs/slurm"]
  cmd = shlex.split(lines[2])
  assert cmd[0] == "sbatch"
  for flag in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu",
               "--account=acct", "--time=12:00:00", f"--chdir={REPO}",
               "--output=logs/slurm/%x-%j.out", "--job-name=acula"):
    assert flag in cmd[:cmd.index("launch/slurm.sbatch")]
  script_args = cmd[cmd.index("launch/slurm.sbatch") + 1:]
  assert script_args == ["--log_dir=logs/slurm", "--gpus_per_node=8", "--",
                         "--config=configs/acula.py:loss=linear_cka", "--workdir=/shared/acula/run1",
                         "--config.batch_size=384"]


def test_slurm_one_process_per_gpu(launch):
  proc = launch("slurm.sh", "--nodes=2", "--gpus_per_node=4", "--tasks_per_node=4",
                "--config=configs/acula.py", "--workdir=gs://b/r", "--sbatch_arg=--exclusive")
  cmd = shlex.split(proc.stdout.splitlines()[2])
  assert "--nodes=2" in cmd and "--ntasks-per-node=4" in cmd and "--exclusive" in cmd


@pytest.mark.parametrize("args, message", [
    (["--config=configs/acula.py", "--workdir=/shared/r"], "--nodes is required"),
    (["--nodes=0", "--config=configs/acula.py", "--workdir=/shared/r"], "positive integer"),
    (["--nodes=2", "--tasks_per_node=3", "--config=configs/acula.py", "--workdir=/shared/r"],
     "--tasks_per_node must be 1"),
    (["--nodes=2", "--config=configs/acula.py", "--workdir=/tmp/run"], "node-local"),
    (["--nodes=2", "--workdir=/shared/r"], "--config is required"),
    (["--nodes=2", "--config=configs/acula.py"], "--workdir is required"),
])
def test_slurm_errors(launch, args, message):
  proc = launch("slurm.sh", *args)
  assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "acula", "SLURM_JOB_NUM_NODES": "4",
             "SLURM_JOB_NODELIST": "node[01-04]", "SLURM_NTASKS_PER_NODE": "1"}


def test_slurm_batch_script_one_process_per_node(launch):
  proc = launch("slurm.sbatch", "--gpus_per_node=8", "--", "--config=configs/acula.py",
                "--workdir=/shared/r1", cwd=REPO, env=dict(SLURM_ENV, SLURM_CPUS_PER_TASK="32"))
  assert proc.returncode == 0, proc.stderr
  cmd = shlex.split(proc.stdout.splitlines()[-1])
  assert cmd[:4] == ["srun", "--kill-on-bad-exit=1", "--output=logs/slurm/acula-4242.%N.%t.log",
                     "--cpus-per-task=32"]
  # All 8 GPUs for the node's single process (JAX's SLURM detection alone would give it GPU 0).
  assert cmd[4:6] == ["env", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]
  assert cmd[7:] == ["-m", "acula_jax.main", "--distributed", "--config=configs/acula.py",
                     "--workdir=/shared/r1"]
  assert "4 node(s)" in proc.stdout


def test_slurm_batch_script_one_process_per_gpu(launch):
  proc = launch("slurm.sbatch", "--", "--config=configs/acula.py", "--workdir=/shared/r1", cwd=REPO,
                env=dict(SLURM_ENV, SLURM_NTASKS_PER_NODE="8", SLURM_GPUS_ON_NODE="8"))
  cmd = shlex.split(proc.stdout.splitlines()[-1])
  assert "JAX_LOCAL_DEVICE_IDS" not in proc.stdout
  assert cmd[0] == "srun" and cmd[4:7] == ["-m", "acula_jax.main", "--distributed"]


def test_slurm_batch_script_errors(launch):
  proc = launch("slurm.sbatch", "--", "--config=c", cwd=REPO, dry_env=False)
  assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr
  proc = launch("slurm.sbatch", "--gpus_per_node=8", "--", "--config=c", cwd=REPO,
                env=dict(SLURM_ENV, SLURM_NTASKS_PER_NODE="2"))
  assert proc.returncode == 2 and "must be 1 (a process per node) or 8" in proc.stderr


@pytest.mark.parametrize("script", ["gpu_local.sh", "slurm.sh", "slurm.sbatch"])
def test_shell_scripts_are_strict_and_parse(script):
  text = (LAUNCH / script).read_text()
  assert "set -euo pipefail" in text
  subprocess.run([BASH, "-n", str(LAUNCH / script)], check=True)
