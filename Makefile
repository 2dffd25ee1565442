# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINT_STAMP := $(VENV)/.lint-stamp
# 8 virtual CPU devices for the sharding tests (a separate process: the flag must precede JAX).
SHARDED_FLAGS := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: install demo test test-newest test-fast bench fuzz lint notebooks clean

# `make test` runs on the oldest supported jax (.ci/oldest-jax.txt); `make test-newest` on the
# newest jax release with the newest Python on the machine.
OLDEST := .ci/oldest-jax.txt

$(STAMP): pyproject.toml $(OLDEST)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,flax,equinox,keras,notebooks]' -c $(OLDEST)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m sigmoid_xent.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not sharded"
	$(SHARDED_FLAGS) $(PY) -m pytest -q -m sharded || test $$? -eq 5  # 5: none collected

NEWEST_PYTHON ?= $(shell .ci/newest-python)
NEWEST_VENV := .venv-newest
NEWEST_STAMP := $(NEWEST_VENV)/.installed-stamp

$(NEWEST_STAMP): pyproject.toml
	$(NEWEST_PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(NEWEST_VENV)/bin/python -m pip install -q --upgrade -e '.[test,keras]' jax jaxlib
	touch $(NEWEST_STAMP)

# The suite on the newest jax release and the newest Python >= 3.12 present (skipped, saying
# so, where there is none).
test-newest:
ifeq ($(strip $(NEWEST_PYTHON)),)
	@echo "test-newest: SKIPPED: no python3.13 or python3.12 on this machine (PATH or pyenv)."
else
	$(MAKE) $(NEWEST_STAMP)
	$(NEWEST_VENV)/bin/python -c "import sys, jax; print('test-newest: python', sys.version.split()[0], 'jax', jax.__version__)"
	$(NEWEST_VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not sharded"
	$(SHARDED_FLAGS) $(NEWEST_VENV)/bin/python -m pytest -q -m sharded || test $$? -eq 5
endif

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The robustness properties (tests/test_robustness*.py) with 10^5 examples each: hours. For a
# shorter campaign: `make fuzz ROBUSTNESS_MAX_EXAMPLES=2000`. The worst errors go to
# ROBUSTNESS_REPORT (JSON) and tests/report.py writes them into the table in tests/README.md.
ROBUSTNESS_REPORT ?= build/robustness.json
fuzz: $(STAMP)
	mkdir -p $(dir $(ROBUSTNESS_REPORT)) && rm -f $(ROBUSTNESS_REPORT)
	HYPOTHESIS_PROFILE=fuzz ROBUSTNESS_REPORT=$(abspath $(ROBUSTNESS_REPORT)) \
		$(if $(ROBUSTNESS_MAX_EXAMPLES),ROBUSTNESS_MAX_EXAMPLES=$(ROBUSTNESS_MAX_EXAMPLES)) \
		$(PY) -m pytest -q -p no:xdist --hypothesis-show-statistics tests/test_robustness*.py
	$(PY) tests/report.py $(ROBUSTNESS_REPORT) "$(or $(ROBUSTNESS_MAX_EXAMPLES),100000 (fuzz profile))"

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	touch $(LINT_STAMP)

# Rebuild and re-execute the tutorial notebooks from notebooks/src/*.py.
notebooks: $(STAMP)
	$(PY) notebooks/build.py

lint: $(LINT_STAMP)
	$(PY) -m ruff check sigmoid_xent tests $(wildcard benchmarks)
	$(PY) -m ruff format --check sigmoid_xent
	$(PY) -m mypy sigmoid_xent

clean:
	rm -rf $(VENV) $(NEWEST_VENV) .hypothesis build *.egg-info
