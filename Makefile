# Two commands: `make dev` runs the whole product, `make test` installs everything and runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SDK063_VENV := .venv-sdk063

.PHONY: dev test lint unit install clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# A second virtualenv holds paygentic-sdk 0.6.3, which cannot share one with 0.1.34.
$(SDK063_VENV)/.installed:
	$(PYTHON) -m venv $(SDK063_VENV)
	$(SDK063_VENV)/bin/pip install --quiet 'paygentic-sdk==0.6.3'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed
	$(BIN)/accrue dev

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser test drives Debian's chromium through Playwright (which never downloads a browser of its own).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(VENV)/.installed $(SDK063_VENV)/.installed lint chromium
	ACCRUE_SDK063_PYTHON=$(CURDIR)/$(SDK063_VENV)/bin/python $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/domain

clean:
	rm -rf $(VENV) $(SDK063_VENV) .pytest_cache .mypy_cache .ruff_cache
