# benscale: the two commands in the README (`make demo`, `make test`) do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.benscale-installed
DEV_STAMP := $(VENV)/.benscale-dev-installed
# The machine's own MPI, if it has one (an HPC site's module; not this venv's): mpi4py is
# then built against it and no MPI wheel is installed, so nothing shadows the MPI that srun
# and mpirun are built for. Without one, the mpich wheel from PyPI (docs/training.md, "MPI").
SITE_MPIEXEC := $(shell bash tools/site-mpi.sh $(VENV))
MPI_INSTALL := $(if $(SITE_MPIEXEC),--no-binary mpi4py mpi4py,mpi4py mpich)
# The venv's bin goes first on PATH: DeepSpeed JIT-compiles with the ninja it finds first,
# and torchrun, snakemake (and, without a site MPI, mpiexec) are the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
PROFILE ?= profiles/local
CORES ?= 2

.PHONY: demo test test-fast bench bench-gpu wheelhouse lint venv dev system-deps clean

## The training environment from nothing: torch first (a CPU machine's pip must not pick a
## different build), then everything pinned by requirements.lock.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock torch torchvision
	@echo "benscale: MPI for mpi4py: $(or $(SITE_MPIEXEC),the mpich wheel (no MPI on PATH))"
	$(BIN)/pip install -q -c requirements.lock -e '.[workflow]' $(MPI_INSTALL)
	touch $@

## What tests and benchmarks add (test and bench extras, requirements-dev.lock).
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/pip install -q -c requirements.lock -c requirements-dev.lock -e '.[workflow,test,bench]'
	touch $@

venv: $(STAMP)

dev: $(DEV_STAMP)

## Debian packages the tests need (Slurm + munge for the real-Slurm tests, chromium for the report).
system-deps:
	bash tools/install-system-deps.sh

## Main job: the whole DAG on the embedded default data, ending in the report.
demo: $(STAMP)
	$(BIN)/snakemake --profile $(PROFILE) --cores $(CORES)
	@echo "benscale: report in results/demo/report/index.html"

## Tests: real GeoTIFF/netCDF files, real DeepSpeed, MPI, Slurm and a real browser.
test: $(DEV_STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(DEV_STAMP)
	$(BIN)/python -m bench all

## The GPU acceptance run (one GPU, at most 8 minutes); refuses to run without CUDA.
bench-gpu: $(DEV_STAMP)
	$(BIN)/python -m bench gpu

## Wheels for a GPU node with no internet whose python3 already has PyTorch (a site
## module, a container): what benscale needs and the node lacks, for the node's Python.
## There: `bash tools/gpu-node.sh` installs them and runs the GPU acceptance run.
##   make wheelhouse NODE_PYTHON=3.12 NODE_HAVE=node-pip-list.txt
wheelhouse: $(STAMP)
	$(BIN)/python tools/wheelhouse.py --python-version $(NODE_PYTHON) --have $(NODE_HAVE) --out .whl

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint

clean:
	rm -rf $(VENV) results/demo .snakemake
