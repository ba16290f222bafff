# hive + keeper. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test unit lint format bench stress clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start a hive on a temporary state dir and follow a real build (Ctrl+C cancels it).
demo: $(STAMP)
	VENV=$(VENV) bash scripts/demo.sh

## Lint, type-check, then the whole suite (real hives, real process trees).
test: lint
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) -m bench

stress: $(STAMP)
	$(PY) -m pytest tests/stress -p no:cacheprovider -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
