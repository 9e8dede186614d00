"""What a compiled XLA program does per step, read from its optimised HLO text, loops counted.

`Compiled.cost_analysis()` counts the body of a while loop once, whatever its trip count, and a
training step is mostly loops (the scanned transformer blocks, gradient accumulation). This module
walks the compiled module's call graph instead: every computation gets the number of times one
execution of the program runs it (the product of the trip counts of the loops around it), and

- `matmul_flops`: 2 x output elements x contracted size of every dot and convolution (TPU's compiler
  writes dots as convolutions; of a convolution's window only the taps that meet data count, see
  `_taps_meeting_data`), plus the matmuls inside Pallas' TPU flash-attention kernels (custom calls
  that XLA cannot look into, counted from their q operand: `_FLASH_MATMULS`), times that count.
  Elementwise work is not counted;
- `hbm_bytes`: bytes read and written by every kernel (a fusion, or an unfused instruction) of the
  non-fused computations, times that count: a roofline estimate of HBM traffic. A kernel that takes
  a slice of a buffer (dynamic-slice) or writes one into it in place (dynamic-update-slice, how a
  loop stacks its per-iteration results) is charged the slice, not the buffer; buffers that the
  compiler placed on chip (TPU's VMEM) are not HBM traffic;
- `collectives`: each all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute with
  its executions per step and bytes per execution. TPU splits an asynchronous collective into
  start/update/done copies that share a channel id; each channel counts once. Bytes are the
  per-device buffer the collective moves: the result for all-reduce, all-gather, all-to-all and
  collective-permute, the full array being reduced for reduce-scatter (TPU writes these as an
  all-reduce fused into an `all-reduce-scatter` computation).

Trip counts come from `known_trip_count` where XLA states it, else from the loop condition's
`counter < constant` compare and the counter's constant initial value (JAX's scan and fori_loop).
Loops whose count cannot be read are counted once and listed in `unknown_trip_counts`.
The analysis is of a single device's program (SPMD partitioned), so totals are per device.
"""
import collections
import dataclasses
import functools
import math
import re

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4,
    "s64": 8, "u64": 8, "f16": 2, "bf16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
    "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
_ARRAY_WITH_LAYOUT = re.compile(_ARRAY.pattern + r"(\{[^}]*\})?")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\((.*)\)\s+->\s+.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s+=\s+(.*)$")
_CALLEES = re.compile(r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
# Instructions that move no data of their own (their bodies, if any, are counted where they run).
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "while", "conditional",
               "call", "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency",
               "domain", "iota"}


@dataclasses.dataclass
class Instruction:
  name: str
  shape: str        # the result's shape text, e.g. "f32[8,128]{1,0}" or a tuple "(f32[2], s32[])"
  opcode: str
  operands: list    # operand names
  arguments: str    # the operand list's text (a constant's value)
  attributes: str   # everything after the operand list


@dataclasses.dataclass
class Computation:
  name: str
  is_entry: bool
  instructions: dict = dataclasses.field(default_factory=dict)   # name -> Instruction, in order
  shapes: dict = dataclasses.field(default_factory=dict)         # name -> shape text (params too)
  root: str = ""

  @functools.cached_property
  def users(self) -> dict:
    """name -> [(user instruction, operand index)]."""
    users = collections.defaultdict(list)
    for inst in self.instructions.values():
      for index, operand in enumerate(inst.operands):
        users[operand].append((inst, index))
    return users

  @functools.cached_property
  def parameters(self) -> list:
    """The parameter instructions in parameter-number order."""
    return sorted((i for i in self.instructions.values() if i.opcode == "parameter"),
                  key=lambda i: int(i.arguments or 0))


def shape_bytes(shape: str, hbm_only: bool = False) -> float:
  """Bytes of every array in a shape text (tuples summed). hbm_only: leave out arrays whose layout
  places them in another memory space (TPU's `S(n)`: on-chip VMEM, SMEM), which is not HBM traffic."""
  total = 0.0
  for match in _ARRAY_WITH_LAYOUT.finditer(shape):
    dtype, dims, layout = match.groups()
    space = re.search(r"S\((\d+)\)", layout or "")
    if hbm_only and space and space.group(1) != "0":
      continue
    total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def _dims(shape: str) -> list:
  match = _ARRAY.search(shape)
  return [int(d) for d in match.group(2).split(",") if d] if match else []


def _closing(text: str, start: int) -> int:
  """Index just past the bracket group that opens at text[start] ('(' or '{')."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  depth = 0
  for i in range(start, len(text)):
    if text[i] in pairs:
      depth += 1
    elif text[i] in pairs.values():
      depth -= 1
      if depth == 0:
        return i + 1
  return len(text)


def _parse_instruction(line: str):
  match = _INSTRUCTION.match(line)
  if not match:
    return None
  is_root, name, rest = bool(match.group(1)), match.group(2), match.group(3)
  end = _closing(rest, 0) if rest.startswith("(") else rest.index(" ")
  shape, rest = rest[:end], rest[end:].lstrip()
  paren = rest.find("(")
  if paren < 0:
    return None
  opcode = rest[:paren].strip()
  close = _closing(rest, paren)
  operands = re.findall(r"%([\w.\-]+)", rest[paren:close])
  return is_root, Instruction(name, shape, opcode, operands, rest[paren + 1:close - 1], rest[close:])


def _parameter_shapes(signature: str) -> dict:
  """'p0: f32[2], p1: (s32[], f32[3])' -> {p0: 'f32[2]', p1: '(s32[], f32[3])'} (tuples kept whole)."""
  shapes, i = {}, 0
  while i < len(signature):
    colon = signature.find(":", i)
    if colon < 0:
      break
    name = signature[i:colon].strip().lstrip("%").split("*/")[-1].strip()
    j = colon + 1
    while j < len(signature) and signature[j] == " ":
      j += 1
    end = _closing(signature, j) if signature[j] == "(" else j + len(re.match(r"[^,]*", signature[j:]).group(0))
    shapes[name] = signature[j:end]
    i = end + 1
  return shapes


def parse_module(text: str) -> dict:
  """Computation name -> Computation, from `Compiled.as_text()`."""
  computations, current = {}, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = Computation(header.group(2), bool(header.group(1)))
      current.shapes.update(_parameter_shapes(header.group(3)))
      computations[current.name] = current
      continue
    if current is None:
      continue
    if line.startswith("}"):
      current = None
      continue
    parsed = _parse_instruction(line)
    if parsed:
      is_root, inst = parsed
      current.instructions[inst.name] = inst
      current.shapes[inst.name] = inst.shape
      if is_root:
        current.root = inst.name
  return computations


def _callees(inst: Instruction) -> list:
  names = [name for _, name in _CALLEES.findall(inst.attributes)]
  for group in _BRANCHES.findall(inst.attributes):
    names += re.findall(r"%?([\w.\-]+)", group)
  return names


def _constant_value(computation: Computation, name: str):
  """The integer a chain of copies/converts leads to, if it ends in a scalar constant."""
  seen = 0
  while name in computation.instructions and seen < 8:
    inst = computation.instructions[name]
    if inst.opcode == "constant":
      return int(inst.arguments) if re.fullmatch(r"-?[0-9]+", inst.arguments.strip()) else None
    if inst.opcode in ("copy", "convert", "bitcast") and inst.operands:
      name = inst.operands[0]
      seen += 1
      continue
    return None
  return None


def _trip_count(computations: dict, caller: Computation, loop: Instruction):
  """The trip count of a while instruction, or None when it cannot be read."""
  known = re.search(r'known_trip_count"?\s*[:=]\s*\{"?n"?\s*[:=]\s*"?(\d+)', loop.attributes)
  if known:
    return int(known.group(1))
  condition_name = re.search(r"condition=%?([\w.\-]+)", loop.attributes)
  condition = computations.get(condition_name.group(1)) if condition_name else None
  if condition is None or condition.root not in condition.instructions:
    return None
  compare = condition.instructions[condition.root]
  direction = re.search(r"direction=(\w+)", compare.attributes)
  if compare.opcode != "compare" or not direction or len(compare.operands) != 2:
    return None
  counter, limit = (condition.instructions.get(n) for n in compare.operands)
  if counter is None or counter.opcode != "get-tuple-element":
    return None
  bound = _constant_value(condition, compare.operands[1])
  index = int(re.search(r"index=(\d+)", counter.attributes).group(1))
  init = 0
  state = caller.instructions.get(loop.operands[0]) if loop.operands else None
  if state is not None and state.opcode == "tuple" and index < len(state.operands):
    start = _constant_value(caller, state.operands[index])
    init = 0 if start is None else start
  if bound is None or limit is None:
    return None
  steps = {"LT": bound - init, "LE": bound - init + 1, "NE": bound - init}.get(direction.group(1))
  return steps if steps is not None and steps >= 0 else None


@dataclasses.dataclass
class Collective:
  kind: str
  executions: int     # per program execution (per step), loop trip counts included
  bytes: float        # per execution, per device

  @property
  def total_bytes(self) -> float:
    return self.executions * self.bytes


@dataclasses.dataclass
class ProgramStats:
  matmul_flops: float
  hbm_bytes: float
  collectives: list
  loops: list                     # (while instruction, trip count) of every loop
  unknown_trip_counts: list       # while instructions counted once

  def collective_summary(self) -> dict:
    """kind -> {"count": executions per step, "bytes": bytes per step, "largest": bytes of the
    largest single execution}."""
    out = {kind: {"count": 0, "bytes": 0.0, "largest": 0.0} for kind in COLLECTIVES}
    for c in self.collectives:
      out[c.kind]["count"] += c.executions
      out[c.kind]["bytes"] += c.total_bytes
      out[c.kind]["largest"] = max(out[c.kind]["largest"], c.bytes)
    return out


def _executions(computations: dict) -> tuple:
  """Computation name -> times one program execution runs it; plus loops and unreadable loops."""
  edges = collections.defaultdict(list)  # callee -> [(caller, factor)]
  loops, unknown = [], []
  for comp in computations.values():
    for inst in comp.instructions.values():
      factor = 1
      if inst.opcode == "while":
        trips = _trip_count(computations, comp, inst)
        loops.append((inst.name, trips))
        if trips is None:
          unknown.append(inst.name)
        factor = 1 if trips is None else trips
      for callee in _callees(inst):
        if callee in computations:
          edges[callee].append((comp.name, factor))
  memo = {}

  def count(name, depth=0):
    if name in memo:
      return memo[name]
    if computations[name].is_entry or depth > 200:
      memo[name] = 1 if computations[name].is_entry else 0
      return memo[name]
    memo[name] = sum(count(caller, depth + 1) * factor for caller, factor in edges.get(name, []))
    return memo[name]

  return {name: count(name) for name in computations}, loops, unknown


def _window_field(window: str, name: str, count: int, default: int) -> list:
  match = re.search(rf"\b{name}=([0-9_x-]+)", window)
  return [int(n) for n in match.group(1).split("x")] if match else [default] * count


def _taps_meeting_data(window: str, lhs: list, out: list, lhs_labels: str, out_labels: str) -> float:
  """Mean number of window taps per output position that land on input data.

  TPU's compiler writes batched matmuls as convolutions whose batch dimensions are spatial ones,
  padded or base-dilated (lhs_dilate) so that each output meets one tap of a wide window; the other
  taps meet padding or the dilation's holes and cost nothing. Separable, so per-dimension means
  multiply.
  """
  sizes = _window_field(window, "size", 0, 1)
  spatial = len(sizes)
  strides = _window_field(window, "stride", spatial, 1)
  lhs_dilate = _window_field(window, "lhs_dilate", spatial, 1)
  rhs_dilate = _window_field(window, "rhs_dilate", spatial, 1)
  pad_match = re.search(r"\bpad=([0-9_x-]+)", window)
  pads_low = [int(p.split("_")[0]) for p in pad_match.group(1).split("x")] if pad_match else [0] * spatial
  taps = 1.0
  for d in range(spatial):
    n_in, n_out = lhs[lhs_labels.index(str(d))], out[out_labels.index(str(d))]
    position = (np.arange(n_out)[:, None] * strides[d] + np.arange(sizes[d])[None, :] * rhs_dilate[d]
                - pads_low[d])
    inside = (position >= 0) & (position <= (n_in - 1) * lhs_dilate[d]) & (position % lhs_dilate[d] == 0)
    taps *= inside.sum() / max(n_out, 1)
  return taps


def _matmul_flops(comp: Computation, inst: Instruction) -> float:
  out = _dims(inst.shape)
  if inst.opcode == "dot":
    lhs = _dims(comp.shapes.get(inst.operands[0], ""))
    contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", inst.attributes)
    dims = [int(d) for d in contracting.group(1).split(",") if d] if contracting else []
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in dims if d < len(lhs))
  # convolution: each output element is a dot over the window's taps that meet data x input features.
  lhs = _dims(comp.shapes.get(inst.operands[0], "")) if inst.operands else []
  rhs = _dims(comp.shapes.get(inst.operands[1], "")) if len(inst.operands) > 1 else []
  labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", inst.attributes)
  if not lhs or not rhs or not labels or "o" not in labels.group(2):
    return 0.0
  lhs_labels, rhs_labels, out_labels = labels.groups()
  window = re.search(r"window=\{([^}]*)\}", inst.attributes)
  window = window.group(1) if window else ""
  spatial_taps = math.prod(rhs[rhs_labels.index(str(d))] for d in range(len(rhs_labels) - 2))
  features_per_tap = math.prod(rhs) / max(rhs[rhs_labels.index("o")], 1) / max(spatial_taps, 1)
  taps = _taps_meeting_data(window, lhs, out, lhs_labels, out_labels) if spatial_taps > 1 or window else 1.0
  return 2.0 * math.prod(out) * features_per_tap * taps


# Pallas' TPU flash attention (`jax.experimental.pallas.ops.tpu.flash_attention`), by the kernel names
# in a custom call's op_name (the backward kernels' first; every one sits under `flash_attention`): the
# [n, n] x d matmuls each runs. Forward: q k^T and p v. Backward, which recomputes p: dq kernel
# q k^T, do v^T, ds k; dkv kernel q k^T, p^T do, do v^T, ds^T q.
_FLASH_MATMULS = (("flash_mha_bwd_dkv", 4), ("flash_mha_bwd_dq", 3), ("flash_attention", 2))


def _flash_attention_flops(comp: Computation, inst: Instruction) -> float:
  """2 x b x heads x n x n x d per matmul of a flash-attention kernel whose q is [b, heads, n, d]."""
  if inst.opcode != "custom-call" or 'custom_call_target="tpu_custom_call"' not in inst.attributes:
    return 0.0
  op_name = re.search(r'op_name="([^"]*)"', inst.attributes)
  op_name = op_name.group(1) if op_name else ""
  matmuls = next((count for name, count in _FLASH_MATMULS if name in op_name), 0)
  q = _dims(comp.shapes.get(inst.operands[0], "")) if inst.operands else []
  if not matmuls or len(q) != 4:
    return 0.0
  batch, heads, n, d = q
  return matmuls * 2.0 * batch * heads * n * n * d


def _hbm(shape: str) -> float:
  return shape_bytes(shape, hbm_only=True)


def _fused_computation(computations: dict, inst: Instruction):
  """The computation a fusion instruction runs, else None."""
  callees = _callees(inst) if inst.opcode == "fusion" else []
  return computations.get(callees[0]) if callees else None


def _read_bytes(computations: dict, comp: Computation, name: str, depth: int = 0) -> float:
  """Bytes a kernel reads of one input: only the slices that dynamic-slices take of it (also inside
  nested fusions), nothing of a buffer that a dynamic-update-slice writes into in place (how a loop
  reads and writes its stacked [trips, ...] arrays)."""
  whole = _hbm(comp.shapes.get(name, ""))
  uses = comp.users.get(name, [])
  if not uses or depth > 8:
    return whole
  total = 0.0
  for user, index in uses:
    callee = _fused_computation(computations, user)
    if user.opcode == "bitcast":
      total += _read_bytes(computations, comp, user.name, depth + 1)
    elif user.opcode == "dynamic-slice" and index == 0:
      total += _hbm(user.shape)
    elif user.opcode == "dynamic-update-slice" and index == 0:
      continue
    elif callee is not None and index < len(callee.parameters):
      total += _read_bytes(computations, callee, callee.parameters[index].name, depth + 1)
    else:
      return whole
  return min(total, whole)


def _written_bytes(comp: Computation, name: str) -> float:
  """Bytes a kernel writes for one output: the update of an in-place dynamic-update-slice."""
  inst = comp.instructions.get(name)
  if inst is None:
    return _hbm(comp.shapes.get(name, ""))
  if inst.opcode == "tuple":
    return sum(_written_bytes(comp, o) for o in inst.operands)
  if inst.opcode == "bitcast" and inst.operands:
    return _written_bytes(comp, inst.operands[0])
  if inst.opcode == "dynamic-update-slice" and len(inst.operands) > 1:
    return _hbm(comp.shapes.get(inst.operands[1], ""))
  return _hbm(inst.shape)


def _kernel_traffic(computations: dict, comp: Computation, inst: Instruction) -> float:
  """HBM bytes one kernel moves: what it reads of its operands plus what it writes."""
  callee = _fused_computation(computations, inst)
  if callee is not None:
    return (sum(_read_bytes(computations, callee, p.name) for p in callee.parameters)
            + _written_bytes(callee, callee.root))
  if inst.opcode == "custom-call" and "AllocateBuffer" in inst.attributes:
    return 0.0
  if inst.opcode.endswith("-start"):  # async: its result tuple repeats the operands it holds
    operands = sum(_hbm(comp.shapes.get(o, "")) for o in inst.operands)
    return operands + max(_hbm(inst.shape) - operands, 0.0)
  if inst.opcode == "dynamic-slice":
    return 2 * _hbm(inst.shape)
  if inst.opcode == "dynamic-update-slice" and len(inst.operands) > 1:
    return 2 * _hbm(comp.shapes.get(inst.operands[1], ""))
  return sum(_hbm(comp.shapes.get(o, "")) for o in inst.operands) + _hbm(inst.shape)


def _collective_kind(opcode: str, computation: str):
  # TPU's compiler writes a reduce-scatter as an all-reduce inside a fusion computation named
  # all-reduce-scatter (the scatter is fused into its output); its result is the full array.
  if opcode == "all-reduce" and computation.startswith("all-reduce-scatter"):
    return "reduce-scatter"
  for kind in COLLECTIVES:
    if opcode in (kind, f"{kind}-start"):
      return kind
  return None


def _collective_key(kind: str, comp, inst) -> tuple:
  """One key per collective: TPU's asynchronous copies of one (start, update, done fusions) share a
  channel and a chain id. Channel ids alone are reused by unrelated collectives."""
  channel = re.search(r"channel_id=(\d+)", inst.attributes)
  chain = re.search(r'chain_id="(\d+)"', inst.attributes)
  if channel and chain:
    return kind, channel.group(1), chain.group(1)
  return kind, comp.name, inst.name


def analyze(text: str) -> ProgramStats:
  """Per-device matmul FLOPs, HBM traffic and collectives of one execution of a compiled module."""
  computations = parse_module(text)
  executions, loops, unknown = _executions(computations)
  fused = {callee for comp in computations.values() for inst in comp.instructions.values()
           if inst.opcode == "fusion" for callee in _callees(inst)}
  flops = traffic = 0.0
  channels = {}  # (kind, channel or name) -> Collective
  for comp in computations.values():
    runs = executions[comp.name]
    if not runs:
      continue
    for inst in comp.instructions.values():
      if inst.opcode in ("dot", "convolution"):
        flops += runs * _matmul_flops(comp, inst)
      flops += runs * _flash_attention_flops(comp, inst)
      kind = _collective_kind(inst.opcode, comp.name)
      if kind:
        moved = (shape_bytes(comp.shapes.get(inst.operands[0], "")) if inst.opcode == "reduce-scatter"
                 and inst.operands else shape_bytes(inst.shape))
        key = _collective_key(kind, comp, inst)
        previous = channels.get(key)
        channels[key] = Collective(kind, max(runs, previous.executions if previous else 0),
                                   max(moved, previous.bytes if previous else 0.0))
      if comp.name not in fused and inst.opcode not in _NO_TRAFFIC and not inst.opcode.endswith("-done"):
        traffic += runs * _kernel_traffic(computations, comp, inst)
  return ProgramStats(flops, traffic, list(channels.values()), loops, unknown)
