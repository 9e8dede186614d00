"""The evaluation: metrics against scikit-learn on the same predictions, leave-out protocols, the feature
cache, results files and report.html, the CLI's encoder handling, zero-shot and retrieval."""
import dataclasses
import html.parser
import json
import re
import types
import xml.etree.ElementTree as ET

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import model_selection
from sklearn import preprocessing

from acula_jax import checkpointing
from acula_jax import errors
from acula_jax import evaluators
from acula_jax import input_pipeline
from acula_jax.evaluators import features as features_lib
from acula_jax.evaluators import linear_probe
from acula_jax.evaluators import main as eval_main
from acula_jax.evaluators import probe
from acula_jax.evaluators import report
from acula_jax.evaluators import retrieval
from acula_jax.evaluators import tasks
from acula_jax.evaluators import zeroshot
from acula_jax.models import acula
from acula_jax.models import heads as heads_lib
from configs import demo

PROBE = {"learning_rate": 1e-2, "decay": 0.97, "l2": 1e-5, "epochs": 6, "batch_size": 64}


def _blob_index(n=60, *, dim=6, seed=0, classes=("no", "yes"), groups=None, databases=None):
  """An index + features: separable classes, splits by position, optional subjects and databases."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, len(classes), n)
  centres = rng.normal(size=(len(classes), dim)) * 2
  features = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
  index = []
  for i in range(n):
    meta = {"database": databases[i % len(databases)]} if databases else {}
    index.append({"id": f"r{i}", "split": ("train", "train", "train", "valid", "test")[i % 5],
                  "subject_id": f"s{i // (groups or 1)}", "labels": {"y": classes[y[i]]}, "metadata": meta})
  return index, features


def test_classification_metric_matches_sklearn_on_the_same_predictions():
  index, features = _blob_index()
  task = tasks.Task("t", "table", "mixed", "y", ("no", "yes"))
  outcome, detail = linear_probe.probe_task(task, index, features, PROBE, seeds=2)
  assert outcome["per_seed"][0] == pytest.approx(sk_metrics.roc_auc_score(detail["y"], detail["proba"][:, 1]))
  assert outcome["mean"] == pytest.approx(np.mean(outcome["per_seed"]))
  assert outcome["std"] == pytest.approx(np.std(outcome["per_seed"]))
  assert (outcome["num_train"], outcome["num_valid"], outcome["num_test"]) == (36, 12, 12)
  test_labels = [index[r]["labels"]["y"] == "yes" for r in range(60) if index[r]["split"] == "test"]
  assert detail["y"].tolist() == [int(v) for v in test_labels]


def test_within_database_is_the_mean_over_databases():
  index, features = _blob_index(120, databases="ab")
  task = tasks.Task("t", "table", "mixed", "y", ("no", "yes"), protocol="within_database")
  outcome, _ = linear_probe.probe_task(task, index, features, PROBE, seeds=2)
  assert set(outcome["per_fold"]) == {"database a", "database b"} and outcome["num_folds"] == 2
  assert outcome["mean"] == pytest.approx(np.mean(list(outcome["per_fold"].values())))


def test_leave_one_out_pools_predictions_and_matches_sklearn():
  index, features = _blob_index(30, classes=("a", "b", "c"))
  task = tasks.Task("t", "table", "mixed", "y", ("a", "b", "c"), protocol="loo")
  outcome, detail = linear_probe.probe_task(task, index, features, PROBE, seeds=2)
  assert outcome["num_folds"] == 30 and outcome["num_test"] == 30 and len(detail["y"]) == 30
  expected = sk_metrics.roc_auc_score(detail["y"], detail["proba"], multi_class="ovr")
  assert outcome["per_seed"][0] == pytest.approx(expected)


def test_loso_least_squares_matches_an_sklearn_reference():
  rng = np.random.default_rng(3)
  subjects = np.repeat(np.arange(8), 3)
  features = rng.normal(size=(24, 5)).astype(np.float32)
  target = 10 + features @ rng.normal(size=5) + 0.5 * rng.normal(size=24)
  index = [{"id": f"r{i}", "split": "train", "subject_id": f"p{s}", "labels": {"fvc": float(target[i])},
            "metadata": {}} for i, s in enumerate(subjects)]
  task = tasks.Task("t", "mmlung", "breath", "fvc", kind=tasks.REGRESSION, protocol="loso", head="ols")
  outcome, detail = linear_probe.probe_task(task, index, features, PROBE, seeds=2)
  maes, mapes = [], []
  for train, test in model_selection.LeaveOneGroupOut().split(features, target, subjects):
    scaler = preprocessing.StandardScaler().fit(features[train])
    model = linear_model.LinearRegression().fit(scaler.transform(features[train]), target[train])
    pred = model.predict(scaler.transform(features[test]))
    maes.append(sk_metrics.mean_absolute_error(target[test], pred))
    mapes.append(100 * sk_metrics.mean_absolute_percentage_error(target[test], pred))
  np.testing.assert_allclose(list(outcome["per_fold"].values()), maes, rtol=1e-4)
  assert outcome["mean"] == pytest.approx(np.mean(maes), rel=1e-4)
  assert outcome["std"] == pytest.approx(np.std(maes), rel=1e-3)
  assert outcome["mape_mean"] == pytest.approx(np.mean(mapes), rel=1e-4)
  assert outcome["metric"] == "mae" and len(detail["pred"]) == 24


def test_loso_mlp_head_trains_per_fold():
  rng = np.random.default_rng(4)
  features = rng.normal(size=(30, 4)).astype(np.float32)
  target = 16 + 3 * features[:, 0]
  index = [{"id": f"r{i}", "split": "train", "subject_id": f"u{i // 6}", "labels": {"rr": float(target[i])},
            "metadata": {}} for i in range(30)]
  # Only subjects outside the (fixed) validation set are test folds here: one training shape, one compile.
  valid = tasks._valid_groups({f"u{k}": "" for k in range(5)}, 0.2, 0)  # pylint: disable=protected-access
  folds = tuple(u for u in (f"u{k}" for k in range(5)) if u not in valid)[:2]
  task = tasks.Task("t", "nosemic", "breath", "rr", kind=tasks.REGRESSION, protocol="loso", head="mlp",
                    fold_groups=folds)
  outcome, _ = linear_probe.probe_task(task, index, features, dict(PROBE, epochs=300), seeds=2)
  assert list(outcome["per_fold"]) == [f"subject_id {u}" for u in folds]
  assert outcome["mean"] < np.mean(np.abs(target - target.mean()))


def test_regression_on_an_official_split_reports_every_seed():
  rng = np.random.default_rng(5)
  features = rng.normal(size=(40, 4)).astype(np.float32)
  target = 2.0 + features[:, 1]
  index = [{"id": f"r{i}", "split": ("train", "train", "valid", "test")[i % 4], "subject_id": f"r{i}",
            "labels": {"fev1": float(target[i])}, "metadata": {}} for i in range(40)]
  task = tasks.Task("t", "table", "mixed", "fev1", kind=tasks.REGRESSION, head="mlp")
  outcome, detail = linear_probe.probe_task(task, index, features, dict(PROBE, epochs=100), seeds=2)
  assert len(outcome["per_seed"]) == 2 and outcome["mean"] == pytest.approx(np.mean(outcome["per_seed"]))
  assert detail["y"].tolist() == target[3::4].astype(np.float64).tolist()
  assert probe.mae(detail["y"], detail["pred"]) <= max(outcome["per_seed"]) + 1e-6   # the seed average


# ----------------------------------------------------------------------------------------------------
# End to end on the tiny corpus.
# ----------------------------------------------------------------------------------------------------

def _context(corpus, out_dir, config=None):
  config = config or demo.get_config("tiny")
  return evaluators.Context(audio_config=config.audio.to_dict(), out_dir=out_dir,
                            default_window=input_pipeline.clip_samples(config),
                            fallback_records=str(corpus / "records"))


def _export(encoder, workdir, write_more=None) -> str:
  checkpointing.export_encoder(workdir, encoder, demo.get_config("tiny").model, write_more=write_more)
  return str(workdir / "export")


@pytest.fixture(name="encoder", scope="module")
def encoder_fixture():
  return acula.build_encoder(demo.get_config("tiny").model, rngs=nnx.Rngs(0))


class _Checker(html.parser.HTMLParser):
  """Checks that non-void tags nest properly."""
  VOID = {"meta", "br", "rect", "polyline", "circle", "img", "input", "link"}

  def __init__(self):
    super().__init__()
    self.stack = []

  def handle_starttag(self, tag, attrs):
    if tag not in self.VOID:
      self.stack.append(tag)

  def handle_startendtag(self, tag, attrs):
    pass

  def handle_endtag(self, tag):
    assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
    self.stack.pop()


def _check_html(text):
  checker = _Checker()
  checker.feed(text)
  assert not checker.stack, checker.stack
  svgs = re.findall(r"<svg .*?</svg>", text, flags=re.S)
  for svg in svgs:
    ET.fromstring(svg)   # Each figure is well-formed XML.
  return svgs


def test_linear_probe_writes_results_and_reuses_cached_features(tiny_corpus, encoder, tmp_path, monkeypatch):
  config = demo.get_config("tiny")
  entry = config.evals.probe
  entry.update(tasks="heart_murmur", tsne_points=40)
  evaluator = evaluators.get_evaluator(entry.type)(entry, _context(tiny_corpus, tmp_path / "eval", config))
  encoders = [("before", _export(encoder, tmp_path / "w"))]
  results = evaluator.run(encoders)
  saved = json.loads((tmp_path / "eval" / "results.json").read_text())
  assert saved["encoders"] == [linear_probe.BASELINE, "before"]
  outcome = saved["tasks"]["heart_murmur"]["before"]
  assert outcome["metric"] == "auroc" and len(outcome["per_seed"]) == entry.probe.seeds
  assert saved["task_info"]["heart_murmur"]["protocol"] == "official"
  # Two clips per subject in the corpus: both levels by default, with the subject level nested.
  assert outcome["level"] == "recording" and outcome["subject"]["level"] == "subject"
  assert outcome["subject"]["num_test"] * 2 == outcome["num_test"] == outcome["num_test_subjects"] * 2
  markdown = (tmp_path / "eval" / "results.md").read_text()
  assert "| heart_murmur | recording | AUROC |" in markdown and "| heart_murmur | subject | AUROC |" in markdown
  sizes = saved["task_info"]["heart_murmur"]["sizes"]
  assert sizes["test"]["recordings"] == outcome["num_test"] and sizes["test"]["subjects"] * 2 == outcome["num_test"]
  assert sum(sizes["train"]["classes"].values()) == sizes["train"]["recordings"] == outcome["num_train"]
  svgs = _check_html((tmp_path / "eval" / "report.html").read_text())
  assert len(svgs) == 4   # the ROC figure, the two levels' intervals and the t-SNE map
  assert 'aria-label="ROC curves of heart_murmur"' in svgs[0]
  cached = sorted(p.name for p in (tmp_path / "eval" / "features").glob("*/*"))
  assert "index" in cached and len(cached) == 3   # index, baseline, encoder

  def no_extraction(*args, **kwargs):
    raise AssertionError("features were extracted again")
  monkeypatch.setattr(features_lib, "_extract_split", no_extraction)
  again = evaluator.run(encoders)
  assert again["tasks"] == results["tasks"]


def test_cli_encoders_from_exports(tiny_corpus, encoder, tmp_path):
  workdir = tmp_path / "w"
  checkpointing.export_encoder(workdir, encoder, demo.get_config("tiny").model)
  assert eval_main.parse_encoders(["a=/x", "b"], checkpoint="/y") == [("a", "/x"), ("b", "/y")]
  with pytest.raises(ValueError, match="--checkpoint"):
    eval_main.parse_encoders(["opera_gt"])
  (workdir / "config.json").write_text(json.dumps({"init_from": "", "loss": {"alignment": "linear_cka",
                                                                             "align_weight": 1.0},
                                                  "data": {"teacher_dir": "t"}}))
  assert evaluators.workdir_encoders(workdir) == [("aligned (linear_cka)", str(workdir / "export"))]
  cfg = types.SimpleNamespace(evals=["linear_probe"], tasks="heart_murmur", workdir=str(workdir), baselines="",
                              seeds=2, epochs=8, feature_batch_size=8, data_root=str(tmp_path / "root"),
                              tsne_points=0, aggregate="both", subject_score="max", bootstrap=50,
                              protocol="official", probes=["opera"], compare=[])
  entry = eval_main.evals_from_flags(cfg)["linear_probe"]
  assert entry.probe.seeds == 2 and entry.probe.epochs == 8 and entry.baselines == ()
  context = eval_main.context_from_workdir(workdir, aligned_pair=False)
  setup = linear_probe.Evaluator(entry, context).setup(eval_main.parse_encoders([f"exported={workdir}"]))
  exported = setup.encoders[0]
  assert exported.frames == 32 and exported._module is None   # pylint: disable=protected-access
  assert exported.digest == features_lib.directory_digest(workdir / "export")
  task = dataclasses.replace(tasks.get("heart_murmur"), records_dir=str(tiny_corpus / "records"))
  results = linear_probe.run([task, tasks.get("t7_icbhi_copd")], setup)   # the second has no records: skipped
  assert list(results["tasks"]) == ["heart_murmur"] and "t7_icbhi_copd" not in results["tasks"]
  assert results["scoring"] == {"aggregate": "both", "subject_score": "max", "bootstrap": 50, "comparison": ""}
  low, high = results["tasks"]["heart_murmur"]["exported"]["subject"]["ci95"]
  assert 0 <= low <= high <= 1
  assert "--option=task=copd" in results["skipped_tasks"]["t7_icbhi_copd"]
  # Loading the export gives back the parameters it was made from.
  module = exported.module()
  assert features_lib.params_digest(module) == features_lib.params_digest(encoder)


def test_report_renders_regression_and_classification():
  rng = np.random.default_rng(0)
  side = {"recordings": 12, "subjects": 4, "classes": {"p": 5, "q": 4, "r": 3}}
  sizes = {"folds": 1, "train": side, "valid": side, "test": side}
  results = {"encoders": ["a", "b"], "probe": {"seeds": 2}, "skipped_tasks": {"x": "no records"},
             "task_info": {"cls": {"kind": "classification", "classes": ["p", "q", "r"], "description": "d <&>",
                                   "sizes": sizes},
                           "reg": {"kind": "regression", "classes": [], "sizes": sizes}},
             "tasks": {"cls": {n: {"metric": "auroc", "mean": 0.7, "std": 0.1} for n in "ab"},
                       "reg": {n: {"metric": "mae", "mean": 1.5, "std": 0.2, "mape_mean": 9.0} for n in "ab"}}}
  details = {"cls": {n: {"y": rng.integers(0, 3, 40), "proba": rng.dirichlet(np.ones(3), 40)} for n in "ab"},
             "reg": {n: {"y": rng.normal(size=20), "pred": rng.normal(size=20)} for n in "ab"}}
  maps = [{"task": "cls", "classes": ["p", "q", "r"],
           "encoders": {n: {"xy": rng.normal(size=(15, 2)), "label": list(rng.integers(-1, 3, 15))} for n in "ab"}}]
  page = report.html_page(results, details, maps)
  svgs = _check_html(page)
  assert len(svgs) == 5 and "d &lt;&amp;&gt;" in page and "no records" in page   # ROC, scatter, 2 intervals, map
  assert page.count('<td class="best">') == 2
  assert "12 rec / 4 subj (p 5, q 4, r 3)" in page
  # Encoders named on the command line are not called "before and after alignment"; a run's own pair is.
  assert "alignment" not in page
  results["scoring"] = {"comparison": "alignment"}
  assert "Embedding maps (before and after alignment)" in report.html_page(results, details, maps)
  # A comparison becomes a forest plot (tasks and their mean) in the page and a starred table in results.md.
  row = {"diff": 0.05, "ci95": [0.01, 0.09], "p_value": 0.01, "excludes_zero": True}
  results["comparisons"] = {"a vs b": {"opera": {"recording": {"tasks": {"cls": row}, "mean_over_tasks": row}}}}
  forest = [svg for svg in _check_html(report.html_page(results, details, maps)) if "paired differences" in svg]
  assert len(forest) == 1 and ">mean over tasks<" in forest[0] and 'stroke-dasharray="4 3"' in forest[0]
  assert "| cls | +0.050 * | [+0.010, +0.090] | 0.010 |" in report.comparisons_table(results)
  fpr, tpr = report.macro_roc(details["cls"]["a"]["proba"], details["cls"]["a"]["y"], 3)
  assert np.trapezoid(tpr, fpr) == pytest.approx(probe.auroc(details["cls"]["a"]["proba"], details["cls"]["a"]["y"], 3),
                                                 abs=0.03)


# ----------------------------------------------------------------------------------------------------
# Zero-shot and retrieval.
# ----------------------------------------------------------------------------------------------------

def _fake_embed(texts):
  """A deterministic stand-in for the teacher: a hashed bag of words, 24-d."""
  out = np.zeros((len(texts), 24), np.float32)
  for i, text in enumerate(texts):
    for word in re.findall(r"[a-z]+", text.lower()):
      out[i, hash(word) % 24] += 1.0
  return out


def test_zero_shot_scores_and_recall_are_exact_with_identity_heads():
  identity = heads_lib.Heads(audio=lambda x: x, text=lambda x: x, log_temperature=np.log(10.0), manifest={})
  classes = np.eye(3)
  audio = np.array([[1, 0.1, 0], [0, 1, 0.2], [0.1, 0, 1], [0.9, 0, 0.3]])
  scores = zeroshot.zero_shot_scores(identity, audio, classes)
  assert scores.argmax(1).tolist() == [0, 1, 2, 0] and np.allclose(scores.sum(1), 1)
  reports = ["a", "b", "c", "a"]   # recordings 0 and 3 share a report text
  ret = retrieval.retrieval(identity, audio, audio, reports)
  assert ret["audio_to_report_recall@1"] == 1.0 and ret["num_recordings"] == 4
  same = np.eye(4, dtype=bool)
  assert retrieval.recall_at_k(-np.eye(4), same, ks=(1, 4)) == {"recall@1": 0.0, "recall@4": 1.0}


def test_heads_export_load_and_zero_shot_on_the_tiny_corpus(tiny_corpus, encoder, tmp_path):
  config = demo.get_config("tiny")
  model = types.SimpleNamespace(
      audio_head=acula.heads.ProjectionMLP(config.model.width, 16, 8, rngs=nnx.Rngs(1)),
      text_head=acula.heads.ProjectionMLP(24, 16, 8, rngs=nnx.Rngs(2)),
      log_temperature=nnx.Param(jnp.asarray(2.0)), text_dim=24)
  config.heads.hidden_dim, config.heads.out_dim = 16, 8
  teacher = {"model": "fake", "dim": 24, "config": {}}
  aligned = _export(encoder, tmp_path / "w", lambda d: checkpointing.export_heads(d, model, config, teacher))
  heads = checkpointing.load_heads(tmp_path / "w")   # a workdir holding export/heads
  assert heads.log_temperature == pytest.approx(2.0)
  x = np.random.default_rng(0).normal(size=(3, config.model.width)).astype(np.float32)
  np.testing.assert_allclose(heads.audio(x), model.audio_head(x), rtol=1e-6)

  context = _context(tiny_corpus, tmp_path / "eval", config)
  plain = _export(encoder, tmp_path / "plain")   # no heads: skipped
  encoders = [("plain", plain), ("aligned", aligned)]
  task_spec = "heart_murmur,lung_sound"
  zs = zeroshot.Evaluator(evaluators.default_config("zeroshot", tasks=task_spec), context, _fake_embed).run(encoders)
  ret = retrieval.Evaluator(evaluators.default_config("retrieval", tasks=task_spec), context, _fake_embed).run(encoders)
  assert list(zs) == list(ret) == ["aligned"]
  for name in ("heart_murmur", "lung_sound"):
    r = zs["aligned"]["tasks"][name]
    assert 0.0 <= r["auroc"] <= 1.0 and r["num_test"] > 0
    assert set(r["sentences"]) == set(map(str, tasks.get(name).classes))
    t = ret["aligned"]["tasks"][name]
    assert t["audio_to_report_recall@1"] <= t["audio_to_report_recall@5"] <= t["audio_to_report_recall@10"]
    assert t["num_recordings"] == r["num_test"]
  assert "zero-shot AUROC" in (tmp_path / "eval" / "zeroshot.md").read_text()
  assert "R@1 a->r" in (tmp_path / "eval" / "retrieval.md").read_text()
  with pytest.raises(errors.UsageError, match="projection heads"):
    zeroshot.Evaluator(evaluators.default_config("zeroshot", tasks=task_spec), context, _fake_embed).run(
        [("plain", plain)])
  # Heads that are there but unreadable are an error, not an export without heads.
  manifest = tmp_path / "w" / "export" / "heads" / "manifest.json"
  manifest.write_text(manifest.read_text().replace(checkpointing.HEADS_FORMAT, "acula_jax.heads/0"))
  with pytest.raises(errors.DataError, match="heads format 'acula_jax.heads/0'"):
    zeroshot.Evaluator(evaluators.default_config("zeroshot", tasks=task_spec), context, _fake_embed).run(encoders)
  assert zeroshot.class_sentences(tasks.get("heart_murmur")) == [
      "Heart sound recording. No murmur.", "Heart sound recording. A murmur is heard."]


def test_feature_cache_key_follows_the_records_content_not_the_write(tmp_path):
  """An identical re-prepare (another `created` time, another folder) keeps the cache key; changed
  audio changes it."""
  import time  # pylint: disable=g-import-not-at-top
  from acula_jax.data import records, synthetic  # pylint: disable=g-import-not-at-top
  examples = [synthetic.generate_example(i, seed=0, duration_s=0.5) for i in range(6)]
  records.write_audio_records(tmp_path / "a" / "records", examples, dataset="synthetic", num_shards=2)
  time.sleep(1.1)  # a later `created` stamp
  records.write_audio_records(tmp_path / "b" / "records", examples, dataset="synthetic", num_shards=2)
  key = lambda d: features_lib.RecordsStore(tmp_path / d / "records", tmp_path / "cache").key
  manifests = [records.read_manifest(tmp_path / d / "records") for d in "ab"]
  assert manifests[0]["created"] != manifests[1]["created"] and key("a") == key("b")
  changed = [dict(e) for e in examples]
  changed[3]["audio"] = changed[3]["audio"] * np.float32(0.5)
  records.write_audio_records(tmp_path / "c" / "records", changed, dataset="synthetic", num_shards=2)
  assert key("c") != key("a")
