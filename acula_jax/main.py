r"""Entry point: `python -m acula_jax.main --config=configs/demo.py --workdir=DIR`.

Exit status: 0 when trained (and exported and evaluated), 2 for bad input, flags or config (one line
on stderr), 143 when SIGTERM (a preemption) stopped it after a checkpoint: rerun to resume.

Flags: --config (a config file, variants after ':', overrides with --config.x=y), --workdir, and the
multi-host flags (--distributed and, off TPU/SLURM, --coordinator_address/--num_processes/--process_id).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from acula_jax import config_files
from acula_jax import errors
from acula_jax import train

FLAGS = flags.FLAGS
def _environment_is_distributed() -> bool:
  """Multi-host as detected from the environment (what jax.distributed.initialize() can read)."""
  if FLAGS.coordinator_address:
    return True
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in tpu_hosts or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed = FLAGS.distributed
  if distributed is None:
    distributed = _environment_is_distributed()
  if distributed:
    # With an explicit coordinator, process 0 binds exactly that address (not every interface).
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               coordinator_bind_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  logging.info("JAX process %d/%d, %d devices", jax.process_index(), jax.process_count(),
               jax.device_count())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.Preempted as e:
    print(f"Not done: {e}.", flush=True)
    sys.exit(errors.EXIT_PREEMPTED)
  written = "metrics.jsonl, export/" + (", eval/" if FLAGS.config.evals else "")
  print(f"Done. Results in {FLAGS.workdir} ({written}).")


def _define_flags():
  """CLI flags, defined only when run as a program (importing this module defines none)."""
  config_files.define_config_flag("Training config file.")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, export and eval results.")
  flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize(); default: when the "
                    "environment says so (a multi-host TPU VM, a SLURM job of several tasks, or "
                    "--coordinator_address).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, when not auto-detected.")
  flags.DEFINE_integer("num_processes", None, "Number of processes, when not auto-detected.")
  flags.DEFINE_integer("process_id", None, "This process's index, when not auto-detected.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
