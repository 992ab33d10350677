# The two commands of the README. Each does its own idempotent set-up first (Bazel, the
# virtualenv with TensorFlow, the Bazel build of the op library, the editable install).
PYTHON := .venv/bin/python

.PHONY: setup build train test bench bench-optimizers

setup:
	bash tools/setup.sh

build: setup

# The main job: a wide & deep CTR model on Criteo-format data, ours vs keras.optimizers.
train: setup
	$(PYTHON) -m tf_ftrl.examples.ctr $(TRAIN_ARGS)

test: setup
	PYTHON_BIN_PATH=$(abspath $(PYTHON)) bazel test //kernels:cpu_kernels_test --test_output=errors
	$(PYTHON) -m pytest -q tests

bench: setup
	$(PYTHON) tools/benchmark_ops.py $(BENCH_ARGS)

bench-optimizers: setup
	$(PYTHON) tools/benchmark_optimizers.py $(BENCH_ARGS)
