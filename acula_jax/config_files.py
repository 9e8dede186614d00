"""The --config flag of the CLIs: a config file that may import its sibling configs from any folder.

Config files live in a package (`configs/`, whose files import each other as `from configs import
acula`). Python finds that package only when the folder above it is on sys.path, which `python -m`
gives only when run from there. `define_config_flag` puts the folder above the config file's outermost
package on sys.path first, so `--config=/path/to/acula_jax/configs/demo.py:tiny` works from anywhere.
"""
import os
import sys

from ml_collections import config_flags


def package_root(config_path: str) -> str | None:
  """The folder from which `config_path` imports as a module of its package (None outside a package)."""
  folder = os.path.dirname(os.path.abspath(config_path))
  if not os.path.isfile(os.path.join(folder, "__init__.py")):
    return None
  while os.path.isfile(os.path.join(folder, "__init__.py")):
    folder = os.path.dirname(folder)
  return folder


def _config_argument(argv: list) -> str | None:
  """The file named by --config=FILE[:variant] (or --config FILE) in `argv`."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    path, dot_py, _ = value.partition(".py")
    return path + dot_py
  return None


def define_config_flag(help_text: str, argv=None):
  """DEFINE_config_file("config", ...) with the config's package importable (see the module docstring)."""
  path = _config_argument(sys.argv[1:] if argv is None else argv)
  root = package_root(path) if path else None
  if root and root not in sys.path:
    sys.path.insert(0, root)
  return config_flags.DEFINE_config_file("config", None, help_text, lock_config=True)
