#!/usr/bin/env bash
# Builds the TensorFlow-free kernel driver (tools/kernel_driver.cc, a pybind11 module) into
# build/kernel_driver/, for tests/test_kernel_driver.py, tests/gpu/ and tools/benchmark_gpu.py.
#
#   tools/build_kernel_driver.sh           CPU kernels only (g++)
#   tools/build_kernel_driver.sh --cuda    CPU and CUDA kernels (nvcc for the kernels, g++ for
#                                          the module); TF_FTRL_DRIVER_CUDA=1 asks the same
#
# PYTHON (default: .venv/bin/python when present, else python3) is the interpreter the module is
# for; it needs pybind11, nothing else (no TensorFlow). A build that is up to date is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

cuda=${TF_FTRL_DRIVER_CUDA:-0}
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    *) echo "usage: $0 [--cuda]" >&2; exit 2 ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
CXX=${CXX:-g++}
OUT=build/kernel_driver
mkdir -p "$OUT"

suffix=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
module="$OUT/tf_ftrl_kernel_driver$suffix"
stamp="$OUT/built_with_cuda=$cuda"
inputs=(kernels/*.h tools/kernel_driver.cc kernels/gpu_kernels.cu.cc
        tools/build_kernel_driver.sh tools/compile_gpu_kernels.sh)
up_to_date=1
if [ ! -f "$module" ] || [ ! -f "$stamp" ]; then
  up_to_date=0
else
  for input in "${inputs[@]}"; do
    [ "$input" -nt "$module" ] && up_to_date=0
  done
fi
if [ "$up_to_date" = 1 ]; then
  echo "[kernel driver] $module is up to date"
  exit 0
fi
rm -f "$OUT"/built_with_cuda=*

# A CPU build is also kept in a cache shared by the clones on this machine, under a hash of all
# that goes into it (TF_FTRL_DRIVER_CACHE; default ~/.cache/tf_ftrl/kernel-driver, empty for
# none): a second clone copies it instead of compiling for a minute.
cache_dir=${TF_FTRL_DRIVER_CACHE-$HOME/.cache/tf_ftrl/kernel-driver}
cached=""
if [ "$cuda" = 0 ] && [ -n "$cache_dir" ]; then
  key=$({ cat "${inputs[@]}"; echo "$suffix"; "$CXX" --version; "$PYTHON" -m pybind11 --version; } |
        sha256sum | cut -c1-32)
  cached="$cache_dir/$key$suffix"
  if [ -f "$cached" ]; then
    cp -f "$cached" "$module"
    touch "$stamp"
    echo "[kernel driver] $module from the cache ($cached)"
    exit 0
  fi
fi

# The CPU build's flags (.bazelrc): no contraction into FMA, loops free to vectorise. The
# CPU-only driver serves the tests alone (small arrays), so it is built at -O1: a quarter of
# -O3's compile time, and the same bits (IEEE operations in the same order at any level). The CUDA
# driver, which the GPU benchmark times, keeps -O3.
opt=-O1
[ "$cuda" = 1 ] && opt=-O3
cxxflags=(-std=c++17 "$opt" -fPIC -shared -fvisibility=hidden -ffp-contract=off -fno-math-errno
          -fno-trapping-math -I. $("$PYTHON" -m pybind11 --includes))
if [ "$cuda" = 1 ]; then
  echo "[kernel driver] building with CUDA ($CUDA_PATH) into $module"
  tools/compile_gpu_kernels.sh kernels/gpu_kernels.cu.cc "$OUT/gpu_kernels.o"
  "$CXX" "${cxxflags[@]}" -DTF_FTRL_DRIVER_WITH_CUDA=1 -I"$CUDA_PATH/include" \
    tools/kernel_driver.cc "$OUT/gpu_kernels.o" -o "$module" \
    -L"$CUDA_PATH/lib64" -lcudart_static -ldl -lrt -lpthread
else
  echo "[kernel driver] building (CPU only) into $module"
  "$CXX" "${cxxflags[@]}" tools/kernel_driver.cc -o "$module" -lpthread
fi
touch "$stamp"
if [ -n "$cached" ]; then
  mkdir -p "$cache_dir"
  cp -f "$module" "$cached.$$" && mv -f "$cached.$$" "$cached"
fi
