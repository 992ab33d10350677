// What each thread of the CUDA kernels does (gpu_kernels.cu.cc), as host-and-device functions of
// the thread's index in the grid: the kernels call them with blockIdx and threadIdx, and
// gpu_kernel_bodies_test.cc runs them on the host, thread after thread over whole grids, against
// the CPU loops, so their indexing is tested where there is no GPU. Plain C++ (no CUDA header).
//
// Running a grid's threads one after another on the host gives what the GPU gives: every
// element (dense) and every unique row (sparse) is written by exactly one thread, and no thread
// reads what another writes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"
#include "kernels/row_groups.h"
#include "kernels/rowwise_math.h"
#include "kernels/sorted_runs.h"

// Loops over a compile-time number of elements or rows are unrolled on the device, so that their
// arrays live in registers.
#if defined(__CUDACC__)
#define TF_FTRL_UNROLL _Pragma("unroll")
#else
#define TF_FTRL_UNROLL
#endif

namespace tf_ftrl {
namespace gpu {

constexpr int kWarpSize = 32;
constexpr size_t kVectorBytes = 16;

// kWidth consecutive elements, loaded and stored as one instruction.
template <typename T, int kWidth>
struct alignas(sizeof(T) * kWidth) Pack {
  T values[kWidth];
};

template <typename T>
constexpr int VectorWidth() {
  return static_cast<int>(kVectorBytes / sizeof(T));
}

// grad[offset, offset + kWidth) in the accumulate type.
template <int kWidth, typename T, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void LoadGrad(const T* grad, int64_t offset,
                                                 A (&out)[kWidth]) {
  const Pack<T, kWidth> pack = *reinterpret_cast<const Pack<T, kWidth>*>(grad + offset);
  TF_FTRL_UNROLL
  for (int k = 0; k < kWidth; ++k) out[k] = Load(pack.values[k]);
}

// Adds the packs at_row(first), ..., at_row(last - 1) to `sum`, in that order. A hot id's run
// can be thousands of rows long, so the loads go out kBatch at a time before the additions use
// them: kBatch loads in flight instead of one latency per row, and the order of the sum
// unchanged. Half the batch for 8-element vectors (the 16-bit types'), whose float sums take
// twice the registers (the batch's registers are held by every launch of the kernel: occupancy).
template <int kWidth, typename P, typename RowAt, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void AddPacks(int64_t first, int64_t last, RowAt at_row,
                                                 A (&sum)[kWidth]) {
  constexpr int kBatch = kWidth > 4 ? 4 : 8;
  int64_t r = first;
  for (; r + kBatch <= last; r += kBatch) {
    P packs[kBatch];
    TF_FTRL_UNROLL
    for (int b = 0; b < kBatch; ++b) packs[b] = *at_row(r + b);
    TF_FTRL_UNROLL
    for (int b = 0; b < kBatch; ++b) {
      TF_FTRL_UNROLL
      for (int k = 0; k < kWidth; ++k) sum[k] += Load(packs[b].values[k]);
    }
  }
  for (; r < last; ++r) {
    const P pack = *at_row(r);
    TF_FTRL_UNROLL
    for (int k = 0; k < kWidth; ++k) sum[k] += Load(pack.values[k]);
  }
}

// Adds the grad rows at positions[first, last) to `sum`, in that order (columns [column,
// column + kWidth)).
template <int kWidth, typename T, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void AddGradRows(const T* grad, const int32_t* positions,
                                                    int64_t first, int64_t last,
                                                    int64_t row_size, int64_t column,
                                                    A (&sum)[kWidth]) {
  using P = Pack<T, kWidth>;
  AddPacks<kWidth, P>(first, last, [&](int64_t r) {
    return reinterpret_cast<const P*>(grad + positions[r] * row_size + column);
  }, sum);
}

// Adds slots [first, last) of `partials` (rows of row_size accumulate-type values) to `sum`, in
// that order.
template <int kWidth, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void AddPartialRows(const A* partials, int64_t first,
                                                       int64_t last, int64_t row_size,
                                                       int64_t column, A (&sum)[kWidth]) {
  using P = Pack<A, kWidth>;
  AddPacks<kWidth, P>(first, last, [&](int64_t s) {
    return reinterpret_cast<const P*>(partials + s * row_size + column);
  }, sum);
}

// The kWidth elements at `offset` of var and of each state array (of type S, which may be
// narrower than var's), as one load and one store per array.
template <int kWidth, typename State>
struct StatePacks {
  using T = typename State::Var;
  using S = typename State::Slot;
  Pack<T, kWidth> var;
  Pack<S, kWidth> slots[State::kNumSlots];

  // Loads var and the state arrays i for which load(i) (i = 1 for the first state array).
  template <typename LoadIf>
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void LoadFrom(const State& state, int64_t offset,
                                                   LoadIf load) {
    var = *reinterpret_cast<const Pack<T, kWidth>*>(state.var + offset);
    TF_FTRL_UNROLL
    for (int i = 1; i <= State::kNumSlots; ++i) {
      if (load(i)) {
        slots[i - 1] = *reinterpret_cast<const Pack<S, kWidth>*>(state.slots[i - 1] + offset);
      }
    }
  }
  template <typename A>
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE A Get(int i, int k) const {
    return i == 0 ? static_cast<A>(Load(var.values[k]))
                  : static_cast<A>(Load(slots[i - 1].values[k]));
  }
  // Element k of array i from `value`, rounded as `state` says; `position` is the element's.
  template <typename A>
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void Set(const State& state, int i, int k, A value,
                                              int64_t position) {
    if (i == 0) {
      var.values[k] = Store<T>(value);
    } else {
      slots[i - 1].values[k] = StoreState<T, S>(state.rounding, value, i, position);
    }
  }
  // Stores var and the state arrays i < num_written for which store(i).
  template <typename StoreIf>
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void StoreTo(const State& state, int64_t offset,
                                                  int num_written, StoreIf store) const {
    *reinterpret_cast<Pack<T, kWidth>*>(state.var + offset) = var;
    TF_FTRL_UNROLL
    for (int i = 1; i <= State::kNumSlots; ++i) {
      if (i < num_written && store(i)) {
        *reinterpret_cast<Pack<S, kWidth>*>(state.slots[i - 1] + offset) = slots[i - 1];
      }
    }
  }
};

// Applies `step` to elements [offset, offset + kWidth) of every state array.
template <int kWidth, typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void UpdateElements(const Step& step, const State& state,
                                                       int64_t offset, const A (&grad)[kWidth]) {
  const auto every = [](int) { return true; };
  StatePacks<kWidth, State> packs;
  packs.LoadFrom(state, offset, every);
  TF_FTRL_UNROLL
  for (int k = 0; k < kWidth; ++k) {
    A values[Step::kNumState];
    TF_FTRL_UNROLL
    for (int i = 0; i < Step::kNumState; ++i) values[i] = packs.template Get<A>(i, k);
    step(grad[k], values);
    TF_FTRL_UNROLL
    for (int i = 0; i < Step::kNumWritten; ++i) packs.Set(state, i, k, values[i], offset + k);
  }
  packs.StoreTo(state, offset, Step::kNumWritten, every);
}

// Dense: thread `thread` of `num_threads` strides over the kWidth-element vectors, and the fewer
// than kWidth elements past the last whole vector go to the first threads, one each.
template <int kWidth, typename Step, typename State, typename T = typename State::Var>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void DenseThreadWork(
    const Step& step, const State& state, const T* __restrict__ grad,
    int64_t size, int64_t thread, int64_t num_threads) {
  using A = AccumulateType<T>;
  const int64_t num_packs = size / kWidth;
  for (int64_t p = thread; p < num_packs; p += num_threads) {
    A g[kWidth];
    LoadGrad<kWidth>(grad, p * kWidth, g);
    UpdateElements<kWidth>(step, state, p * kWidth, g);
  }
  const int64_t tail = num_packs * kWidth + thread;
  if (kWidth > 1 && tail < size) {
    A g[1];
    LoadGrad<1>(grad, tail, g);
    UpdateElements<1>(step, state, tail, g);
  }
}

// Multi-tensor dense: one variable of a launch over many (a device-side table of these). The
// variable has `num_blocks` blocks of its own, numbered from `first_block` in the launch;
// `vectors`: its arrays and grad start on a vector boundary (else the scalar path).
template <typename State>
struct MultiTensorEntry {
  State state;
  const typename State::Var* grad;
  int64_t size;
  int64_t first_block;
  int64_t num_blocks;
  bool vectors;
};

// Thread `thread_in_block` of block `block` (of `block_dim` threads) of a multi-tensor launch:
// finds its variable (the last entry whose first block is at or before `block`; entries are in
// block order, and none is empty) and does DenseThreadWork there as that variable's own launch of
// num_blocks blocks would, so each element gets the one-variable kernel's bits.
template <int kWidth, typename Step, typename State>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void MultiTensorThreadWork(
    const Step& step, const MultiTensorEntry<State>* __restrict__ entries, int64_t num_entries,
    int64_t block, int64_t thread_in_block, int64_t block_dim) {
  int64_t lo = 0;
  int64_t hi = num_entries - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (entries[mid].first_block <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const MultiTensorEntry<State>& entry = entries[lo];
  const int64_t thread = (block - entry.first_block) * block_dim + thread_in_block;
  const int64_t num_threads = entry.num_blocks * block_dim;
  if (entry.vectors) {
    DenseThreadWork<kWidth>(step, entry.state, entry.grad, entry.size, thread, num_threads);
  } else {
    DenseThreadWork<1>(step, entry.state, entry.grad, entry.size, thread, num_threads);
  }
}

// Sparse, before the sort: numbers the positions this thread strides over (positions[i] = i, the
// values the sort carries along) and returns the lowest of them whose index is outside
// [0, num_rows), or -1. The lowest over all threads is the position the CPU loops report.
template <typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE int64_t CheckAndNumberThreadWork(
    const Index* __restrict__ indices, int64_t n, int64_t num_rows, int32_t* __restrict__ positions,
    int64_t thread, int64_t num_threads) {
  int64_t first_bad = -1;
  for (int64_t i = thread; i < n; i += num_threads) {
    positions[i] = static_cast<int32_t>(i);
    const int64_t index = static_cast<int64_t>(indices[i]);
    if (first_bad < 0 && (index < 0 || index >= num_rows)) first_bad = i;
  }
  return first_bad;
}

// The indices sorted with their positions: the rows of one index are a run of equal sorted
// indices, their positions ascending (the sort is stable).
template <typename Index>
struct SortedPairs {
  const Index* indices;
  const int32_t* positions;
  int64_t n;
};

// The smallest power of two lanes, up to a warp, that covers a row of `vectors` vectors in one
// pass: rows narrower than a warp leave no lanes idle, and a group never straddles a warp.
inline int LanesPerRow(int64_t vectors) {
  int lanes = 1;
  while (lanes < kWarpSize && lanes < vectors) lanes *= 2;
  return lanes;
}

// The slots of ChunkSumThreadWork's partial sums a sparse update with n indices needs: one per
// kDuplicateChunkRows sorted positions, none when no index can repeat that often.
inline int64_t NumPartialSlots(int64_t n) {
  return n > kDuplicateChunkRows ? (n - 1) / kDuplicateChunkRows + 1 : 0;
}

// Sparse, first pass (kDuplicateChunkRows in row_groups.h gives the summing order): groups of
// `lanes` consecutive threads, one group per sorted position, striding over the positions; the
// group at the start of a chunk other than its run's first sums the chunk's gradient rows in
// order into `partials` slot begin / kDuplicateChunkRows (row_size values of the accumulate
// type), kWidth elements per lane at a time. Slots are never shared: two such chunk starts are
// at least kDuplicateChunkRows positions apart (within a run by definition; across runs because
// the later run's first chunk lies between them). num_threads is a multiple of lanes.
template <int kWidth, typename T, typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void ChunkSumThreadWork(const T* __restrict__ grad,
                                                           int64_t row_size, int lanes,
                                                           const SortedPairs<Index>& sorted,
                                                           AccumulateType<T>* partials,
                                                           int64_t thread,
                                                           int64_t num_threads) {
  using A = AccumulateType<T>;
  const int64_t num_groups = num_threads / lanes;
  const int lane = static_cast<int>(thread % lanes);
  for (int64_t begin = thread / lanes; begin < sorted.n; begin += num_groups) {
    const Index index = sorted.indices[begin];
    // Most positions fail this first load: the run began less than a chunk before.
    if (begin < kDuplicateChunkRows || sorted.indices[begin - kDuplicateChunkRows] != index) {
      continue;
    }
    if ((begin - RunBegin(sorted.indices, begin, index)) % kDuplicateChunkRows != 0) continue;
    const int64_t window =
        begin + kDuplicateChunkRows < sorted.n ? begin + kDuplicateChunkRows : sorted.n;
    const int64_t end = RunEnd(sorted.indices, window, begin, index);
    A* const partial = partials + begin / kDuplicateChunkRows * row_size;
    for (int64_t column = static_cast<int64_t>(lane) * kWidth; column < row_size;
         column += static_cast<int64_t>(lanes) * kWidth) {
      Pack<A, kWidth> sum;
      LoadGrad<kWidth>(grad, sorted.positions[begin] * row_size + column, sum.values);
      AddGradRows<kWidth>(grad, sorted.positions, begin + 1, end, row_size, column, sum.values);
      *reinterpret_cast<Pack<A, kWidth>*>(partial + column) = sum;
    }
  }
}

// The chunks of the run of sorted positions [begin, end) in the summing order: its first chunk
// ends at first_chunk_end, and the later chunks' partial sums (ChunkSumThreadWork) are in slots
// [first_slot, end_slot).
struct RunChunks {
  int64_t begin;
  int64_t first_chunk_end;
  int64_t first_slot;
  int64_t end_slot;
};

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE RunChunks ChunksOf(int64_t begin, int64_t end) {
  // Chunk c > 0 starts at begin + c * kDuplicateChunkRows: its slot is that / the chunk size.
  const int64_t first_slot = begin / kDuplicateChunkRows + 1;
  return {begin, end - begin > kDuplicateChunkRows ? begin + kDuplicateChunkRows : end,
          first_slot, (end - 1 - begin) / kDuplicateChunkRows + first_slot};
}

// The run's gradient rows summed in the summing order (its first chunk, then the later chunks'
// partial sums, in order), columns [column, column + kWidth).
template <int kWidth, typename T, typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void SumRunColumns(const T* __restrict__ grad,
                                                      int64_t row_size,
                                                      const SortedPairs<Index>& sorted,
                                                      const AccumulateType<T>* partials,
                                                      const RunChunks& run, int64_t column,
                                                      AccumulateType<T> (&sum)[kWidth]) {
  LoadGrad<kWidth>(grad, sorted.positions[run.begin] * row_size + column, sum);
  AddGradRows<kWidth>(grad, sorted.positions, run.begin + 1, run.first_chunk_end, row_size,
                      column, sum);
  AddPartialRows<kWidth>(partials, run.first_slot, run.end_slot, row_size, column, sum);
}

// The sparse passes' walk over the runs: thread `thread` of `num_threads` is lane
// `thread % lanes` of group `thread / lanes`; the groups stride over the sorted positions, and the
// group at the start of a run sums the run's gradient rows (SumRunColumns: its first chunk in
// order, then the later chunks' partial sums from ChunkSumThreadWork, in order), kWidth columns
// per lane at a time, and hands each sum to `fn(begin, index, column, sum)`. The other groups
// have nothing to do, so each unique row is handled by exactly one group.
template <int kWidth, typename T, typename Index, typename Fn>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void ForEachSummedRun(
    const T* __restrict__ grad, int64_t row_size, int lanes, const SortedPairs<Index>& sorted,
    const AccumulateType<T>* partials, int64_t thread, int64_t num_threads, const Fn& fn) {
  using A = AccumulateType<T>;
  const int64_t num_groups = num_threads / lanes;
  const int lane = static_cast<int>(thread % lanes);
  for (int64_t begin = thread / lanes; begin < sorted.n; begin += num_groups) {
    const Index index = sorted.indices[begin];
    if (begin > 0 && sorted.indices[begin - 1] == index) continue;
    const RunChunks run = ChunksOf(begin, RunEnd(sorted.indices, sorted.n, begin, index));
    for (int64_t column = static_cast<int64_t>(lane) * kWidth; column < row_size;
         column += static_cast<int64_t>(lanes) * kWidth) {
      Pack<A, kWidth> sum;
      SumRunColumns<kWidth>(grad, row_size, sorted, partials, run, column, sum.values);
      fn(begin, index, column, sum);
    }
  }
}

// Sparse, second pass: each run's summed gradient updates its row.
template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void SparseThreadWork(
    const Step& step, const State& state, const T* __restrict__ grad,
    int64_t row_size, int lanes, const SortedPairs<Index>& sorted,
    const AccumulateType<T>* partials, int64_t thread, int64_t num_threads) {
  ForEachSummedRun<kWidth>(
      grad, row_size, lanes, sorted, partials, thread, num_threads,
      [&](int64_t, Index index, int64_t column, const Pack<AccumulateType<T>, kWidth>& sum) {
        UpdateElements<kWidth>(step, state, static_cast<int64_t>(index) * row_size + column,
                               sum.values);
      });
}

// ------------------------------------------------------------------- row-wise (rowwise_math.h)
//
// A row-wise update needs the mean of the whole row's squared gradient before any element of the
// row changes, and a group's lanes each hold only some of the row's columns. So the sparse update
// takes four passes after the chunk sums, each thread's work reading only what earlier passes
// wrote: the groups at run starts write each run's summed gradient row to the workspace
// (RowSumThreadWork); groups of kRowSumLanes threads compute each run's partial sums of squares
// (RowSquaresThreadWork: RowSumOfSquares's partial sums, the CPU loops' order, a group reading
// the row in order); these two write only the workspace, so they run before the index check's
// wait. Then one thread per run adds the partial sums (in RowSumOfSquares's order), updates the
// row's per-row values in place and writes the row's coefficients (RowBeginThreadWork); the
// groups then update the row's elements (RowwiseSparseThreadWork). The dense update gives each
// row to one thread.

// The bytes of the workspace kept per sorted position for a row's coefficients (a Step::Row:
// at most four values of the accumulate type).
template <typename T>
constexpr size_t RowCoefficientBytes() {
  return 4 * sizeof(AccumulateType<T>);
}

// Updates the elements [offset, offset + kWidth) of the element-wise arrays (those not kPerRow)
// with the row's coefficients.
template <int kWidth, typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void UpdateRowElements(const Step& step,
                                                          const typename Step::Row& row,
                                                          const State& state, int64_t offset,
                                                          const A (&grad)[kWidth]) {
  const auto per_element = [](int i) { return !Step::PerRow(i); };
  StatePacks<kWidth, State> packs;
  packs.LoadFrom(state, offset, per_element);
  TF_FTRL_UNROLL
  for (int k = 0; k < kWidth; ++k) {
    A values[Step::kNumState];
    TF_FTRL_UNROLL
    for (int i = 0; i < Step::kNumState; ++i) {
      values[i] = Step::PerRow(i) ? A(0) : packs.template Get<A>(i, k);
    }
    step(row, grad[k], values);
    TF_FTRL_UNROLL
    for (int i = 0; i < Step::kNumWritten; ++i) {
      if (!Step::PerRow(i)) packs.Set(state, i, k, values[i], offset + k);
    }
  }
  packs.StoreTo(state, offset, Step::kNumWritten, per_element);
}

// Row `row`'s per-row values (0 for the others), as BeginRow takes them.
template <typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void LoadRowValues(const State& state, int64_t row,
                                                      A (&values)[Step::kNumState]) {
  values[0] = A(0);  // var is never per row
  TF_FTRL_UNROLL
  for (int i = 1; i < Step::kNumState; ++i) {
    values[i] = Step::PerRow(i) ? static_cast<A>(Load(state.slots[i - 1][row])) : A(0);
  }
}

// Stores the per-row values BeginRow wrote back to row `row`.
template <typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void StoreRowValues(const State& state, int64_t row,
                                                       const A (&values)[Step::kNumState]) {
  using T = typename State::Var;
  using S = typename State::Slot;
  TF_FTRL_UNROLL
  for (int i = 1; i < Step::kNumWritten; ++i) {
    if (Step::PerRow(i)) {
      state.slots[i - 1][row] = StoreState<T, S>(state.rounding, values[i], i, row);
    }
  }
}

// BeginRow for row `row` from the mean of its squared gradient: reads and writes the per-row
// values in place and returns the row's coefficients.
template <typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE typename Step::Row BeginRowInPlace(const Step& step,
                                                                      const State& state,
                                                                      int64_t row,
                                                                      A mean_square) {
  A values[Step::kNumState];
  LoadRowValues<Step>(state, row, values);
  const typename Step::Row coefficients = step.BeginRow(mean_square, values);
  StoreRowValues<Step>(state, row, values);
  return coefficients;
}

// Dense: a group of kRowSumLanes threads per row (the grid strides over the rest), so that a
// group reads its row in order. A row takes three steps; the kernel runs them with the lanes
// exchanging their partial sums by warp shuffles after the first, and the host tests run them
// lane by lane:
// 1. lane k computes partial sum k of the row's squared gradient (RowSquaresPartial);
// 2. every lane adds the kRowSumLanes partial sums in RowSumOfSquares's order and computes the
//    row's coefficients and new per-row values from the stored ones (RowwiseDenseBegin); once
//    every lane has read them, lane 0 alone stores the new ones (StoreRowValues);
// 3. lane k updates elements k, k + kRowSumLanes, ... of the row (RowwiseDenseElements).
template <typename Step, typename A>
struct RowwiseBegin {
  typename Step::Row coefficients;
  A values[Step::kNumState];  // the row's new per-row values (others unused)
};

template <typename Step, typename State, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE RowwiseBegin<Step, A> RowwiseDenseBegin(
    const Step& step, const State& state, int64_t row, const A (&partials)[kRowSumLanes],
    int64_t row_size) {
  A partial[kRowSumLanes];
  TF_FTRL_UNROLL
  for (int k = 0; k < kRowSumLanes; ++k) partial[k] = partials[k];
  RowwiseBegin<Step, A> begin;
  LoadRowValues<Step>(state, row, begin.values);
  begin.coefficients =
      step.BeginRow(AddRowSquaresPartials(partial) / static_cast<A>(row_size), begin.values);
  return begin;
}

template <typename Step, typename State, typename T = typename State::Var>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void RowwiseDenseElements(
    const Step& step, const typename Step::Row& coefficients, const State& state,
    const T* __restrict__ grad, int64_t row, int64_t row_size, int lane) {
  using A = AccumulateType<T>;
  for (int64_t j = lane; j < row_size; j += kRowSumLanes) {
    const A g[1] = {Load(grad[row * row_size + j])};
    UpdateRowElements<1>(step, coefficients, state, row * row_size + j, g);
  }
}

// Sparse, after ChunkSumThreadWork: each run's summed gradient row goes to row `begin` of
// `summed` (row_size values of the accumulate type per sorted position).
template <int kWidth, typename T, typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void RowSumThreadWork(
    const T* __restrict__ grad, int64_t row_size, int lanes, const SortedPairs<Index>& sorted,
    const AccumulateType<T>* partials, AccumulateType<T>* summed, int64_t thread,
    int64_t num_threads) {
  using A = AccumulateType<T>;
  ForEachSummedRun<kWidth>(
      grad, row_size, lanes, sorted, partials, thread, num_threads,
      [&](int64_t begin, Index, int64_t column, const Pack<A, kWidth>& sum) {
        *reinterpret_cast<Pack<A, kWidth>*>(summed + begin * row_size + column) = sum;
      });
}

// Sparse, next: groups of kRowSumLanes threads (num_threads a multiple of it), a group per sorted
// position; at the start of each run, lane k of the group writes partial sum k of the summed
// row's squares (RowSquaresPartial) to squares[begin * kRowSumLanes + k].
template <typename Index, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void RowSquaresThreadWork(
    int64_t row_size, const SortedPairs<Index>& sorted, const A* summed, A* squares,
    int64_t thread, int64_t num_threads) {
  const int64_t num_groups = num_threads / kRowSumLanes;
  const int lane = static_cast<int>(thread % kRowSumLanes);
  for (int64_t begin = thread / kRowSumLanes; begin < sorted.n; begin += num_groups) {
    if (begin > 0 && sorted.indices[begin - 1] == sorted.indices[begin]) continue;
    squares[begin * kRowSumLanes + lane] =
        RowSquaresPartial<A>(summed + begin * row_size, row_size, lane);
  }
}

// Sparse, after the index check: one thread per sorted position; the thread at the start of each
// run adds the row's partial sums of squares into its mean square, updates the row's per-row
// values in place and writes the row's coefficients to slot `begin` of `coefficients`.
template <typename Step, typename State, typename Index, typename T = typename State::Var>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void RowBeginThreadWork(
    const Step& step, const State& state, int64_t row_size,
    const SortedPairs<Index>& sorted, const AccumulateType<T>* squares,
    typename Step::Row* coefficients, int64_t thread, int64_t num_threads) {
  using A = AccumulateType<T>;
  for (int64_t begin = thread; begin < sorted.n; begin += num_threads) {
    const Index index = sorted.indices[begin];
    if (begin > 0 && sorted.indices[begin - 1] == index) continue;
    A partial[kRowSumLanes];
    TF_FTRL_UNROLL
    for (int k = 0; k < kRowSumLanes; ++k) partial[k] = squares[begin * kRowSumLanes + k];
    coefficients[begin] =
        BeginRowInPlace(step, state, static_cast<int64_t>(index),
                        AddRowSquaresPartials(partial) / static_cast<A>(row_size));
  }
}

// Sparse, last: the groups at the start of each run update the row's elements with its summed
// gradient and coefficients, kWidth elements per lane at a time.
template <int kWidth, typename Step, typename State, typename Index,
          typename T = typename State::Var>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void RowwiseSparseThreadWork(
    const Step& step, const State& state, int64_t row_size, int lanes,
    const SortedPairs<Index>& sorted, const AccumulateType<T>* summed,
    const typename Step::Row* coefficients, int64_t thread, int64_t num_threads) {
  using A = AccumulateType<T>;
  const int64_t num_groups = num_threads / lanes;
  const int lane = static_cast<int>(thread % lanes);
  for (int64_t begin = thread / lanes; begin < sorted.n; begin += num_groups) {
    const Index index = sorted.indices[begin];
    if (begin > 0 && sorted.indices[begin - 1] == index) continue;
    const typename Step::Row row = coefficients[begin];
    const int64_t row_offset = static_cast<int64_t>(index) * row_size;
    for (int64_t column = static_cast<int64_t>(lane) * kWidth; column < row_size;
         column += static_cast<int64_t>(lanes) * kWidth) {
      const Pack<A, kWidth> sum =
          *reinterpret_cast<const Pack<A, kWidth>*>(summed + begin * row_size + column);
      UpdateRowElements<kWidth>(step, row, state, row_offset + column, sum.values);
    }
  }
}

}  // namespace gpu
}  // namespace tf_ftrl
