#!/usr/bin/env bash
# Train on one GPU host: a single JAX process that sees all (or the chosen) local GPUs.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu_local.sh --config=CONFIG --workdir=DIR [options] [-- MAIN_FLAGS...]

Runs `python -m acula_jax.main --config=CONFIG --workdir=DIR` once on this host. One process drives
every visible GPU (JAX puts them all on the `data` mesh axis), so no --distributed is needed; for
several hosts use launch/slurm.sh or launch/tpu.py.

Options:
  --config=CONFIG      config file (+ variants/overrides), as acula_jax.main takes it (required)
  --workdir=DIR        checkpoints, metrics, export, eval results; local path or gs:// (required)
  --gpus=LIST          GPU indices to use, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES; default: all)
  --python=PATH        interpreter (default: .venv/bin/python if present, else python3)
  --log_dir=DIR        where the log file goes (default: logs/)
  --run_name=NAME      log file name stem (default: acula-UTC_TIMESTAMP)
  --mem_fraction=F     XLA_PYTHON_CLIENT_MEM_FRACTION, share of GPU memory JAX preallocates (default: JAX's 0.75)
  --background         nohup the run and return at once (default: foreground, output also on the terminal)
  --dry-run            print the command instead of running it (default when ACULA_DRY_RUN=1)
  -h, --help           this help

Anything after `--` goes to acula_jax.main, e.g. -- --config.batch_size=96.
The log is LOG_DIR/RUN_NAME.HOSTNAME.log. Install first: pip install -e . 'jax[cuda12]>=0.10,<0.11'

Example:
  launch/gpu_local.sh --config=configs/acula.py:loss=linear_cka --workdir=/data/acula/run1 \
      --gpus=0,1,2,3 -- --config.data.records_dir=/data/records --config.data.teacher_dir=/data/teacher
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$repo/launch/common.sh"
config="" workdir="" gpus="" python="" log_dir="logs" run_name="" mem_fraction="" background=0
case "${ACULA_DRY_RUN:-}" in 1|true|yes|on) dry_run=1 ;; *) dry_run=0 ;; esac
main_args=()

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --gpus=*) gpus="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --run_name=*) run_name="${1#*=}" ;;
    --mem_fraction=*) mem_fraction="${1#*=}" ;;
    --background) background=1 ;;
    --dry-run|--dry_run) dry_run=1 ;;
    --) shift; main_args=("$@"); break ;;
    --config|--workdir|--gpus|--python|--log_dir|--run_name|--mem_fraction)
      die "$1 needs a value: write $1=VALUE" ;;
    *) die "unknown argument '$1' (flags for acula_jax.main go after --)" ;;
  esac
  shift
done

[[ -n "$config" ]] || die "--config is required, e.g. --config=configs/acula.py"
[[ -n "$workdir" ]] || die "--workdir is required, e.g. --workdir=/data/acula/run1 or gs://BUCKET/run1"
config_file="${config%%:*}"
if [[ "$config_file" != /* && ! -f "$repo/$config_file" ]]; then
  die "--config file '$config_file' not found under $repo (paths are relative to the repo root)"
fi
if [[ -n "$gpus" && ! "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  die "--gpus must be comma-separated GPU indices like 0,1,2,3, got '$gpus'"
fi
if [[ -n "$mem_fraction" && ! "$mem_fraction" =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]]; then
  die "--mem_fraction must be a number in (0, 1], got '$mem_fraction'"
fi
for arg in "${main_args[@]+"${main_args[@]}"}"; do
  case "$arg" in
    --dry-run|--dry_run) die "--dry-run after -- would go to acula_jax.main; put it before the --" ;;
  esac
done
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python=".venv/bin/python"; else python="python3"; fi
fi
[[ -n "$run_name" ]] || run_name="acula-$(date -u +%Y%m%d-%H%M%S)"
[[ "$run_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run_name may only use letters, digits, '.', '_' and '-'"
log="$log_dir/$run_name.$(hostname).log"

env_args=()
[[ -z "$gpus" ]] || env_args+=("CUDA_VISIBLE_DEVICES=$gpus")
[[ -z "$mem_fraction" ]] || env_args+=("XLA_PYTHON_CLIENT_MEM_FRACTION=$mem_fraction")
cmd=("$python" -m acula_jax.main "--config=$config" "--workdir=$workdir"
     "${main_args[@]+"${main_args[@]}"}")
if ((${#env_args[@]})); then cmd=(env "${env_args[@]}" "${cmd[@]}"); fi

quoted="$(q "${cmd[@]}")"
if ((background)); then
  shown="nohup $quoted > $(q "$log") 2>&1 < /dev/null &"
else
  shown="$quoted 2>&1 | tee $(q "$log")"
fi

if ((dry_run)); then
  echo "cd $(q "$repo")"
  echo "mkdir -p $(q "$log_dir")"
  echo "$shown"
  exit 0
fi

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this host (use --dry-run to only print the command)"
cd "$repo"
mkdir -p "$log_dir"
echo "+ $shown" >&2
if ((background)); then
  nohup "${cmd[@]}" > "$log" 2>&1 < /dev/null &
  echo "started pid $! on $(hostname); log: $repo/$log"
else
  "${cmd[@]}" 2>&1 | tee "$log"
fi
