#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (root, no GPU): Bazel, a virtualenv with
# TensorFlow, the Bazel build of the op library, an editable install of the package and the
# TensorFlow-free kernel driver (CPU) for tests/test_kernel_driver.py.
# Re-running it only redoes what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TF_PACKAGE=${TF_PACKAGE:-tensorflow-cpu==2.21.0}
# tf-keras (Keras 2, for tf_ftrl.legacy) must match TensorFlow's minor version. KERAS_PACKAGE
# pins Keras 3 (empty: whatever pip resolves for TensorFlow). tools/compat_check.sh sets all three.
TF_KERAS_PACKAGE=${TF_KERAS_PACKAGE:-tf-keras==2.21.0}
KERAS_PACKAGE=${KERAS_PACKAGE:-}

if ! command -v bazel >/dev/null 2>&1; then
  echo "[setup] installing Bazel (Debian bazel-bootstrap)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq bazel-bootstrap >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

if ! python -c "import tensorflow, pytest, xdist, numpy, absl, pybind11, hypothesis, matplotlib, tf_keras" >/dev/null 2>&1; then
  echo "[setup] installing $TF_PACKAGE and the test dependencies"
  python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
  # shellcheck disable=SC2086  # KERAS_PACKAGE is one word or none
  python -m pip install -q --disable-pip-version-check "$TF_PACKAGE" "$TF_KERAS_PACKAGE" \
    $KERAS_PACKAGE pytest pytest-xdist numpy absl-py pybind11 hypothesis matplotlib
fi

# DeepCTR, for tests/test_sparse_regularizers.py (a real third-party CTR model). Without its
# dependencies: it names none that TensorFlow does not bring, and importing it is not needed here.
if ! python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('deepctr') is None)"; then
  echo "[setup] installing deepctr==0.9.4"
  python -m pip install -q --disable-pip-version-check --no-deps deepctr==0.9.4
fi

if [ -f setup.py ]; then
  # With --no-build-isolation the venv's own setuptools builds: pyproject's SPDX license needs 77+.
  if ! python -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"; then
    python -m pip install -q --disable-pip-version-check "setuptools>=77"
  fi
  echo "[setup] building the op library with Bazel and installing tf_ftrl (editable)"
  # Compiled objects shared by every clone on this machine (the Makefile's Bazel commands use the
  # same cache): a second clone's build takes them from there.
  export TF_FTRL_BAZEL_DISK_CACHE=${TF_FTRL_BAZEL_DISK_CACHE:-$HOME/.cache/tf_ftrl/bazel-disk-cache}
  python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
fi

echo "[setup] building the TensorFlow-free kernel driver (CPU)"
PYTHON="$VENV/bin/python" bash tools/build_kernel_driver.sh
