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

# The suite runs as TEST_SHARDS pytest processes side by side (tests/run_shards.py, tests/shard.py): most of
# its time is waiting on servers and timeouts, so two shards on two cores take far less wall time than one.
# TEST_SHARDS=1 is a plain pytest run; PYTEST_ARGS go to every shard.
TEST_SHARDS ?= 2

test: $(VENV)/.installed $(SDK063_VENV)/.installed lint chromium
	ACCRUE_SDK063_PYTHON=$(CURDIR)/$(SDK063_VENV)/bin/python $(BIN)/python -m tests.run_shards $(TEST_SHARDS) \
		-q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/domain

clean:
	rm -rf $(VENV) $(SDK063_VENV) .pytest_cache .mypy_cache .ruff_cache
