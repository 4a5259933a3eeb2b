# tessync: the two commands a newcomer needs are `make demo` and `make test`.
# The first of these that is Python 3.10 or newer (Colab and Ubuntu 24.04 ship 3.12);
# `make PYTHON=/path/to/python3.x ...` overrides.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3 python3.13 python3.12 python3.11 python3.10; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
	  && { echo $$p; break; }; done)
endif
TORCH_VERSION := 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

COMPOSE_VENV := .venv-compose

.PHONY: setup test demo bench lint compose-check clean

$(PY):
	@test -n "$(PYTHON)" || { echo "make: no Python 3.10 or newer found (python3 is $$(python3 --version 2>&1)); set PYTHON=/path/to/python3.x" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)

# torch goes first and pinned: an unpinned torch, asked for by any later package,
# would fetch a multi-GB CUDA build. Before that, ask pip (a dry run, no download of
# the wheel itself) whether the pin has a wheel for this Python and platform, so a
# missing one is one line instead of a multi-GB source build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	@$(PIP) install -q --dry-run --no-deps --only-binary=:all: torch==$(TORCH_VERSION) >/dev/null 2>&1 || { \
	  echo "make: torch==$(TORCH_VERSION) has no wheel for Python $$($(PY) -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())') (or PyPI cannot be reached); use a Python it has a wheel for (make PYTHON=python3.X), see README 'Supported platforms'" >&2; exit 2; }
	$(PIP) install -q torch==$(TORCH_VERSION)
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

# Checked as a folder remote (the defaults) and as a Drive API remote with its secret.
compose-check: $(COMPOSE_VENV)/bin/docker-compose
	env -u GDRIVE_CREDENTIALS -u SYNCD_REMOTE $(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml config -q
	SYNCD_REMOTE=gdrive://tess_backups GDRIVE_CREDENTIALS=/dev/null $(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml config -q
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
