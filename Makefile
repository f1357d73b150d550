# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install pinned versions (constraints.txt; torch==2.13.0 CPU) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JEC_COFFEA_DATA ?= $(abspath ../shared/data)
export JEC_COFFEA_DATA
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the suite is mostly single-threaded, and CI has 2 cores.
# Each test file runs whole in one process (module fixtures are built once).
TEST_WORKERS ?= 2

.PHONY: demo test install lint format clean wheel shipped-models

$(STAMP): pyproject.toml constraints.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[train,sim,cluster,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jec-coffea demo --data "$(JEC_COFFEA_DATA)" -o demo-output

# Regenerate jec_coffea/shipped_models/{deepsets,particlenet,mlp_nanoaod}.{onnx,md} (hours;
# resumable: rerun after an interruption). The work directory keeps samples, trainings, runs.
SHIP_WORKDIR ?= shipped-models-work
shipped-models: $(STAMP)
	$(BIN)/jec-coffea ship-models -o $(SHIP_WORKDIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
