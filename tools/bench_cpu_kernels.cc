// TensorFlow-free benchmark of the CPU loops against the machine's copy bandwidth, measured in the
// same process with the same threads. Use it to profile the kernels without TensorFlow's
// overheads:
//   bazel run -c opt //tools:bench_cpu_kernels -- [threads]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "tools/started_threads.h"

namespace {

using Clock = std::chrono::steady_clock;
using tf_ftrl::RowGroups;
namespace cpu = tf_ftrl::cpu;
using tf_ftrl::Adagrad;
using tf_ftrl::Ftrl;
using tf_ftrl::RowwiseAdagrad;
using tf_ftrl::RowwiseFtrl;
using tf_ftrl::StateArrays;

int g_threads = 2;

void ThreadedParallelFor(int64_t total, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
  tf_ftrl_tools::RunOnStartedThreads(g_threads, total, fn);
}

// Median seconds of `repeats` calls of fn after one warm-up call.
template <typename Fn>
double MedianSeconds(int repeats, Fn&& fn) {
  fn();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// TensorFlow allocates tensors on 64-byte (cache-line) boundaries, and so does this benchmark: a
// plain std::vector this large starts 16 bytes past a page boundary, so each 256-byte row of the
// sparse table would straddle five cache lines instead of four (measured: ~1.5x slower).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};
using Buffer = std::vector<float, CacheLineAllocator<float>>;

// Median seconds of each of `cases` over `rounds` rounds, each round calling every case once
// (after one warm-up round), in a new order every round (a seeded shuffle). Not one fixed order:
// a case then always follows the same one and pays for what that one leaves behind. In a fixed
// order, the first bfloat16 Adagrad case (whichever rounding it had) took ~0.2 ms longer than
// the second, on the Zen 5 VM: it followed row-wise Adagrad (docs/benchmarks.md, "Row-wise
// state").
std::vector<double> InterleavedMedianSeconds(int rounds,
                                             const std::vector<std::function<void()>>& cases) {
  for (const auto& c : cases) c();
  std::vector<std::vector<double>> times(cases.size());
  std::vector<size_t> order(cases.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 shuffler(0);
  for (int r = 0; r < rounds; ++r) {
    std::shuffle(order.begin(), order.end(), shuffler);
    for (const size_t i : order) {
      const auto start = Clock::now();
      cases[i]();
      times[i].push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
  std::vector<double> medians;
  for (auto& t : times) {
    std::sort(t.begin(), t.end());
    medians.push_back(t[t.size() / 2]);
  }
  return medians;
}

Buffer Filled(int64_t n, float value) { return Buffer(n, value); }

void Report(const char* what, double seconds, double bytes, double copy_gbps) {
  const double gbps = bytes / seconds / 1e9;
  std::printf("%-44s %9.3f ms %7.1f GB/s %5.0f%% of copy\n", what, seconds * 1e3, gbps,
              100 * gbps / copy_gbps);
}

// The no-math loops below run through the kernels' own vector copies (cpu::internal::RunIn, in
// the copy the kernels run), so that their limits compare like with like; the sparse one
// (TrafficRows) runs through the kernels' own shard loop.

// Elements [lo, hi) with dense FTRL's traffic (read 4 arrays, write 3) and no math.
struct DenseTrafficNoMath {
  int64_t lo, hi;
  const float* g;
  float *v, *a, *l;
  TF_FTRL_INLINE void operator()() const { Body(lo, hi, g, v, a, l); }
  TF_FTRL_INLINE static void Body(int64_t lo, int64_t hi, const float* __restrict g,
                                  float* __restrict v, float* __restrict a, float* __restrict l) {
    for (int64_t i = lo; i < hi; ++i) {
      v[i] += g[i];
      a[i] += g[i];
      l[i] += g[i];
    }
  }
};

// Rows with a sparse update's traffic and no math: the grad row read, kRowTables table rows (var
// and element-wise slots) read and written whole, and with kPerRow one value of a per-row table
// (a row-wise accumulator); the kernels' rows (StepRows, RowwiseRows) with their update
// replaced, and the same prefetches. Run through the kernels' own shard loop (the same
// prefetching, row sizes compiled in, vector copy and duplicate handling), they give each sparse
// update's limit on this machine.
template <int kRowTables, bool kPerRow>
struct TrafficRows {
  float* tables[kRowTables];
  float* per_row;
  TF_FTRL_INLINE void Prefetch(int64_t row, int64_t row_size,
                               cpu::internal::RowPrefetch into) const {
    for (float* table : tables) {
      cpu::internal::PrefetchRow(table + row * row_size, row_size, into);
    }
    if constexpr (kPerRow) {
      cpu::internal::PrefetchLine(reinterpret_cast<const char*>(per_row + row), into);
    }
  }
  template <typename G>
  TF_FTRL_INLINE void Update(int64_t row, const G* __restrict g, int64_t row_size) const {
    static_assert(kRowTables >= 1 && kRowTables <= 3);
    // Named restrict pointers (GCC ignores restrict on an array's elements): one loop that
    // vectorizes as the kernels' loops do.
    float* __restrict a = tables[0] + row * row_size;
    float* __restrict b = tables[kRowTables > 1 ? 1 : 0] + row * row_size;
    float* __restrict c = tables[kRowTables > 2 ? 2 : 0] + row * row_size;
    for (int64_t j = 0; j < row_size; ++j) {
      a[j] += g[j];
      if constexpr (kRowTables > 1) b[j] += g[j];
      if constexpr (kRowTables > 2) c[j] += g[j];
    }
    if constexpr (kPerRow) per_row[row] += g[0];
  }
};

// The kernels' sparse loop (cpu::SparseApply's schedule and shards) over `rows`, with the row
// loops compiled for row size `compiled` (0: the loops for any size).
template <typename Rows>
void SparseLoop(const RowGroups& groups, const float* grad, int64_t dim, int64_t compiled,
                const cpu::ParallelFor& parallel_for, const Rows& rows) {
  cpu::internal::ScheduleUniqueRows(
      groups, grad, dim, 1, parallel_for,
      [&](int64_t begin, int64_t end, const cpu::internal::SplitSums<float>& split) {
        cpu::internal::UpdateUniqueRows(cpu::internal::BestVectorCopy(), groups, grad, dim,
                                        compiled, rows, split, begin, end);
      });
}

}  // namespace

// Ids in click logs follow a Zipf law: the row of popularity rank k comes with probability
// proportional to k^-exponent, the ranks scattered over the table once.
class ZipfIds {
 public:
  ZipfIds(std::mt19937_64& rng, int64_t rows, double exponent)
      : cumulative_(rows), rows_by_rank_(rows) {
    double sum = 0;
    for (int64_t k = 0; k < rows; ++k) cumulative_[k] = sum += std::pow(k + 1.0, -exponent);
    for (double& c : cumulative_) c /= sum;
    std::iota(rows_by_rank_.begin(), rows_by_rank_.end(), 0);
    std::shuffle(rows_by_rank_.begin(), rows_by_rank_.end(), rng);
  }
  int64_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    const int64_t rank = std::upper_bound(cumulative_.begin(), cumulative_.end(), u) -
                         cumulative_.begin();
    return rows_by_rank_[std::min<int64_t>(rank, rows_by_rank_.size() - 1)];
  }

 private:
  std::vector<double> cumulative_;
  std::vector<int64_t> rows_by_rank_;
};

// How evenly the sparse FTRL update's work is cut for the pool, with Zipf 1.1 ids (the hottest
// ~2,000 times in 16,384): the unique rows in equal numbers, in pieces of
// equal work (WeightedPieces) with each row's duplicates summed by the thread that updates it, or
// as the library does it for K threads (the hottest rows' later chunks summed first by the pool
// where they would hold up the update, SumLaterChunks). Each call of the pool is cut into K parts,
// run part after part on one thread and every part timed: on K cores a call lasts as long as its
// slowest part, so the sum of the slowest parts over the mean part (the total / K) is how much
// longer than an even cut the update takes (1.00: even). A part of some 10-50 us is often slowed by
// tens of us by the VM (an interrupt, a stolen slice), which alone made the slowest of 32 parts
// ~1.6x the mean: so each cut is run kRepeats times, the caches flushed before each (a 64 MB
// write), and each part's fastest time counts.
void ZipfBalance(float* var, float* accum, float* linear, int64_t rows, int64_t dim, int64_t ids,
                 const tf_ftrl::FtrlHyperparams<float>& ftrl) {
  std::mt19937_64 rng(2);
  const ZipfIds zipf(rng, rows, 1.1);
  constexpr int kIdSets = 8;
  constexpr int kRepeats = 5;
  std::vector<RowGroups> groups(kIdSets);
  std::vector<Buffer> grads;
  tf_ftrl::IndexError error;
  for (int k = 0; k < kIdSets; ++k) {
    std::vector<int64_t> indices(ids);
    for (auto& i : indices) i = zipf(rng);
    groups[k].Build(indices.data(), ids, rows, &error);
    grads.push_back(Filled(ids * dim, 0.01f));
  }
  Buffer flush = Filled(int64_t{16} << 20, 0.0f);
  const tf_ftrl::FtrlStep<true, false, float> ftrl_step{ftrl};
  using FtrlRows =
      cpu::internal::StepRows<tf_ftrl::FtrlStep<true, false, float>, StateArrays<float, 3>>;
  const FtrlRows ftrl_rows{ftrl_step, {var, {accum, linear}}};
  std::printf("Zipf 1.1 ids (~%lld unique of 16,384): slowest part / mean part of the update\n",
              static_cast<long long>(groups[0].num_unique()));
  for (int64_t parts : {2, 8, 32, 64, 128}) {
    // Cuts what it is given into `parts` equal ranges, as the pool would, and times each.
    double total_seconds = 0, slowest_seconds = 0;
    const cpu::ParallelFor timed_parts(
        [&](int64_t total, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
          std::vector<double> fastest(parts, 1e30);
          for (int r = 0; r < kRepeats; ++r) {
            std::memset(flush.data(), r, flush.size() * sizeof(float));
            for (int64_t p = 0; p < parts; ++p) {
              const auto start = Clock::now();
              fn(total * p / parts, total * (p + 1) / parts);
              fastest[p] = std::min(
                  fastest[p], std::chrono::duration<double>(Clock::now() - start).count());
            }
          }
          total_seconds += std::accumulate(fastest.begin(), fastest.end(), 0.0);
          slowest_seconds += *std::max_element(fastest.begin(), fastest.end());
        },
        parts);
    constexpr int kVariants = 3;
    std::vector<double> ratio[kVariants];
    for (int k = 0; k < kIdSets; ++k) {
      const auto* grad = static_cast<const float*>(grads[k].data());
      const auto copy = cpu::internal::BestVectorCopy();
      for (int variant = 0; variant < kVariants; ++variant) {
        total_seconds = slowest_seconds = 0;
        const cpu::internal::SplitSums<float> none;
        auto shard = [&](int64_t begin, int64_t end) {
          cpu::internal::UpdateUniqueRows(copy, groups[k], grad, dim, dim, ftrl_rows, none, begin,
                                          end);
        };
        if (variant == 0) {
          timed_parts(groups[k].num_unique(), 1, shard);
        } else if (variant == 1) {
          const int64_t pieces =
              std::min(groups[k].num_unique(), cpu::internal::kMaxWeightedPieces);
          const std::vector<int64_t> bounds = cpu::internal::WeightedPieces(groups[k], pieces);
          timed_parts(pieces, 1, [&](int64_t first, int64_t last) {
            if (bounds[first] < bounds[last]) shard(bounds[first], bounds[last]);
          });
        } else {
          SparseLoop(groups[k], grad, dim, dim, timed_parts, ftrl_rows);
        }
        ratio[variant].push_back(slowest_seconds / (total_seconds / parts));
      }
    }
    for (auto& r : ratio) std::sort(r.begin(), r.end());
    std::printf("  %3lld parts: rows in equal numbers %5.2f, equal work %5.2f, "
                "and hot rows' chunks first %5.2f\n",
                static_cast<long long>(parts), ratio[0][ratio[0].size() / 2],
                ratio[1][ratio[1].size() / 2], ratio[2][ratio[2].size() / 2]);
  }
}

int main(int argc, char** argv) {
  if (argc > 1) g_threads = std::max(1, std::atoi(argv[1]));
  std::printf("threads: %d\n", g_threads);

  const int64_t n = 30'000'000;
  // Copy: read n floats and write n floats, sharded like the kernels.
  auto src = Filled(n, 1.0f), dst = Filled(n, 0.0f);
  const double copy_s = MedianSeconds(10, [&] {
    ThreadedParallelFor(g_threads, 0, [&](int64_t b, int64_t e) {
      const int64_t lo = n * b / g_threads, hi = n * e / g_threads;
      std::memcpy(dst.data() + lo, src.data() + lo, (hi - lo) * sizeof(float));
    });
  });
  const double copy_gbps = 2.0 * n * sizeof(float) / copy_s / 1e9;
  std::printf("%-44s %9.3f ms %7.1f GB/s (read + write)\n", "memcpy 3e7 float32", copy_s * 1e3,
              copy_gbps);

  auto var = Filled(n, 0.5f), accum = Filled(n, 0.3f), linear = Filled(n, 0.1f),
       grad = Filled(n, 0.01f);
  // The memory traffic of dense FTRL (read 4 arrays, write 3) with no math: the practical limit
  // for the update on this machine (glibc's memcpy of large buffers is not, see
  // docs/benchmarks.md).
  Report("same traffic as FTRL, no math (limit)", MedianSeconds(10, [&] {
           ThreadedParallelFor(g_threads, 0, [&](int64_t b, int64_t e) {
             cpu::internal::RunIn(cpu::internal::BestVectorCopy(),
                                  DenseTrafficNoMath{n * b / g_threads, n * e / g_threads,
                                                     grad.data(), var.data(), accum.data(),
                                                     linear.data()});
           });
         }),
         28.0 * n, copy_gbps);
  const tf_ftrl::FtrlHyperparams<float> ftrl{0.01f, 0.001f, 0.001f, 0.0f, -0.5f};
  const tf_ftrl::AdagradHyperparams<float> adagrad{0.01f, 1e-7f};
  Report("dense FTRL 3e7 float32",
         MedianSeconds(10,
                       [&] {
                         cpu::Apply<Ftrl>(ftrl, false, {var.data(), {accum.data(), linear.data()}},
                                          grad.data(), n, ThreadedParallelFor);
                       }),
         28.0 * n, copy_gbps);
  Report("dense Adagrad 3e7 float32",
         MedianSeconds(10,
                       [&] {
                         cpu::Apply<Adagrad>(adagrad, true, {var.data(), {accum.data()}},
                                             grad.data(), n, ThreadedParallelFor);
                       }),
         20.0 * n, copy_gbps);

  const int64_t rows = 2'000'000, dim = 64, ids = 16'384;
  auto table = Filled(rows * dim, 0.5f), table_accum = Filled(rows * dim, 0.3f),
       table_linear = Filled(rows * dim, 0.1f);
  // A new set of random ids for every call, as in training: the rows come from DRAM, not from a
  // cache warmed by the previous call.
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  constexpr int kIdSets = 32;
  std::vector<RowGroups> groups(kIdSets);
  std::vector<std::vector<int64_t>> index_sets(kIdSets, std::vector<int64_t>(ids));
  tf_ftrl::IndexError error;
  for (int k = 0; k < kIdSets; ++k) {
    for (auto& i : index_sets[k]) i = pick(rng);
    groups[k].Build(index_sets[k].data(), ids, rows, &error);
  }
  // A gradient per id set too: in training each step's gradient is new, read from DRAM.
  std::vector<Buffer> grads;
  for (int k = 0; k < kIdSets; ++k) grads.push_back(Filled(ids * dim, 0.01f * (k + 1)));
  // Zipf 1.1 ids, as in click logs (the hottest ~2,000 times in 16,384).
  std::vector<RowGroups> zipf_groups(kIdSets);
  {
    const ZipfIds zipf(rng, rows, 1.1);
    std::vector<int64_t> zipf_ids(ids);
    for (int k = 0; k < kIdSets; ++k) {
      for (auto& i : zipf_ids) i = zipf(rng);
      zipf_groups[k].Build(zipf_ids.data(), ids, rows, &error);
    }
  }
  int next = 0;
  RowGroups scratch;  // reused across calls, as the op does
  const double group_s = MedianSeconds(kIdSets - 1, [&] {
    scratch.Build(index_sets[next++ % kIdSets].data(), ids, rows, &error);
  });
  std::printf("%-44s %9.3f ms (%lld unique rows)\n", "group 16,384 ids", group_s * 1e3,
              static_cast<long long>(groups[0].num_unique()));
  // As in an op: its buffers cold, after an update has streamed the rows through the caches (a
  // pass writing 32 MiB here, not timed).
  {
    auto stream = Filled(int64_t{8} << 20, 0.0f);
    std::vector<double> cold;
    for (int r = 0; r < 4 * kIdSets; ++r) {
      for (size_t i = 0; i < stream.size(); i += 16) stream[i] += 1.0f;
      const auto start = Clock::now();
      scratch.Build(index_sets[next++ % kIdSets].data(), ids, rows, &error);
      cold.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    std::sort(cold.begin(), cold.end());
    std::printf("%-44s %9.3f ms\n", "group 16,384 ids, after a pass over 32 MiB",
                cold[cold.size() / 2] * 1e3);
  }
  const double sparse_bytes_ftrl = 28.0 * ids * dim, sparse_bytes_adagrad = 20.0 * ids * dim;
  // This machine's bandwidth drifts within seconds, so the sparse cases are timed in turn within
  // each round (each on the next id set) and compared by their medians.
  std::vector<std::function<void()>> sparse_cases = {
      [&] {
        const int k = next++ % kIdSets;
        cpu::SparseApply<Ftrl>(ftrl, false,
                               {table.data(), {table_accum.data(), table_linear.data()}},
                               grads[k].data(), dim, groups[k], ThreadedParallelFor);
      },
      [&] {
        const int k = next++ % kIdSets;
        cpu::SparseApply<Adagrad>(adagrad, true, {table.data(), {table_accum.data()}},
                                  grads[k].data(), dim, groups[k], ThreadedParallelFor);
      },
      // The sparse counterpart of the no-math limit: the same rows with FTRL's traffic.
      [&] {
        const int k = next++ % kIdSets;
        const TrafficRows<3, false> rows{{table.data(), table_accum.data(), table_linear.data()},
                                         nullptr};
        SparseLoop(groups[k], grads[k].data(), dim, dim, ThreadedParallelFor, rows);
      },
      // The same updates through the loops for any row size (64 is one of the sizes the loops
      // are compiled for, cpu::internal::DispatchRowSize).
      [&] {
        const int k = next++ % kIdSets;
        const tf_ftrl::FtrlStep<true, false, float> step{ftrl};
        const cpu::internal::StepRows<decltype(step), StateArrays<float, 3>> rows{
            step, {table.data(), {table_accum.data(), table_linear.data()}}};
        SparseLoop(groups[k], grads[k].data(), dim, 0, ThreadedParallelFor, rows);
      },
      [&] {
        const int k = next++ % kIdSets;
        const tf_ftrl::AdagradStep<true, float> step{adagrad};
        const cpu::internal::StepRows<decltype(step), StateArrays<float, 2>> rows{
            step, {table.data(), {table_accum.data()}}};
        SparseLoop(groups[k], grads[k].data(), dim, 0, ThreadedParallelFor, rows);
      },
      [&] {
        const int k = next++ % kIdSets;
        cpu::SparseApply<Ftrl>(
            ftrl, false, {table.data(), {table_accum.data(), table_linear.data()}}, grads[k].data(),
            dim, zipf_groups[k], cpu::ParallelFor(ThreadedParallelFor, g_threads));
      },
  };
  // Row-wise state (rowwise_math.h): one accumulator value per row.
  auto row_accum = Filled(rows, 0.3f);
  sparse_cases.push_back([&] {
    const int k = next++ % kIdSets;
    cpu::SparseApply<RowwiseFtrl>(ftrl, false,
                                  {table.data(), {row_accum.data(), table_linear.data()}},
                                  grads[k].data(), dim, groups[k], ThreadedParallelFor);
  });
  sparse_cases.push_back([&] {
    const int k = next++ % kIdSets;
    cpu::SparseApply<RowwiseAdagrad>(adagrad, true, {table.data(), {row_accum.data()}},
                                     grads[k].data(), dim, groups[k], ThreadedParallelFor);
  });
  // bfloat16 state (a float32 table's accumulator in 16 bits), rounded to nearest and
  // stochastically (the optimizers' default).
  std::vector<tf_ftrl::bfloat16, CacheLineAllocator<tf_ftrl::bfloat16>> table_accum16(
      rows * dim, tf_ftrl::Store<tf_ftrl::bfloat16>(0.3f));
  for (const bool stochastic : {false, true}) {
    sparse_cases.push_back([&, stochastic] {
      const int k = next++ % kIdSets;
      StateArrays<float, 2, tf_ftrl::bfloat16> state{table.data(), {table_accum16.data()}};
      state.rounding = {stochastic, tf_ftrl::RoundingKey(1, next)};
      cpu::SparseApply<Adagrad>(adagrad, true, state, grads[k].data(), dim, groups[k],
                                ThreadedParallelFor);
    });
  }
  // The no-math limits of the other three sparse updates (cases 10-12): what their traffic costs
  // through the same loop, so that each update and the row-wise speed-ups compare with theirs.
  const auto push_no_math = [&](const auto& traffic) {
    sparse_cases.push_back([&, traffic] {
      const int k = next++ % kIdSets;
      SparseLoop(groups[k], grads[k].data(), dim, dim, ThreadedParallelFor, traffic);
    });
  };
  push_no_math(TrafficRows<2, false>{{table.data(), table_accum.data()}, nullptr});
  push_no_math(TrafficRows<2, true>{{table.data(), table_linear.data()}, row_accum.data()});
  push_no_math(TrafficRows<1, true>{{table.data()}, row_accum.data()});
  // The first four updates again with the rows prefetched into the other cache than this CPU's
  // default (cpu::internal::DefaultRowPrefetch).
  using cpu::internal::RowPrefetch;
  const RowPrefetch chosen = cpu::internal::g_row_prefetch.load();
  const RowPrefetch other_target =
      chosen == RowPrefetch::kIntoL2 ? RowPrefetch::kIntoL1 : RowPrefetch::kIntoL2;
  constexpr int kComparedCases[] = {0, 1, 6, 7};
  for (const int c : kComparedCases) {
    sparse_cases.push_back([&, c] {
      cpu::internal::g_row_prefetch.store(other_target);
      sparse_cases[c]();
      cpu::internal::g_row_prefetch.store(chosen);
    });
  }
  // Case 17: the var row alone (SGD's traffic), so that the row-wise Adagrad no-math loop, which
  // adds one scattered line per row (its accumulator value), shows what that access costs.
  push_no_math(TrafficRows<1, false>{{table.data()}, nullptr});
  const std::vector<double> sparse_s = InterleavedMedianSeconds(3 * kIdSets, sparse_cases);
  Report("sparse FTRL 2M x 64, 16,384 ids (update)", sparse_s[0], sparse_bytes_ftrl, copy_gbps);
  Report("sparse Adagrad 2M x 64, 16,384 ids (update)", sparse_s[1], sparse_bytes_adagrad,
         copy_gbps);
  Report("same rows and traffic as sparse FTRL, no math", sparse_s[2], sparse_bytes_ftrl,
         copy_gbps);
  Report("sparse FTRL, loops for any row size", sparse_s[3], sparse_bytes_ftrl, copy_gbps);
  Report("sparse Adagrad, loops for any row size", sparse_s[4], sparse_bytes_adagrad, copy_gbps);
  std::printf("%-44s %9.3f ms (%lld unique rows)\n", "sparse FTRL, 16,384 Zipf 1.1 ids (update)",
              sparse_s[5] * 1e3, static_cast<long long>(zipf_groups[0].num_unique()));
  // Bytes per touched element: grad, and var and linear read and written (FTRL) or var (Adagrad);
  // the per-row accumulator adds 8 bytes per row.
  Report("sparse row-wise FTRL (update)", sparse_s[6], (20.0 * dim + 8) * ids, copy_gbps);
  Report("sparse row-wise Adagrad (update)", sparse_s[7], (12.0 * dim + 8) * ids, copy_gbps);
  std::printf("%-44s %9.2fx FTRL, %.2fx Adagrad\n", "row-wise speed-up", sparse_s[0] / sparse_s[6],
              sparse_s[1] / sparse_s[7]);
  // Bytes per touched element: grad, var read and written, the accumulator's 2 read and written.
  Report("sparse Adagrad, bfloat16 state, to nearest", sparse_s[8], 16.0 * ids * dim, copy_gbps);
  Report("sparse Adagrad, bfloat16 state, stochastic", sparse_s[9], 16.0 * ids * dim, copy_gbps);
  Report("same rows and traffic as sparse Adagrad, no math", sparse_s[10], sparse_bytes_adagrad,
         copy_gbps);
  Report("same as row-wise FTRL, no math", sparse_s[11], (20.0 * dim + 8) * ids, copy_gbps);
  Report("same as row-wise Adagrad, no math", sparse_s[12], (12.0 * dim + 8) * ids, copy_gbps);
  std::printf("%-44s %9.0f%% FTRL, %.0f%% Adagrad, %.0f%% row-wise FTRL, %.0f%% row-wise "
              "Adagrad\n", "each update's no-math time, % of its time", 100 * sparse_s[2] /
              sparse_s[0], 100 * sparse_s[10] / sparse_s[1], 100 * sparse_s[11] / sparse_s[6],
              100 * sparse_s[12] / sparse_s[7]);
  std::printf("%-44s %9.2fx FTRL, %.2fx Adagrad\n", "row-wise speed-up of the no-math loops",
              sparse_s[2] / sparse_s[11], sparse_s[10] / sparse_s[12]);
  Report("the var row alone (SGD's traffic), no math", sparse_s[17], 12.0 * dim * ids, copy_gbps);
  std::printf("%-44s %9.3f ms per update (row-wise Adagrad's no-math loop less the var row "
              "alone)\n", "the accumulator value's scattered line",
              (sparse_s[12] - sparse_s[17]) * 1e3);
  const auto target_name = [](RowPrefetch into) {
    return into == RowPrefetch::kIntoL2 ? "L2 (PREFETCHT1)" : "L1 (PREFETCHT0)";
  };
  std::printf("rows prefetched into %s (this CPU's default) against into %s:\n",
              target_name(chosen), target_name(other_target));
  const char* const prefetched[] = {"sparse FTRL", "sparse Adagrad", "sparse row-wise FTRL",
                                    "sparse row-wise Adagrad"};
  for (int k = 0; k < 4; ++k) {
    std::printf("    %-24s %7.3f ms against %7.3f ms: %.2fx\n", prefetched[k],
                sparse_s[kComparedCases[k]] * 1e3, sparse_s[13 + k] * 1e3,
                sparse_s[13 + k] / sparse_s[kComparedCases[k]]);
  }

  // The same update in the conditions of a training step or of a benchmark that alternates
  // implementations, timed in turn within each round: after the CPUs idled 20 us or 10 ms, and
  // after one thread updated the same number of random rows of three other tables (what
  // TensorFlow's single-threaded sparse kernels do). On this project's VMs each takes about twice
  // the back-to-back time above, and so does an update two calls after such a pause: the caches
  // (page-table entries above all, with 4 KiB pages) left cold by the other work or by idling
  // (the hypervisor may run something else, or move the virtual CPU) take several updates to warm
  // up again. None of it is in the kernel, and more prefetching does not recover it (12 to 48
  // rows ahead, or touching each row's page 32-64 rows ahead, all measured alike).
  auto other = Filled(rows * dim, 0.5f), other_accum = Filled(rows * dim, 0.3f),
       other_linear = Filled(rows * dim, 0.1f);
  const auto update_other_tables = [&] {
    const std::vector<int64_t>& other_ids = index_sets[(next + kIdSets / 2) % kIdSets];
    for (const int64_t row : other_ids) {
      float* __restrict v = other.data() + row * dim;
      float* __restrict a = other_accum.data() + row * dim;
      float* __restrict l = other_linear.data() + row * dim;
      for (int64_t j = 0; j < dim; ++j) {
        v[j] += 0.01f;
        a[j] += 0.01f;
        l[j] += 0.01f;
      }
    }
  };
  const auto sparse_ftrl = [&] {
    const int k = next++ % kIdSets;
    cpu::SparseApply<Ftrl>(ftrl, false, {table.data(), {table_accum.data(), table_linear.data()}},
                           grads[k].data(), dim, groups[k], ThreadedParallelFor);
  };
  struct Condition {
    const char* label;
    std::function<void()> before;
    std::vector<double> seconds;
  };
  std::vector<Condition> conditions = {
      {"sparse FTRL after 20 us idle",
       [] { std::this_thread::sleep_for(std::chrono::microseconds(20)); }, {}},
      {"sparse FTRL after 10 ms idle",
       [] { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }, {}},
      {"sparse FTRL after other tables' update", update_other_tables, {}},
  };
  for (int r = 0; r < 2 * kIdSets; ++r) {
    for (Condition& c : conditions) {
      c.before();
      const auto start = Clock::now();
      sparse_ftrl();
      c.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
  for (Condition& c : conditions) {
    std::sort(c.seconds.begin(), c.seconds.end());
    Report(c.label, c.seconds[c.seconds.size() / 2], sparse_bytes_ftrl, copy_gbps);
  }
  ZipfBalance(table.data(), table_accum.data(), table_linear.data(), rows, dim, ids, ftrl);
  return 0;
}
