# Two commands: `make demo` (the embedded-default pipeline end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; it serves only the offline teacher job and the PyTorch-reference tests.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
# timm (+ torchvision, pillow), only for the timm parity tests (tests/timm_side.py puts this
# folder on their own sys.path). Not in the venv: the registry's torchvision is a CUDA build that, beside
# the CPU torch, breaks transformers' model imports (the teacher job). --no-deps keeps torch untouched;
# timm's other deps (huggingface_hub, safetensors, pyyaml) come with transformers.
TIMM_SIDE := $(VENV)/timm-side
TIMM_PKGS := timm==1.0.31 torchvision==0.28.0 pillow==13.0.0
DEMO := workdir/demo
DEMO_EXAMPLES ?= 1200
PYTEST_ARGS ?=

.PHONY: demo test install clean-demo
install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[teacher,test,tfds,tpu]" $(TORCH)
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(TIMM_SIDE) $(TIMM_PKGS)
	touch $@

# Each stage skips work that is already done (or resumes it), so an interrupted demo continues.
$(DEMO)/data/records/manifest.json: | $(STAMP)
	$(BIN)/python -m acula_jax.data.synthetic --output=$(DEMO)/data/records --num_examples=$(DEMO_EXAMPLES) --seed=0

$(DEMO)/data/reports.jsonl: $(DEMO)/data/records/manifest.json
	$(BIN)/python -m acula_jax.text.reports --records=$(DEMO)/data/records --output=$@ --splits=train

$(DEMO)/data/teacher/manifest.json: $(DEMO)/data/reports.jsonl
	HF_HUB_OFFLINE=1 $(BIN)/python -m acula_jax.text.precompute --config=configs/teacher/minilm.py \
	  --reports=$< --output=$(DEMO)/data/teacher

demo: $(DEMO)/data/teacher/manifest.json
	$(BIN)/python -m acula_jax.main --config=configs/demo.py:stage=pretrain --workdir=$(DEMO)/pretrain
	$(BIN)/python -m acula_jax.main --config=configs/demo.py --workdir=$(DEMO)/acula \
	  --config.init_from=$(DEMO)/pretrain
	@echo "Demo finished: results in $(DEMO)/acula/eval/ (results.md, zeroshot.md, retrieval.md, report.html)," \
	  "training metrics in $(DEMO)/*/metrics.jsonl, aligned encoder in $(DEMO)/acula/export/."

# Two pytest workers (pytest-xdist): most tests are single-threaded compiles, so on a 2-core machine the
# suite takes about 11 minutes instead of 15.5. PYTEST_ARGS="-n 0" runs it in one process.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS) tests

clean-demo:
	rm -rf $(DEMO)
