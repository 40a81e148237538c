# `make demo` and `make test` each set everything up on a fresh machine (venv + pinned installs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgegate-installed
DEMO ?= build/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-fast benchmarks schemas clean action-image action-test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,test]"
	# onnx2tf imports tf_keras without declaring it; tf-keras declares `tensorflow`, which
	# tensorflow-cpu provides, so it is installed without its dependencies.
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

benchmarks: $(STAMP)
	$(PY) benchmarks/compare_quantize.py
	$(PY) benchmarks/compare_runtimes.py
	$(PY) benchmarks/real_models.py

# The Action's container: build the image (docker/Dockerfile) and run it like the GitHub runner
# against a fixture repository and the fake GitHub. On this machine it starts a private dockerd.
action-image: $(STAMP)
	docker/action-test.sh build

action-test: $(STAMP)
	PY=$(abspath $(PY)) docker/action-test.sh

schemas: $(STAMP)
	$(VENV)/bin/edgegate schema --out schemas

clean:
	rm -rf build .edgegate .pytest_cache
