"""Dataset adapters on the real shared copies, and bad audio files through prepare."""
import collections
import csv
import os
import shutil

import librosa
import numpy as np
import pytest
import soundfile

from acula_jax.data import datasets
from acula_jax.data import prepare
from acula_jax.data import records
from acula_jax.data.datasets import hls_cmds
from acula_jax.data.datasets import physionet2016
from acula_jax.data.datasets import yaseen2018
from acula_jax.errors import DataError


def _reference(root, letter):
  """{id: '-1'|'1'} read directly from a REFERENCE.csv (the test's own reader)."""
  with open(root / f"training-{letter}" / "REFERENCE.csv") as f:
    return {row[0]: row[1] for row in csv.reader(f) if row}


@pytest.fixture(scope="module")
def physionet(shared_data):
  return shared_data / "physionet2016"


# ----------------------------------------------------------------------------------------------------
# PhysioNet 2016.
# ----------------------------------------------------------------------------------------------------

def test_physionet_labels_match_reference(physionet):
  specs, skipped = physionet2016.list_examples(physionet, databases="c,d")
  assert skipped == []
  expected = {**_reference(physionet, "c"), **_reference(physionet, "d")}
  assert {s.id for s in specs} == set(expected)
  names = {"-1": "normal", "1": "abnormal"}
  assert all(s.labels["outcome"] == names[expected[s.id]] for s in specs)
  counts = collections.Counter(s.labels["outcome"] for s in specs)
  assert counts == collections.Counter(names[v] for v in expected.values())
  with open(physionet / "training-c" / "REFERENCE-SQI.csv") as f:
    quality = {r[0]: r[2] for r in csv.reader(f) if r}
  c_specs = [s for s in specs if s.metadata["database"] == "c"]
  assert all(s.labels["quality"] == {"0": "poor", "1": "good"}[quality[s.id]] for s in c_specs)
  assert all(s.subject_id == s.id and s.path == f"training-{s.id[0]}/{s.id}.wav" for s in specs)
  assert specs[0].metadata == {"dataset": "physionet2016", "schema": "heart", "database": specs[0].id[0]}
  assert (physionet / specs[0].path).is_file()


def test_physionet_random_split_is_seeded_stratified_and_stable(physionet):
  specs, _ = physionet2016.list_examples(physionet)
  assert len(specs) == 1482
  again, _ = physionet2016.list_examples(physionet, seed=0)
  other, _ = physionet2016.list_examples(physionet, seed=1)
  split = {s.id: s.split for s in specs}
  assert split == {s.id: s.split for s in again}
  assert split != {s.id: s.split for s in other}
  # Stratified by (database, label): every stratum of size >= 20 is close to 70/15/15.
  strata = collections.defaultdict(collections.Counter)
  for s in specs:
    strata[s.metadata["database"], s.labels["outcome"]][s.split] += 1
  for counts in strata.values():
    n = sum(counts.values())
    if n >= 20:
      assert abs(counts["train"] / n - 0.7) < 0.05 and abs(counts["test"] / n - 0.15) < 0.05
  # A record's split does not depend on which databases are listed, nor on `limit`.
  only_a, _ = physionet2016.list_examples(physionet, databases="a")
  assert all(split[s.id] == s.split for s in only_a)
  limited, _ = physionet2016.list_examples(physionet, limit=40)
  assert len(limited) == 40 and all(split[s.id] == s.split for s in limited)
  assert {s.metadata["database"] for s in limited} == set("abcdef")
  assert {s.labels["outcome"] for s in limited} == {"normal", "abnormal"}


def test_physionet_leave_database_out_and_within_database(physionet):
  specs, _ = physionet2016.list_examples(physionet, split="leave_database_out:e")
  by_split = collections.defaultdict(set)
  for s in specs:
    by_split[s.split].add(s.metadata["database"])
  assert by_split["test"] == {"e"}
  assert "e" not in by_split["train"] | by_split["valid"]
  num_test = sum(s.split == "test" for s in specs)
  assert num_test == len(_reference(physionet, "e")) == 383
  num_valid = sum(s.split == "valid" for s in specs)
  assert abs(num_valid / (len(specs) - num_test) - 0.15) < 0.01

  inside, _ = physionet2016.list_examples(physionet, split="within_database:c")
  assert {s.metadata["database"] for s in inside} == {"c"} and len(inside) == 31
  assert {s.split for s in inside} == {"train", "valid", "test"}
  for bad in ("leave_database_out", "within_database:z", "loo:e", "random:a"):
    with pytest.raises(ValueError, match="split must be"):
      physionet2016.list_examples(physionet, split=bad)
  with pytest.raises(DataError, match="needs database 'e'"):
    physionet2016.list_examples(physionet, split="leave_database_out:e", databases="a")


def _write_wav(path, wave, rate):
  soundfile.write(path, wave, rate, subtype="PCM_16")


def test_bad_files_are_skipped_with_reasons_and_good_ones_resampled(physionet, shared_data, tmp_path):
  """A PhysioNet-layout folder with 3 real recordings, an 8 kHz one and bad files."""
  folder = tmp_path / "data" / "training-a"
  folder.mkdir(parents=True)
  good = ["a0001", "a0002", "a0003"]
  for name in good:
    shutil.copy(physionet / "training-a" / f"{name}.wav", folder)
  shutil.copy(shared_data / "yaseen2018" / "N" / "New_N_001.wav", folder / "a0100.wav")  # 8 kHz
  (folder / "a0101.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage that is not audio")
  _write_wav(folder / "a0102.wav", np.zeros((0,), np.int16), 2000)           # empty
  _write_wav(folder / "a0103.wav", np.zeros(4000, np.int16), 2000)           # silent
  _write_wav(folder / "a0104.wav", np.full((4000, 2), 1000, np.int16), 2000)  # stereo
  _write_wav(folder / "a0999.wav", np.full(4000, 1000, np.int16), 2000)      # no REFERENCE row
  ids = good + ["a0100", "a0101", "a0102", "a0103", "a0104", "a0105"]        # a0105: no file
  (folder / "REFERENCE.csv").write_text("".join(f"{i},{1 if k % 2 else -1}\n" for k, i in enumerate(ids)))

  manifest = prepare.prepare("physionet2016", tmp_path / "data", tmp_path / "out", progress=False)
  assert manifest["num_examples"] == 4
  reasons = {os.path.basename(s.get("path", "")).split(".")[0] or s["id"]: s["reason"]
             for s in manifest["skipped"]}
  assert len(manifest["skipped"]) == 6
  assert "unreadable or corrupt" in reasons["a0101"]
  assert "no samples" in reasons["a0102"]
  assert "silent" in reasons["a0103"]
  assert "2 channels" in reasons["a0104"]
  assert "no row in REFERENCE.csv" in reasons["a0999"]
  assert any("a0105" in s["reason"] and "not found" in s["reason"] for s in manifest["skipped"])
  summary = prepare.summarize_skipped(manifest["skipped"])
  assert "1 x silent" in summary and "1 x contains no samples" in summary

  stored = {}
  for split in manifest["counts"]:
    source = records.AudioRecordSource(tmp_path / "out", split)
    stored.update({ex["id"]: ex for ex in (source[i] for i in range(len(source)))})
  assert set(stored) == set(good) | {"a0100"}
  for example_id, ex in stored.items():
    path = folder / f"{example_id}.wav"
    info = soundfile.info(path)
    assert ex["sample_rate"] == 16000 and ex["metadata"]["original_sample_rate"] == info.samplerate
    assert ex["num_samples"] == int(np.ceil(info.frames * 16000 / info.samplerate))
    assert ex["metadata"]["duration_s"] == pytest.approx(ex["num_samples"] / 16000, abs=1e-4)
    assert ex["metadata"]["source_path"] == f"training-a/{example_id}.wav"
  reference, _ = librosa.load(folder / "a0100.wav", sr=16000)
  np.testing.assert_allclose(stored["a0100"]["audio"], reference, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Yaseen 2018 and HLS-CMDS.
# ----------------------------------------------------------------------------------------------------

def test_yaseen_classes_and_stratified_split(shared_data):
  specs, skipped = yaseen2018.list_examples(shared_data / "yaseen2018")
  assert len(specs) == 800 and skipped == []
  per_class = collections.Counter((s.labels["valve_class"], s.split) for s in specs)
  for label in ("normal", "mitral_regurgitation", "mitral_stenosis", "mitral_valve_prolapse"):
    assert (per_class[label, "train"], per_class[label, "valid"], per_class[label, "test"]) == (140, 30, 30)
  code = {v: k for k, v in yaseen2018.LABEL_MAPS["valve_class"].items()}
  assert all(s.path.split("/")[0] == code[s.labels["valve_class"]] for s in specs)
  assert len({s.id for s in specs}) == 800
  ms = next(s for s in specs if s.id == "New_MS_001")
  assert ms.metadata == {"dataset": "yaseen2018", "schema": "heart", "diagnosis": "mitral stenosis"}


def test_hls_cmds_ls_crackle_ids_map_to_real_files(shared_data):
  root = shared_data / "hls_cmds"
  with open(root / "LS.csv", encoding="utf-8-sig") as f:
    rows = list(csv.DictReader(f))
  crackles = [r for r in rows if "Crackles" in r["Lung Sound Type"]]
  assert crackles and all(r["Lung Sound ID"].split("_")[1] in ("C", "G") for r in crackles)
  for row in rows:
    stem = hls_cmds.file_stem("LS", row["Lung Sound ID"].strip())
    assert (root / "LS" / f"{stem}.wav").is_file(), row
    code = stem.split("_")[1]
    if code in ("FC", "CC"):  # The on-disk code agrees with the CSV's type column.
      assert row["Lung Sound Type"] == {"FC": "Fine Crackles", "CC": "Coarse Crackles"}[code]
  assert hls_cmds.file_stem("LS", "M_G_LLA") == "M_CC_LLA" and hls_cmds.file_stem("HS", "F_C_A") == "F_C_A"

  specs, skipped = hls_cmds.list_examples(root)
  assert skipped == [] and len(specs) == 245 and len({s.id for s in specs}) == 245
  parts = collections.Counter(s.id.split("/")[0] for s in specs)
  assert parts == {"HS": 50, "LS": 50, "Mix": 145}
  ls = {s.id: s for s in specs if s.id.startswith("LS/")}
  assert ls["LS/M_C_LUA"].path == "LS/M_FC_LUA.wav"
  assert ls["LS/M_C_LUA"].labels == {"lung_sound": "fine_crackles"}
  assert ls["LS/M_W_LMA"].path == "LS/M_W_LMA.wav"  # The CSV cell has a leading space.
  mix = next(s for s in specs if s.id == "Mix/M0001")
  assert mix.labels == {"heart_sound": "late_systolic_murmur", "lung_sound": "rhonchi"}
  assert mix.metadata == {"sex": "female", "location": "LUSB", "sound_type": "mixed",
                          "heart_component_id": "H0001", "lung_component_id": "L0001"}
  only_hs, _ = hls_cmds.list_examples(root, part="HS")
  assert {s.id.split("/")[0] for s in only_hs} == {"HS"}
  with pytest.raises(ValueError, match="part must be"):
    hls_cmds.list_examples(root, part="XS")


def test_hls_cmds_rows_without_files_and_files_without_rows_are_counted(shared_data, tmp_path):
  root = shared_data / "hls_cmds"
  (tmp_path / "LS").mkdir()
  shutil.copy(root / "LS.csv", tmp_path)
  for name in ("M_FC_LUA.wav", "F_CC_LLA.wav", "M_N_RUA.wav"):
    os.symlink(root / "LS" / name, tmp_path / "LS" / name)
  os.symlink(root / "HS" / "F_N_A.wav", tmp_path / "LS" / "extra.wav")
  specs, skipped = hls_cmds.list_examples(tmp_path, part="LS")
  assert sorted(s.id for s in specs) == ["LS/F_G_LLA", "LS/M_C_LUA", "LS/M_N_RUA"]
  reasons = collections.Counter(s.reason.split(":")[0] for s in skipped)
  assert reasons == {"audio file not found": 47, "no row in LS.csv": 1}
  assert any(s.where.endswith("extra.wav") for s in skipped)


def test_registry_gives_each_adapter():
  for name in ("physionet2016", "yaseen2018", "hls_cmds", "table"):
    adapter = datasets.get_adapter(name)
    assert adapter.NAME == name and isinstance(adapter.LABEL_MAPS, dict) and adapter.__doc__


@pytest.mark.parametrize("seed", range(4))
def test_hls_cmds_identical_files_share_a_split(shared_data, seed):
  """The release holds one mixture twice (M0111, M0126 byte-identical): never in two splits."""
  root = shared_data / "hls_cmds"
  assert (root / "Mix" / "M0111.wav").read_bytes() == (root / "Mix" / "M0126.wav").read_bytes()
  specs, _ = hls_cmds.list_examples(root, part="Mix", seed=seed)
  split = {s.id: s.split for s in specs}
  assert split["Mix/M0111"] == split["Mix/M0126"]
