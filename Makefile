# Everything starts from a fresh machine: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NMF := $(VENV)/bin/nmf
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
DEMO_OUT := $(or $(TMPDIR),/tmp)/nmfcli-demo

.PHONY: demo test test-kernel test-slow test-all mutation bench lint clean venv

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

# The default suite: everything except slow and GPU tests (GPU tests skip without a GPU anyway),
# then the numeric core's tests again under another OpenBLAS kernel (test-kernel).
test: $(STAMP_TEST)
	$(PY) -m pytest -m "not slow" -q
	$(MAKE) --no-print-directory test-kernel

# The numeric core under a second OpenBLAS kernel (an older one this CPU also runs, picked by
# tests/other_blas_kernel.py), so that no test holds under one kernel's rounding only.
NUMERIC_TESTS := tests/test_nnls.py tests/test_exactness.py tests/test_core.py tests/test_missing.py tests/test_weights.py
test-kernel: $(STAMP_TEST)
	@kernel=$$($(PY) tests/other_blas_kernel.py); \
	if [ -z "$$kernel" ]; then echo "test-kernel: no second OpenBLAS kernel to run here (pinned, or not OpenBLAS)"; \
	else echo "== the numeric core again under OpenBLAS kernel $$kernel"; \
	OPENBLAS_CORETYPE=$$kernel NMF_EXPECT_BLAS_KERNEL=$$kernel $(PY) -m pytest -m "not slow" -q -p no:cacheprovider $(NUMERIC_TESTS); fi

# Long runs, on fresh random draws: the io fuzzers with 1500 examples each, the whole-command
# fuzzer with 5000 cases, the exact solve's torture suite with 2000, then any test marked slow
# (pytest exits 5 when none is marked; that is not a failure here).
test-slow: $(STAMP_TEST)
	NMF_FUZZ_EXAMPLES=1500 NMF_HYPOTHESIS_RANDOM=1 $(PY) -m pytest -q tests/test_io_fuzz.py
	NMF_CLI_FUZZ_EXAMPLES=5000 NMF_HYPOTHESIS_RANDOM=1 $(PY) -m pytest -q tests/test_cli_fuzz.py
	NMF_TORTURE_EXAMPLES=2000 NMF_HYPOTHESIS_RANDOM=1 $(PY) -m pytest -q tests/test_nnls.py -k torture
	NMF_HYPOTHESIS_RANDOM=1 $(PY) -m pytest -m "slow" -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

# Mutation testing of the numerical core (mutmut; [tool.mutmut] in pyproject.toml names the
# modules and the tests that reach them). Hours on 2 cores: not part of make test.
mutation: $(STAMP_TEST)
	$(PY) -m pip install --quiet 'mutmut>=3.3'
	$(PY) -m mutmut run; $(PY) -m mutmut results | grep -v "not checked"

test-all: $(STAMP_TEST)
	$(PY) -m pytest -q

bench: $(STAMP_TEST)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

lint: $(STAMP_TEST)
	$(PY) -m pytest -q tests/test_layers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants
