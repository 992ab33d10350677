// The CPU loops of every optimizer's dense and sparse update, on raw pointers and with no
// TensorFlow dependency: the TensorFlow OpKernels call them with the op's thread pool, tests and
// the kernel driver call them directly. One dense loop and one sparse loop over an optimizer's
// Step (optimizer_spec.h): each element of the state arrays and grad is read once and written
// once (one pass).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu_parallel_for.h"
#include "kernels/cpu_row_schedule.h"
#include "kernels/cpu_vector_copy.h"
#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"
#include "kernels/row_groups.h"
#include "kernels/rowwise_math.h"

namespace tf_ftrl {
namespace cpu {
namespace internal {

// Applies `step` to elements [0, n) of `arrays` (var, of type T, and the state arrays) with grad
// (of type T, or the accumulate type for summed duplicate rows); the elements are
// [position, position + n) of their arrays, and their high 32 bits are the same (for stochastic
// rounding: `keyed[I]` is array I's StochasticKeyed). The arrays come as separate restrict
// pointers, so that the compiler knows they do not overlap and vectorises the loop; the rounding
// is chosen once, outside it, for the same reason.
template <bool kStochastic, typename Step, typename T, typename G, size_t... I,
          typename... Arrays>
TF_FTRL_INLINE void StepLoopKeyed(std::index_sequence<I...>, const Step& step,
                                  const uint32_t* keyed, uint32_t position_low,
                                  const G* __restrict grad, int64_t n,
                                  Arrays* __restrict... arrays) {
  using A = AccumulateType<T>;
  // The low half's share of StochasticBits, position by position (a vector add).
  uint32_t scaled = position_low * kStochasticPositionFactor;
  for (int64_t i = 0; i < n; ++i, scaled += kStochasticPositionFactor) {
    A values[Step::kNumState] = {static_cast<A>(Load(arrays[i]))...};
    step(static_cast<A>(Load(grad[i])), values);
    ((I < Step::kNumWritten
          ? void(arrays[i] = StoreStateMixed<T, Arrays, kStochastic>(keyed[I] ^ scaled,
                                                                     values[I]))
          : void()),
     ...);
  }
}

// fn(offset, count, high, low) for each run [position + offset, position + offset + count) of
// [position, position + n) whose positions share their high 32 bits `high` (one run unless the
// elements straddle a multiple of 2^32), `low` the low half of its first position: loops over a
// run hash 32-bit positions only (StochasticKeyed once per run).
template <typename Fn>
TF_FTRL_INLINE void ForEachKeyedRun(int64_t position, int64_t n, Fn&& fn) {
  for (int64_t done = 0; done < n;) {
    const uint64_t p = static_cast<uint64_t>(position + done);
    const int64_t run = static_cast<int64_t>(
        std::min<uint64_t>(n - done, (uint64_t{1} << 32) - (p & 0xffffffffu)));
    fn(done, run, static_cast<uint32_t>(p >> 32), static_cast<uint32_t>(p));
    done += run;
  }
}

template <bool kStochastic, typename Step, typename T, typename G, size_t... I,
          typename... Arrays>
TF_FTRL_INLINE void StepLoopRounding(std::index_sequence<I...> seq, const Step& step,
                                     uint64_t key, int64_t position, const G* __restrict grad,
                                     int64_t n, Arrays* __restrict... arrays) {
  if constexpr (!kStochastic) {
    // No position is hashed: one loop of n elements (n is a constant where the row size is
    // compiled in, and the loop is unrolled whole).
    const uint32_t unused[sizeof...(I)] = {};
    return StepLoopKeyed<false, Step, T>(seq, step, unused, 0, grad, n, arrays...);
  }
  ForEachKeyedRun(position, n, [&](int64_t done, int64_t run, uint32_t high, uint32_t low) {
    const uint32_t keyed[] = {StochasticKeyed(key, static_cast<int>(I), high)...};
    StepLoopKeyed<kStochastic, Step, T>(seq, step, keyed, low, grad + done, run,
                                        (arrays + done)...);
  });
}

// Whether any of the arrays is narrower state than T (so that its stores may round
// stochastically).
template <typename T, typename... Arrays>
constexpr bool kHasNarrowState = !(std::is_same_v<Arrays, T> && ...);

template <typename Step, typename T, typename G, size_t... I, typename... Arrays>
TF_FTRL_INLINE void StepLoop(std::index_sequence<I...> seq, const Step& step,
                             const StateRounding& rounding, int64_t position,
                             const G* __restrict grad, int64_t n, Arrays* __restrict... arrays) {
  if constexpr (kHasNarrowState<T, Arrays...>) {
    if (rounding.stochastic) {
      return StepLoopRounding<true, Step, T>(seq, step, rounding.key, position, grad, n,
                                             arrays...);
    }
  }
  StepLoopRounding<false, Step, T>(seq, step, rounding.key, position, grad, n, arrays...);
}

// StepLoop over elements [offset, offset + n) of `state`.
template <typename Step, typename State, typename G, size_t... I>
TF_FTRL_INLINE void StepLoopAt(std::index_sequence<I...> seq, const Step& step,
                               const State& state, int64_t offset, const G* grad, int64_t n) {
  StepLoop<Step, typename State::Var>(seq, step, state.rounding, offset, grad, n,
                                      (ArrayAt<I>(state) + offset)...);
}

// The dense loop over elements [begin, end), as a kernel for RunIn. G is grad's type: T, or (in
// tests of the loop the sparse update runs on summed rows) the accumulate type.
template <typename Step, typename State, typename G = typename State::Var>
struct DenseLoop {
  const Step& step;
  const State& state;
  const G* grad;
  int64_t begin;
  int64_t end;
  TF_FTRL_INLINE void operator()() const {
    StepLoopAt(std::make_index_sequence<Step::kNumState>(), step, state, begin, grad + begin,
               end - begin);
  }
};

// Sparse updates: rows are scattered over tables far larger than the caches and TLBs, so they are
// fetched ahead of their update, a block of this many rows at a time: each block's rows are
// prefetched just before the previous block is updated, so the loads overlap instead of stalling
// one by one. (2M x 64 float32, 16,384 fresh ids, 2 threads: prefetching 3.4x faster than none;
// blocks of 8 rows 10-15% faster than prefetching each row 12 rows ahead of its update.)
constexpr int64_t kPrefetchBlockRows = 8;
// At most this many bytes of each row are prefetched; the hardware prefetcher follows the rest.
constexpr int64_t kMaxPrefetchBytesPerRow = 512;

// Where the row prefetches put the rows: into L2 (PREFETCHT1) or into L1 as well (PREFETCHT0).
// On an Intel Xeon VM (Sapphire Rapids class, 2 cores) every sparse update of a 2M x 64 table ran
// 8-17% faster with its rows prefetched into L2 (tools/bench_cpu_kernels.cc times both in one
// run): prefetched into L1, two thirds of the row-wise Adagrad loop's samples sat on the
// prefetch instructions themselves, waiting for the core's L1 miss buffers. On a Zen 5 VM
// PREFETCHT0 was the faster (1.01-1.14x over the four sparse updates, docs/benchmarks.md), so
// CPUs other than Intel's keep it.
enum class RowPrefetch { kIntoL1, kIntoL2 };

// TF_FTRL_ROW_PREFETCH=l1 or l2 in the environment chooses instead (to compare them).
inline RowPrefetch DefaultRowPrefetch() {
  if (const char* chosen = std::getenv("TF_FTRL_ROW_PREFETCH")) {
    if (std::string_view(chosen) == "l1") return RowPrefetch::kIntoL1;
    if (std::string_view(chosen) == "l2") return RowPrefetch::kIntoL2;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_is("intel")) return RowPrefetch::kIntoL2;
#endif
  return RowPrefetch::kIntoL1;
}

// The sparse loops' choice, DefaultRowPrefetch() unless set (the benchmark times both). A hint
// only: the results do not depend on it.
inline std::atomic<RowPrefetch> g_row_prefetch{DefaultRowPrefetch()};

// Asks for the cache line holding p, into the cache g_row_prefetch names. GCC treats
// __builtin_prefetch as free of side effects, so a function that only prefetches is judged pure
// and calls to it, returning nothing, are deleted as dead code: that removed every row prefetch
// from the op library (GCC 12, -O2 and -O3; seen with objdump). The empty asm volatile makes this
// function impure, so the calls, and with them the prefetches, stay; tests/test_packaging.py
// checks that they are in the built library.
TF_FTRL_INLINE void PrefetchLine(const char* p, RowPrefetch into) {
  if (into == RowPrefetch::kIntoL2) {
    __builtin_prefetch(p, /*rw=*/1, /*locality=*/2);
  } else {
    __builtin_prefetch(p, /*rw=*/1, /*locality=*/3);
  }
  asm volatile("" : : "r"(p));
}

template <typename T>
TF_FTRL_INLINE void PrefetchRow(const T* row, int64_t row_size, RowPrefetch into) {
  const int64_t bytes = std::min<int64_t>(row_size * sizeof(T), kMaxPrefetchBytesPerRow);
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) PrefetchLine(p + offset, into);
}

// The table rows of one sparse update, each row_size elements: Prefetch(row, row_size, into)
// asks for the row of every array, and Update(row, grad_row, row_size) applies one row of
// gradient (of type T, or the accumulate type where duplicates were summed) to them.
template <typename Step, typename State>
struct StepRows {
  const Step& step;
  State state;

  TF_FTRL_INLINE void Prefetch(int64_t row, int64_t row_size, RowPrefetch into) const {
    PrefetchRow(state.var + row * row_size, row_size, into);
    for (const auto* slot : state.slots) PrefetchRow(slot + row * row_size, row_size, into);
  }
  template <typename G>
  TF_FTRL_INLINE void Update(int64_t row, const G* grad_row, int64_t row_size) const {
    StepLoopAt(std::make_index_sequence<Step::kNumState>(), step, state, row * row_size,
               grad_row, row_size);
  }
};

// Elements [0, n) of one row of a row-wise update with the row's coefficients and per-row values
// (RowLoopRounding), as StepLoopKeyed does them: their positions share their high 32 bits
// (`keyed[I]`: array I's StochasticKeyed), position_low is the first one's low half; a per-row
// array is not read or written here.
template <bool kStochastic, typename Step, typename T, typename G, typename Coefficients,
          size_t... I, typename... Arrays>
TF_FTRL_INLINE void RowElementsKeyed(std::index_sequence<I...>, const Step& step,
                                     const Coefficients& coefficients,
                                     const AccumulateType<T>* row_values, const uint32_t* keyed,
                                     uint32_t position_low, const G* __restrict grad, int64_t n,
                                     Arrays* __restrict... arrays) {
  using A = AccumulateType<T>;
  uint32_t scaled = position_low * kStochasticPositionFactor;
  for (int64_t i = 0; i < n; ++i, scaled += kStochasticPositionFactor) {
    A values[Step::kNumState] = {(Step::kPerRow[I] ? row_values[I] : A(Load(arrays[i])))...};
    step(coefficients, static_cast<A>(Load(grad[i])), values);
    ((!Step::kPerRow[I] && I < Step::kNumWritten
          ? void(arrays[i] = StoreStateMixed<T, Arrays, kStochastic>(keyed[I] ^ scaled,
                                                                     values[I]))
          : void()),
     ...);
  }
}

// RowSumOfSquares (rowwise_math.h) with its kRowSumLanes partial sums in one vector of GCC's
// vector extensions: the same operations in the same order, so the same bits. RowSumOfSquares's
// pairwise sum of the partials compiles to a loop through the stack (16 loads and stores per
// row); here each level adds a vector's upper half to its lower half (vextract and vaddps).
// With the row's elements in one loop (RowLoopRounding), the row-wise sparse updates took
// 0.84-1.00x their time before (docs/benchmarks.md, "Row-wise state"). Rows whose stores round
// stochastically keep RowSumOfSquares: with this sum there, the row-wise FTRL update with
// bfloat16 state took 0.89-1.50x (median 1.30x) its time with RowSumOfSquares over seven builds
// of tools/ab_cpu_loops.sh, and 0.56-0.93 ms against 0.59-0.63 in the graph from one process to
// the next; with RowSumOfSquares 0.97-1.06x, and 0.60 ms in every process.
template <typename A, typename G>
TF_FTRL_INLINE A VectorRowSumOfSquares(const G* __restrict grad, int64_t n) {
  static_assert(kRowSumLanes == 16, "the halves below are written for 16 partial sums");
  typedef A Lanes16 __attribute__((vector_size(16 * sizeof(A))));
  typedef A Lanes8 __attribute__((vector_size(8 * sizeof(A))));
  typedef A Lanes4 __attribute__((vector_size(4 * sizeof(A))));
  typedef A Lanes2 __attribute__((vector_size(2 * sizeof(A))));
  Lanes16 partial = {};
  int64_t i = 0;
  for (; i + kRowSumLanes <= n; i += kRowSumLanes) {
    Lanes16 g;
    for (int k = 0; k < kRowSumLanes; ++k) g[k] = static_cast<A>(Load(grad[i + k]));
    partial += g * g;
  }
  for (int k = 0; i + k < n; ++k) {
    const A g = static_cast<A>(Load(grad[i + k]));
    partial[k] += g * g;
  }
  // Lanes k and k + width added, for width 8, 4, 2, 1 (AddRowSquaresPartials's order): the upper
  // half of the vector added to its lower half. (No helper function: one taking or returning
  // these vectors would have another ABI in each vector copy.)
  Lanes8 low8, high8;
  std::memcpy(&low8, &partial, sizeof(low8));
  std::memcpy(&high8, reinterpret_cast<const char*>(&partial) + sizeof(low8), sizeof(high8));
  const Lanes8 eight = low8 + high8;
  Lanes4 low4, high4;
  std::memcpy(&low4, &eight, sizeof(low4));
  std::memcpy(&high4, reinterpret_cast<const char*>(&eight) + sizeof(low4), sizeof(high4));
  const Lanes4 four = low4 + high4;
  Lanes2 low2, high2;
  std::memcpy(&low2, &four, sizeof(low2));
  std::memcpy(&high2, reinterpret_cast<const char*>(&four) + sizeof(low2), sizeof(high2));
  const Lanes2 two = low2 + high2;
  return two[0] + two[1];
}

// One row of a row-wise update (a Step with kPerRow: rowwise_math.h): the mean of the squares of
// the row's gradient, BeginRow (which updates the per-row values and gives the row's
// coefficients), then each element's update. `arrays` point at row `row`: one value of a per-row
// array, n of the others.
template <bool kStochastic, typename Step, typename T, typename G, size_t... I,
          typename... Arrays>
TF_FTRL_INLINE void RowLoopRounding(std::index_sequence<I...> seq, const Step& step, uint64_t key,
                                    int64_t row, const G* __restrict grad, int64_t n,
                                    Arrays* __restrict... arrays) {
  using A = AccumulateType<T>;
  // The same bits either way; which is faster depends on the loop (VectorRowSumOfSquares).
  const A sum_of_squares =
      kStochastic ? RowSumOfSquares<A>(grad, n) : VectorRowSumOfSquares<A>(grad, n);
  A row_values[Step::kNumState] = {(Step::kPerRow[I] ? A(Load(arrays[0])) : A(0))...};
  const auto coefficients = step.BeginRow(sum_of_squares / static_cast<A>(n), row_values);
  ((Step::kPerRow[I] && I < Step::kNumWritten
        ? void(arrays[0] = StoreStateAs<T, Arrays, kStochastic>(key, row_values[I], I, row))
        : void()),
   ...);
  if constexpr (!kStochastic) {
    const uint32_t unused[sizeof...(I)] = {};
    return RowElementsKeyed<false, Step, T>(seq, step, coefficients, row_values, unused, 0, grad,
                                            n, arrays...);
  }
  ForEachKeyedRun(row * n, n, [&](int64_t done, int64_t run, uint32_t high, uint32_t low) {
    const uint32_t keyed[] = {StochasticKeyed(key, static_cast<int>(I), high)...};
    RowElementsKeyed<kStochastic, Step, T>(seq, step, coefficients, row_values, keyed, low,
                                           grad + done, run,
                                           (Step::kPerRow[I] ? arrays : arrays + done)...);
  });
}

template <typename Step, typename T, typename G, size_t... I, typename... Arrays>
TF_FTRL_INLINE void RowLoop(std::index_sequence<I...> seq, const Step& step,
                            const StateRounding& rounding, int64_t row,
                            const G* __restrict grad, int64_t n, Arrays* __restrict... arrays) {
  if constexpr (kHasNarrowState<T, Arrays...>) {
    if (rounding.stochastic) {
      return RowLoopRounding<true, Step, T>(seq, step, rounding.key, row, grad, n, arrays...);
    }
  }
  RowLoopRounding<false, Step, T>(seq, step, rounding.key, row, grad, n, arrays...);
}

// The rows of a row-wise update, with the interface of StepRows (the sparse loops take either).
template <typename Step, typename State>
struct RowwiseRows {
  const Step& step;
  State state;

  TF_FTRL_INLINE void Prefetch(int64_t row, int64_t row_size, RowPrefetch into) const {
    PrefetchRow(state.var + row * row_size, row_size, into);
    for (int i = 1; i < Step::kNumState; ++i) {
      if (Step::kPerRow[i]) {
        PrefetchLine(reinterpret_cast<const char*>(state.slots[i - 1] + row), into);
      } else {
        PrefetchRow(state.slots[i - 1] + row * row_size, row_size, into);
      }
    }
  }

  template <typename G>
  TF_FTRL_INLINE void Update(int64_t row, const G* grad_row, int64_t row_size) const {
    UpdateRow(std::make_index_sequence<Step::kNumState>(), row, grad_row, row_size);
  }

 private:
  template <typename G, size_t... I>
  TF_FTRL_INLINE void UpdateRow(std::index_sequence<I...> seq, int64_t row, const G* grad_row,
                                int64_t row_size) const {
    RowLoop<Step, typename State::Var>(
        seq, step, state.rounding, row, grad_row, row_size,
        (ArrayAt<I>(state) + (Step::kPerRow[I] ? row : row * row_size))...);
  }
};

// StepRows, or RowwiseRows for a row-wise Step.
template <typename Step, typename State, typename = void>
struct RowsOf {
  using type = StepRows<Step, State>;
};
template <typename Step, typename State>
struct RowsOf<Step, State, std::void_t<decltype(Step::kPerRow)>> {
  using type = RowwiseRows<Step, State>;
};

// Every row [begin, end) of a dense row-wise update, as a kernel for RunIn.
template <typename Step, typename State>
struct DenseRows {
  const RowwiseRows<Step, State>& rows;
  const typename State::Var* grad;
  int64_t row_size;
  int64_t begin;
  int64_t end;
  TF_FTRL_INLINE void operator()() const {
    for (int64_t r = begin; r < end; ++r) rows.Update(r, grad + r * row_size, row_size);
  }
};

// Row sizes (embedding widths) whose sparse loops are compiled for that size, with the row loops
// unrolled whole; other sizes take the loops with the size known at run time. Measured against
// the run-time loops in one process (tables of 512 MB, 16,384 fresh ids, 2 threads, AVX2):
// FTRL / Adagrad 1.06x / 1.11x faster at 16, 1.23x / 1.31x at 32, 1.30x / 1.49x at 64; at 4, 8
// and 128 within +-5% / +10%, not worth the code (each size adds a copy of every sparse loop).
template <typename Fn>
void DispatchRowSize(int64_t row_size, Fn&& fn) {
  switch (row_size) {
    case 16: return fn(std::integral_constant<int64_t, 16>());
    case 32: return fn(std::integral_constant<int64_t, 32>());
    case 64: return fn(std::integral_constant<int64_t, 64>());
    default: return fn(std::integral_constant<int64_t, 0>());
  }
}

// Unique rows [begin, end) of `groups`: rows.Update once per row, with the row of `grad` itself
// when the row occurs once, else with the sum of its occurrences (SumGroup) in `summed` (2 *
// row_size values); rows are prefetched a block ahead. kRowSize is row_size where the loops are
// compiled for it, else 0. Each vector copy has a copy of the whole shard, so the row loop makes
// no call.
template <int64_t kRowSize, typename T, typename Rows>
struct UniqueRowsShard {
  const RowGroups& groups;
  const T* grad;
  int64_t runtime_row_size;
  int64_t begin;
  int64_t end;
  const Rows& rows;
  const SplitSums<AccumulateType<T>>& split;
  AccumulateType<T>* summed;

  TF_FTRL_INLINE void operator()() const {
    const int64_t row_size = kRowSize > 0 ? kRowSize : runtime_row_size;
    // The next split group at or after `begin`.
    const SplitGroup* next_split = std::lower_bound(
        split.groups, split.groups + split.num_groups, begin,
        [](const SplitGroup& g, int64_t u) { return g.group < u; });
    const RowPrefetch into = g_row_prefetch.load(std::memory_order_relaxed);
    // The table rows of unique row u, and the gradient row of its first position: the gradient
    // is read in order of position, but interleaved with the scattered rows the hardware
    // prefetcher did not keep up. Where the gradient was not in cache, the row loops stalled on
    // its first loads (two fifths of row-wise Adagrad's samples), and prefetching it made the
    // sparse updates up to ~10% faster; where it was (as after a backward pass), the prefetches
    // cost FTRL up to 8% TensorFlow-free and nothing in the graph (docs/benchmarks.md).
    const auto prefetch = [&](int64_t u) {
      rows.Prefetch(groups.row(u), row_size, into);
      PrefetchRow(grad + groups.first_position(u) * row_size, row_size, into);
    };
    for (int64_t u = begin; u < std::min(end, begin + kPrefetchBlockRows); ++u) prefetch(u);
    for (int64_t block = begin; block < end; block += kPrefetchBlockRows) {
      const int64_t block_end = std::min(end, block + kPrefetchBlockRows);
      for (int64_t u = block_end; u < std::min(end, block_end + kPrefetchBlockRows); ++u) {
        prefetch(u);
      }
      for (int64_t u = block; u < block_end; ++u) {
        const int64_t first = groups.first_position(u);
        if (groups.next_position(first) < 0) {
          rows.Update(groups.row(u), grad + first * row_size, row_size);
          continue;
        }
        SumGroup(groups, grad, row_size, u, split, next_split, summed);
        rows.Update(groups.row(u), static_cast<const AccumulateType<T>*>(summed), row_size);
      }
    }
  }
};

// Unique rows [begin, end) of `groups` through UniqueRowsShard in the chosen copy, compiled for
// `compiled_row_size` where DispatchRowSize has it (0: the loops for any size).
template <typename T, typename Rows>
void UpdateUniqueRows(VectorCopy copy, const RowGroups& groups, const T* grad, int64_t row_size,
                      int64_t compiled_row_size, const Rows& rows,
                      const SplitSums<AccumulateType<T>>& split, int64_t begin, int64_t end) {
  std::vector<AccumulateType<T>> summed(2 * row_size);
  DispatchRowSize(compiled_row_size, [&](auto size) {
    RunIn(copy, UniqueRowsShard<size(), T, Rows>{groups, grad, row_size, begin, end, rows, split,
                                                 summed.data()});
  });
}

}  // namespace internal

// The dense update of `Optimizer` (a description, optimizer_spec.h) over `size` elements of
// every state array, in the chosen copy of the loop (tests run each copy the CPU supports).
template <typename Optimizer, typename T, typename S = T>
void ApplyWith(internal::VectorCopy copy,
               const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
               const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad, int64_t size,
               const ParallelFor& parallel_for) {
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    using Step = std::decay_t<decltype(step)>;
    using Loop = internal::DenseLoop<Step, StateArrays<T, Optimizer::kNumState, S>>;
    internal::ForEachBlock(size, Step::kCyclesPerElement, parallel_for,
                           [&](int64_t begin, int64_t end) {
                             internal::RunIn(copy, Loop{step, state, grad, begin, end});
                           });
  });
}

// The dense update of `Optimizer` on `count` variables at once (multi-tensor apply): variable v
// has the state arrays `states[v]` (each with its own rounding key) and `sizes[v]` elements of
// gradient `grads[v]`. The work is cut by elements, not by variable: the variables are laid end
// to end and cut into blocks of kElementsPerBlock, so that a block may hold the end of one
// variable and the starts of the next ones, and many small variables make one parallel loop.
// Each element gets the step it gets from ApplyWith on its own variable, bit for bit.
template <typename Optimizer, typename T, typename S = T>
void MultiApplyWith(internal::VectorCopy copy,
                    const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                    bool flag, const StateArrays<T, Optimizer::kNumState, S>* states,
                    const T* const* grads, const int64_t* sizes, int64_t count,
                    const ParallelFor& parallel_for) {
  using State = StateArrays<T, Optimizer::kNumState, S>;
  // ends[v]: the end of variable v in the elements laid end to end.
  std::vector<int64_t> ends(count);
  int64_t total = 0;
  for (int64_t v = 0; v < count; ++v) ends[v] = total += sizes[v];
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    using Step = std::decay_t<decltype(step)>;
    internal::ForEachBlock(total, Step::kCyclesPerElement, parallel_for,
                           [&](int64_t begin, int64_t end) {
      // The first variable ending after `begin`, then each one the range reaches.
      int64_t v = std::upper_bound(ends.begin(), ends.end(), begin) - ends.begin();
      for (; v < count && begin < end; ++v) {
        const int64_t start = ends[v] - sizes[v];
        const int64_t stop = std::min(end, ends[v]);
        internal::RunIn(copy, internal::DenseLoop<Step, State>{step, states[v], grads[v],
                                                               begin - start, stop - start});
        begin = stop;
      }
    });
  });
}

// The dense update of a row-wise `Optimizer` (rowwise_math.h) over `num_rows` rows of
// `row_size` elements: every row, as a sparse update touching each row once would.
template <typename Optimizer, typename T, typename S = T>
void RowwiseApplyWith(internal::VectorCopy copy,
                      const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                      bool flag, const StateArrays<T, Optimizer::kNumState, S>& state,
                      const T* grad, int64_t num_rows, int64_t row_size,
                      const ParallelFor& parallel_for) {
  if (row_size == 0) return;
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    using Step = std::decay_t<decltype(step)>;
    using State = StateArrays<T, Optimizer::kNumState, S>;
    const internal::RowwiseRows<Step, State> rows{step, state};
    // Blocks of whole rows, about kElementsPerBlock elements each.
    const int64_t rows_per_block = std::max<int64_t>(1, kElementsPerBlock / row_size);
    const auto run = [&](int64_t begin, int64_t end) {
      internal::RunIn(copy,
                      internal::DenseRows<Step, State>{rows, grad, row_size, begin, end});
    };
    if (num_rows * row_size <= kMinElementsToParallelize) return run(0, num_rows);
    const int64_t num_blocks = (num_rows + rows_per_block - 1) / rows_per_block;
    parallel_for(num_blocks, rows_per_block * row_size * Step::kCyclesPerElement,
                 [&](int64_t first_block, int64_t end_block) {
                   run(first_block * rows_per_block,
                       std::min(num_rows, end_block * rows_per_block));
                 });
  });
}

// The sparse update of `Optimizer` on the rows of the state arrays (each `row_size` elements)
// named by `groups`, with grad holding one row per index position. Duplicate indices are summed
// first, so the result equals the dense update with the densified gradient on those rows.
template <typename Optimizer, typename T, typename S = T>
void SparseApplyWith(internal::VectorCopy copy,
                     const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                     bool flag, const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad,
                     int64_t row_size, const RowGroups& groups,
                     const ParallelFor& parallel_for) {
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    using Step = std::decay_t<decltype(step)>;
    const typename internal::RowsOf<Step, StateArrays<T, Optimizer::kNumState, S>>::type rows{
        step, state};
    internal::ScheduleUniqueRows(
        groups, grad, row_size, Step::kCyclesPerElement, parallel_for,
        [&](int64_t begin, int64_t end, const internal::SplitSums<AccumulateType<T>>& split) {
          internal::UpdateUniqueRows(copy, groups, grad, row_size, row_size, rows, split, begin,
                                     end);
        });
  });
}

// ApplyWith (RowwiseApplyWith, MultiApplyWith) and SparseApplyWith in the widest copy this CPU runs.
template <typename Optimizer, typename T, typename S = T>
void RowwiseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                  bool flag, const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad,
                  int64_t num_rows, int64_t row_size, const ParallelFor& parallel_for) {
  RowwiseApplyWith<Optimizer>(internal::BestVectorCopy(), h, flag, state, grad, num_rows,
                              row_size, parallel_for);
}

template <typename Optimizer, typename T, typename S = T>
void Apply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
           const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad, int64_t size,
           const ParallelFor& parallel_for) {
  ApplyWith<Optimizer>(internal::BestVectorCopy(), h, flag, state, grad, size, parallel_for);
}

template <typename Optimizer, typename T, typename S = T>
void MultiApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
                const StateArrays<T, Optimizer::kNumState, S>* states, const T* const* grads,
                const int64_t* sizes, int64_t count, const ParallelFor& parallel_for) {
  MultiApplyWith<Optimizer>(internal::BestVectorCopy(), h, flag, states, grads, sizes, count,
                            parallel_for);
}

template <typename Optimizer, typename T, typename S = T>
void SparseApply(const typename Optimizer::template Hyperparams<AccumulateType<T>>& h, bool flag,
                 const StateArrays<T, Optimizer::kNumState, S>& state, const T* grad,
                 int64_t row_size, const RowGroups& groups, const ParallelFor& parallel_for) {
  SparseApplyWith<Optimizer>(internal::BestVectorCopy(), h, flag, state, grad, row_size, groups,
                             parallel_for);
}

}  // namespace cpu
}  // namespace tf_ftrl
