# Two entry points for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[reference,dev]'
	touch $(STAMP)

demo: install
	$(PY) -m analysis.audit checkpoints/zoo/digits-mlp-normout-spatiotemporal.pt

test: install
	$(PY) -m pytest -m "not slow"

test-all: install
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
