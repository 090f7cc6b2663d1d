# benscale: the two commands in the README (`make demo`, `make test`) do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.benscale-installed
# The venv's bin goes first on PATH: DeepSpeed JIT-compiles with the ninja it finds first,
# and the mpiexec of the pip mpich wheel must match mpi4py's MPI.
export PATH := $(CURDIR)/$(BIN):$(PATH)
PROFILE ?= profiles/local
CORES ?= 2

.PHONY: demo test test-fast bench lint venv system-deps clean

## Create .venv from nothing: torch first (stack.md), then everything pinned by requirements.lock.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock torch torchvision
	$(BIN)/pip install -q -c requirements.lock -e '.[workflow,mpi,test,bench]'
	touch $@

venv: $(STAMP)

## Debian packages the tests need (Slurm + munge for the real-Slurm tests, chromium for the report).
system-deps:
	bash tools/install-system-deps.sh

## Main job: the whole DAG on the embedded default data, ending in the report.
demo: $(STAMP)
	$(BIN)/snakemake --profile $(PROFILE) --cores $(CORES)
	@echo "benscale: report in results/demo/report/index.html"

## Tests: real GeoTIFF/netCDF files, real DeepSpeed, MPI, Slurm and a real browser.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench all

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint

clean:
	rm -rf $(VENV) results/demo .snakemake
