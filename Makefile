# One command for the demo, one for the tests; both build .venv from this repository's files.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_PIP_ARGS ?=
# The Well's loader, which tests/test_export_the_well.py reads exports with. Installed with
# --no-deps: its pin fsspec==2024.10.0 would downgrade the fsspec that dask, prefect and torch
# use; what it imports is installed already (torch, h5py, numpy, pyyaml, fsspec; einops in the
# dev extra).
WELL_SPEC ?= the_well==1.2.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist); each test file runs whole on one of them (session fixtures such
# as the Dask cluster and the Prefect harness are per process).
TEST_WORKERS ?= 2
LINT_DIRS := $(wildcard flows tasks storage tests benchmarks)

.PHONY: demo test lint bench clean install e2e

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "$(WELL_SPEC)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pdeflow run pipeline --config flows/configs/demo.yaml

test: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The browser test of the Prefect UI. Installs Debian's chromium and chromedriver when either is
# missing (apt-get, as root or through sudo), then the e2e extra, then runs tests/e2e only.
# Screenshots of every step go to e2e-out/.
e2e: $(STAMP)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev,e2e]"
	E2E_OUT=e2e-out $(BIN)/python -m pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

# Installs the bench extra (exponax, JAX) first: the comparison with exponax needs it, and
# `make test` never installs JAX.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs .pytest_cache
