"""Per-schema report templates (on real metadata rows) and the optional LLM rewriting (tiny offline Gemma-3)."""

import csv
import os
import re

import pytest

from acula_jax.text import report_templates
from acula_jax.data.datasets import get_adapter
from acula_jax.text.reports import read_reports, report_for

def _circor_specs(shared_data):
  specs, _ = get_adapter("circor").list_examples(shared_data / "metadata" / "circor_dataset", check_audio=False)
  return specs


def test_schema_dispatch_and_generic_fallback():
  assert report_templates.schema_for({"dataset": "icbhi"}) == "lung"
  assert report_templates.schema_for({"schema": "heart", "dataset": "icbhi"}) == "heart"
  assert report_templates.schema_for({"dataset": "synthetic"}) is None
  # Without a schema the generic renderer of reports.py is used, unchanged.
  assert report_for({"Weird field": "abc"}, {}, seed=0) == "Weird field: abc."
  with pytest.raises(ValueError, match="unknown report schema"):
    report_templates.render("eyes", {}, {}, lambda o: o[0])


def test_circor_reports_follow_the_columns(shared_data):
  specs = _circor_specs(shared_data)
  first = {}
  for s in specs:
    first.setdefault(s.id.split("_")[0], s)
  assert len(first) == 1568
  for pid, s in first.items():
    text = report_for(s.metadata, s.labels, seed=0)
    low = text.lower()
    assert not re.search(rf"\b{pid}\b", text) and "nan" not in low.split() and "cc201" not in low, text
    assert not re.search(r"\b(train|valid|test|split)\b", low), text
    assert s.labels["outcome"].lower() in low, text
    murmur = s.labels["murmur"]
    if murmur == "Absent":
      assert re.search(r"no murmur|no audible murmur|murmur absent", low), text
    elif murmur == "Unknown":
      assert re.search(r"unknown|could not be determined|unclear", low), text
    else:
      timing = s.metadata.get("systolic_murmur_timing")
      if timing:
        assert timing.lower() in low, text
        assert s.metadata["systolic_murmur_grading"] in text, text
        assert s.metadata["systolic_murmur_pitch"].lower() in low, text
        assert s.metadata["systolic_murmur_quality"].lower() in low, text
      loud = s.metadata.get("most_audible_location")
      if loud:
        name = report_templates._VALVES[loud.lower()]  # pylint: disable=protected-access
        assert name in low, text


def test_reports_vary_with_seed_and_are_deterministic(shared_data):
  s = next(x for x in _circor_specs(shared_data) if x.labels["murmur"] == "Present")
  texts = [report_for(s.metadata, s.labels, seed=i) for i in range(10)]
  assert len(set(texts)) >= 4
  assert texts == [report_for(s.metadata, s.labels, seed=i) for i in range(10)]


def test_real_gen_reports_are_accepted_and_match_patients(shared_data):
  folder = shared_data / "metadata" / "circor_dataset"
  patients = {s.id.split("_")[0] for s in _circor_specs(shared_data)}
  total = 0
  for path in sorted(folder.glob("*_report.csv")):
    rows = read_reports(path, column="Gen_Report")
    with open(path, newline="", encoding="utf-8") as f:
      assert len(rows) == len(list(csv.DictReader(f)))
    assert {i for i, _ in rows} <= patients and all(len(t) > 20 for _, t in rows)
    total += len(rows)
  assert total == len(patients)


def test_icbhi_cycle_reports_state_the_annotations(shared_data):
  specs, _ = get_adapter("icbhi").list_examples(shared_data / "metadata" / "ICBHI", check_audio=False,
                                                split="subject", per_cycle=True)
  for s in specs[::37]:
    low = report_for(s.metadata, s.labels, seed=3).lower()
    c, w = s.labels["crackles"], s.labels["wheezes"]
    if c and w:
      assert "crackles and wheezes" in low, low
    elif c or w:
      assert ("crackles" if c else "wheezes") in low and "present" in low or "heard" in low, low
    else:
      assert re.search(r"no crackles or wheezes|no adventitious|absent", low), low
    assert s.metadata["chest_location"] in low and s.metadata["device"].lower() in low


def test_lung_and_heart_tables_render_their_facts(shared_data):
  meta = shared_data / "metadata"
  kauh, _ = get_adapter("kauh").list_examples(meta / "KAUH", check_audio=False)
  for s in kauh[::11]:
    low = report_for(s.metadata, s.labels, seed=1).lower()
    sound = s.metadata["sound_type"]
    assert sound in low or (sound == "normal" and "vesicular" in low), low
    assert not low.startswith("a 18") and not low.startswith("a 8")
    if s.labels["diagnosis"] == "normal":
      assert "healthy" in low or "normal" in low
  tr, _ = get_adapter("respiratory_tr").list_examples(meta / "TR", check_audio=False)
  for s in tr[::25]:
    assert f"stage {s.labels['copd_severity']}" in report_for(s.metadata, s.labels, seed=0).lower()
  zch, _ = get_adapter("zchsound").list_examples(meta / "ZCHSound", check_audio=False)
  names = {"ASD": "atrial septal defect", "VSD": "ventricular septal defect", "PFO": "patent foramen ovale",
           "PDA": "patent ductus arteriosus", "NORMAL": "normal"}
  for s in zch[::13]:
    assert names[s.labels["diagnosis"]] in report_for(s.metadata, s.labels, seed=2).lower()
  cos, _ = get_adapter("coswara").list_examples(meta / "Coswara", check_audio=False, task="smoker")
  for s in cos[::17]:
    low = report_for(s.metadata, s.labels, seed=0).lower()
    assert ("non-smoker" in low or "does not smoke" in low) == (s.labels["smoker"] == "non-smoker"), low
    assert "cough" in low


def test_cough_and_lung_function_templates():
  meta = {"dataset": "ukcovid", "sound": "exhalation", "sex": "female", "age_group": "aged 45-54",
          "symptoms": ["cough", "sore throat"], "smoker": False, "covid_test_result": "Positive",
          "participant_identifier": "p123", "split": "test"}
  for seed in range(5):
    low = report_for(meta, {"covid": "positive"}, seed=seed).lower()
    assert "exhalation" in low and "sore throat" in low and re.search(r"covid-19 positive|positive for covid|sars", low)
    assert "p123" not in low and "test" not in low.split()
  neg = report_for({"dataset": "coughvid", "sound": "cough", "covid_status": "healthy"}, {}, seed=0).lower()
  assert "covid" in neg and "positive" not in neg
  lf = {"dataset": "mmlung", "sound": "deep_breath", "fvc": 3.5, "fev1": 2.0, "fev1_fvc": 0.57}
  for seed in range(4):
    low = report_for(lf, {}, seed=seed).lower()
    assert "2.00 l" in low and "3.50 l" in low and ("0.57" in low or "57%" in low) and "obstruct" in low
  rr = report_for({"dataset": "nosemic", "sound": "nasal breathing", "respiratory_rate": 24.0,
                   "recording_tags": ["x9", "y7"]}, {}, seed=0).lower()
  assert "24" in rr and "x9" not in rr and "tachypnoea" in rr


# ----------------------------------------------------------------------------------------------------
# rewrite.py with a tiny randomly initialised Gemma-3 and an offline-trained tokenizer.
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm():
  os.environ.setdefault("HF_HUB_OFFLINE", "1")   # Everything here is local; never reach a hub.
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tk = pytest.importorskip("tokenizers")
  corpus = ["No murmur is heard.", "Crackles and wheezes are present.", "Rewrite the report below",
            "Report: Rewritten report:", "COPD stage 3 asthma cough"] * 4
  tok = tk.Tokenizer(tk.models.WordLevel(unk_token="<unk>"))
  tok.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
  tok.decoder = tk.decoders.WordPiece(prefix="##")
  tok.train_from_iterator(corpus, tk.trainers.WordLevelTrainer(special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]))
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                                   eos_token="<eos>", unk_token="<unk>")
  torch.manual_seed(0)
  config = transformers.Gemma3TextConfig(
      vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
      num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=64, initializer_range=1.0,
      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  return model, tokenizer


REPORTS = ["No murmur is heard.", "Crackles and wheezes are present. Crackles", "COPD stage 3", "asthma cough"]


def test_rewrite_batching_ordering_and_determinism(tiny_lm):
  from acula_jax.text import rewrite  # pylint: disable=import-outside-toplevel
  model, tokenizer = tiny_lm
  kw = dict(tokenizer=tokenizer, max_new_tokens=3, prompt="{report}")
  one = rewrite.rewrite_reports(REPORTS, model, batch_size=1, **kw)
  three = rewrite.rewrite_reports(REPORTS, model, batch_size=3, **kw)
  assert one == three and len(one) == len(REPORTS)   # Left padding: batching does not change greedy output.
  assert len(set(one)) == len(REPORTS)
  reversed_out = rewrite.rewrite_reports(REPORTS[::-1], model, batch_size=4, **kw)
  assert reversed_out == one[::-1]   # Outputs follow input order.
  assert all(len(tokenizer(t, add_special_tokens=False).input_ids) <= 3 for t in one)
  assert rewrite.rewrite_reports([], model, **kw) == []
  sampled = [rewrite.rewrite_reports(REPORTS, model, batch_size=4, do_sample=True, seed=7, **kw) for _ in range(2)]
  assert sampled[0] == sampled[1]


def test_rewrite_prompt_handling(tiny_lm, tmp_path):
  from acula_jax.text import rewrite  # pylint: disable=import-outside-toplevel
  model, tokenizer = tiny_lm
  seen = []
  original = model.generate

  def spy(**kwargs):
    seen.append(tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True))
    assert tokenizer.padding_side == "left" and (kwargs["input_ids"][:, -1] != tokenizer.pad_token_id).all()
    return original(**kwargs)

  model.generate = spy
  try:
    rewrite.rewrite_reports(REPORTS[:2], model, tokenizer=tokenizer, batch_size=2, max_new_tokens=2)
  finally:
    del model.generate
  assert [s.startswith("Rewrite the") and s.rstrip().endswith("Rewritten report:") for s in seen[0]] == [True] * 2
  assert "No murmur is heard." in seen[0][0] and "Crackles and wheezes" in seen[0][1]
  with pytest.raises(ValueError, match="{report}"):
    rewrite.rewrite_reports(REPORTS, model, tokenizer=tokenizer, prompt="no placeholder")
  tokenizer.chat_template = "{% for m in messages %}<bos>[user] {{ m['content'] }}{% endfor %} [model]"
  try:
    prompts = rewrite.build_prompts(["x y"], tokenizer, "R: {report}")
  finally:
    tokenizer.chat_template = None
  assert prompts == ["<bos>[user] R: x y [model]"]
  # A saved model is loaded by path (trust_remote_code off) and gives the same text.
  model.save_pretrained(tmp_path)
  tokenizer.save_pretrained(tmp_path)
  from_disk = rewrite.rewrite_reports(REPORTS[:2], str(tmp_path), max_new_tokens=3, prompt="{report}")
  assert from_disk == rewrite.rewrite_reports(REPORTS[:2], model, tokenizer=tokenizer, max_new_tokens=3,
                                              prompt="{report}")
