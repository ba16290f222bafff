# hive + keeper. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test unit lint format bench stress clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start a hive on a temporary state dir and follow a real build (Ctrl+C cancels it).
demo: $(STAMP)
	VENV=$(VENV) bash scripts/demo.sh

## Lint, type-check, then the whole suite (real hives, real process trees, a real browser).
test: lint browser systemd
	$(PY) -m pytest

## The browser tests drive Debian's Chromium (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

## tests/test_contrib.py checks contrib/systemd with systemd-analyze (works without systemd as PID 1).
.PHONY: systemd
systemd:
	@command -v systemd-analyze >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq systemd >/dev/null; \
	  else echo "unit checks skip without systemd-analyze: sudo apt-get install systemd" >&2; fi; }

unit: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) -m bench

stress: $(STAMP)
	$(PY) -m pytest tests/stress -p no:cacheprovider -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
