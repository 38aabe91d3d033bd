# Set-up and entry points. Every target creates the virtual environment first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Transparent huge pages for XLA's large CPU buffers (tvad_jax/launch.py says why; the `tvad`
# command and the benchmarks set it themselves when started some other way).
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test test-slow bench bench-device venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## the main job on the embedded default
	$(BIN)/tvad demo

test: $(STAMP)  ## the default test run (under 15 minutes on 2 cores), two test processes
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)  ## the tests marked slow (exit 5 = none collected is fine)
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

bench: $(STAMP)  ## throughput benchmarks, JSON on stdout
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

bench-device: $(STAMP)  ## bf16 real-scale workloads on one GPU/TPU: MFU, tokens/s, compile time
	$(BIN)/python benchmarks/bench_device.py --scale real

clean:
	rm -rf $(VENV) runs build *.egg-info
