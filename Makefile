# The two commands of the README. Each does its own idempotent set-up first (Bazel, the
# virtualenv with TensorFlow, the Bazel build of the op library, the editable install).
PYTHON := .venv/bin/python
BAZEL := PYTHON_BIN_PATH=$(abspath $(PYTHON)) bazel
# Compiled objects are kept in a disk cache shared by every clone on this machine (tools/setup.sh
# uses it for the op library too): a second clone's builds take them from there. Bazel never
# prunes it; delete the directory to reclaim its space.
TF_FTRL_BAZEL_DISK_CACHE ?= $(HOME)/.cache/tf_ftrl/bazel-disk-cache
BAZEL_CACHE := --disk_cache=$(TF_FTRL_BAZEL_DISK_CACHE)
# Where nvcc exists (no GPU needed), `make test` also compiles and links the CUDA build (the op
# library and its XLA lowering).
NVCC := $(wildcard /usr/local/cuda/bin/nvcc)
# The GPU machines have no TensorFlow: test-gpu and bench-gpu use their own Python, no set-up.
GPU_PYTHON ?= python3
# The TensorFlow-free C++ tests (the CPU loops, and the CUDA kernels' per-thread work on the
# host), all under ASan + UBSan (--config=asan, .bazelrc: -O1, the loops' baseline copy), and
# the CPU loops' tests again as built (-O3, every vector copy the CPU runs).
CPU_KERNEL_TESTS := //kernels:cpu_kernels_test //kernels:cpu_kernels_fuzz_test
SANITIZED_TESTS := $(CPU_KERNEL_TESTS) //kernels:gpu_kernel_bodies_test

# pytest's worker processes (pytest-xdist): one per core, at most 4 (--maxprocesses), since some
# tests start clusters of processes or a table of 8.6 GB; PYTEST_WORKERS=0 runs them in one.
PYTEST_WORKERS ?= auto

.PHONY: setup build train test test-gpu gpu-checks bench bench-gpu bench-optimizers

setup:
	bash tools/setup.sh

build: setup

# The main job: a wide & deep CTR model on Criteo-format data, ours vs keras.optimizers.
train: setup
	$(PYTHON) -m tf_ftrl.examples.ctr $(TRAIN_ARGS)

test: setup
	$(BAZEL) test $(BAZEL_CACHE) --config=asan $(SANITIZED_TESTS) --test_output=errors \
	  --nocache_test_results
	$(BAZEL) test $(BAZEL_CACHE) $(CPU_KERNEL_TESTS) --test_output=errors --nocache_test_results
ifneq ($(NVCC),)
	# A check, not a library to use (.bazelrc's cuda_check: its own output directory, the CPU
	# loops' baseline copy only); no bazel-* links: bazel-bin stays the CPU build.
	$(BAZEL) build $(BAZEL_CACHE) --config=cuda_check --symlink_prefix=/ \
	  //kernels:_tf_ftrl_ops.so //kernels:_tf_ftrl_xla_ops.so
endif
	$(PYTHON) -m pytest -q -n $(PYTEST_WORKERS) --maxprocesses 4 --durations=15 tests

# The CUDA kernels against the CPU kernels, through the TensorFlow-free driver (GPU machine).
test-gpu:
	PYTHON=$(GPU_PYTHON) bash tools/build_kernel_driver.sh --cuda
	$(GPU_PYTHON) -m pytest -q tests/gpu tests/test_kernel_driver.py

# Every GPU check (build, tests, compute-sanitizer memcheck/racecheck/synccheck, benchmark) with a
# summary in $(GPU_CHECKS_OUT)/summary.md (GPU machine; see tools/gpu_checks.sh).
GPU_CHECKS_OUT ?= build/gpu_checks
gpu-checks:
	PYTHON=$(GPU_PYTHON) bash tools/gpu_checks.sh $(GPU_CHECKS_OUT)

bench: setup
	$(PYTHON) tools/benchmark_ops.py $(BENCH_ARGS)

bench-gpu:
	PYTHON=$(GPU_PYTHON) bash tools/build_kernel_driver.sh --cuda
	$(GPU_PYTHON) tools/benchmark_gpu.py $(BENCH_ARGS)

bench-optimizers: setup
	$(PYTHON) tools/benchmark_optimizers.py $(BENCH_ARGS)
