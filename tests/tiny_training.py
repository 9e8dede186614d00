"""The tiny demo config pointed at the `tiny_corpus` fixture's records and teacher (see conftest)."""
from configs import demo


def tiny_config(corpus, arg="tiny", **overrides):
  config = demo.get_config(arg)
  config.data.records_dir = str(corpus / "records")
  config.data.teacher_dir = "" if "pretrain" in arg else str(corpus / "teacher")
  for entry in config.evals.values():
    entry.tasks = ""  # tests that evaluate name their tasks
  config.update_from_flattened_dict(overrides)
  return config
