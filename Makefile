# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINT_STAMP := $(VENV)/.lint-stamp
# 8 virtual CPU devices for the sharding tests (a separate process: the flag must precede JAX).
SHARDED_FLAGS := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: install demo demo-multihost test test-fast bench fuzz lint notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,flax,equinox,notebooks]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m sigmoid_xent.demo

# A model-parallel multi-label head trained across two local JAX processes (4 CPU devices each).
demo-multihost: $(STAMP)
	$(PY) -m sigmoid_xent.demo_multihost

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not sharded"
	$(SHARDED_FLAGS) $(PY) -m pytest -q -m sharded || test $$? -eq 5  # 5: none collected

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
	rm -rf $(VENV) .hypothesis build *.egg-info
