"""Errors that name the file or example at fault, so bad input never surfaces as a crash deep in JAX."""
import functools
import os
import sys

from absl import app


class DataError(ValueError):
  """Bad input data: the message starts with the file or example it concerns."""

  def __init__(self, where, reason):
    self.where = str(where)
    self.reason = reason
    super().__init__(f"{self.where}: {reason}")


class BadAudioError(DataError):
  """Audio that cannot be used: unreadable, empty, silent, non-finite, multi-channel, ..."""


class CorruptRecordError(DataError):
  """A record file that is truncated, fails its checksum or does not parse."""


class MissingTeacherError(DataError):
  """An audio example has no teacher embedding."""


class UsageError(ValueError):
  """A bad flag or config value: the message says which and what to pass instead."""


EXIT_USAGE = 2            # bad input, flags or config: one line on stderr, no traceback
EXIT_PREEMPTED = 143      # 128 + SIGTERM: the run stopped early and resumes when rerun


def one_line_errors(main):
  """Wraps a CLI's main(argv): a DataError or UsageError prints `PROG: error: MESSAGE` (the message
  names the file, row or field and the remedy) and exits 2; any other exception is a bug and keeps
  its traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (DataError, UsageError) as e:
      program = os.path.basename(argv[0]) if argv else "acula_jax"
      print(f"{program}: error: {e}", file=sys.stderr)
      sys.exit(EXIT_USAGE)

  return wrapped


def run_program(main, define_flags):
  """A CLI's entry: defines its flags, then runs `main(argv)` under absl with `one_line_errors`."""
  define_flags()
  app.run(one_line_errors(main))
