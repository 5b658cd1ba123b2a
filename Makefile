# Two commands from a fresh clone: `make serve` and `make test`.
# Both create .venv (with the interpreter named by PYTHON) and install the
# project with its dev extra the first time, and again whenever pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: serve test lint typecheck pytest browser bootstrap clean mutation

bootstrap: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m server $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check server agents tests benchmarks docs/examples
	$(VENV)/bin/ruff format --check server agents tests benchmarks docs/examples
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(ARGS)

# Headless Chromium for tests/test_browser.py (Debian's package). Best effort:
# without root or a package mirror the browser tests skip, and `make test` goes on.
browser:
	@command -v chromium >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the browser tests will be skipped"

test: browser lint typecheck pytest

# Mutation testing of the core, outside `make test` (minutes, not seconds):
# docs/testing.md, "Mutation testing". E.g. make mutation ARGS="--area runs".
mutation: $(STAMP)
	$(PY) -m benchmarks.mutation $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
