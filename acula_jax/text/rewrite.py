r"""Optional LLM rewriting of rule-based reports into fluent clinical prose (off by default).

AcuLa's reports were written by an LLM from each recording's metadata; `acula_jax.text.reports` writes
rule-based ones. This module lets a local Hugging Face causal LM rephrase them:

  python -m acula_jax.text.rewrite --reports=reports.jsonl --output=rewritten.jsonl \
      --rewrite_model=google/gemma-3-1b-it [--batch_size=8 --max_new_tokens=128]

`rewrite_reports` batches prompts with left padding (decoder-only models continue from the right
edge), decodes greedily unless `do_sample=True` (then seeded), never passes trust_remote_code, and
returns one text per input in input order. Prompts are built from `prompt` (must contain
"{report}"); with a tokenizer that has a chat template the prompt becomes the user turn. An empty
generation falls back to the original report, so the output never has holes.
"""

import json
import os
import sys

from absl import flags
from absl import logging

from acula_jax import errors
from acula_jax.text import reports as reports_lib

DEFAULT_PROMPT = ("Rewrite the following auscultation report as a short, fluent clinical note. Keep every "
                  "finding exactly as stated, add no new findings, and do not mention identifiers.\n"
                  "Report: {report}\nRewritten report:")


def load_model(model_id, *, device=None, dtype=None):
  """(model, tokenizer) of a local path or hub id; trust_remote_code is never enabled."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import AutoModelForCausalLM, AutoTokenizer  # pylint: disable=import-outside-toplevel
  tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
  model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=False,
                                               dtype=dtype or torch.float32)
  if device:
    model = model.to(device)
  return model.eval(), tokenizer


def build_prompts(reports, tokenizer, prompt=DEFAULT_PROMPT, *, use_chat_template=None):
  """The text fed to the model for each report."""
  if "{report}" not in prompt:
    raise ValueError("prompt must contain '{report}'")
  if use_chat_template is None:
    use_chat_template = bool(getattr(tokenizer, "chat_template", None))
  out = []
  for report in reports:
    text = prompt.replace("{report}", report.strip())
    if use_chat_template:
      text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
    out.append(text)
  return out


def _prepare_tokenizer(tokenizer):
  tokenizer.padding_side = "left"
  if tokenizer.pad_token_id is None:
    if tokenizer.eos_token_id is None:
      raise ValueError("tokenizer has neither a pad nor an eos token; cannot batch")
    tokenizer.pad_token = tokenizer.eos_token
  return tokenizer


def rewrite_reports(reports, model, *, tokenizer=None, batch_size=8, max_new_tokens=128, seed=0,
                    prompt=DEFAULT_PROMPT, do_sample=False, temperature=1.0, use_chat_template=None,
                    device=None):
  """Rewrites each report with a causal LM; returns the new texts in input order.

  Args:
    reports: report strings.
    model: a Hugging Face model id / local folder, or a loaded causal LM (then pass `tokenizer`).
    tokenizer: the tokenizer of a loaded model (ignored when `model` is a string).
    batch_size: prompts per `generate` call (left-padded).
    max_new_tokens: generation budget per report.
    seed: torch seed set before every batch (matters only with do_sample=True).
    prompt: template with "{report}".
    do_sample, temperature: greedy decoding unless do_sample.
    use_chat_template: None = use the tokenizer's chat template when it has one.
    device: torch device for a model loaded here.
  """
  import torch  # pylint: disable=import-outside-toplevel
  reports = list(reports)
  if batch_size < 1 or max_new_tokens < 1:
    raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
  if not reports:
    return []
  if isinstance(model, (str, os.PathLike)):
    model, tokenizer = load_model(os.fspath(model), device=device)
  if tokenizer is None:
    raise ValueError("pass the tokenizer of a loaded model")
  tokenizer = _prepare_tokenizer(tokenizer)
  if use_chat_template is None:
    use_chat_template = bool(getattr(tokenizer, "chat_template", None))
  texts = build_prompts(reports, tokenizer, prompt, use_chat_template=use_chat_template)
  outputs, fallbacks = [], 0
  for start in range(0, len(texts), batch_size):
    batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=not use_chat_template).to(model.device)
    torch.manual_seed(seed + start)
    kwargs = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if do_sample:
      kwargs["temperature"] = temperature
    with torch.no_grad():
      generated = model.generate(**batch, **kwargs)
    new = generated[:, batch["input_ids"].shape[1]:]
    for i, text in enumerate(tokenizer.batch_decode(new, skip_special_tokens=True)):
      text = text.strip()
      if not text:
        fallbacks += 1
        text = reports[start + i]
      outputs.append(text)
  if fallbacks:
    logging.warning("rewrite: %d of %d generations were empty; kept the rule-based report", fallbacks, len(reports))
  return outputs


def _define_flags():
  flags.DEFINE_string("reports", None, "Input reports (.jsonl or .csv, see reports.read_reports).")
  flags.DEFINE_string("report_column", "report", "Report column/field of the input.")
  flags.DEFINE_string("output", None, "Output JSONL of {id, report}.")
  flags.DEFINE_string("rewrite_model", None, "Hugging Face model id or local folder; rewriting is off without it.")
  flags.DEFINE_integer("batch_size", 8, "Prompts per generate call.")
  flags.DEFINE_integer("max_new_tokens", 128, "Generation budget per report.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("do_sample", False, "Sample instead of greedy decoding.")
  flags.mark_flags_as_required(["reports", "output", "rewrite_model"])


def main(argv):
  del argv
  cfg = flags.FLAGS
  rows = reports_lib.read_reports(cfg.reports, column=cfg.report_column)
  texts = rewrite_reports([r for _, r in rows], cfg.rewrite_model, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, do_sample=cfg.do_sample)
  tmp = f"{cfg.output}.partial"
  with open(tmp, "w", encoding="utf-8") as f:
    for (example_id, _), text in zip(rows, texts):
      f.write(json.dumps({"id": example_id, "report": text}, ensure_ascii=False) + "\n")
  os.replace(tmp, cfg.output)
  print(f"rewrote {len(texts)} reports to {cfg.output}", file=sys.stderr)


if __name__ == "__main__":
  errors.run_program(main, _define_flags)
