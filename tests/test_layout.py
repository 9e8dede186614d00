"""The package's layout: imports flow one way (tools -> train/evaluators -> models/data/audio), with no
cycle, function-local imports included, and every module imports in a fresh interpreter."""
import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "acula_jax"

# What each part of the package may import (besides itself). A part is a folder of acula_jax or a
# top-level module; docs/ARCHITECTURE.md explains the order.
BASE = {"errors", "fileio"}
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "config_files": set(),
    "losses": set(),
    "sharding": {"errors"},
    "audio": BASE,
    "data": BASE | {"audio"},
    "text": BASE | {"data", "config_files"},
    "models": BASE | {"losses"},
    "checkpointing": BASE | {"models"},
    "input_pipeline": BASE | {"audio", "data"},
    "metric_writers": BASE,
    "workdir": BASE,
    "evaluators": BASE | {"audio", "data", "text", "models", "checkpointing", "input_pipeline"},
    "train": BASE | {"audio", "data", "models", "losses", "checkpointing", "input_pipeline", "sharding",
                     "metric_writers", "workdir", "evaluators"},
    "main": BASE | {"config_files", "train"},
    "tools": BASE | {"audio", "data", "text", "models", "losses", "checkpointing", "input_pipeline",
                     "sharding", "config_files", "train", "evaluators"},
    "acula_jax": {"checkpointing"},  # the package's own __init__: load_encoder
}


def _modules() -> dict:
  """Dotted module name -> path, for every module of the package."""
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(REPO).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _part(module: str) -> str:
  parts = module.split(".")
  if len(parts) == 1:
    return "acula_jax"
  return parts[1]


def _imports(modules: dict) -> dict:
  """module -> {module it imports}: every import statement, at the top or inside a function."""
  edges = {name: set() for name in modules}
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                   for alias in node.names]
      else:
        continue
      edges[name] |= {t for t in targets if t in modules and t != name}
  return edges


def _cycle(edges: dict) -> list:
  """One import cycle as [a, b, ..., a], or []."""
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(edges[node]):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = "done"
    return []

  for start in sorted(edges):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return []


def test_no_import_cycle():
  cycle = _cycle(_imports(_modules()))
  assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_imports_flow_one_way():
  modules = _modules()
  assert set(map(_part, modules)) <= set(ALLOWED), set(map(_part, modules)) - set(ALLOWED)
  wrong = [f"{name} imports {target}"
           for name, targets in _imports(modules).items() for target in sorted(targets)
           if _part(target) != _part(name) and _part(target) not in ALLOWED[_part(name)]]
  assert not wrong, "\n".join(wrong)


def test_every_module_imports_in_a_fresh_interpreter():
  """Every module, imported in one new interpreter (nothing of the test session preloaded)."""
  names = sorted(n for n in _modules() if not n.endswith("__main__"))
  script = "import importlib\nfor name in %r:\n  importlib.import_module(name)\n" % names
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
