# ttbench: `make run` and `make test` set everything up from a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint sim clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/ttbench run scenarios/smoke.yaml

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

sim: setup
	$(VENV)/bin/ttbench sim --port 8080

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
