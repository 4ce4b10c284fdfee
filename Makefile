# Two entry points for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo screenshots test test-all lint

install: $(STAMP)

# setuptools' editable install finds the packages through a finder that Python asks only after
# sys.path, so a plain folder of the current folder named like a package (checkpoints/ of model
# files) would hide it from `python -m analysis.audit`. A package with an __init__.py anywhere
# on sys.path wins over such a folder, so the project root goes on sys.path too (what
# setuptools' editable_mode=compat does, but that mode is deprecated).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[reference,dev]'
	$(PY) -c 'import os, sysconfig; open(os.path.join(sysconfig.get_path("purelib"), "robaudit-root.pth"), "w").write(os.getcwd() + "\n")'
	touch $(STAMP)

# The NormOut thesis' recipe (plain cross-entropy, masked) beside its label-smoothed fix.
DEMO := digits-mlp-normout-spatiotemporal-ce digits-mlp-normout-spatiotemporal

# One thread: these small models gain nothing from more, and on a busy machine extra threads
# only contend (two threads on two shared cores ran the demo 5x slower than one).
demo: install
	OMP_NUM_THREADS=1 $(PY) -m analysis.audit $(DEMO:%=checkpoints/zoo/%.pt) --out out
	@echo
	@$(foreach name,$(DEMO),echo "report of $(name): out/$(name)/report.html";)
	@echo "comparison: out/comparison.html"

# docs/*.png with headless Chromium (Debian's chromium and chromium-driver); see docs/screenshots.py.
screenshots: install
	$(PY) docs/screenshots.py

test: install
	$(PY) -m pytest -m "not slow"

test-all: install
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
