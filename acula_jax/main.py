r"""Entry point: `python -m acula_jax.main --config=configs/demo.py --workdir=DIR`.

Flags: --config (a config file, variants after ':', overrides with --config.x=y), --workdir, and the
multi-host flags (--distributed and, off TPU/SLURM, --coordinator_address/--num_processes/--process_id).
"""
import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from acula_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, export and eval results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (TPU VM / SLURM / flags).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, when not auto-detected.")
flags.DEFINE_integer("num_processes", None, "Number of processes, when not auto-detected.")
flags.DEFINE_integer("process_id", None, "This process's index, when not auto-detected.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.distributed:
    # With an explicit coordinator, process 0 binds exactly that address (not every interface).
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               coordinator_bind_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  logging.info("JAX process %d/%d, %d devices", jax.process_index(), jax.process_count(),
               jax.device_count())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(f"Done. Results in {FLAGS.workdir} (eval/results.md, metrics.jsonl, export/).")


if __name__ == "__main__":
  app.run(main)
