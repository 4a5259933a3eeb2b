# tessync: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

COMPOSE_VENV := .venv-compose

.PHONY: setup test demo bench lint compose-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes first and pinned: an unpinned torch, asked for by any later package,
# would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup compose-check
	$(PY) -m pytest -q tests

# docker-compose.yml is validated by docker-compose itself (1.29.2, the last one on
# PyPI; its PyYAML 5.4.1 only builds with cython<3). No container engine runs here.
$(COMPOSE_VENV)/bin/docker-compose:
	$(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install -q 'cython<3' wheel setuptools
	$(COMPOSE_VENV)/bin/pip install -q --no-build-isolation 'pyyaml==5.4.1'
	$(COMPOSE_VENV)/bin/pip install -q docker-compose==1.29.2

compose-check: $(COMPOSE_VENV)/bin/docker-compose
	GDRIVE_CREDENTIALS=/dev/null $(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml config -q
	GDRIVE_CREDENTIALS=/dev/null $(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml --profile restore config -q
	@echo "docker-compose.yml: valid"

demo: setup
	bash scripts/demo.sh

bench: setup
	bash bench/run.sh

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(COMPOSE_VENV) build *.egg-info .pytest_cache
