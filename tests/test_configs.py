"""Every config file loads with its documented variants, and the variants change what they say."""
import pytest

from configs import acula
from configs import paper
from configs.paper import opera_ce, opera_ct, opera_gt


@pytest.mark.parametrize("module,encoder", [(opera_gt, "opera_gt"), (opera_ce, "opera_ce"),
                                            (opera_ct, "opera_ct")])
def test_paper_configs(module, encoder):
  config = module.get_config("root=gs://b/acula")
  assert config.model.name == encoder and config.loss.alignment == "linear_cka"
  assert (config.batch_size, config.num_epochs, config.optim.learning_rate) == (48, 50, 1e-5)
  assert config.optim.warmup_steps == 400 and config.optim.weight_decay == 0.01
  folders = config.data.records_dir.split(",")
  assert folders == [f"gs://b/acula/records/{f}" for f in paper.TRAIN_FOLDERS["all"]]
  assert config.data.teacher_dir == "gs://b/acula/teacher/medgemma_4b"
  assert config.init_from == f"gs://b/acula/checkpoints/{encoder}"
  assert module.get_config("reference").loss.alignment == "reference_gram"
  assert module.get_config("teacher=minilm").data.teacher_dir.endswith("teacher/minilm")
  disjoint = module.get_config("train=disjoint").data.records_dir.split(",")
  assert len(disjoint) < len(folders) and not set(paper.LEAKS) & {f.rsplit("/", 1)[1] for f in disjoint}
  with pytest.raises(ValueError, match="reference"):
    module.get_config("reference,loss=contrastive")


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown config variant 'lossy'"):
    acula.get_config("lossy=1")
  with pytest.raises(ValueError, match="loss must be one of"):
    acula.get_config("loss=cosine")


def test_audiomae_config_reads_its_fbank():
  from acula_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = acula.get_config("encoder=audiomae")
  assert config.model.name == "audiomae" and tuple(config.model.spec_shape) == (1024, 128)
  assert config.audio.frontend == "audiomae_fbank" and config.audio.window_type == "hanning"
  assert (config.audio.target_frames, config.audio.num_mel_bins) == (1024, 128)
  assert (config.audio.mean, config.audio.std) == (-4.2677393, 4.5689974)
  assert config.data.clip_frames == 1024 and input_pipeline.clip_samples(config) == 164080
  assert acula.get_config("encoder=opera_ct").audio.frontend == "log_mel"  # OPERA's


@pytest.mark.parametrize("name", ["opera_gt", "opera_ce", "opera_ct", "audiomae"])
def test_encoder_configs_start_from_the_model_module(name):
  """One registry: `models.get_model(name)` is `acula_jax.models.<name>`, whose CONFIG is every
  option's default; configs/acula.py takes it as it is and builds the encoder it names."""
  import importlib  # pylint: disable=g-import-not-at-top
  from acula_jax import models  # pylint: disable=g-import-not-at-top
  module = models.get_model(name)
  assert module is importlib.import_module(f"acula_jax.models.{name}")
  model_config = acula.get_config(f"encoder={name}").model
  for key, default in module.CONFIG.items():
    if key == "remat":  # the config asks for "auto", resolved by compile target
      continue
    value = model_config[key]
    assert (tuple(value) if isinstance(value, (list, tuple)) else value) == default, key
  assert model_config.dtype == "auto" and model_config.get("remat", "auto") == "auto"


def test_unknown_encoder_names_the_known_ones():
  from acula_jax import models  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown encoder 'opera_xx'; available: opera_gt, opera_ce"):
    models.get_model("opera_xx")
