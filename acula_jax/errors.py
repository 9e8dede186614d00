"""Errors that name the file or example at fault, so bad input never surfaces as a crash deep in JAX."""


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
