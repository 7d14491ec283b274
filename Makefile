# Every target sets itself up: a local virtual environment in .venv with the CPU build of torch
# installed first (so pip never resolves a multi-GB CUDA torch), then the project, editable and
# without build isolation (the native extension builds against that torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
NATIVE_SOURCES := $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test test-all browser bench bench-quick lint format install clean gpu-test gpu-check

install: $(STAMP)

$(STAMP): setup.py requirements-dev.txt $(NATIVE_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -m colorizer.cli info
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m colorizer.demo

# Two xdist workers (one per core, one torch thread each); a test file stays on one worker so its
# module-level fixtures are built once. A worker that dies is not replaced: under --dist loadfile
# xdist can hang after replacing one (pytest-xdist #784, #1323), so the run stops and names the test.
# Files go out in collection order, heaviest first (tests/conftest.py HEAVY_FILES_FIRST).
test: $(STAMP) browser
	$(PY) -m pytest -q -m "not slow and not gpu" -n 2 --dist loadfile --no-loadscope-reorder --max-worker-restart=0 --durations=15

# The service's page is tested in a real browser (tests/serve/test_browser.py): Debian's chromium and its
# chromedriver, from apt, installed once when absent (CI runs as root on a fresh Debian).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (apt) for tests/serve/test_browser.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "note: chromium / chromium-driver missing and no root apt-get: tests/serve/test_browser.py will skip"; \
	  fi; \
	fi

test-all: $(STAMP) browser
	$(PY) -m pytest -q

gpu-test: $(STAMP)
	$(PY) -m pytest -q -m gpu

# The one-call device script (README "GPU check"; stops itself after 7 minutes). On a lent GPU
# machine use its own interpreter, which holds torch and triton: make gpu-check GPU_PY=python3
GPU_PY ?= $(PY)
GPU_CHECK_OUT ?= benchmarks/results/gpu_check
gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# On a CPU the report runs the plan the committed CPU results used (about 8 minutes on 2 cores; the
# full default plan takes about 45); on a GPU its full default plan. Override with BENCH_ARGS=...
CPU_BENCH_ARGS := --device cpu --sections inference,train_step,palettes --sizes 256,512 --batches 1 \
	--train-batches 2 --dtypes float32 --max-rounds 5
BENCH_ARGS = $(shell $(PY) -c "import torch; print('' if torch.cuda.is_available() else '$(CPU_BENCH_ARGS)')")

bench: $(STAMP)
	$(PY) -m pytest benchmarks/ --benchmark-only -q
	$(PY) -m benchmarks.report $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m benchmarks.report --quick --out benchmarks/results/quick

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf build *.egg-info colorizer/_C*.so demo_out runs
