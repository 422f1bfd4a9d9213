# Everything starts from a fresh machine: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NMF := $(VENV)/bin/nmf
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
DEMO_OUT := $(or $(TMPDIR),/tmp)/nmfcli-demo

.PHONY: demo test test-slow test-all bench lint clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

venv: $(STAMP_RUN)

demo: $(STAMP_RUN)
	@echo "== nmf fit sample_data/pydoc_topics.csv -k 8 (topics of Python's help pages)"
	$(NMF) fit sample_data/pydoc_topics.csv -k 8 -o $(DEMO_OUT) --force
	@echo "== nmf inspect $(DEMO_OUT)/model.h5 --top 8"
	$(NMF) inspect $(DEMO_OUT)/model.h5 --top 8

# The default suite: everything except slow and GPU tests (GPU tests skip without a GPU anyway).
test: $(STAMP_TEST)
	$(PY) -m pytest -m "not slow" -q

# Long runs: the io fuzzers with 1500 examples each, the whole-command fuzzer with 5000 fresh
# random cases, then any test marked slow (pytest exits 5 when none is marked; that is not a
# failure here).
test-slow: $(STAMP_TEST)
	NMF_FUZZ_EXAMPLES=1500 $(PY) -m pytest -q tests/test_io_fuzz.py
	NMF_CLI_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q tests/test_cli_fuzz.py
	$(PY) -m pytest -m "slow" -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

test-all: $(STAMP_TEST)
	$(PY) -m pytest -q

bench: $(STAMP_TEST)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

lint: $(STAMP_TEST)
	$(PY) -m pytest -q tests/test_layers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
