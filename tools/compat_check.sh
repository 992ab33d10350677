#!/usr/bin/env bash
# Builds tf_ftrl against another TensorFlow (and Keras 3) release and runs the test suite there:
# a clone of the committed HEAD with its own virtualenv and Bazel output, so the working tree and
# its build are left alone.
#
#   bash tools/compat_check.sh TF_VERSION [KERAS_VERSION] [-- PYTEST_ARGS...]
#   bash tools/compat_check.sh 2.16.2 3.3.3          # TensorFlow 2.16.2 with Keras 3.3.3
#   bash tools/compat_check.sh 2.18.1                # with the Keras that pip resolves
#
# tf-keras (for tf_ftrl.legacy) is taken from TensorFlow's minor release. Writes setup.log,
# pytest.log and result.txt (the installed versions, the path XLA-compiled updates take and
# pytest's summary) under build/compat/tf-TF_VERSION-keras-KERAS_VERSION/ (COMPAT_DIR overrides
# build/compat), prints result.txt, and exits with pytest's status. KEEP=1 keeps the clone's
# Bazel output.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}

if [ $# -lt 1 ]; then
  sed -n '2,14p' "$0"
  exit 2
fi
TF_VERSION=$1
shift
KERAS_VERSION=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  KERAS_VERSION=$1
  shift
fi
if [ "${1:-}" = "--" ]; then shift; fi
PYTEST_ARGS=("$@")
# (In worker processes, as `make test` runs it.)
if [ ${#PYTEST_ARGS[@]} -eq 0 ]; then PYTEST_ARGS=(-q -n auto --maxprocesses 4 tests); fi

WORK=${COMPAT_DIR:-$ROOT/build/compat}/tf-$TF_VERSION-keras-${KERAS_VERSION:-resolved}
rm -rf "$WORK"
mkdir -p "$WORK"
git clone -q "$ROOT" "$WORK/src"
cd "$WORK/src"
TF_MINOR=$(echo "$TF_VERSION" | cut -d. -f1,2)

echo "[compat] TensorFlow $TF_VERSION, Keras ${KERAS_VERSION:-as resolved by pip}: set-up and" \
  "Bazel build (log: $WORK/setup.log)"
setup_status=0
PYTHON="$PYTHON" VENV="$WORK/venv" TF_PACKAGE="tensorflow-cpu==$TF_VERSION" \
  TF_KERAS_PACKAGE="tf-keras~=$TF_MINOR.0" KERAS_PACKAGE=${KERAS_VERSION:+keras==$KERAS_VERSION} \
  bash tools/setup.sh >"$WORK/setup.log" 2>&1 || setup_status=$?

versions=$("$WORK/venv/bin/python" - <<'EOF' 2>/dev/null || echo "versions: (no environment)"
from importlib import metadata
names = ("tensorflow-cpu", "keras", "tf-keras", "numpy")
print("versions: " + ", ".join(f"{n} {metadata.version(n)}" for n in names))
EOF
)

# Which path XLA-compiled updates take there: tf_ftrl.ops logs it in one line when it loads.
xla=$("$WORK/venv/bin/python" - <<'EOF' 2>/dev/null || echo "xla: (tf_ftrl did not load)"
import logging, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logger = logging.getLogger("tf_ftrl")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
from tf_ftrl import ops
ops.load_library()
print("xla: " + " / ".join(m.removeprefix("tf_ftrl: ") for m in messages if "under XLA" in m))
EOF
)

status=$setup_status
if [ "$setup_status" -eq 0 ]; then
  echo "[compat] pytest ${PYTEST_ARGS[*]} (log: $WORK/pytest.log)"
  "$WORK/venv/bin/python" -m pytest "${PYTEST_ARGS[@]}" >"$WORK/pytest.log" 2>&1 || status=$?
  outcome=$(grep -E "(passed|failed|error)" "$WORK/pytest.log" | tail -n 1)
else
  outcome="set-up or build failed (exit $setup_status); see setup.log: $(tail -n 3 "$WORK/setup.log" | tr '\n' ' ')"
fi

if [ "${KEEP:-0}" != 1 ]; then
  PYTHON_BIN_PATH="$WORK/venv/bin/python" bazel clean --expunge >/dev/null 2>&1 || true
fi
{
  echo "tensorflow-cpu==$TF_VERSION keras==${KERAS_VERSION:-resolved}"
  echo "$versions"
  echo "$xla"
  echo "result: $outcome"
  echo "exit: $status"
} >"$WORK/result.txt"
cat "$WORK/result.txt"
exit "$status"
