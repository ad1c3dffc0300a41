# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# A stamp per requirements set: re-install only when the pinned files change.
RUNTIME_STAMP := $(VENV)/.runtime-$(shell cat requirements/runtime.txt requirements/dev.txt setup.py | sha1sum | cut -c1-12)
TOOLKIT_STAMP := $(VENV)/.toolkit-$(shell cat requirements/compress.txt requirements/cluster.txt | sha1sum | cut -c1-12)
# The edge server (PyTriton, numpy<2) has a venv of its own.
EDGE_VENV := .venv-edge
EDGE_STAMP := $(EDGE_VENV)/.edge-$(shell cat requirements/edge.txt | sha1sum | cut -c1-12)

.PHONY: setup setup-toolkit edge-venv test demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): $(PY)
	$(PIP) install -r requirements/runtime.txt -r requirements/dev.txt
	$(PIP) install --no-deps -e .
	touch $@

# The cluster extra (Ray) comes along so the test suite runs the Ray sweep test instead of skipping it.
$(TOOLKIT_STAMP): $(RUNTIME_STAMP)
	$(PIP) install -r requirements/compress.txt -r requirements/cluster.txt
	touch $@

setup: $(RUNTIME_STAMP)

setup-toolkit: $(TOOLKIT_STAMP)

$(EDGE_STAMP):
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements/edge.txt
	touch $@

edge-venv: $(EDGE_STAMP)

test: setup-toolkit edge-venv
	$(PY) -m pytest

demo: setup edge-venv
	$(PY) -m robot_compress.tools.demo

bench: setup-toolkit edge-venv
	$(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check robot_compress test bench

clean:
	rm -rf build install log demo_output .pytest_cache
