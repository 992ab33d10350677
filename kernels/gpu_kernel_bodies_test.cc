// The CUDA kernels' per-thread work (gpu_kernel_bodies.h) on the host, where there is no GPU:
// every thread of a grid runs after the other, and the results must equal the CPU loops'
// (cpu_loops.h) bit for bit, for every element type, index type and flag, both the vector and
// the scalar path, groups of 1 to 32 lanes, and grids small enough to stride several times.
// What this cannot see (the device's scheduling, CUB's sort, memory faults) the GPU tests do.
//   bazel test //kernels:gpu_kernel_bodies_test
#include "kernels/gpu_kernel_bodies.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/test_support.h"

namespace tf_ftrl {
namespace {

using testing::Check;
using testing::Random;

// The vector path reinterprets arrays as 16-byte packs: std::vector's storage is that aligned.
static_assert(__STDCPP_DEFAULT_NEW_ALIGNMENT__ >= gpu::kVectorBytes, "vectors under-aligned");

constexpr int64_t kThreadsPerBlock = 256;

template <typename T>
bool SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// var, accum[, linear] and a gradient, as the tests start them.
template <typename T>
struct State {
  std::vector<T> var, accum, linear, grad;
};

template <typename T>
State<T> RandomState(std::mt19937_64& rng, int64_t size, int64_t grad_size) {
  return {Random<T>(rng, size, -1, 1), Random<T>(rng, size, 0.1, 2), Random<T>(rng, size, -1, 1),
          Random<T>(rng, grad_size, -1, 1)};
}

// Calls fn(step, h, flag) for each FTRL flag combination and each Adagrad flag, with the steps
// of the descriptions FtrlLike and AdagradLike (the element-wise ones, or the row-wise ones).
template <typename T, typename FtrlLike = Ftrl, typename AdagradLike = Adagrad, typename Fn>
void ForEachStep(Fn&& fn, double epsilon = 1e-7) {
  using A = AccumulateType<T>;
  for (double power : {-0.5, -0.3}) {
    for (bool by_lr : {false, true}) {
      const FtrlHyperparams<A> h{A(0.05), A(0.01), A(0.02), A(0.03), A(power)};
      FtrlLike::WithStep(h, by_lr, [&](const auto& step) { fn(step, h, by_lr); });
    }
  }
  for (bool update_slots : {true, false}) {
    const AdagradHyperparams<A> h{A(0.05), A(epsilon)};
    AdagradLike::WithStep(h, update_slots, [&](const auto& step) { fn(step, h, update_slots); });
  }
}

// The dense row-wise kernel's work, lane by lane as a group of kRowSumLanes threads does it (the
// kernel exchanges the partial sums by warp shuffles): every row's partial sums, every lane's
// coefficients from them, the per-row values stored by lane 0 after all lanes have read them,
// then every lane's elements.
template <typename Step, typename State, typename T>
void RowwiseDenseByGroups(const Step& step, const State& state, const T* grad, int64_t rows,
                          int64_t row_size) {
  using A = AccumulateType<T>;
  for (int64_t r = 0; r < rows; ++r) {
    A partials[kRowSumLanes];
    for (int k = 0; k < kRowSumLanes; ++k) {
      partials[k] = RowSquaresPartial<A>(grad + r * row_size, row_size, k);
    }
    std::vector<gpu::RowwiseBegin<Step, A>> begins;
    for (int k = 0; k < kRowSumLanes; ++k) {
      begins.push_back(gpu::RowwiseDenseBegin(step, state, r, partials, row_size));
    }
    gpu::StoreRowValues<Step>(state, r, begins[0].values);
    for (int k = 0; k < kRowSumLanes; ++k) {
      gpu::RowwiseDenseElements(step, begins[k].coefficients, state, grad, r, row_size, k);
    }
  }
}

template <typename T, typename Step>
StateArrays<T, Step::kNumState> ArraysOf(State<T>& s) {
  if constexpr (Step::kNumState == 3) {
    return {s.var.data(), {s.accum.data(), s.linear.data()}};
  } else {
    return {s.var.data(), {s.accum.data()}};
  }
}

template <typename T>
bool SameState(const State<T>& a, const State<T>& b) {
  return SameBits(a.var, b.var) && SameBits(a.accum, b.accum) && SameBits(a.linear, b.linear);
}

template <int kWidth, typename T>
void TestDense(std::mt19937_64& rng, const char* name) {
  for (int64_t size : {1, 3, 7, 8, 37, 1001, 4099}) {
    const State<T> start = RandomState<T>(rng, size, size);
    for (int64_t num_threads : {kThreadsPerBlock, 3 * kThreadsPerBlock}) {
      ForEachStep<T>([&](const auto& step, const auto& h, bool flag) {
        using Step = std::decay_t<decltype(step)>;
        State<T> gpu = start, cpu = start;
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::DenseThreadWork<kWidth>(step, ArraysOf<T, Step>(gpu), gpu.grad.data(), size, t,
                                       num_threads);
        }
        if constexpr (Step::kNumState == 3) {
          cpu::Apply<Ftrl>(h, flag, {cpu.var.data(), {cpu.accum.data(), cpu.linear.data()}},
                           cpu.grad.data(), size, cpu::SerialParallelFor);
        } else {
          cpu::Apply<Adagrad>(h, flag, {cpu.var.data(), {cpu.accum.data()}}, cpu.grad.data(), size,
                              cpu::SerialParallelFor);
        }
        Check(SameState(gpu, cpu), std::string("dense ") + name + " width " +
                                       std::to_string(kWidth) + " size " + std::to_string(size) +
                                       " threads " + std::to_string(num_threads) +
                                       (Step::kNumState == 3 ? " FTRL" : " Adagrad"));
      });
    }
  }
}

// The (index, position) pairs sorted by index, positions ascending within an index: what the
// kernels get from CUB's stable radix sort.
template <typename Index>
void SortPairs(const std::vector<Index>& indices, std::vector<Index>* sorted_indices,
               std::vector<int32_t>* sorted_positions) {
  sorted_positions->resize(indices.size());
  std::iota(sorted_positions->begin(), sorted_positions->end(), 0);
  std::stable_sort(sorted_positions->begin(), sorted_positions->end(),
                   [&](int32_t a, int32_t b) { return indices[a] < indices[b]; });
  sorted_indices->clear();
  for (int32_t p : *sorted_positions) sorted_indices->push_back(indices[p]);
}

// Device memory for `count` values of A, aligned as the kernels' workspace is (256 bytes; the
// chunk sums are stored as packs of up to 32 bytes).
template <typename A>
struct AlignedBuffer {
  explicit AlignedBuffer(int64_t count) : storage(count + 256 / sizeof(A)) {}
  A* data() {
    const auto address = reinterpret_cast<uintptr_t>(storage.data());
    return reinterpret_cast<A*>((address + 255) / 256 * 256);
  }
  std::vector<A> storage;
};

// Ids repeated just under, at and just over one and two chunks of the summing order, and many
// chunks with a part one.
constexpr int64_t kHotCounts[] = {kDuplicateChunkRows - 1,     kDuplicateChunkRows,
                                  kDuplicateChunkRows + 1,     2 * kDuplicateChunkRows,
                                  2 * kDuplicateChunkRows + 1, 3 * kDuplicateChunkRows + 1};
constexpr int64_t kNumHot = sizeof(kHotCounts) / sizeof(kHotCounts[0]);

// `n` ids in [0, rows); with `hot`, rows 0 .. kNumHot - 1 come exactly kHotCounts times each,
// shuffled among the others.
template <typename Index>
std::vector<Index> RandomIndices(std::mt19937_64& rng, int64_t rows, int64_t n, bool hot) {
  std::vector<Index> indices(n);
  std::uniform_int_distribution<int64_t> pick(hot ? kNumHot : 0, rows - 1);
  for (auto& i : indices) i = static_cast<Index>(pick(rng));
  if (hot) {
    int64_t p = 0;
    for (int64_t h = 0; h < kNumHot; ++h) {
      for (int64_t c = 0; c < kHotCounts[h]; ++c) indices[p++] = static_cast<Index>(h);
    }
    std::shuffle(indices.begin(), indices.end(), rng);
  }
  return indices;
}

template <int kWidth, typename T, typename Index>
void TestSparseShape(std::mt19937_64& rng, int64_t rows, int64_t row_size, int64_t n, bool hot,
                     const std::string& name) {
  using A = AccumulateType<T>;
  const std::vector<Index> indices = RandomIndices<Index>(rng, rows, n, hot);
  std::vector<Index> sorted_indices;
  std::vector<int32_t> sorted_positions;
  SortPairs(indices, &sorted_indices, &sorted_positions);
  const gpu::SortedPairs<Index> sorted{sorted_indices.data(), sorted_positions.data(), n};
  RowGroups groups;
  IndexError error;
  Check(groups.Build(indices.data(), n, rows, &error), "indices in range");
  const State<T> start = RandomState<T>(rng, rows * row_size, n * row_size);

  const int best_lanes = gpu::LanesPerRow(row_size / kWidth);
  for (int lanes : {best_lanes, 1, gpu::kWarpSize}) {
    // One or two blocks: far fewer groups than positions, so the groups stride several times.
    for (int64_t num_threads : {kThreadsPerBlock, 2 * kThreadsPerBlock}) {
      ForEachStep<T>([&](const auto& step, const auto& h, bool flag) {
        using Step = std::decay_t<decltype(step)>;
        State<T> gpu = start, cpu = start;
        // The two passes, as two kernels: every thread of the first before any of the second.
        AlignedBuffer<A> partials(gpu::NumPartialSlots(n) * row_size);
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::ChunkSumThreadWork<kWidth>(gpu.grad.data(), row_size, lanes, sorted,
                                          partials.data(), t, num_threads);
        }
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::SparseThreadWork<kWidth>(step, ArraysOf<T, Step>(gpu), gpu.grad.data(), row_size,
                                        lanes, sorted, partials.data(), t, num_threads);
        }
        if constexpr (Step::kNumState == 3) {
          cpu::SparseApply<Ftrl>(h, flag, {cpu.var.data(), {cpu.accum.data(), cpu.linear.data()}},
                                 cpu.grad.data(), row_size, groups, cpu::SerialParallelFor);
        } else {
          cpu::SparseApply<Adagrad>(h, flag, {cpu.var.data(), {cpu.accum.data()}}, cpu.grad.data(),
                                    row_size, groups, cpu::SerialParallelFor);
        }
        Check(SameState(gpu, cpu),
              "sparse " + name + " " + std::to_string(rows) + " x " + std::to_string(row_size) +
                  ", " + std::to_string(n) + " ids, width " + std::to_string(kWidth) +
                  ", lanes " + std::to_string(lanes) + ", threads " +
                  std::to_string(num_threads) + (Step::kNumState == 3 ? " FTRL" : " Adagrad"));
      });
    }
  }
}

template <typename T, typename Index>
void TestSparse(std::mt19937_64& rng, const char* type_name) {
  constexpr int kVector = gpu::VectorWidth<T>();
  struct Shape {
    int64_t rows, row_size, n;
    bool hot;
  };
  // Rows of one element to 1000; 2n + 3 ids (duplicates for sure); 2,000 ids into 10 rows (runs
  // of some 200, many chunks of the summing order, longer than the batch of duplicate loads and
  // not a multiple of it); runs at the chunks' edges (kHotCounts).
  const Shape shapes[] = {{50, 1, 103, false},   {40, 9, 83, false},    {64, 16, 131, false},
                          {30, 40, 63, false},   {100, 64, 203, false}, {7, 1000, 17, false},
                          {10, 33, 2000, false}, {10, 64, 2000, false}, {300, 8, 600, true},
                          {300, 5, 600, true}};
  for (const Shape& s : shapes) {
    const std::string name = std::string(type_name) + (sizeof(Index) == 4 ? " int32" : " int64") +
                             (s.hot ? " (runs at the chunks' edges)" : "");
    TestSparseShape<1, T, Index>(rng, s.rows, s.row_size, s.n, s.hot, name);
    if (s.row_size % kVector == 0) {
      TestSparseShape<kVector, T, Index>(rng, s.rows, s.row_size, s.n, s.hot, name);
    }
  }
}

// The row-wise passes on the host, thread after thread, against the CPU loops bit for bit: dense
// (one thread per row) and sparse (row sums, then the rows' coefficients, then the elements), in
// the vector and the scalar path, with groups of 1 to 32 lanes and runs across the chunks' edges.
template <int kWidth, typename T, typename Index>
void TestRowwiseShape(std::mt19937_64& rng, int64_t rows, int64_t row_size, int64_t n, bool hot,
                      const std::string& name) {
  using A = AccumulateType<T>;
  const std::vector<Index> indices = RandomIndices<Index>(rng, rows, n, hot);
  std::vector<Index> sorted_indices;
  std::vector<int32_t> sorted_positions;
  SortPairs(indices, &sorted_indices, &sorted_positions);
  const gpu::SortedPairs<Index> sorted{sorted_indices.data(), sorted_positions.data(), n};
  RowGroups groups;
  IndexError error;
  Check(groups.Build(indices.data(), n, rows, &error), "indices in range");
  State<T> start = RandomState<T>(rng, rows * row_size, n * row_size);
  start.accum = Random<T>(rng, rows, 0.1, 2);  // one value per row
  const auto dense_grad = Random<T>(rng, rows * row_size, -1, 1);
  const int best_lanes = gpu::LanesPerRow(row_size / kWidth);
  // Adagrad's epsilon at 1e-3, where its place in the formula shows.
  ForEachStep<T, RowwiseFtrl, RowwiseAdagrad>([&](const auto& step, const auto& h, bool flag) {
    using Step = std::decay_t<decltype(step)>;
    using Optimizer = std::conditional_t<Step::kNumState == 3, RowwiseFtrl, RowwiseAdagrad>;
    const std::string what = name + " " + std::to_string(rows) + " x " +
                             std::to_string(row_size) + ", width " + std::to_string(kWidth) +
                             (Step::kNumState == 3 ? " FTRL" : " Adagrad");
    if (kWidth == 1) {
      State<T> gpu = start, cpu = start;
      RowwiseDenseByGroups(step, ArraysOf<T, Step>(gpu), dense_grad.data(), rows, row_size);
      cpu::RowwiseApply<Optimizer>(h, flag, ArraysOf<T, Step>(cpu), dense_grad.data(), rows,
                                   row_size, cpu::SerialParallelFor);
      Check(SameState(gpu, cpu), "row-wise dense " + what);
    }
    for (int lanes : {best_lanes, 1, gpu::kWarpSize}) {
      for (int64_t num_threads : {kThreadsPerBlock, 2 * kThreadsPerBlock}) {
        State<T> gpu = start, cpu = start;
        AlignedBuffer<A> partials(gpu::NumPartialSlots(n) * row_size);
        AlignedBuffer<A> summed(n * row_size);
        std::vector<typename Step::Row> coefficients(n);
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::ChunkSumThreadWork<kWidth>(gpu.grad.data(), row_size, lanes, sorted,
                                          partials.data(), t, num_threads);
        }
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::RowSumThreadWork<kWidth>(gpu.grad.data(), row_size, lanes, sorted,
                                        partials.data(), summed.data(), t, num_threads);
        }
        AlignedBuffer<A> squares(n * kRowSumLanes);
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::RowSquaresThreadWork(row_size, sorted, summed.data(), squares.data(), t,
                                    num_threads);
        }
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::RowBeginThreadWork(step, ArraysOf<T, Step>(gpu), row_size, sorted, squares.data(),
                                  coefficients.data(), t, num_threads);
        }
        for (int64_t t = 0; t < num_threads; ++t) {
          gpu::RowwiseSparseThreadWork<kWidth>(step, ArraysOf<T, Step>(gpu), row_size, lanes,
                                               sorted, summed.data(), coefficients.data(), t,
                                               num_threads);
        }
        cpu::SparseApply<Optimizer>(h, flag, ArraysOf<T, Step>(cpu), cpu.grad.data(), row_size,
                                    groups, cpu::SerialParallelFor);
        Check(SameState(gpu, cpu), "row-wise sparse " + what + ", " + std::to_string(n) +
                                       " ids, lanes " + std::to_string(lanes) + ", threads " +
                                       std::to_string(num_threads));
      }
    }
  }, 1e-3);
}

template <typename T, typename Index>
void TestRowwise(std::mt19937_64& rng, const char* type_name) {
  constexpr int kVector = gpu::VectorWidth<T>();
  struct Shape {
    int64_t rows, row_size, n;
    bool hot;
  };
  const Shape shapes[] = {{50, 1, 103, false}, {40, 9, 83, false},   {64, 16, 131, false},
                          {30, 40, 63, false}, {100, 64, 203, false}, {10, 64, 2000, false},
                          {300, 8, 600, true}, {300, 5, 600, true}};
  for (const Shape& s : shapes) {
    const std::string name = std::string(type_name) + (sizeof(Index) == 4 ? " int32" : " int64") +
                             (s.hot ? " (runs at the chunks' edges)" : "");
    TestRowwiseShape<1, T, Index>(rng, s.rows, s.row_size, s.n, s.hot, name);
    if (s.row_size % kVector == 0) {
      TestRowwiseShape<kVector, T, Index>(rng, s.rows, s.row_size, s.n, s.hot, name);
    }
  }
}

// The multi-tensor launch's per-thread work: every thread of every block of a launch over
// variables of many sizes (the vector path where aligned, the scalar one where a variable
// starts off a vector boundary) gives the CPU loops' multi-tensor update, bit for bit.
template <typename T>
void TestMultiTensor(std::mt19937_64& rng, const char* name) {
  const std::vector<int64_t> sizes = {4096, 1, 7, 64, 1001, 3, 4099, 16};
  constexpr int kWidth = gpu::VectorWidth<T>();
  ForEachStep<T>([&](const auto& step, const auto& h, bool flag) {
    using Step = std::decay_t<decltype(step)>;
    using Arrays = StateArrays<T, Step::kNumState>;
    std::vector<State<T>> gpu_states, cpu_states;
    for (int64_t size : sizes) gpu_states.push_back(RandomState<T>(rng, size, size));
    cpu_states = gpu_states;
    const std::vector<State<T>> start_states = gpu_states;
    // One variable starts off a vector boundary (its arrays one element in): the scalar path.
    const int64_t offset_variable = 2;
    std::vector<gpu::MultiTensorEntry<Arrays>> entries;
    int64_t blocks = 0;
    for (size_t v = 0; v < sizes.size(); ++v) {
      Arrays arrays = ArraysOf<T, Step>(gpu_states[v]);
      const T* grad = gpu_states[v].grad.data();
      int64_t size = sizes[v];
      const bool vectors = static_cast<int64_t>(v) != offset_variable;
      if (!vectors) {  // the elements after the first
        arrays.var += 1;
        for (auto*& slot : arrays.slots) slot += 1;
        grad += 1;
        size -= 1;
      }
      // Few blocks, so that threads stride several times.
      const int64_t num_blocks = 1 + static_cast<int64_t>(v % 2);
      entries.push_back({arrays, grad, size, blocks, num_blocks, vectors});
      blocks += num_blocks;
    }
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t t = 0; t < kThreadsPerBlock; ++t) {
        gpu::MultiTensorThreadWork<kWidth>(step, entries.data(),
                                           static_cast<int64_t>(entries.size()), b, t,
                                           kThreadsPerBlock);
      }
    }
    std::vector<Arrays> cpu_arrays;
    std::vector<const T*> cpu_grads;
    std::vector<int64_t> cpu_sizes;
    for (size_t v = 0; v < sizes.size(); ++v) {
      Arrays arrays = ArraysOf<T, Step>(cpu_states[v]);
      const T* grad = cpu_states[v].grad.data();
      int64_t size = sizes[v];
      if (static_cast<int64_t>(v) == offset_variable) {
        arrays.var += 1;
        for (auto*& slot : arrays.slots) slot += 1;
        grad += 1;
        size -= 1;
      }
      cpu_arrays.push_back(arrays);
      cpu_grads.push_back(grad);
      cpu_sizes.push_back(size);
    }
    if constexpr (Step::kNumState == 3) {
      cpu::MultiApply<Ftrl>(h, flag, cpu_arrays.data(), cpu_grads.data(), cpu_sizes.data(),
                            static_cast<int64_t>(sizes.size()), cpu::SerialParallelFor);
    } else {
      cpu::MultiApply<Adagrad>(h, flag, cpu_arrays.data(), cpu_grads.data(), cpu_sizes.data(),
                               static_cast<int64_t>(sizes.size()), cpu::SerialParallelFor);
    }
    bool same = true;
    bool changed = false;
    for (size_t v = 0; v < sizes.size(); ++v) {
      same = same && SameState(gpu_states[v], cpu_states[v]);
      changed = changed || !SameBits(gpu_states[v].var, start_states[v].var);
    }
    Check(same && changed, std::string("multi-tensor ") + name +
                               (Step::kNumState == 3 ? " FTRL" : " Adagrad") +
                               (flag ? " flag" : ""));
  });
}

template <typename T>
void TestType(std::mt19937_64& rng, const char* name) {
  TestDense<gpu::VectorWidth<T>(), T>(rng, name);
  TestDense<1, T>(rng, name);
  TestSparse<T, int32_t>(rng, name);
  TestSparse<T, int64_t>(rng, name);
}

// The index check: the lowest bad position over all threads, and its value, are what the CPU
// loops' RowGroups::Build reports (the same verdict on the same input), and the positions are
// numbered 0..n-1 either way.
template <typename Index>
void TestIndexVerdict(std::mt19937_64& rng, const char* name) {
  const int64_t rows = 1000;
  std::vector<int64_t> bad_values = {-1, rows, std::numeric_limits<Index>::max(),
                                     std::numeric_limits<Index>::min()};
  if (sizeof(Index) == 8) bad_values.push_back(int64_t{1} << 40);
  bool same = true;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 3000);
    std::vector<Index> indices(n);
    for (auto& i : indices) i = static_cast<Index>(rng() % rows);
    const int num_bad = static_cast<int>(trial % 4);  // none, one, or several bad indices
    for (int b = 0; b < num_bad; ++b) {
      indices[rng() % n] = static_cast<Index>(bad_values[rng() % bad_values.size()]);
    }
    // One thread (the whole list in one stride), one block, seven blocks.
    for (int64_t num_threads : {int64_t{1}, kThreadsPerBlock, 7 * kThreadsPerBlock}) {
      std::vector<int32_t> positions(n, -1);
      int64_t first_bad = -1;
      for (int64_t t = 0; t < num_threads; ++t) {
        const int64_t found =
            gpu::CheckAndNumberThreadWork(indices.data(), n, rows, positions.data(), t,
                                          num_threads);
        if (found >= 0 && (first_bad < 0 || found < first_bad)) first_bad = found;
      }
      RowGroups groups;
      IndexError error;
      const bool valid = groups.Build(indices.data(), n, rows, &error);
      same = same && valid == (first_bad < 0) &&
             (valid || (error.position == first_bad &&
                        error.value == static_cast<int64_t>(indices[first_bad])));
      for (int64_t i = 0; i < n; ++i) same = same && positions[i] == i;
    }
  }
  Check(same, std::string("index check: the same verdict as the CPU loops, ") + name);
}

// The chunk sums are queued before the host learns whether an index is bad (gpu_kernels.cu.cc),
// so they may run on the order CUB gives a list with a bad index: sorted on only the low bits that
// valid indices use, where a bad index sharing a hot row's low bits lands inside that row's run
// (equal indices are then not contiguous). They must still read only grad rows that exist and
// write only the partial-sum slots: grad and the sorted pairs here are exactly their size (ASan
// sees any read past them), and the bytes around the slots must keep their sentinel.
template <int kWidth, typename T, typename Index>
void TestChunkSumsOnBadIndices(std::mt19937_64& rng, const std::string& name) {
  using A = AccumulateType<T>;
  constexpr int64_t kRows = 1000;
  constexpr int kBits = 10;  // 2^10 >= kRows: what the sort is asked to order
  constexpr uint64_t kMask = (uint64_t{1} << kBits) - 1;
  constexpr int64_t kRowSize = 8;
  bool confined = true;
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t n = 400 + static_cast<int64_t>(rng() % 1000);  // room for the hot runs (322)
    // The hot rows moved to the top of the table, the longest run last, so that chunks start
    // in the last slots too.
    std::vector<Index> indices = RandomIndices<Index>(rng, kRows, n, /*hot=*/true);
    for (Index& i : indices) i = static_cast<Index>((i + kRows - kNumHot) % kRows);
    for (int b = 0; b <= trial % 6; ++b) {
      const int64_t hot = kRows - kNumHot + static_cast<int64_t>(rng() % kNumHot);
      const int64_t bad[] = {hot + (int64_t{1} << kBits), hot - (int64_t{1} << kBits),
                             std::numeric_limits<Index>::max(),
                             std::numeric_limits<Index>::min()};
      indices[rng() % n] = static_cast<Index>(bad[rng() % 4]);
    }
    std::vector<int32_t> sorted_positions(n);
    std::iota(sorted_positions.begin(), sorted_positions.end(), 0);
    std::stable_sort(sorted_positions.begin(), sorted_positions.end(), [&](int32_t a, int32_t b) {
      return (static_cast<uint64_t>(indices[a]) & kMask) <
             (static_cast<uint64_t>(indices[b]) & kMask);
    });
    std::vector<Index> sorted_indices(n);
    for (int64_t i = 0; i < n; ++i) sorted_indices[i] = indices[sorted_positions[i]];
    const gpu::SortedPairs<Index> sorted{sorted_indices.data(), sorted_positions.data(), n};
    const std::vector<T> grad = Random<T>(rng, n * kRowSize, -1, 1);

    const int64_t count = gpu::NumPartialSlots(n) * kRowSize;
    AlignedBuffer<A> partials(count + 2 * kRowSize);  // a row's room either side of the slots
    A* const slots_begin = partials.data() + kRowSize;
    const A sentinel = A(-12345);
    std::fill(partials.storage.begin(), partials.storage.end(), sentinel);
    for (int lanes : {1, gpu::LanesPerRow(kRowSize / kWidth)}) {
      const int64_t num_threads = 2 * kThreadsPerBlock;
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::ChunkSumThreadWork<kWidth>(grad.data(), kRowSize, lanes, sorted, slots_begin, t,
                                        num_threads);
      }
    }
    for (const A& value : partials.storage) {
      const bool in_slots = &value >= slots_begin && &value < slots_begin + count;
      if (!in_slots) confined = confined && std::memcmp(&value, &sentinel, sizeof(A)) == 0;
    }
  }
  Check(confined, "chunk sums on a list with bad indices stay in their slots, " + name);
}

// Low-precision state (bfloat16 or float16 state of a float var), rounded stochastically: every
// pass of the dense, sparse and row-wise updates gives the CPU loops' bits, the rounding's bits
// included (they depend on the element's position, not on which thread stores it).
template <typename Optimizer, typename S>
void TestLowPrecisionOptimizer(std::mt19937_64& rng, const std::string& name,
                               const typename Optimizer::template Hyperparams<float>& h,
                               bool flag) {
  using A = float;
  constexpr int kSlots = Optimizer::kNumState - 1;
  constexpr int kWidth = gpu::VectorWidth<float>();
  const int64_t rows = 60, row_size = 16, n = 12 * kDuplicateChunkRows;  // room for the hot ids
  const std::vector<int32_t> indices = RandomIndices<int32_t>(rng, rows, n, /*hot=*/true);
  std::vector<int32_t> sorted_indices;
  std::vector<int32_t> sorted_positions;
  SortPairs(indices, &sorted_indices, &sorted_positions);
  const gpu::SortedPairs<int32_t> sorted{sorted_indices.data(), sorted_positions.data(), n};
  RowGroups groups;
  IndexError error;
  Check(groups.Build(indices.data(), n, rows, &error), "indices in range");
  std::vector<std::vector<S>> slots0(kSlots);
  for (int i = 0; i < kSlots; ++i) {
    const int64_t size = Optimizer::kPerRow[i + 1] ? rows : rows * row_size;
    slots0[i] = i == 0 ? Random<S>(rng, size, 0.1, 2) : Random<S>(rng, size, -1, 1);
  }
  const auto var0 = Random<float>(rng, rows * row_size, -1, 1);
  const auto sparse_grad = Random<float>(rng, n * row_size, -1, 1);
  const auto dense_grad = Random<float>(rng, rows * row_size, -1, 1);
  const StateRounding rounding{true, RoundingKey(static_cast<int64_t>(rng() >> 1), 11)};
  struct Copy {
    std::vector<float> var;
    std::vector<std::vector<S>> slots;
    StateArrays<float, Optimizer::kNumState, S> Arrays(const StateRounding& r) {
      StateArrays<float, Optimizer::kNumState, S> state;
      state.var = var.data();
      for (int i = 0; i < kSlots; ++i) state.slots[i] = slots[i].data();
      state.rounding = r;
      return state;
    }
    bool operator==(const Copy& other) const {
      bool same = SameBits(var, other.var);
      for (int i = 0; i < kSlots; ++i) same = same && SameBits(slots[i], other.slots[i]);
      return same;
    }
  };
  const int64_t num_threads = 2 * kThreadsPerBlock;
  const int lanes = gpu::LanesPerRow(row_size / kWidth);
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    using Step = std::decay_t<decltype(step)>;
    // Dense.
    Copy gpu{var0, slots0}, cpu{var0, slots0};
    if constexpr (Optimizer::kRowwise) {
      RowwiseDenseByGroups(step, gpu.Arrays(rounding), dense_grad.data(), rows, row_size);
      cpu::RowwiseApply<Optimizer>(h, flag, cpu.Arrays(rounding), dense_grad.data(), rows,
                                   row_size, cpu::SerialParallelFor);
    } else {
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::DenseThreadWork<kWidth>(step, gpu.Arrays(rounding), dense_grad.data(),
                                     rows * row_size, t, num_threads);
      }
      cpu::Apply<Optimizer>(h, flag, cpu.Arrays(rounding), dense_grad.data(), rows * row_size,
                            cpu::SerialParallelFor);
    }
    Check(gpu == cpu, "low-precision state, stochastic, dense: GPU threads = CPU loops, " + name);
    // Sparse.
    gpu = Copy{var0, slots0}, cpu = Copy{var0, slots0};
    AlignedBuffer<A> partials(gpu::NumPartialSlots(n) * row_size);
    for (int64_t t = 0; t < num_threads; ++t) {
      gpu::ChunkSumThreadWork<kWidth>(sparse_grad.data(), row_size, lanes, sorted,
                                      partials.data(), t, num_threads);
    }
    if constexpr (Optimizer::kRowwise) {
      AlignedBuffer<A> summed(n * row_size);
      std::vector<typename Step::Row> coefficients(n);
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::RowSumThreadWork<kWidth>(sparse_grad.data(), row_size, lanes, sorted,
                                      partials.data(), summed.data(), t, num_threads);
      }
      AlignedBuffer<A> squares(n * kRowSumLanes);
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::RowSquaresThreadWork(row_size, sorted, summed.data(), squares.data(), t,
                                  num_threads);
      }
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::RowBeginThreadWork(step, gpu.Arrays(rounding), row_size, sorted, squares.data(),
                                coefficients.data(), t, num_threads);
      }
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::RowwiseSparseThreadWork<kWidth>(step, gpu.Arrays(rounding), row_size, lanes, sorted,
                                             summed.data(), coefficients.data(), t, num_threads);
      }
    } else {
      for (int64_t t = 0; t < num_threads; ++t) {
        gpu::SparseThreadWork<kWidth>(step, gpu.Arrays(rounding), sparse_grad.data(), row_size,
                                      lanes, sorted, partials.data(), t, num_threads);
      }
    }
    cpu::SparseApply<Optimizer>(h, flag, cpu.Arrays(rounding), sparse_grad.data(), row_size,
                                groups, cpu::SerialParallelFor);
    Check(gpu == cpu, "low-precision state, stochastic, sparse: GPU threads = CPU loops, " + name);
  });
}

template <typename S>
void TestLowPrecisionState(std::mt19937_64& rng, const char* name) {
  const FtrlHyperparams<float> ftrl{0.1f, 0.01f, 0.02f, 0.03f, -0.5f};
  const AdagradHyperparams<float> adagrad{0.1f, 1e-3f};
  TestLowPrecisionOptimizer<Ftrl, S>(rng, std::string("FTRL ") + name, ftrl, false);
  TestLowPrecisionOptimizer<Adagrad, S>(rng, std::string("Adagrad ") + name, adagrad, true);
  TestLowPrecisionOptimizer<RowwiseFtrl, S>(rng, std::string("row-wise FTRL ") + name, ftrl,
                                            true);
  TestLowPrecisionOptimizer<RowwiseAdagrad, S>(rng, std::string("row-wise Adagrad ") + name,
                                               adagrad, true);
}

void TestLanesPerRow() {
  Check(gpu::LanesPerRow(0) == 1 && gpu::LanesPerRow(1) == 1 && gpu::LanesPerRow(2) == 2 &&
            gpu::LanesPerRow(3) == 4 && gpu::LanesPerRow(16) == 16 &&
            gpu::LanesPerRow(17) == 32 && gpu::LanesPerRow(250) == 32,
        "LanesPerRow: the smallest power of two covering the row, at most a warp");
}

}  // namespace
}  // namespace tf_ftrl

int main() {
  using namespace tf_ftrl;
  std::mt19937_64 rng(std::random_device{}());
  using testing::Case;
  Case("LanesPerRow", [&] { TestLanesPerRow(); });
  Case("IndexVerdict/int32", [&] { TestIndexVerdict<int32_t>(rng, "int32"); });
  Case("IndexVerdict/int64", [&] { TestIndexVerdict<int64_t>(rng, "int64"); });
  Case("ChunkSumsOnBadIndices/float32_int32_scalar", [&] {
    TestChunkSumsOnBadIndices<1, float, int32_t>(rng, "float32 int32, scalar");
  });
  Case("ChunkSumsOnBadIndices/float32_int64_vectors", [&] {
    TestChunkSumsOnBadIndices<4, float, int64_t>(rng, "float32 int64, vectors");
  });
  Case("ChunkSumsOnBadIndices/float16_int32_vectors", [&] {
    TestChunkSumsOnBadIndices<8, float16, int32_t>(rng, "float16 int32, vectors");
  });
  Case("ThreadWork/float32", [&] { TestType<float>(rng, "float32"); });
  Case("ThreadWork/float64", [&] { TestType<double>(rng, "float64"); });
  Case("ThreadWork/float16", [&] { TestType<float16>(rng, "float16"); });
  Case("ThreadWork/bfloat16", [&] { TestType<bfloat16>(rng, "bfloat16"); });
  Case("Rowwise/float32", [&] { TestRowwise<float, int32_t>(rng, "float32"); });
  Case("Rowwise/float64", [&] { TestRowwise<double, int64_t>(rng, "float64"); });
  Case("Rowwise/float16", [&] { TestRowwise<float16, int32_t>(rng, "float16"); });
  Case("Rowwise/bfloat16", [&] { TestRowwise<bfloat16, int64_t>(rng, "bfloat16"); });
  Case("LowPrecisionState/bfloat16", [&] { TestLowPrecisionState<bfloat16>(rng, "bfloat16"); });
  Case("LowPrecisionState/float16", [&] { TestLowPrecisionState<float16>(rng, "float16"); });
  Case("MultiTensor/float32", [&] { TestMultiTensor<float>(rng, "float32"); });
  Case("MultiTensor/float64", [&] { TestMultiTensor<double>(rng, "float64"); });
  Case("MultiTensor/float16", [&] { TestMultiTensor<float16>(rng, "float16"); });
  Case("MultiTensor/bfloat16", [&] { TestMultiTensor<bfloat16>(rng, "bfloat16"); });
  return testing::Finish();
}
