"""Dataset adapters: a dataset as its publisher lays it out -> example specs for `acula_jax.data.prepare`.

Every adapter module defines:
  NAME: str                       registry name (`--dataset=NAME`)
  MODALITY: str                   "heart" | "lung" | "cough" | "breath" | "mixed"
  LABEL_MAPS: dict                every label column's mapping from the publisher's codes, in one place
  list_examples(data_dir, **options) -> (list[common.ExampleSpec], list[common.Skipped])
                                  metadata only (no audio is decoded here); rows that cannot be used are
                                  returned as Skipped(where, reason), never dropped silently.
Adapters are imported lazily so that one dataset's optional dependency never breaks another.
"""
import importlib

ADAPTERS = {
    "physionet2016": "acula_jax.data.datasets.physionet2016",
    "yaseen2018": "acula_jax.data.datasets.yaseen2018",
    "hls_cmds": "acula_jax.data.datasets.hls_cmds",
    "table": "acula_jax.data.datasets.table",
    "icbhi": "acula_jax.data.datasets.icbhi",
    "circor": "acula_jax.data.datasets.circor",
    "kauh": "acula_jax.data.datasets.kauh",
    "sprsound": "acula_jax.data.datasets.sprsound",
    "zchsound": "acula_jax.data.datasets.zchsound",
    "respiratory_tr": "acula_jax.data.datasets.respiratory_tr",
    "coswara": "acula_jax.data.datasets.coswara",
    "coughvid": "acula_jax.data.datasets.coughvid",
    "ukcovid": "acula_jax.data.datasets.ukcovid",
    "mmlung": "acula_jax.data.datasets.mmlung",
    "nosemic": "acula_jax.data.datasets.nosemic",
}


def get_adapter(name: str):
  """The adapter module registered as `name`; ValueError listing the available ones otherwise."""
  if name not in ADAPTERS:
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(ADAPTERS))}")
  try:
    return importlib.import_module(ADAPTERS[name])
  except ModuleNotFoundError as e:
    if e.name == ADAPTERS[name]:
      raise ValueError(f"dataset {name!r} is registered but its adapter is not implemented yet") from e
    raise
