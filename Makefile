# `make demo` and `make test` each set everything up on a fresh machine (venv + pinned installs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgegate-installed
DEMO ?= build/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint benchmarks schemas clean action-image action-test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# the distribution was called `edgegate` before it became `edgegate-ci` (and PyPI's `edgegate`
	# is another project's): an old install would own the same package and CLI, so it goes first
	$(PY) -m pip uninstall --quiet --yes edgegate 2>/dev/null || true
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,test]"
	# onnx2tf imports tf_keras; tf-keras requires the `tensorflow` distribution, and on Linux x86-64
	# the extras install tensorflow-cpu instead (see pyproject.toml), so it is installed here
	# without its dependencies.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps tf-keras==2.21.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/build_demo.py --out $(DEMO)
	cd $(DEMO) && $(abspath $(VENV))/bin/edgegate run --base HEAD~1 --head HEAD

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The Action as GitHub reads it: action.yml and every workflow (.github/workflows, examples/workflows)
# parsed as YAML, checked against GitHub's schemas (check-jsonschema), by action-validator and by
# zizmor (offline; zizmor.yml holds the project's policy). The linters go into their own small venv
# and node_modules under build/lint (no torch needed); any finding fails the target.
LINT := build/lint
LINT_STAMP := $(LINT)/.installed
LINT_FILES := action.yml $(wildcard .github/workflows/*.yml) $(wildcard examples/workflows/*.yml)
LINT_PY := zizmor==1.32.0 check-jsonschema==0.39.0 pyyaml==6.0.3
LINT_NPM := @action-validator/cli@0.6.0

$(LINT_STAMP): Makefile
	$(PYTHON) -m venv $(LINT)/venv
	$(LINT)/venv/bin/python -m pip install --quiet --disable-pip-version-check $(LINT_PY)
	npm install --silent --no-audit --no-fund --prefix $(LINT) $(LINT_NPM)
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(LINT)/venv/bin/python -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]; print("yaml: %d files parse" % (len(sys.argv) - 1))' $(LINT_FILES)
	$(LINT)/venv/bin/check-jsonschema --builtin-schema vendor.github-actions action.yml
	$(LINT)/venv/bin/check-jsonschema --builtin-schema vendor.github-workflows $(filter-out action.yml,$(LINT_FILES))
	for f in $(LINT_FILES); do $(LINT)/node_modules/.bin/action-validator "$$f" || exit 1; done; echo "action-validator: ok"
	$(LINT)/venv/bin/zizmor --offline --config zizmor.yml $(LINT_FILES)

benchmarks: $(STAMP)
	$(PY) benchmarks/compare_quantize.py
	$(PY) benchmarks/compare_runtimes.py
	$(PY) benchmarks/real_models.py
	$(PY) benchmarks/compare_memory.py

# The Action's container: build the image (docker/Dockerfile) and run it like the GitHub runner
# against a fixture repository and the fake GitHub. On this machine it starts a private dockerd.
action-image: $(STAMP)
	docker/action-test.sh build

action-test: $(STAMP)
	PY=$(abspath $(PY)) docker/action-test.sh

schemas: $(STAMP)
	$(VENV)/bin/edgegate schema --out schemas

clean:
	rm -rf build .edgegate-out .pytest_cache
