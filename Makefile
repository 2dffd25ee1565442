# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINT_STAMP := $(VENV)/.lint-stamp
DOCS_STAMP := $(VENV)/.docs-stamp
DIST_STAMP := $(VENV)/.dist-stamp
# 8 virtual CPU devices for the sharding tests (set before JAX starts; every test runs with them:
# one pytest run, no second start-up and no second round of compiles).
SHARDED_FLAGS := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: install demo demo-multihost test test-newest bench fuzz lint notebooks docs dist check-wheel clean

# `make test` runs on the oldest supported jax (.ci/oldest-jax.txt); `make test-newest` on the
# newest jax release with the newest Python on the machine.
OLDEST := .ci/oldest-jax.txt

$(STAMP): pyproject.toml $(OLDEST)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[demo,test,flax,equinox,keras,notebooks]' -c $(OLDEST)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m sigmoid_xent.demo

# A model-parallel multi-label head trained across two local JAX processes (4 CPU devices each).
demo-multihost: $(STAMP)
	$(PY) -m sigmoid_xent.demo_multihost

test: $(STAMP)
	$(SHARDED_FLAGS) $(PY) -m pytest -q -n 2 --dist loadfile

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
	$(SHARDED_FLAGS) $(NEWEST_VENV)/bin/python -m pytest -q -n 2 --dist loadfile
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

# Every Python file of the repository (explicit paths: ruff would also format the code blocks of
# the Markdown files under a directory); .pre-commit-config.yaml runs the same on each commit.
LINT_PATHS := $(wildcard sigmoid_xent tests benchmarks notebooks/*.py notebooks/src docs/conf.py .ci conftest.py)
lint: $(LINT_STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy sigmoid_xent

# The documentation site (Sphinx, sphinx-book-theme, myst-nb) into build/docs/html, warnings as
# errors. Math is rendered by MathJax 3 unpacked from the npm registry (checked against its
# SHA-256) into build/docs-static/mathjax, so the pages work offline; no CDN.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_TGZ := build/npm/mathjax-$(MATHJAX_VERSION).tgz
MATHJAX_DIR := build/docs-static/mathjax

$(MATHJAX_TGZ):
	@command -v npm >/dev/null || { echo "make docs: npm (Node.js) is needed to fetch MathJax"; exit 1; }
	mkdir -p $(dir $@)
	cd $(dir $@) && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	echo "$(MATHJAX_SHA256)  $@" | sha256sum --check --quiet

# The TeX-to-HTML bundle, its fonts and the extensions and menu it loads on demand (4 MB of 24).
$(MATHJAX_DIR)/tex-chtml.js: $(MATHJAX_TGZ)
	rm -rf $(MATHJAX_DIR) build/npm/package && mkdir -p $(MATHJAX_DIR)
	tar -xzf $< -C build/npm package/es5 package/LICENSE
	cd build/npm/package/es5 && cp -r tex-chtml.js input output ui a11y ../LICENSE $(CURDIR)/$(MATHJAX_DIR)/
	rm -rf build/npm/package

docs: $(DOCS_STAMP) $(MATHJAX_DIR)/tex-chtml.js
	rm -rf build/docs  # a full build every time: -W must see every page's warnings
	$(PY) -m sphinx -W --keep-going -q -b html -d build/docs/doctrees docs build/docs/html
	@echo "Open build/docs/html/index.html"

# sdist and wheel into dist/ (an isolated build, setuptools from PyPI), checked by twine.
$(DIST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dist]'
	touch $(DIST_STAMP)

dist: $(DIST_STAMP)
	rm -rf dist
	$(PY) -m build -q --outdir dist .
	$(PY) -m twine check --strict dist/*

# The wheel as a user gets it: its contents, the sdist's tests, then installed into a fresh venv
# in a temporary directory (with pytest only) and its doctests run there (.ci/check_wheel.py).
check-wheel: dist
	$(PY) .ci/check_wheel.py --python $(PYTHON) dist

clean:
	rm -rf $(VENV) $(NEWEST_VENV) .hypothesis build dist *.egg-info docs/tutorials/*.ipynb
