# ttbench: `make run` and `make test` set everything up from a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# A real gateway for the tests: LiteLLM proxy in its own venv (it pins many packages of its own).
# The stamp's name carries the pins, so changing a pin here re-installs.
LITELLM_VENV ?= .venv-litellm
LITELLM_VERSION := 1.108.7
PRISMA_VERSION := 0.15.0
LITELLM_STAMP := $(LITELLM_VENV)/.installed-litellm-$(LITELLM_VERSION)-prisma-$(PRISMA_VERSION)

# The two venvs install side by side (on 2 cores this takes a minute off `make test` from a fresh clone).
MAKEFLAGS += --jobs=2

.PHONY: setup run test lint sim clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

$(LITELLM_STAMP):
	python3 -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install -qq --disable-pip-version-check \
		'litellm[proxy]==$(LITELLM_VERSION)' 'prisma==$(PRISMA_VERSION)'
	rm -f $(LITELLM_VENV)/.installed-litellm-*
	touch $@

run: setup
	$(VENV)/bin/ttbench run scenarios/smoke.yaml

# The tests run in TEST_WORKERS processes (a test file stays in one), except those marked `serial` (timing and
# capacity measured under load), which run alone afterwards; both parts always run, and either failing fails.
TEST_WORKERS ?= 2

test: setup $(LITELLM_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not serial" -n $(TEST_WORKERS) --dist loadfile; parallel=$$?; \
	$(PY) -m pytest -m serial; serial=$$?; \
	test $$parallel -eq 0 && test $$serial -eq 0

lint: setup
	$(VENV)/bin/ruff check .

sim: setup
	$(VENV)/bin/ttbench sim --port 8080

clean:
	rm -rf $(VENV) $(LITELLM_VENV) build *.egg-info .pytest_cache .ruff_cache
