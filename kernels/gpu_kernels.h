// CUDA launchers of every optimizer's dense and sparse update, on raw device pointers and with
// no TensorFlow dependency: the TensorFlow OpKernels call them with the op's stream, and the
// TensorFlow-free driver (tools/kernel_driver.cc) calls them for the GPU tests and benchmark. Only
// cuda_runtime.h is needed to call them, so neither side pays for the other's headers
// (TensorFlow's headers under nvcc take over a minute per file; these kernels compile in
// seconds).
//
// The per-element math is the optimizer's Step (ftrl_math.h, adagrad_math.h), the same the CPU
// loops call; built with --fmad=false (no contraction, like the CPU build's -ffp-contract=off)
// the kernels round like the CPU loops except where CUDA's powf/pow differ from the host's in the
// last place (lr_power != -0.5).
//
// Every launcher only enqueues work on `stream` and returns the launch status, except the sparse
// ones, which wait for their index check (see SparseApply).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"
#include "kernels/row_groups.h"

namespace tf_ftrl {
namespace gpu {

// The sparse launchers sort positions as 32-bit integers.
constexpr int64_t kMaxSparseIndices = INT32_MAX;

// The dense update of `Optimizer` (a description, optimizer_spec.h) over `size` elements of
// every state array. The state is of var's type T, or (T float) bfloat16 or float16.
template <typename Optimizer, typename T, typename S>
cudaError_t Apply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
                  const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad, int64_t size,
                  cudaStream_t stream);

// The dense update of `count` variables in one launch (multi-tensor apply): variable v has the
// state arrays states[v] and sizes[v] elements of gradient grads[v] (device pointers), and gets
// the bits Apply gives it alone. A table of the variables' pointers and sizes is copied from the
// host into `workspace` (device memory of at least MultiApplyWorkspaceBytes(count) bytes, at any
// alignment) on `stream`; the call returns once the host's table is no longer needed.
template <typename Optimizer, typename T, typename S>
cudaError_t MultiApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                       bool flag, const StateArrays<T, Optimizer::kNumState, S>* states,
                       const T* const* grads, const int64_t* sizes, int64_t count,
                       void* workspace, size_t workspace_bytes, cudaStream_t stream);

template <typename Optimizer, typename T, typename S>
size_t MultiApplyWorkspaceBytes(int64_t count);

// The device memory a sparse update of element type T with `num_indices` indices of type Index
// and rows of `row_size` elements needs as its `workspace` (for sorting the indices, reporting a
// bad one, and the sums of hot ids' chunks of duplicates). Enqueues nothing.
// The dense update of a row-wise optimizer (rowwise_math.h) over num_rows rows of row_size
// elements.
template <typename Optimizer, typename T, typename S>
cudaError_t RowwiseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                         bool flag, const StateArrays<T, Optimizer::kNumState, S>& state,
                         const T* grad, int64_t num_rows, int64_t row_size, cudaStream_t stream);

// The workspace of a sparse update (with `rowwise`, of a row-wise optimizer's).
template <typename T, typename Index>
cudaError_t SparseWorkspaceBytes(int64_t num_indices, int64_t row_size, bool rowwise,
                                 size_t* bytes);

// A sparse update's rows: var/accum/linear are [num_rows, row_size], grad is
// [num_indices, row_size] and grad row i belongs to var row indices[i].
template <typename Index>
struct SparseRows {
  const Index* indices;
  int64_t num_indices;
  int64_t num_rows;
  int64_t row_size;
};

// The sparse update of `Optimizer` on the rows named by rows.indices; duplicate indices are
// summed (in the CPU loops' order, kDuplicateChunkRows in row_groups.h: an index's later chunks
// of duplicates by groups of their own, first) and each unique row is updated once, by one group
// of threads (as many lanes as its 16-byte vectors, up to a warp), so the result is
// deterministic and needs no atomics.
//
// Every index is checked against [0, num_rows) first. That check has to reach the host before
// anything is written (TensorFlow raises InvalidArgument and the variables stay untouched), so
// this call copies its result to the host and synchronizes `stream` once (the sort and the
// chunk sums, which write only the workspace, are queued before the wait and run while the host
// waits). When an index is out of range it returns cudaSuccess with *error holding the lowest
// bad position and its value, and writes nothing; otherwise error->position is -1.
//
// `workspace` is device memory of at least SparseWorkspaceBytes<T, Index>(num_indices, row_size)
// bytes, at any alignment. Returns cudaErrorInvalidValue when num_indices is negative or above
// kMaxSparseIndices, or the workspace is short.
template <typename Optimizer, typename T, typename S, typename Index>
cudaError_t SparseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                        bool flag, const StateArrays<T, Optimizer::kNumState, S>& state,
                        const T* grad, const SparseRows<Index>& rows, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream, IndexError* error);

}  // namespace gpu
}  // namespace tf_ftrl
