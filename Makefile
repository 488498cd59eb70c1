# One entry point for developers and CI. `make test` installs everything (editable) and runs the
# linters and the whole test suite against real servers.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
SERVICES := services/common services/watcher services/uploader services/notifier services/api
LINTED := $(wildcard services tests bench)

.PHONY: install lint test unit

install:
	$(PIP) install -q $(foreach s,$(SERVICES),-e $(s)) -r requirements-dev.txt

lint:
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)
	$(PYTHON) -m mypy

test: install lint
	$(PYTHON) -m pytest

unit:
	$(PYTHON) -m pytest tests/unit
