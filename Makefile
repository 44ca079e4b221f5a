# From Einsum to the Neural Engine: the book and ane_lib, built and tested from a bare machine
# that has only python3 and make.
#
#   make book   set up .venv (pinned by constraints.txt), execute every chapter, build the HTML
#   make test   set up the same way; ruff, mypy, pytest, a fresh book build, then every page
#               checked in headless Chromium (scripts/check_book.py)
#   make lab    JupyterLab on the chapters (jupytext opens the .md chapters as notebooks)
#
# Variables (set on the command line, e.g. `make book PIP_TORCH_INDEX=...`):
#   PYTHON           the Python that creates .venv (default: python3; 3.10 or newer)
#   PIP_TORCH_INDEX  a package index holding the CPU build of torch. Only needed where pip
#                    would otherwise pick PyPI's CUDA build (Linux without a local CPU wheel):
#                    make book PIP_TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   CHROMIUM         path to a Chromium binary for the page check (default: `chromium` on PATH,
#                    installed with apt-get when missing and running as root)
#   PYTEST_ARGS      extra arguments for pytest

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
PIP_TORCH_INDEX ?=
CHROMIUM ?=
PYTEST_ARGS ?=
# The tests of scripts/check_book.py look for it too.
export CHROMIUM

VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUILD_DIR := _build
HTML_DIR := $(BUILD_DIR)/html
CACHE_DIR := $(BUILD_DIR)/.jupyter_cache
CACHE_KEY := $(BUILD_DIR)/.jupyter_cache.key
LINT_PATHS := $(wildcard ane_lib tests scripts benchmarks)

# The library's tests and chapters run many small tensors: one intra-op thread per process
# avoids thread start-up and contention costs that dominate at these sizes (measured up to 50x
# slower with 2 threads on a busy 2-core machine). Set OMP_NUM_THREADS to override.
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

# Trained weights (ane_lib.training) are cached here, so that pytest and the chapters of one
# `make test` train the digits MOAT once; `make clean` removes them with the rest of _build.
ANE_LIB_CACHE_DIR ?= $(CURDIR)/$(BUILD_DIR)/ane_lib_cache
export ANE_LIB_CACHE_DIR

# Run chapters with this venv's python3 kernel, whatever kernelspecs the user has elsewhere.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
# Python 3.11 + debugpy print a "frozen modules" warning at every kernel start.
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help venv book book-fresh test lint chromium pytest check-book lab constraints clean distclean

help:
	@sed -n '3,8p' Makefile | sed 's/^# \{0,1\}//'

# --- environment -----------------------------------------------------------------------------
# Rebuilt only when constraints.txt or pyproject.toml change, so a second `make book` skips it.
# The [coreai] extra only where Apple publishes its wheels (ane_lib/coreai/_platform.py says).
$(STAMP): constraints.txt pyproject.toml
	@echo "==> setting up $(VENV) with the versions pinned in constraints.txt"
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv"; exit 1; }
	$(VPY) scripts/install_torch.py --constraints constraints.txt \
	  $(if $(PIP_TORCH_INDEX),--index-url $(PIP_TORCH_INDEX))
	@extras='book,dev,coreml,hf,train'; \
	if $(VPY) ane_lib/coreai/_platform.py; then extras="$$extras,coreai"; fi; \
	echo "$(VPY) -m pip install -e '.[$$extras]' -c constraints.txt"; \
	$(VPY) -m pip install -e ".[$$extras]" -c constraints.txt
	@touch $@

venv: $(STAMP)

# Write the current environment back as exact pins (after adding a dependency to pyproject.toml).
constraints:
	@{ sed -n '1,/^# Regenerate/p' constraints.txt; \
	  $(VPY) -m pip freeze --exclude-editable | grep -v -E '^(#|-e )' \
	    | sed -E 's/^torch==([^+]+)\+cpu$$/torch==\1/'; } > constraints.txt.tmp
	@mv constraints.txt.tmp constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

# --- the book --------------------------------------------------------------------------------
# jupyter-cache keys an executed chapter on its code cells only. A change to ane_lib, to the
# pins or to pyproject.toml must re-execute every chapter, so the cache is dropped when their
# hash changes (with Sphinx's doctrees, or Sphinx would not even re-read the unchanged pages).
book: $(STAMP)
	@key=$$( { find ane_lib -type f -name '*.py' | LC_ALL=C sort | xargs sha256sum; \
	           cat constraints.txt pyproject.toml; } | sha256sum | cut -d' ' -f1 ); \
	if [ -d $(CACHE_DIR) ] && [ "$$(cat $(CACHE_KEY) 2>/dev/null)" != "$$key" ]; then \
	  echo "==> ane_lib or the environment changed: re-executing every chapter"; \
	  rm -rf $(CACHE_DIR) $(BUILD_DIR)/.doctrees; \
	fi; \
	mkdir -p $(BUILD_DIR); echo "$$key" > $(CACHE_KEY)
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going
	@echo "==> The book: $(CURDIR)/$(HTML_DIR)/index.html"

# A clean HTML build (Sphinx re-reads every page). The execution cache is kept: it is keyed on
# each chapter's code and, through the check above, on ane_lib and the pinned environment.
book-fresh:
	rm -rf $(HTML_DIR) $(BUILD_DIR)/.doctrees $(BUILD_DIR)/jupyter_execute
	@$(MAKE) --no-print-directory book

# --- tests -----------------------------------------------------------------------------------
# pytest and the book build are independent and each runs on one core (OMP_NUM_THREADS=1),
# so they run side by side: on a 2-core machine this nearly halves the wall time. Each one's
# lines are prefixed with its name; both always finish, and either failing fails the target.
test: $(STAMP)
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory chromium
	@mkdir -p $(BUILD_DIR)
	@( $(MAKE) --no-print-directory pytest 2>&1 | sed -u 's/^/[pytest] /' ) & pytest_pid=$$!; \
	( $(MAKE) --no-print-directory book-fresh 2>&1 | sed -u 's/^/[book] /' ) & book_pid=$$!; \
	pytest_rc=0; book_rc=0; \
	wait $$pytest_pid || pytest_rc=$$?; wait $$book_pid || book_rc=$$?; \
	if [ $$pytest_rc -ne 0 ]; then echo "error: pytest failed (exit $$pytest_rc)"; fi; \
	if [ $$book_rc -ne 0 ]; then echo "error: the book build failed (exit $$book_rc)"; fi; \
	[ $$pytest_rc -eq 0 ] && [ $$book_rc -eq 0 ]
	@$(MAKE) --no-print-directory check-book
	@echo "==> make test: all checks passed"

# mypy reads its settings (files = ane_lib, strictness) from pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
pytest: $(STAMP)
	@rc=0; $(VPY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; fi; \
	exit $$rc

# Debian's Chromium for the page check: `chromium` on PATH (or CHROMIUM=...), installed with
# apt-get where it is missing and we are root; otherwise say what to install.
define find_chromium
chromium="$(CHROMIUM)"; \
if [ -z "$$chromium" ]; then chromium="$$(command -v chromium || true)"; fi; \
if [ -z "$$chromium" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    echo "==> installing Debian's chromium for the page check"; \
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
    chromium="$$(command -v chromium)"; \
  else \
    echo "error: the page check needs Chromium. Install Debian's chromium"; \
    echo "       (sudo apt-get install chromium) and rerun, or pass CHROMIUM=/path/to/chromium."; \
    exit 1; \
  fi; \
fi
endef

chromium:
	@$(find_chromium); echo "==> Chromium: $$chromium"

check-book: $(STAMP)
	@$(find_chromium); \
	$(VPY) scripts/check_book.py --html-dir $(HTML_DIR) --chromium "$$chromium"

# --- reading the chapters as notebooks -------------------------------------------------------
# jupytext's "Jupytext Notebook" becomes the default viewer for Markdown in this venv's
# JupyterLab, so a double-click on chapters/*.md opens a notebook.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
lab: $(STAMP)
	@mkdir -p $(LAB_SETTINGS)
	@echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers":' \
	  '{"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' \
	  > $(LAB_SETTINGS)/overrides.json
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(BUILD_DIR)

distclean: clean
	rm -rf $(VENV)
