# distillscope: `make demo` and `make test` each set everything up on a fresh machine, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
# torch and torchvision pins per architecture (CPU-usable builds; see docs/install.md)
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
STAMP := $(VENV)/.installed-$(ARCH)
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup data demo test lint format bench mutation clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

data:
	@bash scripts/get_data.sh

demo: setup data
	$(BIN)/distillscope run configs/quickstart.yaml

test: setup data lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

bench: setup
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/epoch_time.py
	$(BIN)/python benchmarks/e2kd_overhead.py

# on demand, not in CI: mutmut on the maths, attacks and checkpoints (docs/testing.md), e.g.
# make mutation MUTATION_ARGS="functional/agreement.py"
mutation: setup
	PYTHON=$(BIN)/python bash scripts/mutation.sh $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .mutation
