#!/usr/bin/env bash
# Every GPU check of the project in one command, for a machine with a CUDA device and no
# TensorFlow (the lent GPU machines: nvcc, CuPy or PyTorch, pybind11, pytest):
#
#   bash tools/gpu_checks.sh OUT_DIR [STEP ...]
#
# STEPs, in this order by default (name some to run only those, e.g. across several sessions'
# calls; build outputs stay in build/kernel_driver/ between calls). The benchmark comes before the
# sanitizers, which are the slowest: on a machine lent for minutes, the numbers come back first.
#   build      the kernel driver with the CUDA kernels (tools/build_kernel_driver.sh --cuda)
#   test       tests/gpu (GPU vs CPU kernels vs float64 reference) and tests/test_kernel_driver.py
#   bench      tools/benchmark_gpu.py, float32, bfloat16, and float32 with bfloat16 state (JSON
#              and the printed tables)
#   memcheck   compute-sanitizer --tool memcheck on tests/gpu
#   racecheck  compute-sanitizer --tool racecheck on the sparse GPU tests (CUB's shared memory)
#   synccheck  compute-sanitizer --tool synccheck on the sparse GPU tests
#
# Each step is bounded in time (STEP_TIMEOUT seconds, default 420), logs to OUT_DIR/<step>.log and
# adds a line to OUT_DIR/summary.md, which starts with the device's name. A failing step does not
# stop the later ones; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [build|test|bench|memcheck|racecheck|synccheck ...]" >&2
  exit 2
fi
out=$1
shift
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test bench memcheck racecheck synccheck)
mkdir -p "$out"
summary="$out/summary.md"
step_timeout=${STEP_TIMEOUT:-420}
PYTHON=${PYTHON:-python3}
export PYTHON
CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
sanitizer=$(command -v compute-sanitizer || true)
[ -z "$sanitizer" ] && [ -x "$CUDA_PATH/bin/compute-sanitizer" ] &&
  sanitizer="$CUDA_PATH/bin/compute-sanitizer"

{
  echo "## GPU checks, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  echo "- nvcc: $("$CUDA_PATH/bin/nvcc" --version 2>&1 | grep -i release | head -1)"
  echo "- compute-sanitizer: ${sanitizer:-not found}"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "| step | result | seconds | command |"
  echo "|---|---|---|---|"
} >> "$summary"

failed=0
# Where nvidia-smi lists a GPU, GPU tests that find no device fail instead of skipping.
if nvidia-smi --list-gpus 2>/dev/null | grep -q GPU; then
  export TF_FTRL_REQUIRE_GPU=1
fi
# run STEP COMMAND...: runs the command under the step's time bound and records the outcome.
run() {
  local step=$1
  shift
  local log="$out/$step.log" start=$SECONDS status
  echo "[gpu checks] $step: $*"
  timeout "$step_timeout" "$@" > "$log" 2>&1
  status=$?
  local result=passed
  if [ $status -eq 124 ]; then
    result="timed out after ${step_timeout} s"
  elif [ $status -ne 0 ]; then
    result="FAILED (exit $status)"
  fi
  [ $status -ne 0 ] && failed=1
  # pytest's closing line ("N passed, M skipped in ...") says what actually ran.
  local counts
  counts=$(tail -n 1 "$log" | grep -E "passed|failed|error" | tr -d '=|' | sed 's/^ *//')
  [ -n "$counts" ] && result="$result: $counts"
  echo "| $step | $result | $((SECONDS - start)) | \`$*\` |" >> "$summary"
  tail -n 3 "$log"
}

# The sanitizers see each array's own allocation only when the array libraries do not pool them.
sanitize() {
  local tool=$1
  shift
  if [ -z "$sanitizer" ]; then
    echo "| $tool | FAILED: compute-sanitizer not found (PATH, $CUDA_PATH/bin) | 0 | |" >> "$summary"
    failed=1
    return
  fi
  run "$tool" env TF_FTRL_GPU_UNPOOLED=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$sanitizer" --tool "$tool" --error-exitcode 99 --target-processes all \
    "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/gpu "$@"
}

for step in "${steps[@]}"; do
  case "$step" in
    build) run build bash tools/build_kernel_driver.sh --cuda ;;
    test)
      run test "$PYTHON" -m pytest -q -p no:cacheprovider tests/gpu tests/test_kernel_driver.py \
        --junitxml "$out/test.xml" ;;
    memcheck) sanitize memcheck ;;
    racecheck) sanitize racecheck -k "sparse or out_of_range or workspace" ;;
    synccheck) sanitize synccheck -k "sparse or out_of_range or workspace" ;;
    bench)
      run bench-float32 "$PYTHON" tools/benchmark_gpu.py --json "$out/bench_float32.json"
      run bench-bfloat16 "$PYTHON" tools/benchmark_gpu.py --dtype bfloat16 \
        --json "$out/bench_bfloat16.json"
      run bench-bfloat16-state "$PYTHON" tools/benchmark_gpu.py --state-dtype bfloat16 \
        --json "$out/bench_float32_bfloat16_state.json" ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done

echo >> "$summary"
cat "$summary"
exit $failed
