// CPU loops of the four fused updates, on raw pointers and with no TensorFlow dependency: the
// TensorFlow OpKernels call them with the op's thread pool, and tests or drivers without
// TensorFlow call them directly. Each element of var, slots and grad is read once and written
// once (one pass); the per-element math comes from ftrl_math.h and adagrad_math.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/adagrad_math.h"
#include "kernels/dispatch.h"
#include "kernels/ftrl_math.h"
#include "kernels/numeric.h"
#include "kernels/row_groups.h"

namespace tf_ftrl {
namespace cpu {

// Runs fn(begin, end) over disjoint shards covering [0, total). cost_per_unit is the estimated
// cost of one unit in CPU cycles, as for TensorFlow's thread::ThreadPool::ParallelFor.
// num_threads is how many threads run shards at once (1 unless given); the sparse loops cut their
// work by it, never the results.
class ParallelFor {
 public:
  using Shards = std::function<void(int64_t total, int64_t cost_per_unit,
                                    const std::function<void(int64_t, int64_t)>& fn)>;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ParallelFor>>>
  ParallelFor(F&& shards, int64_t num_threads = 1)  // NOLINT: converts from any callable
      : shards_(std::forward<F>(shards)), num_threads_(num_threads < 1 ? 1 : num_threads) {}

  void operator()(int64_t total, int64_t cost_per_unit,
                  const std::function<void(int64_t, int64_t)>& fn) const {
    shards_(total, cost_per_unit, fn);
  }
  int64_t num_threads() const { return num_threads_; }

 private:
  Shards shards_;
  int64_t num_threads_;
};

// Runs everything on the calling thread.
inline void SerialParallelFor(int64_t total, int64_t /*cost_per_unit*/,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (total > 0) fn(0, total);
}

// Work below this many elements runs on the calling thread: handing it to a pool costs more than
// it saves.
constexpr int64_t kMinElementsToParallelize = 1 << 15;
// Dense tensors are cut into blocks of this many elements for the pool.
constexpr int64_t kElementsPerBlock = 1 << 13;
// Approximate cycles per element, for the pool's sharding.
constexpr int64_t kFtrlCyclesPerElement = 12;
constexpr int64_t kFtrlPowCyclesPerElement = 60;
constexpr int64_t kAdagradCyclesPerElement = 6;

namespace internal {

// Calls fn(begin, end) over [0, size) in blocks, on the pool when size is large enough.
template <typename Fn>
void ForEachBlock(int64_t size, int64_t cycles_per_element, const ParallelFor& parallel_for,
                  Fn&& fn) {
  if (size <= kMinElementsToParallelize) {
    if (size > 0) fn(int64_t{0}, size);
    return;
  }
  const int64_t num_blocks = (size + kElementsPerBlock - 1) / kElementsPerBlock;
  parallel_for(num_blocks, kElementsPerBlock * cycles_per_element,
               [&](int64_t first_block, int64_t end_block) {
                 fn(first_block * kElementsPerBlock,
                    std::min(size, end_block * kElementsPerBlock));
               });
}

// Sparse updates: rows are scattered over tables far larger than the caches and TLBs, so they are
// fetched ahead of their update, a block of this many rows at a time: each block's rows are
// prefetched just before the previous block is updated, so the loads overlap instead of stalling
// one by one. (2M x 64 float32, 16,384 fresh ids, 2 threads: prefetching 3.4x faster than none;
// blocks of 8 rows 10-15% faster than prefetching each row 12 rows ahead of its update.)
constexpr int64_t kPrefetchBlockRows = 8;
// At most this many bytes of each row are prefetched; the hardware prefetcher follows the rest.
constexpr int64_t kMaxPrefetchBytesPerRow = 512;

// Asks for the cache line holding p. GCC treats __builtin_prefetch as free of side effects, so a
// function that only prefetches is judged pure and calls to it, returning nothing, are deleted as
// dead code: that removed every row prefetch from the op library (GCC 12, -O2 and -O3; seen with
// objdump). The empty asm volatile makes this function impure, so the calls, and with them the
// prefetches, stay; tests/test_packaging.py checks that they are in the built library.
TF_FTRL_INLINE void PrefetchLine(const char* p) {
  __builtin_prefetch(p, /*rw=*/1, /*locality=*/3);
  asm volatile("" : : "r"(p));
}

template <typename T>
TF_FTRL_INLINE void PrefetchRow(const T* row, int64_t row_size) {
  const int64_t bytes = std::min<int64_t>(row_size * sizeof(T), kMaxPrefetchBytesPerRow);
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) PrefetchLine(p + offset);
}

// The one-pass loops. G is the gradient's element type: T, or the accumulate type for summed
// duplicate rows. The bodies are always inlined into a baseline copy and, on x86-64, AVX2 and
// AVX-512 copies, the widest the CPU runs chosen at run time (the formulas vectorise, and FTRL's
// two square roots and three divisions per element keep a narrower loop compute-bound). Every
// copy does the same IEEE operations in the same order (no contraction into FMA in the build), so
// they round alike, bit for bit.
template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T, typename G>
TF_FTRL_INLINE void FtrlLoopBody(const FtrlHyperparams<AccumulateType<T>>& h, T* __restrict var,
                                 T* __restrict accum, T* __restrict linear,
                                 const G* __restrict grad, int64_t n) {
  using A = AccumulateType<T>;
  for (int64_t i = 0; i < n; ++i) {
    A v = Load(var[i]);
    A a = Load(accum[i]);
    A l = Load(linear[i]);
    FtrlUpdate<kSqrtPower, kMultiplyLinearByLr>(h, static_cast<A>(Load(grad[i])), v, a, l);
    var[i] = Store<T>(v);
    accum[i] = Store<T>(a);
    linear[i] = Store<T>(l);
  }
}

template <bool kUpdateSlots, typename T, typename G>
TF_FTRL_INLINE void AdagradLoopBody(const AdagradHyperparams<AccumulateType<T>>& h,
                                    T* __restrict var, T* __restrict accum,
                                    const G* __restrict grad, int64_t n) {
  using A = AccumulateType<T>;
  for (int64_t i = 0; i < n; ++i) {
    A v = Load(var[i]);
    A a = Load(accum[i]);
    AdagradUpdate<kUpdateSlots>(h, static_cast<A>(Load(grad[i])), v, a);
    var[i] = Store<T>(v);
    if (kUpdateSlots) accum[i] = Store<T>(a);
  }
}

// The loop copies, narrowest first; BestVectorCopy() is the widest this CPU and its OS support.
enum class VectorCopy { kBaseline, kAvx2, kAvx512 };

#if defined(__x86_64__) && defined(__GNUC__)
#define TF_FTRL_HAVE_X86_COPIES 1

inline VectorCopy BestVectorCopy() {
  // GCC's CPU checks include the OS's support for the wider registers (XCR0). The first Xeons
  // with AVX-512 (Skylake-SP, Cascade Lake, Cooper Lake) lower the whole core's clock while
  // 512-bit instructions run, which would slow the rest of the process: AVX2 there.
  static const VectorCopy best = [] {
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool throttles = __builtin_cpu_is("skylake-avx512") ||
                           __builtin_cpu_is("cascadelake") || __builtin_cpu_is("cooperlake");
    if (avx512 && !throttles) return VectorCopy::kAvx512;
    return __builtin_cpu_supports("avx2") ? VectorCopy::kAvx2 : VectorCopy::kBaseline;
  }();
  return best;
}

// GCC prefers 256-bit vectors even where AVX-512 is enabled; the divisions and square roots run
// twice as many lanes per instruction at 512 bits.
#define TF_FTRL_TARGET_AVX2 __attribute__((target("avx2")))
#define TF_FTRL_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")))

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T, typename G>
TF_FTRL_TARGET_AVX2 void FtrlLoopAvx2(const FtrlHyperparams<AccumulateType<T>>& h, T* var,
                                      T* accum, T* linear, const G* grad, int64_t n) {
  FtrlLoopBody<kSqrtPower, kMultiplyLinearByLr>(h, var, accum, linear, grad, n);
}

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T, typename G>
TF_FTRL_TARGET_AVX512 void FtrlLoopAvx512(const FtrlHyperparams<AccumulateType<T>>& h, T* var,
                                          T* accum, T* linear, const G* grad, int64_t n) {
  FtrlLoopBody<kSqrtPower, kMultiplyLinearByLr>(h, var, accum, linear, grad, n);
}

template <bool kUpdateSlots, typename T, typename G>
TF_FTRL_TARGET_AVX2 void AdagradLoopAvx2(const AdagradHyperparams<AccumulateType<T>>& h, T* var,
                                         T* accum, const G* grad, int64_t n) {
  AdagradLoopBody<kUpdateSlots>(h, var, accum, grad, n);
}

template <bool kUpdateSlots, typename T, typename G>
TF_FTRL_TARGET_AVX512 void AdagradLoopAvx512(const AdagradHyperparams<AccumulateType<T>>& h,
                                             T* var, T* accum, const G* grad, int64_t n) {
  AdagradLoopBody<kUpdateSlots>(h, var, accum, grad, n);
}
#else
inline VectorCopy BestVectorCopy() { return VectorCopy::kBaseline; }
#endif

// The loops through a chosen copy (tests run each copy the CPU supports); a copy the build or
// the CPU lacks falls back to the baseline.
template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T, typename G>
void FtrlLoopWith(VectorCopy copy, const FtrlHyperparams<AccumulateType<T>>& h, T* var,
                  T* accum, T* linear, const G* grad, int64_t n) {
#ifdef TF_FTRL_HAVE_X86_COPIES
  if (copy == VectorCopy::kAvx512) {
    return FtrlLoopAvx512<kSqrtPower, kMultiplyLinearByLr>(h, var, accum, linear, grad, n);
  }
  if (copy == VectorCopy::kAvx2) {
    return FtrlLoopAvx2<kSqrtPower, kMultiplyLinearByLr>(h, var, accum, linear, grad, n);
  }
#endif
  FtrlLoopBody<kSqrtPower, kMultiplyLinearByLr>(h, var, accum, linear, grad, n);
}

template <bool kUpdateSlots, typename T, typename G>
void AdagradLoopWith(VectorCopy copy, const AdagradHyperparams<AccumulateType<T>>& h, T* var,
                     T* accum, const G* grad, int64_t n) {
#ifdef TF_FTRL_HAVE_X86_COPIES
  if (copy == VectorCopy::kAvx512) return AdagradLoopAvx512<kUpdateSlots>(h, var, accum, grad, n);
  if (copy == VectorCopy::kAvx2) return AdagradLoopAvx2<kUpdateSlots>(h, var, accum, grad, n);
#endif
  AdagradLoopBody<kUpdateSlots>(h, var, accum, grad, n);
}

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T, typename G>
void FtrlLoop(const FtrlHyperparams<AccumulateType<T>>& h, T* var, T* accum, T* linear,
              const G* grad, int64_t n) {
  FtrlLoopWith<kSqrtPower, kMultiplyLinearByLr>(BestVectorCopy(), h, var, accum, linear, grad,
                                                n);
}

template <bool kUpdateSlots, typename T, typename G>
void AdagradLoop(const AdagradHyperparams<AccumulateType<T>>& h, T* var, T* accum, const G* grad,
                 int64_t n) {
  AdagradLoopWith<kUpdateSlots>(BestVectorCopy(), h, var, accum, grad, n);
}

template <typename A>
int64_t FtrlCycles(const FtrlHyperparams<A>& h) {
  return IsSqrtPower(h) ? kFtrlCyclesPerElement : kFtrlPowCyclesPerElement;
}

// The table rows of one sparse update, each row_size elements: Prefetch(row, row_size) asks for
// the row of every table, and Update(row, grad_row, row_size) applies one row of gradient (of
// type T, or the accumulate type where duplicates were summed) to them.
template <bool kSqrtPower, bool kMultiplyLinearByLr, typename T>
struct FtrlRows {
  const FtrlHyperparams<AccumulateType<T>>& h;
  T* var;
  T* accum;
  T* linear;

  TF_FTRL_INLINE void Prefetch(int64_t row, int64_t row_size) const {
    PrefetchRow(var + row * row_size, row_size);
    PrefetchRow(accum + row * row_size, row_size);
    PrefetchRow(linear + row * row_size, row_size);
  }
  template <typename G>
  TF_FTRL_INLINE void Update(int64_t row, const G* grad_row, int64_t row_size) const {
    const int64_t offset = row * row_size;
    FtrlLoopBody<kSqrtPower, kMultiplyLinearByLr>(h, var + offset, accum + offset,
                                                  linear + offset, grad_row, row_size);
  }
};

template <bool kUpdateSlots, typename T>
struct AdagradRows {
  const AdagradHyperparams<AccumulateType<T>>& h;
  T* var;
  T* accum;

  TF_FTRL_INLINE void Prefetch(int64_t row, int64_t row_size) const {
    PrefetchRow(var + row * row_size, row_size);
    PrefetchRow(accum + row * row_size, row_size);
  }
  template <typename G>
  TF_FTRL_INLINE void Update(int64_t row, const G* grad_row, int64_t row_size) const {
    const int64_t offset = row * row_size;
    AdagradLoopBody<kUpdateSlots>(h, var + offset, accum + offset, grad_row, row_size);
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

// A group whose later chunks (kDuplicateChunkRows) were summed ahead of the update, on the pool
// (SumLaterChunks): its chunk sums are rows first_slot, first_slot + 1, ... of the partial sums,
// in chunk order, one per later chunk.
struct SplitGroup {
  int64_t group;
  int64_t first_slot;
};

// The split groups, sorted by group, and the partial sums (row_size values of the accumulate
// type per slot). Empty: no group was split.
template <typename A>
struct SplitSums {
  const SplitGroup* groups = nullptr;
  int64_t num_groups = 0;
  const A* partials = nullptr;
};

// Unique rows [begin, end) of `groups`: rows.Update once per row, with the row of `grad` itself
// when the row occurs once, else with the sum of its occurrences (in the accumulate type, in the
// order of kDuplicateChunkRows) in `summed` (2 * row_size elements: the sum, then the chunk being
// summed; a split group's first chunk, then its chunk sums from `split`); rows are prefetched a
// block ahead.
// kRowSize is row_size where the loops are compiled for it, else 0. Each vector copy of the
// loops has a copy of the whole shard, so the row loop makes no call.
template <int64_t kRowSize, typename T, typename Rows>
TF_FTRL_INLINE void UniqueRowsShardBody(const RowGroups& groups, const T* grad,
                                        int64_t runtime_row_size, int64_t begin, int64_t end,
                                        const Rows& rows,
                                        const SplitSums<AccumulateType<T>>& split,
                                        AccumulateType<T>* summed) {
  using A = AccumulateType<T>;
  const int64_t row_size = kRowSize > 0 ? kRowSize : runtime_row_size;
  // The next split group at or after `begin`.
  const SplitGroup* next_split = std::lower_bound(
      split.groups, split.groups + split.num_groups, begin,
      [](const SplitGroup& g, int64_t u) { return g.group < u; });
  const SplitGroup* const splits_end = split.groups + split.num_groups;
  for (int64_t u = begin; u < std::min(end, begin + kPrefetchBlockRows); ++u) {
    rows.Prefetch(groups.row(u), row_size);
  }
  for (int64_t block = begin; block < end; block += kPrefetchBlockRows) {
    const int64_t block_end = std::min(end, block + kPrefetchBlockRows);
    for (int64_t u = block_end; u < std::min(end, block_end + kPrefetchBlockRows); ++u) {
      rows.Prefetch(groups.row(u), row_size);
    }
    for (int64_t u = block; u < block_end; ++u) {
      const int64_t first = groups.first_position(u);
      const T* grad_row = grad + first * row_size;
      int64_t position = groups.next_position(first);
      if (position < 0) {
        rows.Update(groups.row(u), grad_row, row_size);
        continue;
      }
      for (int64_t j = 0; j < row_size; ++j) summed[j] = Load(grad_row[j]);
      if (next_split != splits_end && next_split->group == u) {
        // The first chunk (the group has more than one), then the later chunks' sums in order.
        for (int64_t count = 1; count < kDuplicateChunkRows;
             ++count, position = groups.next_position(position)) {
          const T* other = grad + position * row_size;
          for (int64_t j = 0; j < row_size; ++j) summed[j] += Load(other[j]);
        }
        const int64_t num_chunks = (groups.count(u) - 1) / kDuplicateChunkRows;
        for (int64_t c = 0; c < num_chunks; ++c) {
          const A* partial = split.partials + (next_split->first_slot + c) * row_size;
          for (int64_t j = 0; j < row_size; ++j) summed[j] += partial[j];
        }
        ++next_split;
        rows.Update(groups.row(u), static_cast<const A*>(summed), row_size);
        continue;
      }
      // Chunk 0 is summed in place; each later chunk in `chunk`, added when the next begins.
      A* const chunk = summed + row_size;
      A* into = summed;
      for (int64_t count = 1; position >= 0; position = groups.next_position(position), ++count) {
        const T* other = grad + position * row_size;
        if (count % kDuplicateChunkRows != 0) {
          for (int64_t j = 0; j < row_size; ++j) into[j] += Load(other[j]);
          continue;
        }
        if (into == chunk) {
          for (int64_t j = 0; j < row_size; ++j) summed[j] += chunk[j];
        }
        into = chunk;
        for (int64_t j = 0; j < row_size; ++j) chunk[j] = Load(other[j]);
      }
      if (into == chunk) {
        for (int64_t j = 0; j < row_size; ++j) summed[j] += chunk[j];
      }
      rows.Update(groups.row(u), static_cast<const A*>(summed), row_size);
    }
  }
}

// The shard's copies (noinline: each is its own function, where tests/test_packaging.py finds
// the row prefetches).
template <int64_t kRowSize, typename T, typename Rows>
__attribute__((noinline)) void UniqueRowsShardBaseline(
    const RowGroups& groups, const T* grad, int64_t row_size, int64_t begin, int64_t end,
    const Rows& rows, const SplitSums<AccumulateType<T>>& split, AccumulateType<T>* summed) {
  UniqueRowsShardBody<kRowSize>(groups, grad, row_size, begin, end, rows, split, summed);
}

#ifdef TF_FTRL_HAVE_X86_COPIES
template <int64_t kRowSize, typename T, typename Rows>
TF_FTRL_TARGET_AVX2 __attribute__((noinline)) void UniqueRowsShardAvx2(
    const RowGroups& groups, const T* grad, int64_t row_size, int64_t begin, int64_t end,
    const Rows& rows, const SplitSums<AccumulateType<T>>& split, AccumulateType<T>* summed) {
  UniqueRowsShardBody<kRowSize>(groups, grad, row_size, begin, end, rows, split, summed);
}

template <int64_t kRowSize, typename T, typename Rows>
TF_FTRL_TARGET_AVX512 __attribute__((noinline)) void UniqueRowsShardAvx512(
    const RowGroups& groups, const T* grad, int64_t row_size, int64_t begin, int64_t end,
    const Rows& rows, const SplitSums<AccumulateType<T>>& split, AccumulateType<T>* summed) {
  UniqueRowsShardBody<kRowSize>(groups, grad, row_size, begin, end, rows, split, summed);
}
#endif

// Summing a duplicate row costs about this many times less than updating a row: the update
// reads and writes rows of every table, scattered through memory; the duplicate is one row of
// the gradient, mostly in cache. Chosen by measurement (tools/bench_cpu_kernels.cc, Zipf ids,
// the update cut into 8 parts: the slowest part 1.12-1.14x the mean at 8, 1.20-1.22x at 4,
// 1.48x at 16; 2.2-2.3x with unique rows in equal numbers).
constexpr int64_t kUpdateCostInDuplicates = 8;
// At most this many pieces of equal work for the pool to share out.
constexpr int64_t kMaxWeightedPieces = 256;

// A group has its later chunks (kDuplicateChunkRows) summed ahead of the update by the pool
// (SumLaterChunks) when it has more duplicates than this and its work (GroupWork) is more than
// half of one thread's share of the update: otherwise one thread sums all of a hot id's rows
// (with click-log ids, ~2,000 of 16,384), more than a core's share where there are 64 cores.
// Summing ahead costs a second call of the pool and a pass over the rows that is not overlapped
// with the updates (measured with 2 threads: Zipf ids 15-20% slower had every group over this
// been split), so it is kept for the groups that hold up the update.
constexpr int64_t kSplitAboveDuplicates = 4 * kDuplicateChunkRows;

// The work of group u in units of one duplicate (see kUpdateCostInDuplicates); `split` is the
// next split group at or after u (or the end), advanced past u when it is u.
inline int64_t GroupWork(const RowGroups& groups, int64_t u, const SplitGroup*& split,
                         const SplitGroup* splits_end) {
  const int64_t duplicates = groups.count(u) - 1;
  if (split != splits_end && split->group == u) {
    ++split;
    // The first chunk's rows and one chunk sum per later chunk.
    return kUpdateCostInDuplicates + (kDuplicateChunkRows - 1) +
           duplicates / kDuplicateChunkRows;
  }
  return kUpdateCostInDuplicates + duplicates;
}

// Cuts the unique rows of `groups` into `pieces` ranges of about equal work, counting an update
// as kUpdateCostInDuplicates and each duplicate as 1 (a split group's later chunks as one each:
// they were summed before): bounds[k], bounds[k + 1] delimit piece k (bounds[0] = 0,
// bounds[pieces] = num_unique, non-decreasing). A hot id's duplicates (with click-log ids,
// thousands, and the hot ids all among the first groups) would otherwise pile up in the first
// shard while the other threads wait.
inline std::vector<int64_t> WeightedPieces(const RowGroups& groups, int64_t pieces,
                                           const std::vector<SplitGroup>& split = {}) {
  const int64_t num_unique = groups.num_unique();
  const SplitGroup* const splits_end = split.data() + split.size();
  int64_t total = 0;
  const SplitGroup* next = split.data();
  for (int64_t u = 0; u < num_unique; ++u) total += GroupWork(groups, u, next, splits_end);
  std::vector<int64_t> bounds(pieces + 1, num_unique);
  bounds[0] = 0;
  int64_t piece = 1, done = 0;
  next = split.data();
  for (int64_t u = 0; u < num_unique && piece < pieces; ++u) {
    done += GroupWork(groups, u, next, splits_end);
    // Piece `piece` starts after the row where the work so far reaches its share.
    while (piece < pieces && done * pieces >= total * piece) bounds[piece++] = u + 1;
  }
  return bounds;
}

// The groups to split for `num_threads` threads (kSplitAboveDuplicates), sorted by group, and the
// positions where their later chunks start (slot k's chunk starts at starts[k]; a group's slots
// follow one another in chunk order).
inline void PlanSplit(const RowGroups& groups, int64_t num_threads,
                      std::vector<SplitGroup>* split, std::vector<int64_t>* starts) {
  if (groups.later_chunk_starts().empty()) return;
  const SplitGroup* none = nullptr;
  int64_t total = 0;
  for (int64_t u = 0; u < groups.num_unique(); ++u) total += GroupWork(groups, u, none, none);
  auto worth_splitting = [&](int64_t u) {
    const int64_t duplicates = groups.count(u) - 1;
    return duplicates > kSplitAboveDuplicates &&
           2 * (kUpdateCostInDuplicates + duplicates) * num_threads > total;
  };
  std::vector<ChunkStart> chunks;
  for (const ChunkStart& c : groups.later_chunk_starts()) {
    if (worth_splitting(c.group)) chunks.push_back(c);
  }
  // later_chunk_starts() is in order of position, so each group's chunks stay in chunk order.
  std::stable_sort(chunks.begin(), chunks.end(),
                   [](const ChunkStart& a, const ChunkStart& b) { return a.group < b.group; });
  for (int64_t k = 0; k < static_cast<int64_t>(chunks.size()); ++k) {
    if (k == 0 || chunks[k].group != chunks[k - 1].group) split->push_back({chunks[k].group, k});
    starts->push_back(chunks[k].position);
  }
}

// Sums the chunks that start at starts[begin, end) (kDuplicateChunkRows rows each, or to the end
// of the group, in order of position from the first) into rows begin .. end - 1 of `partials`.
template <typename T>
void SumLaterChunks(const RowGroups& groups, const T* grad, int64_t row_size,
                    const int64_t* starts, int64_t begin, int64_t end,
                    AccumulateType<T>* partials) {
  for (int64_t k = begin; k < end; ++k) {
    AccumulateType<T>* const sum = partials + k * row_size;
    int64_t position = starts[k];
    const T* row = grad + position * row_size;
    for (int64_t j = 0; j < row_size; ++j) sum[j] = Load(row[j]);
    position = groups.next_position(position);
    for (int64_t count = 1; count < kDuplicateChunkRows && position >= 0;
         ++count, position = groups.next_position(position)) {
      row = grad + position * row_size;
      for (int64_t j = 0; j < row_size; ++j) sum[j] += Load(row[j]);
    }
  }
}

// Every unique row of `groups` through UniqueRowsShardBody in the chosen copy, sharded on the
// pool when there is enough work (in pieces of equal work, WeightedPieces, where indices
// repeat, after the pool has summed the later chunks of the hottest rows, SumLaterChunks). With
// kCompiledRowSizes false, every row size takes the loops compiled for any size; with
// kWeighDuplicates false, the pool gets unique rows in equal numbers whatever their duplicates;
// with kSplitHotRows false, each row's duplicates are summed by the thread that updates it
// (tools/bench_cpu_kernels.cc compares them).
template <bool kCompiledRowSizes = true, bool kWeighDuplicates = true, bool kSplitHotRows = true,
          typename T, typename Rows>
void ForEachUniqueRow(VectorCopy copy, const RowGroups& groups, const T* grad, int64_t row_size,
                      int64_t cycles_per_element, const ParallelFor& parallel_for,
                      const Rows& rows) {
  using A = AccumulateType<T>;
  SplitSums<A> split;
  auto shard = [&](int64_t begin, int64_t end) {
    std::vector<A> summed(2 * row_size);
    DispatchRowSize(kCompiledRowSizes ? row_size : 0, [&](auto size) {
#ifdef TF_FTRL_HAVE_X86_COPIES
      if (copy == VectorCopy::kAvx512) {
        return UniqueRowsShardAvx512<size()>(groups, grad, row_size, begin, end, rows, split,
                                             summed.data());
      }
      if (copy == VectorCopy::kAvx2) {
        return UniqueRowsShardAvx2<size()>(groups, grad, row_size, begin, end, rows, split,
                                           summed.data());
      }
#endif
      UniqueRowsShardBaseline<size()>(groups, grad, row_size, begin, end, rows, split,
                                      summed.data());
    });
  };
  const int64_t num_unique = groups.num_unique();
  const int64_t cost_per_row = std::max<int64_t>(1, row_size * cycles_per_element);
  if (num_unique * row_size <= kMinElementsToParallelize) {
    if (num_unique > 0) shard(0, num_unique);
  } else if (!kWeighDuplicates || groups.num_positions() == num_unique) {
    parallel_for(num_unique, cost_per_row, shard);
  } else {
    std::vector<SplitGroup> split_groups;
    std::vector<int64_t> starts;
    if (kSplitHotRows) PlanSplit(groups, parallel_for.num_threads(), &split_groups, &starts);
    const int64_t num_slots = static_cast<int64_t>(starts.size());
    std::vector<A> partials(num_slots * row_size);
    if (num_slots > 0) {
      parallel_for(num_slots, std::max<int64_t>(1, kDuplicateChunkRows * row_size),
                   [&](int64_t begin, int64_t end) {
                     SumLaterChunks(groups, grad, row_size, starts.data(), begin, end,
                                    partials.data());
                   });
      split = SplitSums<A>{split_groups.data(), static_cast<int64_t>(split_groups.size()),
                           partials.data()};
    }
    const int64_t pieces = std::min(num_unique, kMaxWeightedPieces);
    const std::vector<int64_t> bounds = WeightedPieces(groups, pieces, split_groups);
    const int64_t duplicates = groups.num_positions() - num_unique;
    const int64_t cost_per_piece =
        cost_per_row * (num_unique + duplicates / kUpdateCostInDuplicates) / pieces;
    parallel_for(pieces, std::max<int64_t>(1, cost_per_piece), [&](int64_t first, int64_t last) {
      if (bounds[first] < bounds[last]) shard(bounds[first], bounds[last]);
    });
  }
}

// The sparse updates through a chosen copy (tests run each copy the CPU supports).
template <typename T>
void SparseApplyFtrlWith(VectorCopy copy, const FtrlHyperparams<AccumulateType<T>>& h,
                         bool multiply_linear_by_lr, T* var, T* accum, T* linear, const T* grad,
                         int64_t row_size, const RowGroups& groups,
                         const ParallelFor& parallel_for) {
  DispatchFlags(IsSqrtPower(h), multiply_linear_by_lr, [&](auto sqrt_power, auto by_lr) {
    const FtrlRows<sqrt_power(), by_lr(), T> rows{h, var, accum, linear};
    ForEachUniqueRow(copy, groups, grad, row_size, FtrlCycles(h), parallel_for, rows);
  });
}

template <typename T>
void SparseApplyAdagradWith(VectorCopy copy, const AdagradHyperparams<AccumulateType<T>>& h,
                            bool update_slots, T* var, T* accum, const T* grad,
                            int64_t row_size, const RowGroups& groups,
                            const ParallelFor& parallel_for) {
  DispatchFlags(update_slots, false, [&](auto slots, auto) {
    const AdagradRows<slots(), T> rows{h, var, accum};
    ForEachUniqueRow(copy, groups, grad, row_size, kAdagradCyclesPerElement, parallel_for, rows);
  });
}

}  // namespace internal

// Dense FTRL over `size` elements.
template <typename T>
void ApplyFtrl(const FtrlHyperparams<AccumulateType<T>>& h, bool multiply_linear_by_lr, T* var,
               T* accum, T* linear, const T* grad, int64_t size,
               const ParallelFor& parallel_for) {
  DispatchFlags(IsSqrtPower(h), multiply_linear_by_lr, [&](auto sqrt_power, auto by_lr) {
    internal::ForEachBlock(size, internal::FtrlCycles(h), parallel_for,
                           [&](int64_t begin, int64_t end) {
                             internal::FtrlLoop<sqrt_power(), by_lr()>(
                                 h, var + begin, accum + begin, linear + begin,
                                 grad + begin, end - begin);
                           });
  });
}

// Sparse FTRL: the rows of var/accum/linear (each `row_size` elements) named by `groups`, with
// grad holding one row per index position. Duplicate indices are summed first.
template <typename T>
void SparseApplyFtrl(const FtrlHyperparams<AccumulateType<T>>& h, bool multiply_linear_by_lr,
                     T* var, T* accum, T* linear, const T* grad, int64_t row_size,
                     const RowGroups& groups, const ParallelFor& parallel_for) {
  internal::SparseApplyFtrlWith(internal::BestVectorCopy(), h, multiply_linear_by_lr, var, accum,
                                linear, grad, row_size, groups, parallel_for);
}

// Dense Adagrad over `size` elements.
template <typename T>
void ApplyAdagrad(const AdagradHyperparams<AccumulateType<T>>& h, bool update_slots, T* var,
                  T* accum, const T* grad, int64_t size, const ParallelFor& parallel_for) {
  DispatchFlags(update_slots, false, [&](auto slots, auto) {
    internal::ForEachBlock(size, kAdagradCyclesPerElement, parallel_for,
                           [&](int64_t begin, int64_t end) {
                             internal::AdagradLoop<slots()>(h, var + begin, accum + begin,
                                                            grad + begin, end - begin);
                           });
  });
}

// Sparse Adagrad on the rows named by `groups`; duplicate indices are summed first.
template <typename T>
void SparseApplyAdagrad(const AdagradHyperparams<AccumulateType<T>>& h, bool update_slots,
                        T* var, T* accum, const T* grad, int64_t row_size,
                        const RowGroups& groups, const ParallelFor& parallel_for) {
  internal::SparseApplyAdagradWith(internal::BestVectorCopy(), h, update_slots, var, accum, grad,
                                   row_size, groups, parallel_for);
}

}  // namespace cpu
}  // namespace tf_ftrl
