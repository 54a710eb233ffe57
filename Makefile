# Development entry points for jupyter-tfenv.  Everything that needs Docker goes through
# scripts/devenv.py, which makes sure an engine answers (starting one as root on Debian/Ubuntu
# when none does) and builds the test images (a rebuild only when a recipe changes).
#
#   make setup    .venv with jupyter-tfenv installed editable, plus its test extras
#   make engine   a Docker engine that answers (DOCKER_HOST, the default socket, or one started)
#   make images   the test images; TFENV_TEST_IMAGES=official pulls the official tags instead
#   make test     setup + engine (with the GPU stand-in) + images + the whole test suite
#   make lint     ruff check, ruff format --check, mypy
#   make demo / make bench / make lab   engine + images, then the demo, benchmark or JupyterLab

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEVENV := $(PY) scripts/devenv.py
# What make test runs, e.g. make test TESTS=tests/integration PYTEST_ARGS="-k images -x"
TESTS ?= tests
PYTEST_ARGS ?=

.PHONY: help setup engine images test demo bench lab lint

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

setup: $(VENV)/.tfenv-setup

# Reinstall when pyproject.toml changes; code changes need nothing (editable install).
$(VENV)/.tfenv-setup: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make setup: '$(PYTHON) -m venv $(VENV)' failed; on Debian/Ubuntu install" \
	       "python3-venv (apt-get install -y python3-venv) and run make setup again" >&2; \
	  exit 1; }
	$(PY) -m pip install -e '.[test]'
	@touch $@

engine: setup
	$(DEVENV) engine

images: setup
	$(DEVENV) images

# The GPU stand-in only takes effect when devenv starts dockerd itself (fresh machines, CI);
# the tests probe and report whether GPU requests reach it.
test: setup
	$(DEVENV) all --gpu-standin
	bash scripts/ensure_test_tools.sh
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) $(TESTS)

demo: setup
	$(DEVENV) all
	$(PY) scripts/demo.py

bench: setup
	$(DEVENV) all
	$(PY) scripts/bench.py

lab: setup
	$(DEVENV) all
	bash scripts/lab.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m mypy scripts
