#!/usr/bin/env bash
# Submit multi-node acula_jax training to SLURM (launch/slurm.sbatch does the srun inside the job).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/slurm.sh --nodes=N --config=CONFIG --workdir=DIR [options] [-- MAIN_FLAGS...]

Submits launch/slurm.sbatch with sbatch. In the job, every task runs
`python -m acula_jax.main --config=CONFIG --workdir=DIR --distributed`, and
jax.distributed.initialize() finds the coordinator, process count and process id in SLURM's
environment. Run it from a login node, in a checkout on a filesystem every node sees.

Options:
  --nodes=N            number of nodes (required)
  --config=CONFIG      config file (+ variants/overrides), as acula_jax.main takes it (required)
  --workdir=DIR        shared by all nodes: a shared-filesystem path or gs:// (required)
  --gpus_per_node=G    GPUs per node (default: 8)
  --tasks_per_node=T   1 (default): one process per node driving all G GPUs;
                       G: one process per GPU (JAX's default SLURM mapping)
  --cpus_per_task=C    CPUs per task (default: the cluster's)
  --partition=P        SLURM partition
  --account=A          SLURM account
  --qos=Q              SLURM QOS
  --time=T             time limit (default: 24:00:00)
  --job_name=NAME      job name (default: acula)
  --log_dir=DIR        job log and per-task logs, relative to the repo root (default: logs/slurm)
  --python=PATH        interpreter on the nodes (default: .venv/bin/python if present, else python3)
  --sbatch_arg=ARG     any other sbatch option, repeatable (e.g. --sbatch_arg=--exclusive)
  --dry-run            print the sbatch command instead of submitting (default when ACULA_DRY_RUN=1)
  -h, --help           this help

Anything after `--` goes to acula_jax.main. Logs: LOG_DIR/JOBNAME-JOBID.out (the batch script) and
LOG_DIR/JOBNAME-JOBID.NODE.TASK.log (each training process).

Example (4 nodes x 8 GPUs, one process per node):
  launch/slurm.sh --nodes=4 --gpus_per_node=8 --partition=gpu --time=12:00:00 \
      --config=configs/acula.py:loss=linear_cka --workdir=/shared/acula/run1 \
      -- --config.data.records_dir=/shared/records --config.data.teacher_dir=/shared/teacher
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$repo/launch/common.sh"
nodes="" config="" workdir="" gpus=8 tasks=1 cpus="" partition="" account="" qos="" time_limit="24:00:00"
job_name="acula" log_dir="logs/slurm" python=""
case "${ACULA_DRY_RUN:-}" in 1|true|yes|on) dry_run=1 ;; *) dry_run=0 ;; esac
extra_sbatch=() main_args=()

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --nodes=*) nodes="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --gpus_per_node=*) gpus="${1#*=}" ;;
    --tasks_per_node=*) tasks="${1#*=}" ;;
    --cpus_per_task=*) cpus="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --account=*) account="${1#*=}" ;;
    --qos=*) qos="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --job_name=*) job_name="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --sbatch_arg=*) extra_sbatch+=("${1#*=}") ;;
    --dry-run|--dry_run) dry_run=1 ;;
    --) shift; main_args=("$@"); break ;;
    --nodes|--config|--workdir|--gpus_per_node|--tasks_per_node|--cpus_per_task|--partition|--account|\
    --qos|--time|--job_name|--log_dir|--python|--sbatch_arg)
      die "$1 needs a value: write $1=VALUE" ;;
    *) die "unknown argument '$1' (flags for acula_jax.main go after --)" ;;
  esac
  shift
done

[[ -n "$nodes" ]] || die "--nodes is required, e.g. --nodes=2"
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer, got '$gpus'"
[[ "$tasks" =~ ^[1-9][0-9]*$ ]] || die "--tasks_per_node must be a positive integer, got '$tasks'"
if [[ "$tasks" != 1 && "$tasks" != "$gpus" ]]; then
  die "--tasks_per_node must be 1 (one process per node, all its GPUs) or --gpus_per_node=$gpus (one process per GPU), got $tasks"
fi
[[ -z "$cpus" || "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus_per_task must be a positive integer, got '$cpus'"
[[ -n "$config" ]] || die "--config is required, e.g. --config=configs/acula.py"
[[ -n "$workdir" ]] || die "--workdir is required: a shared-filesystem path or gs://BUCKET/PATH"
config_file="${config%%:*}"
if [[ "$config_file" != /* && ! -f "$repo/$config_file" ]]; then
  die "--config file '$config_file' not found under $repo (paths are relative to the repo root)"
fi
if ((nodes > 1)); then
  case "$workdir" in
    /tmp|/tmp/*|/dev/shm|/dev/shm/*|/var/tmp|/var/tmp/*)
      die "--workdir=$workdir is node-local; with --nodes=$nodes every node must see the same workdir (shared filesystem or gs://)" ;;
  esac
fi
[[ "$job_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job_name may only use letters, digits, '.', '_' and '-'"
for arg in "${main_args[@]+"${main_args[@]}"}"; do
  case "$arg" in
    --dry-run|--dry_run) die "--dry-run after -- would go to acula_jax.main; put it before the --" ;;
  esac
done

sbatch_cmd=(sbatch "--job-name=$job_name" "--nodes=$nodes" "--ntasks-per-node=$tasks"
            "--gpus-per-node=$gpus" "--time=$time_limit" "--chdir=$repo" "--output=$log_dir/%x-%j.out")
[[ -z "$cpus" ]] || sbatch_cmd+=("--cpus-per-task=$cpus")
[[ -z "$partition" ]] || sbatch_cmd+=("--partition=$partition")
[[ -z "$account" ]] || sbatch_cmd+=("--account=$account")
[[ -z "$qos" ]] || sbatch_cmd+=("--qos=$qos")
sbatch_cmd+=("${extra_sbatch[@]+"${extra_sbatch[@]}"}" launch/slurm.sbatch "--log_dir=$log_dir"
             "--gpus_per_node=$gpus")
[[ -z "$python" ]] || sbatch_cmd+=("--python=$python")
sbatch_cmd+=(-- "--config=$config" "--workdir=$workdir" "${main_args[@]+"${main_args[@]}"}")

if ((dry_run)); then
  echo "cd $(q "$repo")"
  echo "mkdir -p $(q "$log_dir")"
  q "${sbatch_cmd[@]}"
  exit 0
fi
command -v sbatch >/dev/null || die "sbatch not found: run this on a SLURM login node (or use --dry-run)"
cd "$repo"
mkdir -p "$log_dir"  # SLURM does not create the directories of --output paths
echo "+ $(q "${sbatch_cmd[@]}")" >&2
"${sbatch_cmd[@]}"
echo "Logs: $repo/$log_dir/$job_name-JOBID.out and $job_name-JOBID.NODE.TASK.log (squeue -u \$USER, scancel JOBID)"
