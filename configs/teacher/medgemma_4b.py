r"""Teacher embeddings from MedGemma 4B (pretrained, 2560-d): the AcuLa paper's clinical language teacher.

`google/medgemma-4b-pt` is gated: accept the Health AI Developer Foundations terms on its Hugging Face
page and log in (`huggingface-cli login` or HF_TOKEN) before the first run; the weights (about 8.6 GB)
download once into the HF cache, after which the job runs with HF_HUB_OFFLINE=1. Needs a GPU
(bfloat16, about 9 GB):

  python -m acula_jax.text.precompute --config=configs/teacher/medgemma_4b.py \
      --reports=workdir/acula/reports.jsonl --output=workdir/acula/teacher_medgemma

The text decoder of the multimodal checkpoint is run without its LM head; the pooled vector is the
mask-aware mean of its final (normed) hidden states. Pin `--config.revision=<commit>` for
reproducible runs; the manifest records the commit that was loaded either way.
"""
from configs.teacher import minilm


def get_config():
  """Returns the MedGemma-4B teacher config."""
  config = minilm.get_config()
  config.model = "google/medgemma-4b-pt"
  config.model_class = "causal_lm"
  config.pooling = "mean"
  config.dtype = "bfloat16"
  config.batch_size = 8
  config.max_length = 256
  config.expected_dim = 2560
  return config
