"""acula_jax.data.prepare: CLI, options, workers, chunks, the generic table adapter and the PhysioNet chain."""
import os

# The teacher in the end-to-end test is MiniLM from its wheel; nothing may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile

from acula_jax import errors
from acula_jax.data import prepare
from acula_jax.data import records
from acula_jax.data.datasets import common
from acula_jax.data.datasets import table
from acula_jax.data.datasets import yaseen2018
from acula_jax.errors import DataError
import teacher_table

REPO = pathlib.Path(__file__).resolve().parents[1]


def _read_all(directory):
  """{split: [example, ...]} in stored order."""
  manifest = records.read_manifest(directory)
  out = {}
  for split in manifest["counts"]:
    source = records.AudioRecordSource(directory, split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def _write_table(path, header, rows):
  path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
  return path


# ----------------------------------------------------------------------------------------------------
# Options and flags.
# ----------------------------------------------------------------------------------------------------

def test_parse_options():
  assert prepare.parse_options(["split=leave_database_out:e", "limit=40"]) == {
      "split": "leave_database_out:e", "limit": "40"}
  assert prepare.parse_options([], "label_columns=a,b,seed=1,table=t.csv") == {
      "label_columns": "a,b", "seed": "1", "table": "t.csv"}
  assert prepare.parse_options(["part=HS"], "limit=3") == {"part": "HS", "limit": "3"}
  with pytest.raises(ValueError, match="not key=value"):
    prepare.parse_options(["limit"])
  with pytest.raises(ValueError, match="given twice"):
    prepare.parse_options(["limit=1"], "limit=2")


def test_option_strings_take_the_type_of_the_adapter_default():
  seen = {}

  def list_examples(data_dir, *, check_audio=True, fractions=(0.7, 0.15, 0.15), seed=0, limit=None,
                    part="HS"):
    seen.update(check_audio=check_audio, fractions=fractions, seed=seed, limit=limit, part=part, dir=data_dir)
    return [], []

  adapter = types.SimpleNamespace(NAME="fake", list_examples=list_examples)
  options = prepare.parse_options(["check_audio=false", "limit=4"], "fractions=0.6,0.2,0.2,part=LS")
  prepare.call_adapter(adapter, "/d", options, seed=5)  # pylint: disable=protected-access
  assert seen == dict(check_audio=False, fractions=(0.6, 0.2, 0.2), seed=5, limit="4", part="LS", dir="/d")
  with pytest.raises(ValueError, match="option check_audio=.maybe.: option value .maybe. is not a boolean"):
    prepare.call_adapter(adapter, "/d", {"check_audio": "maybe"}, seed=0)  # pylint: disable=protected-access
  assert prepare.coerce_option(3, True) == 3  # Python callers' values pass unchanged.


def test_import_defines_no_flags():
  from absl import flags
  assert not {"dataset", "data_dir", "option", "chunk_seconds"} & set(flags.FLAGS)


def test_unknown_option_is_named(shared_data, tmp_path):
  with pytest.raises(ValueError, match=r"no option\(s\) \['part'\].*known: \['limit', 'seed'\]"):
    prepare.prepare("yaseen2018", shared_data / "yaseen2018", tmp_path, options={"part": "HS"})
  with pytest.raises(DataError, match="does not exist"):
    prepare.prepare("yaseen2018", tmp_path / "nowhere", tmp_path / "out")


def _assert_same_records(a_dir, b_dir):
  a, b = _read_all(a_dir), _read_all(b_dir)
  assert a.keys() == b.keys()
  for split in a:
    assert [e["id"] for e in a[split]] == [e["id"] for e in b[split]]
    for x, y in zip(a[split], b[split]):
      np.testing.assert_array_equal(x["audio"], y["audio"])
      assert x["metadata"] == y["metadata"] and x["labels"] == y["labels"]


def test_cli_with_process_pool_matches_serial(shared_data, tmp_path):
  """The CLI (both option forms) with 2 spawned workers writes what one in-process decoder writes."""
  out = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "acula_jax.data.prepare", "--dataset=yaseen2018",
       f"--data_dir={shared_data / 'yaseen2018'}", f"--output={out}", "--option=limit=6",
       "--options=seed=3", "--num_shards=1", "--workers=2", "--pool=process"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "wrote 6 recordings (" in result.stdout and "skipped 0" in result.stdout
  specs, _ = yaseen2018.list_examples(shared_data / "yaseen2018", seed=3, limit=6)
  stored = _read_all(out)
  assert {ex["id"]: split for split, exs in stored.items() for ex in exs} == {s.id: s.split for s in specs}
  ex = next(iter(stored.values()))[0]
  assert ex["dataset"] == "yaseen2018" and ex["metadata"]["original_sample_rate"] == 8000
  assert ex["labels"]["valve_class"] in yaseen2018.LABEL_MAPS["valve_class"].values()
  prepare.prepare("yaseen2018", shared_data / "yaseen2018", tmp_path / "serial", seed=3, num_shards=1,
                  options={"limit": "6"}, progress=False)
  _assert_same_records(tmp_path / "serial", out)


# ----------------------------------------------------------------------------------------------------
# Workers, chunks, segments.
# ----------------------------------------------------------------------------------------------------

def test_thread_workers_preserve_order_and_content(shared_data, tmp_path):
  kwargs = dict(options={"limit": "12"}, num_shards=1, progress=False)
  data = shared_data / "yaseen2018"
  prepare.prepare("yaseen2018", data, tmp_path / "serial", **kwargs)
  prepare.prepare("yaseen2018", data, tmp_path / "threads", workers=2, pool="thread", **kwargs)
  _assert_same_records(tmp_path / "serial", tmp_path / "threads")


def test_ordered_map_is_ordered_with_a_small_window():
  items = list(range(50))
  assert list(prepare.ordered_map(lambda x: x * x, items, workers=3, pool="thread")) == [x * x for x in items]
  with pytest.raises(ValueError, match="pool must be"):
    list(prepare.ordered_map(abs, items, workers=2, pool="fiber"))


@pytest.fixture
def user_dir(shared_data, tmp_path):
  """A user's folder: links to a 15 s HLS-CMDS recording and two short Yaseen ones."""
  root = tmp_path / "user"
  (root / "audio").mkdir(parents=True)
  os.symlink(shared_data / "hls_cmds" / "HS" / "F_N_A.wav", root / "audio" / "long.wav")
  for name in ("New_N_001", "New_MR_001"):
    cls = name.split("_")[1]
    os.symlink(shared_data / "yaseen2018" / cls / f"{name}.wav", root / "audio" / f"{name}.wav")
  return root


def test_chunks_split_whole_recordings(user_dir, tmp_path):
  _write_table(user_dir / "table.csv", ["path", "subject_id", "split"],
               [["audio/long.wav", "s1", "train"], ["audio/New_N_001.wav", "s2", "train"]])
  prepare.prepare("table", user_dir, tmp_path / "whole", progress=False)
  whole = {e["id"]: e for e in _read_all(tmp_path / "whole")["train"]}
  prepare.prepare("table", user_dir, tmp_path / "chunks", chunk_seconds=4, num_shards=1, progress=False)
  chunks = _read_all(tmp_path / "chunks")["train"]
  ids = [e["id"] for e in chunks]
  # 15 s -> 4 + 4 + 4 + 3 s (the 3 s tail is over half a chunk); a 2-4 s file stays one chunk.
  assert ids == ["audio/long#0", "audio/long#1", "audio/long#2", "audio/long#3", "audio/New_N_001#0"]
  long_chunks = [e for e in chunks if e["id"].startswith("audio/long#")]
  assert [e["num_samples"] for e in long_chunks] == [64000, 64000, 64000, 48000]
  np.testing.assert_array_equal(np.concatenate([e["audio"] for e in long_chunks]),
                                whole["audio/long"]["audio"])
  assert long_chunks[2]["metadata"]["recording_id"] == "audio/long"
  assert long_chunks[2]["metadata"]["chunk_number"] == 2 and long_chunks[2]["subject_id"] == "s1"
  assert long_chunks[3]["metadata"]["duration_s"] == 3.0
  prepare.prepare("table", user_dir, tmp_path / "chunks7", chunk_seconds=7, num_shards=1, progress=False)
  assert [e["num_samples"] for e in _read_all(tmp_path / "chunks7")["train"]][:2] == [112000, 112000]


def test_segments_are_cut_and_bad_ones_skipped(user_dir, tmp_path, monkeypatch):
  calls = []
  decode_audio = prepare.audio_io.decode_audio
  monkeypatch.setattr(prepare.audio_io, "decode_audio",
                      lambda path, *a, **k: calls.append(path) or decode_audio(path, *a, **k))
  _write_table(user_dir / "cycles.csv", ["path", "subject_id", "split", "start_s", "end_s", "site"],
               [["audio/long.wav", "s1", "train", 1.5, 4, "apex"],
                ["audio/long.wav", "s1", "train", 14, "", ""],
                ["audio/long.wav", "s1", "train", 20, 21, "apex"]])
  manifest = prepare.prepare("table", user_dir, tmp_path / "out", options={"table": "cycles.csv"},
                             progress=False)
  stored = {e["id"]: e for e in _read_all(tmp_path / "out")["train"]}
  assert {k: v["num_samples"] for k, v in stored.items()} == {"audio/long@1.5-4": 40000,
                                                               "audio/long@14-": 16000}
  assert stored["audio/long@1.5-4"]["metadata"]["segment_start_s"] == 1.5
  assert stored["audio/long@1.5-4"]["metadata"]["site"] == "apex"
  [skip] = manifest["skipped"]
  assert skip["id"] == "audio/long@20-21" and "outside" in skip["reason"]
  assert len(calls) == 1  # Consecutive segments of one file share one decode.


# ----------------------------------------------------------------------------------------------------
# The generic table adapter, as a new user would use it.
# ----------------------------------------------------------------------------------------------------

def test_table_of_yaseen_files_with_subject_split(shared_data, tmp_path):
  """A CSV describing some Yaseen files (paths relative to data_dir), one row pointing nowhere."""
  data = shared_data / "yaseen2018"
  rows = []
  for k, cls in enumerate(["N", "MR", "MS", "MVP"]):
    for i in range(1, 5):
      rows.append([f"{cls}/New_{cls}_{i:03d}.wav", f"p{(4 * k + i) % 6}", cls, 40 + i])
  rows.append(["N/missing.wav", "p9", "N", 50])
  table_path = _write_table(tmp_path / "mine.csv", ["path", "subject_id", "diagnosis", "age"], rows)
  manifest = prepare.prepare("table", data, tmp_path / "out", progress=False,
                             options=prepare.parse_options([f"table={table_path}",
                                                            "label_columns=diagnosis"]))
  assert manifest["num_examples"] == 16 and manifest["label_keys"] == ["diagnosis"]
  [skip] = manifest["skipped"]
  assert "missing.wav" in skip["reason"] and skip["path"].endswith("mine.csv:row 17 (line 18)")
  stored = [e for exs in _read_all(tmp_path / "out").values() for e in exs]
  split_of = {}
  for ex in stored:
    assert split_of.setdefault(ex["subject_id"], ex["split"]) == ex["split"]  # subjects stay whole
  ex = next(e for e in stored if e["id"] == "MR/New_MR_002")
  assert ex["labels"] == {"diagnosis": "MR"} and ex["metadata"]["age"] == "42"


@pytest.mark.parametrize("content,match", [
    ("", "empty file"),
    ("path,subject_id\n", "header but no rows"),
    ("path,who\nx.wav,1\n", r"missing column\(s\) \['subject_id', 'label'\]"),
    ("path,subject_id\nx.wav,1\n", r"missing column\(s\) \['label'\]"),
    ("path,subject_id,label\nx.wav,1,a\ny.wav,2\n", "row 2 \\(line 3\\): 2 cells, header has 3"),
    ("path,subject_id,label\nx.wav,1,a,extra\n", "row 1 \\(line 2\\): 4 cells"),
    ("path,subject_id,label,label\nx.wav,1,a,b\n", "repeats column"),
    ("path,subject_id,label\n,1,a\n", "row 1 \\(line 2\\): empty path"),
    ("path,subject_id,label\nx.wav,1,a\nx.wav,2,b\n", "row 2 \\(line 3\\): duplicate id 'x'"),
    ("path,subject_id,label,split\nx.wav,1,a,tr ain\n", "split 'tr ain'"),
    ("path,subject_id,label,split\nx.wav,1,a,train\ny.wav,1,a,test\n", "subject '1' is in split"),
    ("path,subject_id,label,start_s\nx.wav,1,a,soon\n", "start_s/end_s must be numbers"),
    (b"path,subject_id,label\nx\xff.wav,1,a\n", "unparseable CSV"),
])
def test_table_errors_name_file_and_row(tmp_path, content, match):
  for name in ("x.wav", "y.wav"):
    soundfile.write(tmp_path / name, np.full(800, 0.1, np.float32), 8000)
  path = tmp_path / "t.csv"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(DataError, match=match) as info:
    table.list_examples(tmp_path, table="t.csv", label_columns="label")
  assert str(path) in str(info.value)


def test_table_overlap_allowed_on_request_and_empty_labels_skipped(tmp_path):
  for name in ("x.wav", "y.wav", "z.wav"):
    soundfile.write(tmp_path / name, np.full(800, 0.1, np.float32), 8000)
  _write_table(tmp_path / "t.csv", ["path", "subject_id", "label", "split"],
               [["x.wav", 1, "a", "train"], ["y.wav", 1, "b", "test"], ["z.wav", 2, "", "train"]])
  specs, skipped = table.list_examples(tmp_path, table="t.csv", label_columns="label",
                                       allow_subject_overlap="true")
  assert [(s.id, s.split) for s in specs] == [("x", "train"), ("y", "test")]
  assert len(skipped) == 1 and "empty label" in skipped[0].reason


def test_table_parquet_needs_a_reader(tmp_path, monkeypatch):
  for module in ("pyarrow", "pyarrow.parquet", "pandas"):
    monkeypatch.setitem(sys.modules, module, None)  # `import` of a None entry raises ImportError.
  (tmp_path / "t.parquet").write_bytes(b"PAR1")
  with pytest.raises(ImportError, match="t.parquet: reading parquet tables needs pyarrow or pandas"):
    table.list_examples(tmp_path, table="t.parquet")


def test_table_parquet_is_read(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  for name in ("x.wav", "y.wav"):
    soundfile.write(tmp_path / name, np.full(800, 0.1, np.float32), 8000)
  data = pa.table({"path": ["x.wav", "y.wav", "gone.wav"], "subject_id": ["1", "2", "3"],
                   "murmur": [1, 0, 1], "age": [3.5, float("nan"), 7.0]})
  pq.write_table(data, tmp_path / "t.parquet")
  specs, skipped = table.list_examples(tmp_path, table="t.parquet", label_columns="murmur")
  assert [(s.id, s.labels, s.metadata) for s in specs] == [
      ("x", {"murmur": 1}, {"age": 3.5}), ("y", {"murmur": 0}, {"age": None})]
  assert len(skipped) == 1 and skipped[0].where.endswith("t.parquet:row 3")
  (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
  with pytest.raises(DataError, match="bad.parquet: unreadable parquet file"):
    table.list_examples(tmp_path, table="bad.parquet")


def test_duplicate_ids_fail_before_decoding(tmp_path):
  specs = [common.ExampleSpec(id="r1", path="a.wav", subject_id="", split="train", labels={}, metadata={}),
           common.ExampleSpec(id="r1", path="b.wav", subject_id="", split="train", labels={}, metadata={})]
  with pytest.raises(DataError, match=r"r1: duplicate example id in dataset 'demo' \(a.wav and b.wav\)"):
    prepare.write_examples(specs, tmp_path / "out", dataset="demo", data_dir=tmp_path, progress=False)
  assert not (tmp_path / "out").exists()


def test_everything_skipped_is_an_error(tmp_path):
  _write_table(tmp_path / "table.csv", ["path", "subject_id"], [["gone.wav", 1]])
  with pytest.raises(DataError, match=r"no usable recordings \(1 skipped: 1 x audio file not found\)"):
    prepare.prepare("table", tmp_path, tmp_path / "out", progress=False)


# ----------------------------------------------------------------------------------------------------
# PhysioNet 2016 end to end: prepare -> reports -> MiniLM -> 2 training steps.
# ----------------------------------------------------------------------------------------------------

def test_physionet_prepare_reports_teacher_train(shared_data, tmp_path):
  from acula_jax.text import precompute
  from acula_jax.text import reports
  from acula_jax import train
  from configs import physionet2016
  from configs.teacher import minilm

  data = tmp_path / "records"
  manifest = prepare.prepare("physionet2016", shared_data / "physionet2016", data, num_shards=2,
                             options={"limit": "24", "split": "leave_database_out:e"}, progress=False)
  assert manifest["num_examples"] == 24 and manifest["skipped"] == []
  stored = _read_all(data)
  assert {e["metadata"]["database"] for e in stored["test"]} == {"e"}
  train_ids = {e["id"] for e in stored["train"]}
  assert len(train_ids) >= physionet2016.get_config("tiny").batch_size  # one batch at least

  report_file = tmp_path / "reports.jsonl"
  assert reports.write_reports(data, report_file, splits=("train",)) == len(train_ids)
  # The heart template states the outcome, never the database letter or the file.
  outcome = {e["id"]: e["labels"]["outcome"] for e in stored["train"]}
  for example_id, text in reports.read_reports(report_file):
    assert outcome[example_id] in text.lower() and "training-" not in text and "2000" not in text
  teacher_config = minilm.get_config()
  teacher_config.num_shards = 1
  teacher = precompute.run(teacher_config, report_file, tmp_path / "teacher", progress=False)
  ids, embeddings, _ = teacher_table.read_teacher(tmp_path / "teacher")
  # Only training recordings reach the teacher, and so the alignment.
  assert set(ids) == train_ids and teacher["count"] == len(train_ids) and embeddings.shape[1] == 384
  held_out = {e["id"] for split in ("valid", "test") for e in stored[split]}
  assert not set(ids) & held_out

  config = physionet2016.get_config("tiny")
  config.data.records_dir = str(data)
  config.data.teacher_dir = str(tmp_path / "teacher")
  config.num_train_steps = 2
  config.log_every_steps = 1
  metrics = train.train_and_evaluate(config, tmp_path / "work")
  assert np.isfinite(metrics["align_loss"]) and np.isfinite(metrics["ssl_loss"])
  assert (tmp_path / "work" / "export" / "manifest.json").is_file()
  lines = [json.loads(l) for l in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [1, 2]


def test_reports_leave_out_prepare_bookkeeping():
  from acula_jax.text import reports
  text = reports.report_for({"database": "a", "source_path": "training-a/a0001.wav", "duration_s": 3.0,
                             "original_sample_rate": 2000, "segment_start_s": 1.0, "segment_end_s": 2.0},
                            {"heart_sound": "abnormal"})
  for word in ("training-a", "2000", "Segment"):
    assert word not in text


def test_table_default_split_is_stratified_by_the_first_label(tmp_path):
  """40 subjects, 8 of them 'rare': a plain seeded 70/15/15 cut can leave valid or test without a
  rare subject; the default split keeps each class in every split, subjects whole."""
  wave = np.sin(np.linspace(0, 300, 4000)).astype(np.float32)
  rows = []
  for i in range(40):
    soundfile.write(tmp_path / f"{i}.wav", 0.3 * wave * (1 + i / 100), 8000)
    rows.append([f"{i}.wav", f"s{i}", "rare" if i % 5 == 0 else "common"])
  _write_table(tmp_path / "table.csv", ["path", "subject_id", "dx"], rows)
  for seed in range(5):
    manifest = prepare.prepare("table", tmp_path, tmp_path / f"out{seed}", progress=False,
                               options={"label_columns": "dx", "seed": str(seed)})
    for split in ("train", "valid", "test"):
      assert set(manifest["label_counts"][split]["dx"]) == {"rare", "common"}, (seed, split)
    assert sum(manifest["subject_counts"].values()) == 40


def test_summary_names_labels_skips_and_thin_splits(tmp_path):
  """A 3-row table without label columns: prepare says so, names the skipped file and its reason,
  and warns about the empty and tiny splits (issue: 'no silent surprises')."""
  wave = np.sin(np.linspace(0, 300, 8000)).astype(np.float32)
  for i in range(2):
    soundfile.write(tmp_path / f"{i}.wav", 0.3 * wave * (1 + i / 10), 8000)
  _write_table(tmp_path / "table.csv", ["path", "subject_id", "split", "diagnosis"],
               [["0.wav", "a", "train", "normal"], ["1.wav", "b", "train", "murmur"],
                ["gone.wav", "c", "test", "normal"]])
  manifest = prepare.prepare("table", tmp_path, tmp_path / "out", progress=False)
  text = prepare.summary(manifest, tmp_path / "out")
  assert "labels: none" in text and "--option=label_columns=" in text
  assert "metadata: diagnosis" in text
  assert "skipped " in text and "gone.wav" in text and "audio file not found" in text
  assert f"'skipped' in {tmp_path / 'out' / 'manifest.json'}" in text
  assert "split 'test' is empty" in text and "split 'train' has only 2 subject(s)" in text
  assert manifest["subject_counts"] == {"train": 2}
  labelled = prepare.prepare("table", tmp_path, tmp_path / "out2", progress=False,
                             options={"label_columns": "diagnosis"})
  assert labelled["label_counts"] == {"train": {"diagnosis": {"murmur": 1, "normal": 1}}}
  assert "labels: diagnosis" in prepare.summary(labelled, tmp_path / "out2")


def test_prepare_into_a_prepared_folder_is_up_to_date_or_refused(tmp_path):
  wave = np.sin(np.linspace(0, 300, 8000)).astype(np.float32)
  for i in range(4):
    soundfile.write(tmp_path / f"{i}.wav", 0.3 * wave * (1 + i / 10), 8000)
  _write_table(tmp_path / "table.csv", ["path", "subject_id", "split", "dx"],
               [[f"{i}.wav", f"s{i}", "train" if i < 2 else "test", "ab"[i % 2]] for i in range(4)])
  out = tmp_path / "out"
  first = prepare.prepare("table", tmp_path, out, options={"label_columns": "dx"}, progress=False)
  stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  again = prepare.prepare("table", tmp_path, out, options={"label_columns": "dx"}, progress=False)
  assert again["up_to_date"] and again["created"] == first["created"]
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
  with pytest.raises(errors.UsageError, match="pass --overwrite"):
    prepare.prepare("table", tmp_path, out, options={}, progress=False)  # no labels now
  soundfile.write(tmp_path / "3.wav", 0.2 * wave, 8000)  # changed audio
  with pytest.raises(errors.UsageError, match="other inputs or options"):
    prepare.prepare("table", tmp_path, out, options={"label_columns": "dx"}, progress=False)
  replaced = prepare.prepare("table", tmp_path, out, options={"label_columns": "dx"}, progress=False,
                             overwrite=True)
  assert not replaced.get("up_to_date") and replaced["inputs"] != first["inputs"]
