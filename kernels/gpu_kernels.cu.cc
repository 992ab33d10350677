// CUDA kernels of every optimizer's dense and sparse update (see gpu_kernels.h). Plain CUDA and
// CUB only: no TensorFlow headers, so nvcc compiles this file in seconds.
//
// Multi-tensor dense: one launch over a device-side table of the variables' pointers and sizes;
// each variable has the blocks its own dense launch would have, and each block finds its variable
// in the table.
// Dense: one grid-stride pass; each thread loads 16 bytes of var, every slot and grad at a time
// (when all pointers are 16-byte aligned), and the < 16 bytes past the last full vector go to the
// first threads one element each.
// Sparse: check the indices and number their positions (one kernel) -> radix-sort (index,
// position) pairs (stable, so each row's positions stay ascending) -> the groups of lanes at the
// start of a run's later chunks of kDuplicateChunkRows positions sum their chunk's grad rows into
// the workspace (so a hot id's thousands of rows are summed by many groups at once) -> wait for
// the check -> the group at the start of each run sums its first chunk, adds the later chunks'
// sums in order, and updates the row once.
// What each thread does is in gpu_kernel_bodies.h (host and device code, tested on the host);
// this file holds the launches, the index check and the sort.
#include "kernels/gpu_kernels.h"

#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/gpu_kernel_bodies.h"
#include "kernels/optimizers.h"

namespace tf_ftrl {
namespace gpu {
namespace {

constexpr int kThreadsPerBlock = 256;
// Grids are capped at this many blocks and stride over the rest: more blocks than the GPU can
// hold at once only add scheduling work.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
// Each workspace buffer starts on this boundary (what cudaMalloc guarantees, and CUB expects).
constexpr size_t kWorkspaceAlignment = 256;

#define TF_FTRL_RETURN_IF_CUDA_ERROR(expr) \
  do {                                     \
    const cudaError_t status_ = (expr);    \
    if (status_ != cudaSuccess) return status_; \
  } while (false)

int64_t NumBlocks(int64_t work_items, int64_t items_per_block) {
  const int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return blocks < 1 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

bool IsVectorAligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

template <int kWidth, typename Step, typename State, typename T = typename State::Var>
__global__ void __launch_bounds__(kThreadsPerBlock)
    DenseKernel(Step step, State state, const T* __restrict__ grad, int64_t size) {
  DenseThreadWork<kWidth>(step, state, grad, size,
                          static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                          static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// Whether var, grad and every state array start on a vector boundary (a state array narrower than
// var needs only its packs' alignment, but TensorFlow's buffers have more).
template <typename State>
bool AllVectorAligned(const State& state, const void* grad) {
  bool aligned = IsVectorAligned(grad) && IsVectorAligned(state.var);
  for (const auto* slot : state.slots) aligned = aligned && IsVectorAligned(slot);
  return aligned;
}

template <typename Step, typename State, typename T = typename State::Var>
cudaError_t LaunchDense(const Step& step, const State& state, const T* grad, int64_t size,
                        cudaStream_t stream) {
  if (size == 0) return cudaSuccess;
  const bool aligned = AllVectorAligned(state, grad);
  constexpr int kWidth = VectorWidth<T>();
  if (aligned) {
    DenseKernel<kWidth><<<NumBlocks(size / kWidth, kThreadsPerBlock), kThreadsPerBlock, 0,
                          stream>>>(step, state, grad, size);
  } else {
    DenseKernel<1><<<NumBlocks(size, kThreadsPerBlock), kThreadsPerBlock, 0, stream>>>(
        step, state, grad, size);
  }
  return cudaGetLastError();
}

template <int kWidth, typename Step, typename State>
__global__ void __launch_bounds__(kThreadsPerBlock)
    MultiTensorKernel(Step step, const MultiTensorEntry<State>* __restrict__ entries,
                      int64_t num_entries) {
  MultiTensorThreadWork<kWidth>(step, entries, num_entries, blockIdx.x, threadIdx.x,
                                blockDim.x);
}

// ------------------------------------------------------------------------------------- sparse

// Device buffers of one sparse update, carved out of the caller's workspace.
template <typename Index>
struct SparseBuffers {
  Index* sorted_indices;
  int32_t* positions;         // 0, 1, ..., n - 1
  int32_t* sorted_positions;  // positions in order of (index, position)
  unsigned long long* first_invalid;  // lowest position of an out-of-range index, or ~0
  void* partials;             // NumPartialSlots(n) rows of the accumulate type
  void* summed;               // row-wise only: n rows of the accumulate type
  void* squares;              // row-wise only: n x kRowSumLanes partial sums of squares
  void* coefficients;         // row-wise only: n rows' coefficients (RowCoefficientBytes)
  void* sort_temp;
  size_t sort_temp_bytes;
};

// Lays the buffers out from `base` (nullptr: only sizes them) and sets *total_bytes.
// With `rowwise`, also the summed gradient rows and the rows' coefficients of the row-wise passes.
template <typename T, typename Index>
cudaError_t LayOutSparseBuffers(void* base, int64_t n, int64_t row_size, bool rowwise,
                                SparseBuffers<Index>* buffers, size_t* total_bytes) {
  const int64_t slots = NumPartialSlots(n);
  constexpr size_t kPartialBytes = sizeof(AccumulateType<T>);
  const int64_t summed_rows = rowwise ? n : 0;
  if (row_size < 0 ||
      (slots > 0 && static_cast<uint64_t>(row_size) > SIZE_MAX / 4 / kPartialBytes /
                                                          static_cast<uint64_t>(slots)) ||
      (summed_rows > 0 && static_cast<uint64_t>(row_size) > SIZE_MAX / 4 / kPartialBytes /
                                                                static_cast<uint64_t>(summed_rows))) {
    return cudaErrorInvalidValue;
  }
  // The size does not depend on the data; CUB only needs the types and n. The sort is sized for
  // all bits of Index, the most it will be asked to sort.
  buffers->sort_temp_bytes = 0;
  TF_FTRL_RETURN_IF_CUDA_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, buffers->sort_temp_bytes, static_cast<const Index*>(nullptr),
      static_cast<Index*>(nullptr), static_cast<const int32_t*>(nullptr),
      static_cast<int32_t*>(nullptr), n));

  // The caller's block may start anywhere: the buffers start at its first aligned byte, and the
  // size asked for covers the worst case.
  const size_t skew =
      base == nullptr ? 0
                      : (kWorkspaceAlignment -
                         reinterpret_cast<uintptr_t>(base) % kWorkspaceAlignment) %
                            kWorkspaceAlignment;
  char* const start = base == nullptr ? nullptr : static_cast<char*>(base) + skew;
  size_t offset = 0;
  auto carve = [&](auto** pointer, size_t bytes) {
    using Pointee = std::remove_pointer_t<std::remove_reference_t<decltype(*pointer)>>;
    *pointer = start == nullptr ? nullptr : reinterpret_cast<Pointee*>(start + offset);
    offset += (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
  };
  const size_t count = static_cast<size_t>(n);
  carve(&buffers->sorted_indices, count * sizeof(Index));
  carve(&buffers->positions, count * sizeof(int32_t));
  carve(&buffers->sorted_positions, count * sizeof(int32_t));
  carve(&buffers->first_invalid, sizeof(unsigned long long));
  char* partials = nullptr;
  carve(&partials, static_cast<size_t>(slots) * static_cast<size_t>(row_size) * kPartialBytes);
  buffers->partials = partials;
  char* summed = nullptr;
  carve(&summed, static_cast<size_t>(summed_rows) * static_cast<size_t>(row_size) * kPartialBytes);
  buffers->summed = summed;
  char* squares = nullptr;
  carve(&squares, static_cast<size_t>(summed_rows) * kRowSumLanes * kPartialBytes);
  buffers->squares = squares;
  char* coefficients = nullptr;
  carve(&coefficients, static_cast<size_t>(summed_rows) * RowCoefficientBytes<T>());
  buffers->coefficients = coefficients;
  char* sort_temp = nullptr;
  carve(&sort_temp, buffers->sort_temp_bytes);
  buffers->sort_temp = sort_temp;
  *total_bytes = offset + kWorkspaceAlignment - 1;
  return cudaSuccess;
}

// Numbers the positions and finds the lowest position of a bad index (CheckAndNumberThreadWork):
// only threads that saw a bad index use the atomic.
template <typename Index>
__global__ void CheckAndNumberKernel(const Index* __restrict__ indices, int64_t n,
                                     int64_t num_rows, int32_t* __restrict__ positions,
                                     unsigned long long* first_invalid) {
  const int64_t first_bad = CheckAndNumberThreadWork(
      indices, n, num_rows, positions,
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
      static_cast<int64_t>(gridDim.x) * blockDim.x);
  if (first_bad >= 0) atomicMin(first_invalid, static_cast<unsigned long long>(first_bad));
}

// A group of `lanes` threads per sorted position (ChunkSumThreadWork).
template <int kWidth, typename T, typename Index>
__global__ void __launch_bounds__(kThreadsPerBlock)
    ChunkSumKernel(const T* __restrict__ grad, int64_t row_size, int lanes,
                   SortedPairs<Index> sorted, AccumulateType<T>* partials) {
  ChunkSumThreadWork<kWidth>(grad, row_size, lanes, sorted, partials,
                             static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                             static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// A group of `lanes` threads per sorted position (SparseThreadWork).
template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
__global__ void __launch_bounds__(kThreadsPerBlock)
    SparseKernel(Step step, State state, const T* __restrict__ grad,
                 int64_t row_size, int lanes, SortedPairs<Index> sorted,
                 const AccumulateType<T>* partials) {
  SparseThreadWork<kWidth>(step, state, grad, row_size, lanes, sorted, partials,
                           static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                           static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// A group of kRowSumLanes threads per row (see RowwiseDenseBegin); blocks of whole groups.
template <typename Step, typename State, typename T = typename State::Var>
__global__ void __launch_bounds__(kThreadsPerBlock)
    RowwiseDenseKernel(Step step, State state, const T* __restrict__ grad, int64_t num_rows,
                       int64_t row_size) {
  using A = AccumulateType<T>;
  static_assert(kThreadsPerBlock % kRowSumLanes == 0 && kWarpSize % kRowSumLanes == 0,
                "groups within blocks and warps");
  const int lane = static_cast<int>(threadIdx.x % kRowSumLanes);
  // The group's lanes of the warp: all of them take the same rows, so they reach every shuffle.
  const unsigned group_mask = ((1u << kRowSumLanes) - 1)
                              << (threadIdx.x % kWarpSize / kRowSumLanes * kRowSumLanes);
  const int64_t num_groups = static_cast<int64_t>(gridDim.x) * blockDim.x / kRowSumLanes;
  for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kRowSumLanes;
       r < num_rows; r += num_groups) {
    const A mine = RowSquaresPartial<A>(grad + r * row_size, row_size, lane);
    A partials[kRowSumLanes];
#pragma unroll
    for (int k = 0; k < kRowSumLanes; ++k) {
      partials[k] = __shfl_sync(group_mask, mine, k, kRowSumLanes);
    }
    const RowwiseBegin<Step, A> begin = RowwiseDenseBegin(step, state, r, partials, row_size);
    __syncwarp(group_mask);  // every lane has read the row's per-row values
    if (lane == 0) StoreRowValues<Step>(state, r, begin.values);
    RowwiseDenseElements(step, begin.coefficients, state, grad, r, row_size, lane);
  }
}

template <int kWidth, typename T, typename Index>
__global__ void __launch_bounds__(kThreadsPerBlock)
    RowSumKernel(const T* __restrict__ grad, int64_t row_size, int lanes,
                 SortedPairs<Index> sorted, const AccumulateType<T>* partials,
                 AccumulateType<T>* summed) {
  RowSumThreadWork<kWidth>(grad, row_size, lanes, sorted, partials, summed,
                           static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                           static_cast<int64_t>(gridDim.x) * blockDim.x);
}

template <typename Index, typename A>
__global__ void __launch_bounds__(kThreadsPerBlock)
    RowSquaresKernel(int64_t row_size, SortedPairs<Index> sorted, const A* summed, A* squares) {
  RowSquaresThreadWork(row_size, sorted, summed, squares,
                       static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                       static_cast<int64_t>(gridDim.x) * blockDim.x);
}

template <typename Step, typename State, typename Index, typename T = typename State::Var>
__global__ void __launch_bounds__(kThreadsPerBlock)
    RowBeginKernel(Step step, State state, int64_t row_size,
                   SortedPairs<Index> sorted, const AccumulateType<T>* squares,
                   typename Step::Row* coefficients) {
  RowBeginThreadWork(step, state, row_size, sorted, squares, coefficients,
                     static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                     static_cast<int64_t>(gridDim.x) * blockDim.x);
}

template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
__global__ void __launch_bounds__(kThreadsPerBlock)
    RowwiseSparseKernel(Step step, State state, int64_t row_size,
                        int lanes, SortedPairs<Index> sorted, const AccumulateType<T>* summed,
                        const typename Step::Row* coefficients) {
  RowwiseSparseThreadWork<kWidth>(step, state, row_size, lanes, sorted, summed, coefficients,
                                  static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                                  static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// A group of lanes per sorted position (most start a run: ids repeat little); the grid strides
// over the rest.
int64_t SparseBlocks(int64_t n, int lanes) { return NumBlocks(n, kThreadsPerBlock / lanes); }

// The sparse update's first pass, kWidth elements per lane at a time; none when no index can
// repeat kDuplicateChunkRows times.
template <int kWidth, typename T, typename Index>
cudaError_t LaunchChunkSums(const T* grad, int64_t row_size, int lanes,
                            const SortedPairs<Index>& sorted, AccumulateType<T>* partials,
                            cudaStream_t stream) {
  if (NumPartialSlots(sorted.n) == 0) return cudaSuccess;
  ChunkSumKernel<kWidth><<<SparseBlocks(sorted.n, lanes), kThreadsPerBlock, 0, stream>>>(
      grad, row_size, lanes, sorted, partials);
  return cudaGetLastError();
}

// The sparse update's second pass, the one that writes the variables.
template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
cudaError_t LaunchSparseUpdates(const Step& step, const State& state,
                                const T* grad, int64_t row_size, int lanes,
                                const SortedPairs<Index>& sorted,
                                const AccumulateType<T>* partials, cudaStream_t stream) {
  SparseKernel<kWidth><<<SparseBlocks(sorted.n, lanes), kThreadsPerBlock, 0, stream>>>(
      step, state, grad, row_size, lanes, sorted, partials);
  return cudaGetLastError();
}

// The row-wise passes after the chunk sums (see gpu_kernel_bodies.h): the summed rows and their
// partial sums of squares (which write only the workspace, so they go before the wait for the
// index check), then, after it, the rows' per-row values and coefficients and the elements.
template <int kWidth, typename T, typename Index>
cudaError_t LaunchRowSums(const T* grad, int64_t row_size, int lanes,
                          const SortedPairs<Index>& sorted, const AccumulateType<T>* partials,
                          AccumulateType<T>* summed, AccumulateType<T>* squares,
                          cudaStream_t stream) {
  RowSumKernel<kWidth><<<SparseBlocks(sorted.n, lanes), kThreadsPerBlock, 0, stream>>>(
      grad, row_size, lanes, sorted, partials, summed);
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaGetLastError());
  // Whole blocks, so that the threads make whole groups of kRowSumLanes.
  static_assert(kThreadsPerBlock % kRowSumLanes == 0, "blocks of whole groups");
  RowSquaresKernel<<<SparseBlocks(sorted.n, kRowSumLanes), kThreadsPerBlock, 0, stream>>>(
      row_size, sorted, static_cast<const AccumulateType<T>*>(summed), squares);
  return cudaGetLastError();
}

template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
cudaError_t LaunchRowwiseUpdates(const Step& step, const State& state,
                                 int64_t row_size, int lanes, const SortedPairs<Index>& sorted,
                                 const AccumulateType<T>* summed,
                                 const AccumulateType<T>* squares, void* coefficients,
                                 cudaStream_t stream) {
  static_assert(sizeof(typename Step::Row) <= RowCoefficientBytes<T>(),
                "a row's coefficients fit their workspace slot");
  auto* const rows = static_cast<typename Step::Row*>(coefficients);
  RowBeginKernel<<<NumBlocks(sorted.n, kThreadsPerBlock), kThreadsPerBlock, 0, stream>>>(
      step, state, row_size, sorted, squares, rows);
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaGetLastError());
  RowwiseSparseKernel<kWidth><<<SparseBlocks(sorted.n, lanes), kThreadsPerBlock, 0, stream>>>(
      step, state, row_size, lanes, sorted, summed, rows);
  return cudaGetLastError();
}

template <typename Step, typename = void>
struct IsRowwiseStep : std::false_type {};
template <typename Step>
struct IsRowwiseStep<Step, std::void_t<decltype(Step::kPerRow)>> : std::true_type {};

// The number of low bits that hold every index in [0, num_rows): the radix sort skips the rest.
// At most the key's width less its sign bit (valid indices are non-negative; the order of a
// list with a bad one is never used): the workspace is sized for a sort of the whole key, and
// int32 indices can name only the first 2^31 rows of a larger table.
template <typename Index>
int SignificantBits(int64_t num_rows) {
  constexpr int kMaxBits = 8 * sizeof(Index) - 1;
  int bits = 1;
  while (bits < kMaxBits && (int64_t{1} << bits) < num_rows) ++bits;
  return bits;
}

// Enqueues the index check and the sort. Both write only the workspace.
template <typename Index>
cudaError_t EnqueueCheckAndSort(const SparseRows<Index>& rows,
                                const SparseBuffers<Index>& buffers, cudaStream_t stream) {
  const int64_t n = rows.num_indices;
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaMemsetAsync(buffers.first_invalid, 0xff,
                                               sizeof(unsigned long long), stream));
  CheckAndNumberKernel<<<NumBlocks(n, kThreadsPerBlock), kThreadsPerBlock, 0, stream>>>(
      rows.indices, n, rows.num_rows, buffers.positions, buffers.first_invalid);
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaGetLastError());
  size_t sort_bytes = buffers.sort_temp_bytes;
  return cub::DeviceRadixSort::SortPairs(
      buffers.sort_temp, sort_bytes, rows.indices, buffers.sorted_indices, buffers.positions,
      buffers.sorted_positions, n, /*begin_bit=*/0, SignificantBits<Index>(rows.num_rows),
      stream);
}

// Waits for the index check (and whatever was queued before it) and fills *error: the check has
// to reach the host before anything is written (see SparseApply in the header).
template <typename Index>
cudaError_t WaitForCheck(const SparseRows<Index>& rows, const SparseBuffers<Index>& buffers,
                         cudaStream_t stream, IndexError* error) {
  unsigned long long first_invalid = 0;
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(&first_invalid, buffers.first_invalid,
                                               sizeof(first_invalid), cudaMemcpyDeviceToHost,
                                               stream));
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  if (first_invalid == ~0ull) return cudaSuccess;
  // Only on the error path: one more copy, for the bad index's value.
  Index value = 0;
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(&value, rows.indices + first_invalid,
                                               sizeof(Index), cudaMemcpyDeviceToHost, stream));
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  error->position = static_cast<int64_t>(first_invalid);
  error->value = static_cast<int64_t>(value);
  return cudaSuccess;
}

template <typename Step, typename State, typename Index, typename T = typename State::Var>
cudaError_t LaunchSparse(const Step& step, const State& state,
                         const T* grad, const SparseRows<Index>& rows, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream, IndexError* error) {
  *error = IndexError();
  const int64_t n = rows.num_indices;
  if (n == 0) return cudaSuccess;
  if (n < 0 || n > kMaxSparseIndices) return cudaErrorInvalidValue;
  constexpr bool kRowwise = IsRowwiseStep<Step>::value;
  SparseBuffers<Index> buffers;
  size_t needed_bytes = 0;
  TF_FTRL_RETURN_IF_CUDA_ERROR(
      LayOutSparseBuffers<T>(workspace, n, rows.row_size, kRowwise, &buffers, &needed_bytes));
  if (workspace == nullptr || workspace_bytes < needed_bytes) return cudaErrorInvalidValue;

  // Everything that writes only the workspace is queued before the wait, so it runs while the
  // host waits: the check, the sort and the chunk sums. When an index is bad, the sort's order
  // (of only the low bits that valid indices use) is meaningless, but it is still a permutation
  // of the positions, so the chunk sums read grad rows that exist and write slots below
  // NumPartialSlots(n); nothing reads them.
  TF_FTRL_RETURN_IF_CUDA_ERROR(EnqueueCheckAndSort(rows, buffers, stream));
  const SortedPairs<Index> sorted{buffers.sorted_indices, buffers.sorted_positions, n};
  constexpr int kWidth = VectorWidth<T>();
  const bool aligned = rows.row_size % kWidth == 0 && AllVectorAligned(state, grad);
  const int64_t vectors = aligned ? rows.row_size / kWidth : rows.row_size;
  const int lanes = LanesPerRow(vectors);
  auto* const partials = static_cast<AccumulateType<T>*>(buffers.partials);
  auto* const summed = static_cast<AccumulateType<T>*>(buffers.summed);
  auto* const squares = static_cast<AccumulateType<T>*>(buffers.squares);
  if (rows.row_size > 0) {
    TF_FTRL_RETURN_IF_CUDA_ERROR(
        aligned ? LaunchChunkSums<kWidth>(grad, rows.row_size, lanes, sorted, partials, stream)
                : LaunchChunkSums<1>(grad, rows.row_size, lanes, sorted, partials, stream));
    if constexpr (kRowwise) {
      TF_FTRL_RETURN_IF_CUDA_ERROR(
          aligned ? LaunchRowSums<kWidth>(grad, rows.row_size, lanes, sorted, partials, summed,
                                          squares, stream)
                  : LaunchRowSums<1>(grad, rows.row_size, lanes, sorted, partials, summed,
                                     squares, stream));
    }
  }
  TF_FTRL_RETURN_IF_CUDA_ERROR(WaitForCheck(rows, buffers, stream, error));
  if (error->position >= 0 || rows.row_size == 0) return cudaSuccess;
  if constexpr (kRowwise) {
    if (aligned) {
      return LaunchRowwiseUpdates<kWidth>(step, state, rows.row_size, lanes, sorted, summed,
                                          squares, buffers.coefficients, stream);
    }
    return LaunchRowwiseUpdates<1>(step, state, rows.row_size, lanes, sorted, summed, squares,
                                   buffers.coefficients, stream);
  } else {
    if (aligned) {
      return LaunchSparseUpdates<kWidth>(step, state, grad, rows.row_size, lanes, sorted,
                                         partials, stream);
    }
    return LaunchSparseUpdates<1>(step, state, grad, rows.row_size, lanes, sorted, partials,
                                  stream);
  }
}

}  // namespace

template <typename Optimizer, typename T, typename S>
cudaError_t Apply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
                  const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad, int64_t size,
                  cudaStream_t stream) {
  return Optimizer::WithStep(
      h, flag, [&](const auto& step) { return LaunchDense(step, state, grad, size, stream); });
}

template <typename Optimizer, typename T, typename S>
size_t MultiApplyWorkspaceBytes(int64_t count) {
  using Entry = MultiTensorEntry<StateArrays<T, Optimizer::kNumState, S>>;
  return static_cast<size_t>(count < 0 ? 0 : count) * sizeof(Entry) + alignof(Entry) - 1;
}

template <typename Optimizer, typename T, typename S>
cudaError_t MultiApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                       bool flag, const StateArrays<T, Optimizer::kNumState, S>* states,
                       const T* const* grads, const int64_t* sizes, int64_t count,
                       void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  using State = StateArrays<T, Optimizer::kNumState, S>;
  using Entry = MultiTensorEntry<State>;
  if (count < 0 || workspace_bytes < MultiApplyWorkspaceBytes<Optimizer, T, S>(count)) {
    return cudaErrorInvalidValue;
  }
  constexpr int kWidth = VectorWidth<T>();
  // The table, in block order, without empty variables.
  std::vector<Entry> entries;
  entries.reserve(static_cast<size_t>(count));
  int64_t num_blocks = 0;
  for (int64_t v = 0; v < count; ++v) {
    if (sizes[v] == 0) continue;
    const bool vectors = AllVectorAligned(states[v], grads[v]);
    const int64_t blocks =
        NumBlocks(vectors ? sizes[v] / kWidth : sizes[v], kThreadsPerBlock);
    entries.push_back(Entry{states[v], grads[v], sizes[v], num_blocks, blocks, vectors});
    num_blocks += blocks;
  }
  if (entries.empty()) return cudaSuccess;
  if (num_blocks > INT32_MAX) return cudaErrorInvalidValue;
  const uintptr_t base = reinterpret_cast<uintptr_t>(workspace);
  Entry* const table =
      reinterpret_cast<Entry*>((base + alignof(Entry) - 1) / alignof(Entry) * alignof(Entry));
  // From pageable host memory: returns once the data is staged, so `entries` may go.
  TF_FTRL_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(table, entries.data(),
                                               entries.size() * sizeof(Entry),
                                               cudaMemcpyHostToDevice, stream));
  return Optimizer::WithStep(h, flag, [&](const auto& step) {
    MultiTensorKernel<kWidth><<<static_cast<unsigned>(num_blocks), kThreadsPerBlock, 0,
                                stream>>>(step, table, static_cast<int64_t>(entries.size()));
    return cudaGetLastError();
  });
}

template <typename Optimizer, typename T, typename S>
cudaError_t RowwiseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                         bool flag, const StateArrays<T, Optimizer::kNumState, S>& state,
                         const T* grad, int64_t num_rows, int64_t row_size,
                         cudaStream_t stream) {
  if (num_rows == 0 || row_size == 0) return cudaSuccess;
  return Optimizer::WithStep(h, flag, [&](const auto& step) {
    RowwiseDenseKernel<<<NumBlocks(num_rows * kRowSumLanes, kThreadsPerBlock), kThreadsPerBlock,
                         0, stream>>>(
        step, state, grad, num_rows, row_size);
    return cudaGetLastError();
  });
}

template <typename T, typename Index>
cudaError_t SparseWorkspaceBytes(int64_t num_indices, int64_t row_size, bool rowwise,
                                 size_t* bytes) {
  if (num_indices < 0 || num_indices > kMaxSparseIndices) return cudaErrorInvalidValue;
  SparseBuffers<Index> unused;
  return LayOutSparseBuffers<T>(nullptr, num_indices, row_size, rowwise, &unused, bytes);
}

template <typename Optimizer, typename T, typename S, typename Index>
cudaError_t SparseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                        bool flag, const StateArrays<T, Optimizer::kNumState, S>& state,
                        const T* grad, const SparseRows<Index>& rows, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream, IndexError* error) {
  return Optimizer::WithStep(h, flag, [&](const auto& step) {
    return LaunchSparse(step, state, grad, rows, workspace, workspace_bytes, stream, error);
  });
}

// Each optimizer for every element type T, with state of type S: T's own, or bfloat16 or
// float16 for float32.
#define TF_FTRL_INSTANTIATE_SPARSE(Optimizer, T, S, Index)                                     \
  template cudaError_t SparseApply<Optimizer, T, S, Index>(                                    \
      const Optimizer::Hyperparams<AccumulateType<T>>&, bool,                                  \
      const StateArrays<T, Optimizer::kNumState, S>&, const T*, const SparseRows<Index>&,      \
      void*, size_t, cudaStream_t, IndexError*);

#define TF_FTRL_INSTANTIATE_OPTIMIZER_TYPE(Optimizer, T, S)                                    \
  template cudaError_t Apply<Optimizer, T, S>(                                                 \
      const Optimizer::Hyperparams<AccumulateType<T>>&, bool,                                  \
      const StateArrays<T, Optimizer::kNumState, S>&, const T*, int64_t, cudaStream_t);        \
  template cudaError_t MultiApply<Optimizer, T, S>(                                            \
      const Optimizer::Hyperparams<AccumulateType<T>>&, bool,                                  \
      const StateArrays<T, Optimizer::kNumState, S>*, const T* const*, const int64_t*, int64_t, \
      void*, size_t, cudaStream_t);                                                            \
  template size_t MultiApplyWorkspaceBytes<Optimizer, T, S>(int64_t);                          \
  TF_FTRL_INSTANTIATE_SPARSE(Optimizer, T, S, int32_t)                                         \
  TF_FTRL_INSTANTIATE_SPARSE(Optimizer, T, S, int64_t)

#define TF_FTRL_INSTANTIATE_ROWWISE_TYPE(Optimizer, T, S)                                      \
  template cudaError_t RowwiseApply<Optimizer, T, S>(                                          \
      const Optimizer::Hyperparams<AccumulateType<T>>&, bool,                                  \
      const StateArrays<T, Optimizer::kNumState, S>&, const T*, int64_t, int64_t,              \
      cudaStream_t);                                                                           \
  TF_FTRL_INSTANTIATE_SPARSE(Optimizer, T, S, int32_t)                                         \
  TF_FTRL_INSTANTIATE_SPARSE(Optimizer, T, S, int64_t)

#define TF_FTRL_INSTANTIATE_TYPES(INSTANTIATE, Optimizer) \
  INSTANTIATE(Optimizer, float, float)                    \
  INSTANTIATE(Optimizer, float, bfloat16)                 \
  INSTANTIATE(Optimizer, float, float16)                  \
  INSTANTIATE(Optimizer, double, double)                  \
  INSTANTIATE(Optimizer, float16, float16)                \
  INSTANTIATE(Optimizer, bfloat16, bfloat16)

#define TF_FTRL_INSTANTIATE_OPTIMIZER(Optimizer) \
  TF_FTRL_INSTANTIATE_TYPES(TF_FTRL_INSTANTIATE_OPTIMIZER_TYPE, Optimizer)
#define TF_FTRL_INSTANTIATE_ROWWISE(Optimizer) \
  TF_FTRL_INSTANTIATE_TYPES(TF_FTRL_INSTANTIATE_ROWWISE_TYPE, Optimizer)

TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_INSTANTIATE_OPTIMIZER)
TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_INSTANTIATE_ROWWISE)

#define TF_FTRL_INSTANTIATE_WORKSPACE(T)                                                       \
  template cudaError_t SparseWorkspaceBytes<T, int32_t>(int64_t, int64_t, bool, size_t*);      \
  template cudaError_t SparseWorkspaceBytes<T, int64_t>(int64_t, int64_t, bool, size_t*);

TF_FTRL_INSTANTIATE_WORKSPACE(float)
TF_FTRL_INSTANTIATE_WORKSPACE(double)
TF_FTRL_INSTANTIATE_WORKSPACE(float16)
TF_FTRL_INSTANTIATE_WORKSPACE(bfloat16)

}  // namespace gpu
}  // namespace tf_ftrl
