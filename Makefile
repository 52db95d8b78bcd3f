# pyattn: `make demo` runs the main job, `make test` the tests, on a fresh
# machine: each creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
CUDA_VENV ?= .venv-cuda
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.14.1
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
CUDA_HOME ?= /usr/local/cuda

PY := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml constraints.txt $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.cpp csrc/cuda/*.cu)

.PHONY: demo test build docs bench bench-scale bench-attention cuda-check gpu-wheels gpu-check gpu-rehearsal clean

# torch first (the CPU wheel on disk), then pyattn with its test extras,
# built against that torch (no build isolation), every other package at the
# version in constraints.txt (the versions the tests passed with).
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_CPU)"
	touch $@

$(VENV)/.built: $(VENV)/.torch $(SOURCES)
	$(VENV)/bin/pip install -q -c constraints.txt ninja setuptools wheel numpy
	$(VENV)/bin/pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
	touch $@

build: $(VENV)/.built

# The API reference site from the docstrings (mkdocs + mkdocstrings, read
# statically: nothing imported) into build/site, warnings as errors.
docs: build
	$(VENV)/bin/pip install -q -c constraints.txt mkdocs "mkdocstrings[python]"
	$(VENV)/bin/mkdocs build --strict

demo: build
	$(VENV)/bin/pyattn demo

test: build
	$(PY) -m pytest tests -q

bench: build
	mkdir -p build
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,max,rounds \
		--ignore=benchmarks/test_cli_scale.py --benchmark-json=build/bench.json -q
	$(PY) benchmarks/report.py build/bench.json
	$(PY) benchmarks/memory.py
	cd benchmarks && ../$(PY) memory_attention.py

# `pyattn attribute` over 4 documents of 2-4k tokens on a base-shaped
# Longformer against the previous automatic loop (about 30 minutes on 2 cores):
# benchmarks/results/cli_scale.md, from one run's JSON.
bench-scale: build
	mkdir -p build benchmarks/results
	$(PY) -m pytest benchmarks/test_cli_scale.py --benchmark-only -q --benchmark-json=build/cli_scale.json
	$(PY) benchmarks/cli_scale_report.py build/cli_scale.json

# The attention-speed tables (benchmarks/results/attention.md), generated from
# one run's JSON: attention received against its floors (.sum() and a
# streaming copy of the same bytes), the dense conversion, the scaling.
bench-attention: build
	mkdir -p build benchmarks/results
	$(PY) -m pytest benchmarks/test_attention_speed.py --benchmark-only -q \
		--benchmark-json=build/bench-attention.json
	$(PY) benchmarks/report.py build/bench-attention.json --out benchmarks/results/attention.md

# Prove the CUDA kernels compile and link: torch 2.14.1 (CUDA 13.0 build),
# nvcc from PATH, an explicit arch list, a plain (non-editable) install from a
# copy of the tree, then check every op has a CUDA kernel. No GPU needed.
$(CUDA_VENV)/.torch:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/pip install -q --upgrade pip
	$(CUDA_VENV)/bin/pip install -q "$(TORCH_CUDA)" numpy ninja setuptools wheel
	touch $@

cuda-check: $(CUDA_VENV)/.torch
	rm -rf build/cuda-src && mkdir -p build/cuda-src
	git ls-files -z | xargs -0 cp --parents -t build/cuda-src
	cd build/cuda-src && FORCE_CUDA=1 CUDA_HOME="$(CUDA_HOME)" \
		TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" MAX_JOBS=2 \
		$(abspath $(CUDA_VENV))/bin/pip install -q --no-build-isolation --no-deps .
	cd build && $(abspath $(CUDA_VENV))/bin/python ../tests/check_cuda_build.py

# On a machine with a GPU, in at most GPU_CHECK_DEADLINE seconds (default 450):
# build against that machine's torch (GPU_PYTHON) with FORCE_CUDA=1 for the
# GPU's own architecture, the CUDA tests, the kernel benchmark, the main job
# (pyattn attribute over 16 documents of 4,096 tokens on a base-shaped
# Longformer, float32 and bf16 autocast, beside the notebooks' method), a
# profile of where the GPU time goes, the query-key op where it exists,
# compute-sanitizer memcheck; each stage under its own timeout. Logs and JSON
# in build/gpu-check; then benchmarks/gpu_report.py writes the results page.
# `make gpu-rehearsal` runs the same stages on a CPU at tiny sizes.
GPU_PYTHON ?= python3

# The GPU image lacks captum and stop-words: pure-Python wheels, downloaded
# here (where pip reaches the registry) into .whl/ (git-ignored), travel with
# the device call (carry .whl) and gpu_check.sh installs them there.
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 -d .whl "captum==$$(grep -i '^captum==' constraints.txt | cut -d= -f3)" \
		"stop-words==$$(grep -i '^stop-words==' constraints.txt | cut -d= -f3)"

gpu-check:
	GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh

gpu-rehearsal: build
	GPU_CHECK_REHEARSAL=1 GPU_PYTHON=$(abspath $(PY)) GPU_CHECK_DEADLINE=3000 bash benchmarks/gpu_check.sh

clean:
	rm -rf build *.egg-info pyattn/_C*.so
