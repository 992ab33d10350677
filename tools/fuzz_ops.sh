#!/usr/bin/env bash
# A long fuzz of the ops (FTRL and Adagrad, dense and sparse, element-wise and row-wise, and
# the multi-tensor ops against the one-variable ones; 16-bit state too): tests/test_fuzz_ops.py
# under hypothesis's "long" profile, each example in a worker subprocess (a crash fails the test
# with its example). Prints the number of examples run per op and per outcome.
#   tools/fuzz_ops.sh [EXAMPLES_PER_OP]     (default 18000: about 15 minutes on 2 cores)
# The C++ loops have their own fuzz test, under the sanitizers, e.g. for longer:
#   bazel test --config=asan //kernels:cpu_kernels_fuzz_test --test_env=TF_FTRL_FUZZ_ITERATIONS=20000
set -euo pipefail
cd "$(dirname "$0")/.."
export HYPOTHESIS_PROFILE=long
export FUZZ_EXAMPLES=${1:-18000}
exec .venv/bin/python -m pytest -q -s tests/test_fuzz_ops.py -k test_fuzz
