#!/usr/bin/env bash
# Compiles kernels/gpu_kernels.cu.cc into an object file with nvcc: the one place that states the
# CUDA flags, used by the Bazel genrule (kernels/BUILD) and by tools/build_kernel_driver.sh.
#   tools/compile_gpu_kernels.sh SOURCE OUTPUT.o      (run from the repository root)
# NVCC overrides the compiler (default: $CUDA_PATH/bin/nvcc, CUDA_PATH default /usr/local/cuda).
#   --fmad=false  no multiply-add contraction: the device side of the CPU build's
#                 -ffp-contract=off, so GPU and CPU round alike
#   --ftz=true    float32 subnormals flushed to zero, as in TensorFlow's own CUDA kernels and on
#                 the threads that run its CPU kernels (float64 keeps them: CUDA cannot flush)
#   sm_80, sm_90  A100 and H100/H200 machine code; compute_90 PTX for newer GPUs, compiled by the
#                 driver at load time (its plain add/mul/div.rn/sqrt.rn cannot be fused into FMA)
#   --threads=0   compile the two architectures in parallel
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE OUTPUT.o" >&2
  exit 2
fi
NVCC=${NVCC:-${CUDA_PATH:-/usr/local/cuda}/bin/nvcc}
exec "$NVCC" -c -x cu -std=c++17 -O3 --fmad=false --ftz=true --threads=0 -Xcompiler -fPIC -I. \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_90,code=compute_90 \
  "$1" -o "$2"
