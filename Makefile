# The two commands a fresh machine needs (see README): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test

run: $(STAMP)
	$(VENV)/bin/warroom start

# Every test, on SQLite and on PostgreSQL (127.0.0.1:5432, or WARROOM_TEST_POSTGRES).
test: $(STAMP)
	$(VENV)/bin/python -m pytest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@
