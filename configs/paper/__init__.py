r"""AcuLa at the paper's settings (arXiv 2512.04847), shared by opera_gt.py, opera_ce.py and opera_ct.py.

Everything lives under one data root, ROOT (benchmarks/reproduce_paper.md builds it step by step):

  ROOT/records/<folder>         `acula_jax.data.prepare` output, one folder per task family, named as the
                                task registry names them (`acula_jax.evaluators.tasks`, each task's `records`)
  ROOT/reports/train.jsonl      `acula_jax.text.reports` of the training folders' train split
  ROOT/teacher/medgemma_4b      `acula_jax.text.precompute` with configs/teacher/medgemma_4b.py
  ROOT/teacher/minilm           ... with configs/teacher/minilm.py (the offline, CPU-sized teacher)
  ROOT/checkpoints/<encoder>    `acula_jax.tools.convert` of the released OPERA checkpoint

Variants (after the colon, comma separated; a value may not contain a comma):
  loss=linear_cka|contrastive|reference_gram
                  the alignment loss; default linear_cka (pair-aware, this project's default)
  reference       shorthand for loss=reference_gram: the authors' d x d Gram formula, which ignores
                  which report goes with which recording; use it to reproduce their numbers
  teacher=medgemma|minilm
                  which teacher embeddings to read (ROOT/teacher/medgemma_4b or ROOT/teacher/minilm);
                  the text head's input width comes from the teacher manifest either way
  root=PATH       the data root (default: workdir/paper, relative to the repository root); a local
                  path or gs://BUCKET/PATH
  train=all|disjoint
                  which prepared folders' train split is aligned on (TRAIN_FOLDERS):
                  all       one folder per dataset and id space, all 10 datasets (the default; the
                            paper's exact alignment set is not known to us). Some recordings in it are
                            test recordings of other registered tasks; see LEAKS.
                  disjoint  only folders whose train split holds no recording that any `acula` task
                            tests on (drops COUGHVID, Coswara, MMLung and NoseMic from alignment)

Paper settings (configs/acula.py already has them; set again here so that this file states them):
AdamW lr 1e-5 (linear warm-up over 400 steps, then linear decay to 0), weight decay 0.01, global batch
48, 50 epochs, gradient clipping at norm 1.0, alignment and MAE (or COLA) losses weighted 1 : 1, the
alignment embedding from a second, unmasked encoder pass, 8.16 s crops. After training the run probes
the converted OPERA encoder ("init from ...") and the aligned one on the `acula` task group, with the
log-mel and openSMILE eGeMAPS baselines beside them.
"""
import ml_collections

from acula_jax import evaluators
from configs import acula

DEFAULT_ROOT = "workdir/paper"
TEACHERS = {"medgemma": "medgemma_4b", "minilm": "minilm"}

# Prepared folders (under ROOT/records) whose train split is aligned on. A dataset with two task
# folders of the same recordings (COUGHVID T5/T6, Coswara T8/T9) contributes one of them: ids must
# be unique across folders, and the two folders split the recordings differently. The clinical task's
# folder is kept (T5 COVID-19, T8 smoker), so that task's test recordings never reach alignment.
TRAIN_FOLDERS = {
    "all": (
        "ukcovid_exhalation", "ukcovid_cough",        # T1, T2: one publisher split per participant
        "coughvid_covid",                             # T5 (coughvid_sex holds the same uuids)
        "icbhi_copd",                                 # T7
        "coswara_smoker",                             # T8 (coswara_sex holds the same participants)
        "kauh_obstructive",                           # T10
        "respiratory_tr",                             # T11
        "mmlung_deep_breath", "mmlung_vowel_o",       # T13-T18
        "nosemic",                                    # T19
        "circor",                                     # CirCor murmur + outcome
        "zchsound_clean",                             # ZCHSound
    ),
    "disjoint": (
        "ukcovid_exhalation", "ukcovid_cough", "icbhi_copd", "kauh_obstructive", "respiratory_tr",
        "circor", "zchsound_clean",
    ),
}

# What `train=all` lets into alignment that another task then tests on (the reports state these
# labels, so the encoder may have been taught the test answer):
LEAKS = {
    "coughvid_covid": "t6_coughvid_sex: under the default seeded split, coughvid_sex splits the same uuids "
                      "with another stratification, so part of its test set is in coughvid_covid's train "
                      "split (reports state sex); prepared with split=opera both use OPERA's lists",
    "coswara_smoker": "t9_coswara_sex: likewise for the same participants (reports state sex)",
    "mmlung_deep_breath": "t13-t15: leave-one-subject-out makes every recording a test recording of "
                          "some fold (reports state FVC, FEV1 and FEV1/FVC)",
    "mmlung_vowel_o": "t16-t18: as above",
    "nosemic": "t19: leave-one-user-out, as above (reports state the respiratory rate)",
}


def get_paper_config(encoder: str, arg=None) -> ml_collections.ConfigDict:
  """The paper-setting config of `encoder` (opera_gt, opera_ce or opera_ct); see the module docstring."""
  args = acula.parse_arg(arg, loss="", reference=False, teacher="medgemma", root=DEFAULT_ROOT,
                         train="all")
  if args.reference and args.loss not in ("", "reference_gram"):
    raise ValueError(f"`reference` means loss=reference_gram; it cannot be combined with loss={args.loss}")
  loss = "reference_gram" if args.reference else (args.loss or "linear_cka")
  if args.teacher not in TEACHERS:
    raise ValueError(f"teacher must be one of {sorted(TEACHERS)}, got {args.teacher!r}")
  if args.train not in TRAIN_FOLDERS:
    raise ValueError(f"train must be one of {sorted(TRAIN_FOLDERS)}, got {args.train!r}")
  root = args.root.rstrip("/")
  if not root:
    raise ValueError("root must name the data root (see configs/paper/__init__.py)")

  config = acula.get_config(f"encoder={encoder},loss={loss},teacher={args.teacher}")

  config.data.records_dir = ",".join(f"{root}/records/{folder}" for folder in TRAIN_FOLDERS[args.train])
  config.data.teacher_dir = f"{root}/teacher/{TEACHERS[args.teacher]}"
  config.data.train_split = "train"
  config.init_from = f"{root}/checkpoints/{encoder}"
  if encoder == "opera_gt":
    # The released OPERA-GT's decoder (16 Swin blocks, 16 heads), which `acula_jax.tools.convert` writes
    # into the export: the encoder must match it for init_from, and the MAE term then continues from
    # a trained decoder instead of a fresh one.
    config.model.update(decoder="swin", decoder_width=256, decoder_depth=16, decoder_heads=16)

  config.optim.update(learning_rate=1e-5, end_learning_rate_factor=0.0, warmup_steps=400,
                      weight_decay=0.01, clip_norm=1.0)
  config.batch_size = 48
  config.num_epochs = 50
  config.num_train_steps = -1
  config.loss.align_weight = 1.0
  config.loss.ssl_weight = 1.0
  config.align_features = "full"

  config.evals.probe = evaluators.default_config("linear_probe", tasks="acula", data_root=f"{root}/records",
                                                 baselines=("logmel", "egemaps"))
  return config
