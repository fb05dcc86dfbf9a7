# Two commands set everything up on a fresh machine with Python 3.11:
#   make run    create .venv, install torch then the project, run the main job (IMM on Ray: jobs/imm.py)
#   make test   same install, then the test suite
#   make test-fast  the same without the tests marked slow (real jobs, kills, sweeps): the edit-test loop
# GPU users: put their own torch build into .venv first, then `make run TORCH_SPEC=`
# (an empty TORCH_SPEC skips the CPU torch install); see README "Installing on a GPU machine".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
BIN := $(VENV)/bin
# No model hub is needed by the default run or the tests: fail fast instead of retrying the network.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python jobs/imm.py $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) runs mlruns mlflow.db .pytest_cache
