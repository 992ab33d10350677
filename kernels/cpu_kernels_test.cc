// Tests of the TensorFlow-free CPU loops (cpu_loops.h) against an independent float64
// reference, with a multi-threaded ParallelFor. Built and run by Bazel without TensorFlow:
//   bazel test //kernels:cpu_kernels_test
#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/sorted_runs.h"
#include "kernels/test_support.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tf_ftrl {
namespace {

using testing::Check;
using testing::FromDouble;
using testing::Random;
using testing::SummedRows;
using testing::ThreadedParallelFor;
using testing::ToDouble;

template <typename T>
double Tolerance();
template <>
double Tolerance<double>() { return 1e-12; }
template <>
double Tolerance<float>() { return 1e-5; }
template <>
double Tolerance<float16>() { return 1e-2; }
template <>
double Tolerance<bfloat16>() { return 6e-2; }

// Independent float64 statement of the FTRL step (not ftrl_math.h).
void ReferenceFtrl(double lr, double l1, double l2, double shrinkage, double power, double g,
                   double& w, double& n, double& z) {
  const double new_n = n + g * g;
  const double sigma = (std::pow(new_n, -power) - std::pow(n, -power)) / lr;
  z += g + 2 * shrinkage * w - sigma * w;
  n = new_n;
  w = std::fabs(z) > l1 ? -(z - (z > 0 ? l1 : -l1)) / (std::pow(n, -power) / lr + 2 * l2) : 0.0;
}

bool Close(double actual, double expected, double tol) {
  return std::fabs(actual - expected) <= tol * (1 + std::fabs(expected));
}

template <typename T>
void TestDenseFtrl(std::mt19937_64& rng, int64_t size, double power, const char* name) {
  auto var = Random<T>(rng, size, -1, 1);
  auto accum = Random<T>(rng, size, 0.1, 2);
  auto linear = Random<T>(rng, size, -1, 1);
  auto grad = Random<T>(rng, size, -1, 1);
  const auto var0 = var, accum0 = accum, linear0 = linear;
  using A = AccumulateType<T>;
  FtrlHyperparams<A> h{A(0.05), A(0.01), A(0.02), A(0.03), A(power)};
  cpu::Apply<Ftrl>(h, false, {var.data(), {accum.data(), linear.data()}}, grad.data(), size,
                   ThreadedParallelFor);
  bool ok = true;
  for (int64_t i = 0; i < size; ++i) {
    double w = ToDouble(var0[i]), n = ToDouble(accum0[i]), z = ToDouble(linear0[i]);
    ReferenceFtrl(0.05, double(A(0.01)), double(A(0.02)), double(A(0.03)), double(A(power)),
                  ToDouble(grad[i]), w, n, z);
    const double tol = Tolerance<T>();
    const bool near_clip = std::fabs(std::fabs(z) - double(A(0.01))) < 1e-3;
    ok = ok && Close(ToDouble(accum[i]), n, tol) && Close(ToDouble(linear[i]), z, 4 * tol) &&
         (near_clip || Close(ToDouble(var[i]), w, 4 * tol));
  }
  Check(ok, std::string("dense FTRL ") + name + " size " + std::to_string(size));
}

template <typename T>
void TestSparseAdagradWithDuplicates(std::mt19937_64& rng, const char* name) {
  const int64_t rows = 50, row_size = 7, n = 120;
  auto var = Random<T>(rng, rows * row_size, -1, 1);
  auto accum = Random<T>(rng, rows * row_size, 0.1, 2);
  auto grad = Random<T>(rng, n * row_size, -1, 1);
  std::vector<int64_t> indices(n);
  std::uniform_int_distribution<int64_t> pick(0, rows / 2);  // only half the rows: duplicates
  for (auto& i : indices) i = pick(rng);
  const auto var0 = var, accum0 = accum;

  RowGroups groups;
  IndexError error;
  Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
  using A = AccumulateType<T>;
  AdagradHyperparams<A> h{A(0.1), A(1e-3)};
  cpu::SparseApply<Adagrad>(h, true, {var.data(), {accum.data()}}, grad.data(), row_size, groups,
                            ThreadedParallelFor);

  std::vector<double> dense(rows * row_size, 0.0);
  std::vector<bool> touched(rows, false);
  for (int64_t p = 0; p < n; ++p) {
    touched[indices[p]] = true;
    for (int64_t j = 0; j < row_size; ++j) {
      dense[indices[p] * row_size + j] += ToDouble(grad[p * row_size + j]);
    }
  }
  bool ok = true;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < row_size; ++j) {
      const int64_t k = r * row_size + j;
      if (!touched[r]) {
        ok = ok && std::memcmp(&var[k], &var0[k], sizeof(T)) == 0 &&
             std::memcmp(&accum[k], &accum0[k], sizeof(T)) == 0;
        continue;
      }
      const double g = dense[k];
      const double a = ToDouble(accum0[k]) + g * g;
      const double w = ToDouble(var0[k]) - 0.1 * g / (std::sqrt(a) + double(A(1e-3)));
      ok = ok && Close(ToDouble(accum[k]), a, 2 * Tolerance<T>()) &&
           Close(ToDouble(var[k]), w, 2 * Tolerance<T>());
    }
  }
  Check(ok, std::string("sparse Adagrad with duplicates ") + name);
}

void TestIndexValidation() {
  RowGroups groups;
  IndexError error;
  const int32_t bad[] = {0, 3, 10, 2};
  Check(!groups.Build(bad, 4, 10, &error) && error.position == 2 && error.value == 10,
        "out-of-range index reported with its position and value");
  const int64_t negative[] = {-5};
  Check(!groups.Build(negative, 1, 10, &error) && error.position == 0 && error.value == -5,
        "negative index reported");
  // Found while grouping: the first bad position is reported, after duplicates, at the end, and
  // past the int32 range, whatever the grouping had done before it.
  const int64_t late[] = {7, 1, 7, 9, 1, 7, 12, -1};
  Check(!groups.Build(late, 8, 10, &error) && error.position == 6 && error.value == 12 &&
            groups.num_unique() == 0 && groups.num_positions() == 0,
        "the first out-of-range index after duplicates reported, no groups left");
  Check(!groups.Build(late, 6, 7, &error) && error.position == 0 && error.value == 7,
        "an index equal to the row count reported");
  const int64_t huge[] = {3, int64_t{1} << 33};
  Check(!groups.Build(huge, 2, 10, &error) && error.position == 1 &&
            error.value == (int64_t{1} << 33),
        "an index past the int32 range reported");
  const int32_t negative32[] = {1, 2, 2, -2147483647 - 1};
  Check(!groups.Build(negative32, 4, 10, &error) && error.position == 3 &&
            error.value == -2147483647 - 1,
        "the lowest int32 index reported");
  const int64_t dup[] = {4, 1, 4, 4, 1};
  Check(groups.Build(dup, 5, 10, &error) && groups.num_unique() == 2, "two unique rows");
  bool ascending = true;
  for (int64_t u = 0; u < groups.num_unique(); ++u) {
    int64_t prev = -1;
    for (int64_t p = groups.first_position(u); p >= 0; p = groups.next_position(p)) {
      ascending = ascending && p > prev && dup[p] == groups.row(u);
      prev = p;
    }
  }
  Check(ascending, "positions of each row visited in ascending order");
}

// RowGroups' grouping checked against its definition, with the four- and the eight-byte hash
// slots (the second are taken from 2^32 - 1 indices on): every position in exactly one group,
// the group of its row; groups numbered in order of first appearance; each group's positions
// ascending, its count, and a later chunk start at each kDuplicateChunkRows-th of them. One
// RowGroups is reused across calls of different sizes, as the kernels reuse theirs.
void TestRowGroupsSlotWidths(std::mt19937_64& rng) {
  RowGroups narrow, wide;
  wide.set_wide_slots_from_for_testing(0);
  bool ok = true;
  for (const int64_t n : {1, 7, 100, 5000, 100000, 300}) {
    for (const int64_t num_rows : {int64_t{3}, int64_t{1000}, int64_t{1} << 40}) {
      std::vector<int64_t> indices(n);
      // Half the ids from a few hot rows (chunks beyond the first), half uniform.
      for (auto& x : indices) {
        x = rng() % 2 ? static_cast<int64_t>(rng() % std::min<int64_t>(num_rows, 5))
                      : static_cast<int64_t>(rng() % num_rows);
      }
      IndexError error;
      ok = ok && narrow.Build(indices.data(), n, num_rows, &error) &&
           wide.Build(indices.data(), n, num_rows, &error);
      for (const RowGroups* g : {&narrow, &wide}) {
        std::vector<int> seen(n, 0);
        std::vector<ChunkStart> expected_chunks;
        int64_t last_first = -1;
        for (int64_t u = 0; u < g->num_unique(); ++u) {
          ok = ok && g->first_position(u) > last_first;
          last_first = g->first_position(u);
          int64_t count = 0, previous = -1;
          for (int64_t p = g->first_position(u); p >= 0; p = g->next_position(p)) {
            ok = ok && p > previous && indices[p] == g->row(u);
            ++seen[p];
            if (count > 0 && count % kDuplicateChunkRows == 0) expected_chunks.push_back({u, p});
            previous = p;
            ++count;
          }
          ok = ok && count == g->count(u);
        }
        for (const int s : seen) ok = ok && s == 1;
        std::sort(expected_chunks.begin(), expected_chunks.end(),
                  [](const ChunkStart& a, const ChunkStart& b) { return a.position < b.position; });
        const auto& chunks = g->later_chunk_starts();
        ok = ok && chunks.size() == expected_chunks.size() && g->num_positions() == n;
        for (size_t k = 0; ok && k < chunks.size(); ++k) {
          ok = chunks[k].group == expected_chunks[k].group &&
               chunks[k].position == expected_chunks[k].position;
        }
      }
      ok = ok && narrow.num_unique() == wide.num_unique();
      for (int64_t u = 0; ok && u < narrow.num_unique(); ++u) {
        ok = narrow.row(u) == wide.row(u) && narrow.first_position(u) == wide.first_position(u);
      }
    }
  }
  Check(ok, "RowGroups with four- and eight-byte slots: the groups of their definition");
}

void TestHalfConversions() {
  bool round_trip = true;
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float f = HalfToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    round_trip = round_trip && FloatToHalf(f) == bits;
  }
  Check(round_trip, "every float16 survives float16 -> float -> float16");
#if defined(__FLT16_MAX__)
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any_bits;
  bool matches_compiler = true;
  for (int i = 0; i < 1000000; ++i) {
    const float f = BitsToFloat(any_bits(rng));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t expected;
    std::memcpy(&expected, &h, 2);
    matches_compiler = matches_compiler && FloatToHalf(f) == expected;
  }
  Check(matches_compiler, "float -> float16 rounds like the compiler's _Float16 (nearest even)");
#endif
  Check(FloatToBFloat16(1.0f + 1.0f / 256) == 0x3f80, "bfloat16 tie rounds to even (down)");
  Check(FloatToBFloat16(1.0f + 3.0f / 256) == 0x3f82, "bfloat16 tie rounds to even (up)");
  Check(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))), "bfloat16 keeps NaN");
  Check(std::isnan(HalfToFloat(FloatToHalf(NAN))), "float16 keeps NaN");
  Check(HalfToFloat(FloatToHalf(1e6f)) == INFINITY, "float16 overflows to inf");
}

// Bits equal, or both NaN (a NaN's payload may depend on which operand the compiler put first).
template <typename T>
bool SameBitsOrBothNan(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = std::isnan(ToDouble(a[i])) && std::isnan(ToDouble(b[i]));
    if (!both_nan && std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return false;
  }
  return true;
}

// Every vector copy of the loops this CPU runs (AVX2, AVX-512) gives the baseline copy's bits,
// for every flag combination, sizes around the vector widths, and infinite and NaN gradients.
template <typename T>
void TestVectorCopiesAgree(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  using cpu::internal::VectorCopy;
  const VectorCopy best = cpu::internal::BestVectorCopy();
  for (int64_t size : {1, 15, 17, 33, 1000, 4099}) {
    auto grad = Random<T>(rng, size, -1, 1);
    grad[size / 2] = FromDouble<T>(INFINITY);
    grad[size / 3] = FromDouble<T>(NAN);
    if (size > 3) grad[1] = FromDouble<T>(0.0);
    const auto var0 = Random<T>(rng, size, -1, 1), accum0 = Random<T>(rng, size, 0.0, 2);
    const auto linear0 = Random<T>(rng, size, -0.02, 0.02);  // around the l1 clip
    for (int c = static_cast<int>(VectorCopy::kAvx2); c <= static_cast<int>(best); ++c) {
      const VectorCopy copy = static_cast<VectorCopy>(c);
      const std::string what = std::string(name) + " copy " + std::to_string(c) + " size " +
                               std::to_string(size);
      for (double power : {-0.5, -0.3}) {
        FtrlHyperparams<A> h{A(0.05), A(0.01), A(0.02), A(0.03), A(power)};
        Ftrl::WithStep(h, power == -0.5, [&](const auto& step) {
          using Step = std::decay_t<decltype(step)>;
          auto v0 = var0, a0 = accum0, l0 = linear0, v1 = var0, a1 = accum0, l1 = linear0;
          const StateArrays<T, 3> baseline{v0.data(), {a0.data(), l0.data()}};
          const StateArrays<T, 3> copied{v1.data(), {a1.data(), l1.data()}};
          using Loop = cpu::internal::DenseLoop<Step, StateArrays<T, 3>>;
          cpu::internal::RunIn(VectorCopy::kBaseline, Loop{step, baseline, grad.data(), 0, size});
          cpu::internal::RunIn(copy, Loop{step, copied, grad.data(), 0, size});
          Check(SameBitsOrBothNan(v0, v1) && SameBitsOrBothNan(a0, a1) &&
                    SameBitsOrBothNan(l0, l1),
                "FTRL vector copy = baseline, " + what);
        });
      }
      for (bool update_slots : {true, false}) {
        AdagradHyperparams<A> h{A(0.05), A(1e-7)};
        Adagrad::WithStep(h, update_slots, [&](const auto& step) {
          using Step = std::decay_t<decltype(step)>;
          auto v0 = var0, a0 = accum0, v1 = var0, a1 = accum0;
          // The summed-duplicates path: a gradient in the accumulate type.
          std::vector<A> wide(size);
          for (int64_t i = 0; i < size; ++i) wide[i] = Load(grad[i]);
          const StateArrays<T, 2> baseline{v0.data(), {a0.data()}};
          const StateArrays<T, 2> copied{v1.data(), {a1.data()}};
          using Loop = cpu::internal::DenseLoop<Step, StateArrays<T, 2>, A>;
          cpu::internal::RunIn(VectorCopy::kBaseline, Loop{step, baseline, wide.data(), 0, size});
          cpu::internal::RunIn(copy, Loop{step, copied, wide.data(), 0, size});
          Check(SameBitsOrBothNan(v0, v1) && SameBitsOrBothNan(a0, a1),
                "Adagrad vector copy = baseline, " + what);
        });
      }
    }
  }
}

// The sparse loops in every vector copy this CPU runs (baseline included), at the row sizes
// compiled in (16, 32, 64) and the sizes around them, against the per-element formulas applied
// to each row's summed gradient, bit for bit: with duplicate ids, all flag combinations, enough
// rows to be sharded over threads and to cross several prefetch blocks, untouched rows left as
// they were.
// Each touched row's gradient, summed in the kernels' order in the accumulate type, as a dense
// [rows, row_size] array, and which rows were touched.
template <typename T>
std::pair<std::vector<AccumulateType<T>>, std::vector<bool>> SumIntoRows(
    const std::vector<int64_t>& indices, const std::vector<T>& grad, int64_t rows,
    int64_t row_size) {
  std::vector<AccumulateType<T>> summed(rows * row_size, AccumulateType<T>(0));
  std::vector<bool> touched(rows, false);
  for (const auto& [row, sum] : SummedRows(indices, grad, row_size)) {
    touched[row] = true;
    std::copy(sum.begin(), sum.end(), summed.begin() + row * row_size);
  }
  return {std::move(summed), std::move(touched)};
}

template <typename T>
void TestSparseRowSizesAndCopies(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  using cpu::internal::RowPrefetch;
  using cpu::internal::VectorCopy;
  const RowPrefetch default_prefetch = cpu::internal::g_row_prefetch.load();
  const VectorCopy best = cpu::internal::BestVectorCopy();
  for (int64_t row_size : {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100}) {
    const int64_t rows = 700, n = 900;
    std::vector<int64_t> indices(n);
    std::uniform_int_distribution<int64_t> pick(5, rows - 1);
    for (auto& i : indices) i = pick(rng);
    // Rows 0-4 are hot rows whose duplicates fill less than one chunk of the summing order,
    // exactly one, a chunk and one row, exactly two, and several chunks and part of one, their
    // positions spread over the list.
    const int64_t hot_counts[] = {20, kDuplicateChunkRows, kDuplicateChunkRows + 1,
                                  2 * kDuplicateChunkRows, 3 * kDuplicateChunkRows + 7};
    for (int64_t h = 0, p = 0; h < 5; ++h) {
      for (int64_t c = 0; c < hot_counts[h]; ++c, p += 3) indices[(p + h) % n] = h;
    }
    RowGroups groups;
    IndexError error;
    Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
    const auto grad = Random<T>(rng, n * row_size, -1, 1);
    const auto sums = SumIntoRows(indices, grad, rows, row_size);
    const auto& summed = sums.first;
    const auto& touched = sums.second;
    const auto var0 = Random<T>(rng, rows * row_size, -1, 1);
    const auto accum0 = Random<T>(rng, rows * row_size, 0.0, 2);
    const auto linear0 = Random<T>(rng, rows * row_size, -0.02, 0.02);
    // Each vector copy with the rows prefetched into L1 and into L2 (a hint: the same bits).
    for (int k = 0; k <= 2 * static_cast<int>(best) + 1; ++k) {
      const int c = k / 2;
      const VectorCopy copy = static_cast<VectorCopy>(c);
      const RowPrefetch into = k % 2 ? RowPrefetch::kIntoL2 : RowPrefetch::kIntoL1;
      cpu::internal::g_row_prefetch.store(into);
      const std::string what = std::string(name) + " copy " + std::to_string(c) +
                               " row size " + std::to_string(row_size) + " prefetch into L" +
                               std::to_string(k % 2 + 1);
      for (double power : {-0.5, -0.3}) {
        for (bool by_lr : {false, true}) {
          const FtrlHyperparams<A> h{A(0.05), A(0.01), A(0.02), A(0.03), A(power)};
          auto v = var0, a = accum0, l = linear0;
          cpu::SparseApplyWith<Ftrl>(copy, h, by_lr, {v.data(), {a.data(), l.data()}}, grad.data(),
                                     row_size, groups, ThreadedParallelFor);
          auto ev = var0, ea = accum0, el = linear0;
          for (int64_t k = 0; k < rows * row_size; ++k) {
            if (!touched[k / row_size]) continue;
            A state[3] = {Load(ev[k]), Load(ea[k]), Load(el[k])};
            Ftrl::WithStep(h, by_lr, [&](const auto& step) { step(summed[k], state); });
            ev[k] = Store<T>(state[0]);
            ea[k] = Store<T>(state[1]);
            el[k] = Store<T>(state[2]);
          }
          Check(SameBitsOrBothNan(v, ev) && SameBitsOrBothNan(a, ea) &&
                    SameBitsOrBothNan(l, el),
                "sparse FTRL = per-element formula, " + what + " power " +
                    std::to_string(power) + (by_lr ? " by lr" : ""));
        }
      }
      for (bool update_slots : {true, false}) {
        const AdagradHyperparams<A> h{A(0.05), A(1e-7)};
        auto v = var0, a = accum0;
        cpu::SparseApplyWith<Adagrad>(copy, h, update_slots, {v.data(), {a.data()}}, grad.data(),
                                      row_size, groups, ThreadedParallelFor);
        auto ev = var0, ea = accum0;
        for (int64_t k = 0; k < rows * row_size; ++k) {
          if (!touched[k / row_size]) continue;
          A state[2] = {Load(ev[k]), Load(ea[k])};
          Adagrad::WithStep(h, update_slots, [&](const auto& step) { step(summed[k], state); });
          ev[k] = Store<T>(state[0]);
          if (update_slots) ea[k] = Store<T>(state[1]);
        }
        Check(SameBitsOrBothNan(v, ev) && SameBitsOrBothNan(a, ea),
              "sparse Adagrad = per-element formula, " + what +
                  (update_slots ? "" : " (slots fixed)"));
      }
    }
  }
  cpu::internal::g_row_prefetch.store(default_prefetch);
}

// TF_FTRL_ROW_PREFETCH chooses where rows are prefetched ("l1", "l2"); without it, or with
// anything else, Intel CPUs prefetch into L2 and others into L1.
void TestRowPrefetchChoice() {
  using cpu::internal::DefaultRowPrefetch;
  using cpu::internal::RowPrefetch;
  const char* const saved = std::getenv("TF_FTRL_ROW_PREFETCH");
  const std::string kept = saved ? saved : "";
  unsetenv("TF_FTRL_ROW_PREFETCH");
  bool intel = false;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  intel = __builtin_cpu_is("intel");
#endif
  const RowPrefetch vendor = intel ? RowPrefetch::kIntoL2 : RowPrefetch::kIntoL1;
  Check(DefaultRowPrefetch() == vendor, "unset: the CPU vendor's default");
  setenv("TF_FTRL_ROW_PREFETCH", "l1", 1);
  Check(DefaultRowPrefetch() == RowPrefetch::kIntoL1, "l1: into L1");
  setenv("TF_FTRL_ROW_PREFETCH", "l2", 1);
  Check(DefaultRowPrefetch() == RowPrefetch::kIntoL2, "l2: into L2");
  setenv("TF_FTRL_ROW_PREFETCH", "L3", 1);
  Check(DefaultRowPrefetch() == vendor, "another value: the CPU vendor's default");
  if (saved) {
    setenv("TF_FTRL_ROW_PREFETCH", kept.c_str(), 1);
  } else {
    unsetenv("TF_FTRL_ROW_PREFETCH");
  }
}

// The hottest rows' later chunks summed ahead by the pool (PlanSplit, SumLaterChunks): with many
// threads PlanSplit picks exactly the rows with more than kSplitAboveDuplicates duplicates (one at
// the bound is not picked), with two threads none of these (each under half a thread's share),
// and its chunk starts are positions kDuplicateChunkRows, 2 kDuplicateChunkRows, ... of each
// picked row's list; the updates, split or not, equal the per-element formulas on the rows
// summed in the kernels' order, bit for bit, in every vector copy.
template <typename T>
void TestSplitHotRows(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  using cpu::internal::kSplitAboveDuplicates;
  using cpu::internal::SplitGroup;
  using cpu::internal::VectorCopy;
  struct Shape {
    int64_t rows, row_size, n;
  };
  const int64_t hot_counts[] = {kSplitAboveDuplicates + 1, kSplitAboveDuplicates + 2,
                                5 * kDuplicateChunkRows + 1, 300, 1000};
  constexpr int64_t kNumHot = 5;
  constexpr int64_t kManyThreads = int64_t{1} << 20;
  // Enough unique rows that the update goes to the pool (kMinElementsToParallelize).
  for (const Shape& shape : {Shape{100000, 1, 60000}, Shape{30000, 7, 15000},
                             Shape{4000, 64, 3000}}) {
    const int64_t rows = shape.rows, row_size = shape.row_size, n = shape.n;
    std::vector<int64_t> indices(n);
    std::uniform_int_distribution<int64_t> pick(kNumHot, rows - 1);
    for (auto& i : indices) i = pick(rng);
    for (int64_t h = 0, p = 0; h < kNumHot; ++h) {
      for (int64_t c = 0; c < hot_counts[h]; ++c) indices[p++] = h;
    }
    std::shuffle(indices.begin(), indices.end(), rng);
    RowGroups groups;
    IndexError error;
    Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
    const std::string what = std::string(name) + " row size " + std::to_string(row_size);

    // The choice and the chunk starts.
    std::vector<SplitGroup> split;
    std::vector<int64_t> starts;
    cpu::internal::PlanSplit(groups, 2, &split, &starts);
    bool planned = split.empty() && starts.empty();
    cpu::internal::PlanSplit(groups, kManyThreads, &split, &starts);
    std::vector<int64_t> split_rows;
    int64_t slot = 0;
    for (size_t j = 0; j < split.size(); ++j) {
      const int64_t u = split[j].group;
      split_rows.push_back(groups.row(u));
      planned = planned && split[j].first_slot == slot && (j == 0 || split[j - 1].group < u);
      int64_t index_in_list = 0;
      for (int64_t p = groups.first_position(u); p >= 0; p = groups.next_position(p)) {
        if (index_in_list > 0 && index_in_list % kDuplicateChunkRows == 0) {
          planned = planned && slot < static_cast<int64_t>(starts.size()) && starts[slot] == p;
          ++slot;
        }
        ++index_in_list;
      }
    }
    std::sort(split_rows.begin(), split_rows.end());
    planned = planned && slot == static_cast<int64_t>(starts.size()) &&
              split_rows == std::vector<int64_t>{1, 2, 3, 4};
    Check(planned, "PlanSplit: the rows over kSplitAboveDuplicates and their chunks, " + what);

    // The updates.
    const auto grad = Random<T>(rng, n * row_size, -1, 1);
    const auto sums = SumIntoRows(indices, grad, rows, row_size);
    const auto& summed = sums.first;
    const auto& touched = sums.second;
    const auto var0 = Random<T>(rng, rows * row_size, -1, 1);
    const auto accum0 = Random<T>(rng, rows * row_size, 0.1, 2);
    const auto linear0 = Random<T>(rng, rows * row_size, -0.02, 0.02);
    const FtrlHyperparams<A> ftrl{A(0.05), A(0.01), A(0.02), A(0.03), A(-0.5)};
    const AdagradHyperparams<A> adagrad{A(0.05), A(1e-7)};
    auto ev = var0, ea = accum0, el = linear0, adagrad_v = var0, adagrad_a = accum0;
    for (int64_t k = 0; k < rows * row_size; ++k) {
      if (!touched[k / row_size]) continue;
      A wv = Load(ev[k]), wa = Load(ea[k]), wl = Load(el[k]);
      FtrlUpdate</*kSqrtPower=*/true, false>(ftrl, summed[k], wv, wa, wl);
      ev[k] = Store<T>(wv);
      ea[k] = Store<T>(wa);
      el[k] = Store<T>(wl);
      A av = Load(adagrad_v[k]), aa = Load(adagrad_a[k]);
      AdagradUpdate<true>(adagrad, summed[k], av, aa);
      adagrad_v[k] = Store<T>(av);
      adagrad_a[k] = Store<T>(aa);
    }
    const VectorCopy best = cpu::internal::BestVectorCopy();
    for (int c = static_cast<int>(VectorCopy::kBaseline); c <= static_cast<int>(best); ++c) {
      for (int64_t threads : {int64_t{1}, kManyThreads}) {
        const cpu::ParallelFor parallel_for(ThreadedParallelFor, threads);
        const std::string how = what + " copy " + std::to_string(c) +
                                (threads > 1 ? ", hot rows split" : ", not split");
        auto v = var0, a = accum0, l = linear0;
        cpu::SparseApplyWith<Ftrl>(static_cast<VectorCopy>(c), ftrl, false,
                                   {v.data(), {a.data(), l.data()}}, grad.data(), row_size, groups,
                                   parallel_for);
        Check(SameBitsOrBothNan(v, ev) && SameBitsOrBothNan(a, ea) && SameBitsOrBothNan(l, el),
              "sparse FTRL = per-element formula, " + how);
        v = var0;
        a = accum0;
        cpu::SparseApplyWith<Adagrad>(static_cast<VectorCopy>(c), adagrad, true,
                                      {v.data(), {a.data()}}, grad.data(), row_size, groups,
                                      parallel_for);
        Check(SameBitsOrBothNan(v, adagrad_v) && SameBitsOrBothNan(a, adagrad_a),
              "sparse Adagrad = per-element formula, " + how);
      }
    }
  }
}

// WeightedPieces: the pieces cover every unique row once, in order, and none holds more than its
// share of the work plus one row's (a row is never split), with hot ids first as click logs put
// them, and without duplicates.
void TestWeightedPieces(std::mt19937_64& rng) {
  using cpu::internal::kUpdateCostInDuplicates;
  bool ok = true;
  for (int trial = 0; trial < 100; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 20000);
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 100000);
    std::vector<int64_t> indices(n);
    for (auto& i : indices) i = static_cast<int64_t>(rng() % rows);
    const int64_t num_hot = trial % 3 == 0 ? 0 : static_cast<int64_t>(rng() % 10);
    for (int64_t p = 0; p < n; ++p) {
      if (num_hot > 0 && rng() % 4 == 0) indices[p] = static_cast<int64_t>(rng() % num_hot);
    }
    RowGroups groups;
    IndexError error;
    ok = ok && groups.Build(indices.data(), n, rows, &error);
    const int64_t num_unique = groups.num_unique();
    // Without and with the hot rows' later chunks summed ahead (their duplicates then weigh less).
    for (bool split_hot_rows : {false, true}) {
      std::vector<cpu::internal::SplitGroup> split;
      std::vector<int64_t> starts;
      if (split_hot_rows) cpu::internal::PlanSplit(groups, int64_t{1} << 20, &split, &starts);
      const cpu::internal::SplitGroup* const splits_end = split.data() + split.size();
      std::vector<int64_t> work_of(num_unique);
      int64_t total = 0, heaviest = 0, positions = 0;
      const cpu::internal::SplitGroup* next = split.data();
      for (int64_t u = 0; u < num_unique; ++u) {
        work_of[u] = cpu::internal::GroupWork(groups, u, next, splits_end);
        const int64_t unsplit = kUpdateCostInDuplicates + groups.count(u) - 1;
        ok = ok && (split_hot_rows ? work_of[u] <= unsplit : work_of[u] == unsplit);
        total += work_of[u];
        heaviest = std::max(heaviest, work_of[u]);
        positions += groups.count(u);
      }
      ok = ok && positions == n && groups.num_positions() == n;
      for (int64_t pieces :
           {int64_t{1}, int64_t{2}, int64_t{7}, std::min<int64_t>(num_unique, 256)}) {
        const std::vector<int64_t> bounds = cpu::internal::WeightedPieces(groups, pieces, split);
        ok = ok && static_cast<int64_t>(bounds.size()) == pieces + 1 && bounds[0] == 0 &&
             bounds[pieces] == num_unique;
        for (int64_t k = 0; k < pieces; ++k) {
          int64_t work = 0;
          for (int64_t u = bounds[k]; u < bounds[k + 1]; ++u) work += work_of[u];
          ok = ok && bounds[k] <= bounds[k + 1] && work <= total / pieces + heaviest;
        }
      }
    }
  }
  Check(ok, "WeightedPieces: ordered pieces covering every row, none over its share + one row "
            "(hot rows split or not)");
}

// ScheduleUniqueRows gives every unique row to exactly one shard, whether it shares the rows out
// in equal numbers (duplicates too few to unbalance them) or in weighted pieces after summing the
// hot rows' later chunks; which of the two it takes follows kFewDuplicatesShare.
void TestScheduleUniqueRows(std::mt19937_64& rng) {
  using cpu::internal::kFewDuplicatesShare;
  using cpu::internal::kUpdateCostInDuplicates;
  bool ok = true;
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t threads = int64_t{1} << (trial % 4);
    const int64_t n = 4000 + static_cast<int64_t>(rng() % 20000);
    // Uniform over many rows (a few duplicates), over fewer rows, or with a hot id.
    const int64_t rows = trial % 3 == 0 ? 2'000'000 : trial % 3 == 1 ? 3 * n : 5 * n;
    std::vector<int64_t> indices(n);
    for (auto& i : indices) i = static_cast<int64_t>(rng() % rows);
    if (trial % 3 == 2) {
      for (int64_t p = 0; p < n; p += 5) indices[p] = 17;
    }
    RowGroups groups;
    IndexError error;
    ok = ok && groups.Build(indices.data(), n, rows, &error);
    const int64_t num_unique = groups.num_unique();
    const int64_t duplicates = n - num_unique;
    const bool equal_numbers =
        groups.later_chunk_starts().empty() &&
        kFewDuplicatesShare * duplicates * threads <= num_unique * kUpdateCostInDuplicates;
    std::vector<int64_t> totals;
    const cpu::ParallelFor pool(
        [&](int64_t total, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
          totals.push_back(total);
          for (int64_t b = 0; b < total; b += 7) fn(b, std::min(total, b + 7));
        },
        threads);
    const std::vector<float> grad(n * 64, 1.0f);
    std::vector<int> seen(num_unique, 0);
    bool split_seen = false;
    cpu::internal::ScheduleUniqueRows(
        groups, grad.data(), 64, 1, pool,
        [&](int64_t begin, int64_t end, const cpu::internal::SplitSums<float>& split) {
          split_seen = split_seen || split.num_groups > 0;
          for (int64_t u = begin; u < end; ++u) ++seen[u];
        });
    for (int64_t u = 0; u < num_unique; ++u) ok = ok && seen[u] == 1;
    // Rows in equal numbers: one call of the pool over the unique rows; weighted: at most
    // kMaxWeightedPieces pieces, after a call summing the chunks where a hot row was split.
    ok = ok && !totals.empty() &&
         (equal_numbers ? totals.size() == 1 && totals[0] == num_unique && !split_seen
                        : totals.back() <= cpu::internal::kMaxWeightedPieces);
    if (trial % 3 == 0) ok = ok && equal_numbers;
    if (trial % 3 == 2) ok = ok && !equal_numbers;
  }
  Check(ok, "ScheduleUniqueRows: every unique row in one shard, rows in equal numbers only where "
            "the duplicates are few");
}

// RunEnd and RunBegin (the CUDA sparse kernels' runs and chunks) against std::upper_bound and
// std::lower_bound, on sorted indices with runs of every length from 1 to thousands: RunEnd at
// every run start, RunBegin at every position.
void TestRunEnd(std::mt19937_64& rng) {
  bool all_match = true;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t max_run = trial % 2 == 0 ? 4 : 3000;
    std::vector<int64_t> sorted;
    for (int64_t value = 0; sorted.size() < 20000; value += 1 + rng() % 3) {
      sorted.insert(sorted.end(), 1 + rng() % max_run, value);
    }
    sorted.resize(1 + rng() % sorted.size());
    const std::vector<int32_t> sorted32(sorted.begin(), sorted.end());
    const int64_t n = static_cast<int64_t>(sorted.size());
    for (int64_t begin = 0; begin < n; ++begin) {
      const int64_t run_begin =
          std::lower_bound(sorted.begin(), sorted.end(), sorted[begin]) - sorted.begin();
      all_match = all_match && RunBegin(sorted.data(), begin, sorted[begin]) == run_begin &&
                  RunBegin(sorted32.data(), begin, sorted32[begin]) == run_begin;
      if (begin > 0 && sorted[begin - 1] == sorted[begin]) continue;
      const int64_t expected =
          std::upper_bound(sorted.begin() + begin, sorted.end(), sorted[begin]) - sorted.begin();
      all_match = all_match && RunEnd(sorted.data(), n, begin, sorted[begin]) == expected &&
                  RunEnd(sorted32.data(), n, begin, sorted32[begin]) == expected;
    }
  }
  Check(all_match,
        "RunEnd and RunBegin find every run's ends (runs of 1 to 3,000, to the array's ends)");
}

// The loops take any optimizer description, not only the library's two: a momentum optimizer
// declared here (as docs/design.md's worked example) runs through the dense and sparse loops
// and matches a float64 reference, duplicates summed, untouched rows bit-identical.
template <typename A>
struct MomentumHyperparams {
  A lr;
  A momentum;
};

template <typename A>
struct MomentumStep {
  static constexpr int kNumState = 2;
  static constexpr int kNumWritten = 2;
  static constexpr int64_t kCyclesPerElement = 4;
  MomentumHyperparams<A> h;
  TF_FTRL_INLINE void operator()(A grad, A (&state)[2]) const {
    state[1] = h.momentum * state[1] + grad;
    state[0] -= h.lr * state[1];
  }
};

struct Momentum {
  static constexpr int kNumState = 2;
  template <typename A>
  using Hyperparams = MomentumHyperparams<A>;
  template <typename A, typename Fn>
  static auto WithStep(const Hyperparams<A>& h, bool, Fn&& fn) {
    return fn(MomentumStep<A>{h});
  }
};

void TestAnotherOptimizer(std::mt19937_64& rng) {
  const int64_t rows = 300, row_size = 32, n = 500;
  const MomentumHyperparams<double> h{0.1, 0.9};
  auto reference = [&](double& w, double& m, double g) {
    m = 0.9 * m + g;
    w -= 0.1 * m;
  };
  // Dense, over enough elements for the pool.
  const int64_t size = 100003;
  auto var = Random<double>(rng, size, -1, 1), momentum = Random<double>(rng, size, -1, 1);
  const auto grad = Random<double>(rng, size, -1, 1);
  auto w = var, m = momentum;
  cpu::Apply<Momentum>(h, false, {var.data(), {momentum.data()}}, grad.data(), size,
                       ThreadedParallelFor);
  bool ok = true;
  for (int64_t i = 0; i < size; ++i) {
    reference(w[i], m[i], grad[i]);
    ok = ok && w[i] == var[i] && m[i] == momentum[i];
  }
  Check(ok, "dense momentum through the generic loop");
  // Sparse, with duplicates.
  std::vector<int64_t> indices(n);
  std::uniform_int_distribution<int64_t> pick(0, rows / 3);
  for (auto& i : indices) i = pick(rng);
  RowGroups groups;
  IndexError error;
  Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
  auto table = Random<double>(rng, rows * row_size, -1, 1);
  auto table_momentum = Random<double>(rng, rows * row_size, -1, 1);
  const auto sparse_grad = Random<double>(rng, n * row_size, -1, 1);
  auto expected = table, expected_momentum = table_momentum;
  const auto sums = SumIntoRows(indices, sparse_grad, rows, row_size);
  for (int64_t k = 0; k < rows * row_size; ++k) {
    if (sums.second[k / row_size]) reference(expected[k], expected_momentum[k], sums.first[k]);
  }
  cpu::SparseApply<Momentum>(h, false, {table.data(), {table_momentum.data()}},
                             sparse_grad.data(), row_size, groups, ThreadedParallelFor);
  Check(table == expected && table_momentum == expected_momentum,
        "sparse momentum through the generic loops");
}

}  // namespace
// Row-wise FTRL and Adagrad (rowwise_math.h), dense and sparse, against an independent float64
// statement of their formulas (the row's accumulator grows by the mean of its squared gradient),
// in every vector copy, at row sizes the sparse loops compile for and others; the copies agree
// bit for bit, and rows not indexed keep their bits.
// The sum of a row's squares as the CPU loops compute it (VectorRowSumOfSquares, in a vector
// per copy) against RowSumOfSquares, the order the CUDA kernels and the references follow, bit
// for bit: grad in T and in the accumulate type (summed duplicates), in every vector copy, at
// sizes below, at and around multiples of the 16 partial sums, with values over many binades so
// that another order of additions would round differently.
template <typename T, typename G>
struct SumOfSquaresKernel {
  const G* grad;
  int64_t n;
  AccumulateType<T>* out;
  TF_FTRL_INLINE void operator()() const {
    *out = cpu::internal::VectorRowSumOfSquares<AccumulateType<T>>(grad, n);
  }
};

template <typename T>
void TestRowSumOfSquaresInVectors(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  using cpu::internal::VectorCopy;
  std::uniform_real_distribution<double> exponent(-8, 8);
  for (int64_t n : {1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257}) {
    std::vector<T> grad = Random<T>(rng, n, -1, 1);
    for (auto& g : grad) g = FromDouble<T>(ToDouble(g) * std::exp2(exponent(rng)));
    std::vector<A> wide(n);
    for (int64_t i = 0; i < n; ++i) wide[i] = Load(grad[i]);
    const A expected = RowSumOfSquares<A>(grad.data(), n);
    const A expected_wide = RowSumOfSquares<A>(wide.data(), n);
    for (int c = 0; c <= static_cast<int>(cpu::internal::BestVectorCopy()); ++c) {
      A got = A(-1), got_wide = A(-1);
      cpu::internal::RunIn(static_cast<VectorCopy>(c),
                           SumOfSquaresKernel<T, T>{grad.data(), n, &got});
      cpu::internal::RunIn(static_cast<VectorCopy>(c),
                           SumOfSquaresKernel<T, A>{wide.data(), n, &got_wide});
      const std::string what = std::string(name) + " copy " + std::to_string(c) + " n " +
                               std::to_string(n);
      Check(std::memcmp(&got, &expected, sizeof(A)) == 0, "row's sum of squares, " + what);
      Check(std::memcmp(&got_wide, &expected_wide, sizeof(A)) == 0,
            "summed row's sum of squares, " + what);
    }
  }
}

template <typename T>
void TestRowwise(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  using cpu::internal::VectorCopy;
  const VectorCopy best = cpu::internal::BestVectorCopy();
  const double lr = 0.1, l1 = 0.01, l2 = 0.02, shrinkage = 0.03, epsilon = 1e-3;
  for (int64_t row_size : {1, 7, 16, 33, 64}) {
    const int64_t rows = 300, n = 400;
    std::vector<int64_t> indices(n);
    std::uniform_int_distribution<int64_t> pick(1, rows / 2);
    for (auto& i : indices) i = pick(rng);
    for (int64_t p = 0; p < n; p += 3) indices[p] = 0;  // a hot row, beyond one chunk
    RowGroups groups;
    IndexError error;
    Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
    const auto sparse_grad = Random<T>(rng, n * row_size, -1, 1);
    const auto sums = SumIntoRows(indices, sparse_grad, rows, row_size);
    const auto dense_grad = Random<T>(rng, rows * row_size, -1, 1);
    const auto var0 = Random<T>(rng, rows * row_size, -1, 1);
    const auto accum0 = Random<T>(rng, rows, 0.1, 2);
    const auto linear0 = Random<T>(rng, rows * row_size, -0.5, 0.5);
    for (bool sparse : {false, true}) {
      // The gradient of each row (duplicates summed) and whether the update touches it.
      std::vector<double> g(rows * row_size);
      std::vector<bool> touched(rows, !sparse);
      for (int64_t k = 0; k < rows * row_size; ++k) {
        g[k] = sparse ? double(sums.first[k]) : ToDouble(dense_grad[k]);
      }
      if (sparse) touched = sums.second;
      std::vector<double> mean_square(rows, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < row_size; ++j) mean_square[r] += g[r * row_size + j] * g[r * row_size + j];
        mean_square[r] /= row_size;
      }
      std::vector<T> first_v, first_a, first_l;
      for (int c = static_cast<int>(VectorCopy::kBaseline); c <= static_cast<int>(best); ++c) {
        const VectorCopy copy = static_cast<VectorCopy>(c);
        const std::string what = std::string(name) + (sparse ? " sparse" : " dense") +
                                 " copy " + std::to_string(c) + " row size " +
                                 std::to_string(row_size);
        // FTRL.
        auto v = var0, a = accum0, l = linear0;
        const FtrlHyperparams<A> fh{A(lr), A(l1), A(l2), A(shrinkage), A(-0.5)};
        if (sparse) {
          cpu::SparseApplyWith<RowwiseFtrl>(copy, fh, false, {v.data(), {a.data(), l.data()}},
                                            sparse_grad.data(), row_size, groups,
                                            ThreadedParallelFor);
        } else {
          cpu::RowwiseApplyWith<RowwiseFtrl>(copy, fh, false, {v.data(), {a.data(), l.data()}},
                                             dense_grad.data(), rows, row_size,
                                             ThreadedParallelFor);
        }
        bool ok = true;
        for (int64_t r = 0; r < rows; ++r) {
          const double n0 = ToDouble(accum0[r]);
          const double n1 = touched[r] ? n0 + mean_square[r] : n0;
          ok = ok && (touched[r] ? Close(ToDouble(a[r]), n1, Tolerance<T>())
                                 : std::memcmp(&a[r], &accum0[r], sizeof(T)) == 0);
          for (int64_t j = 0; j < row_size; ++j) {
            const int64_t k = r * row_size + j;
            if (!touched[r]) {
              ok = ok && std::memcmp(&v[k], &var0[k], sizeof(T)) == 0 &&
                   std::memcmp(&l[k], &linear0[k], sizeof(T)) == 0;
              continue;
            }
            double w = ToDouble(var0[k]), z = ToDouble(linear0[k]);
            const double sigma = (std::sqrt(n1) - std::sqrt(n0)) / lr;
            z += g[k] + 2 * shrinkage * w - sigma * w;
            w = std::fabs(z) > l1 ? ((z > 0 ? l1 : -l1) - z) / (std::sqrt(n1) / lr + 2 * l2) : 0.0;
            ok = ok && Close(ToDouble(v[k]), w, Tolerance<T>() * 4) &&
                 Close(ToDouble(l[k]), z, Tolerance<T>() * 4);
          }
        }
        Check(ok, "row-wise FTRL = float64 formula, " + what);
        // Adagrad.
        auto av = var0, aa = accum0;
        const AdagradHyperparams<A> ah{A(lr), A(epsilon)};
        if (sparse) {
          cpu::SparseApplyWith<RowwiseAdagrad>(copy, ah, true, {av.data(), {aa.data()}},
                                               sparse_grad.data(), row_size, groups,
                                               ThreadedParallelFor);
        } else {
          cpu::RowwiseApplyWith<RowwiseAdagrad>(copy, ah, true, {av.data(), {aa.data()}},
                                                dense_grad.data(), rows, row_size,
                                                ThreadedParallelFor);
        }
        ok = true;
        for (int64_t r = 0; r < rows; ++r) {
          const double a1 = ToDouble(accum0[r]) + (touched[r] ? mean_square[r] : 0.0);
          ok = ok && Close(ToDouble(aa[r]), a1, Tolerance<T>());
          for (int64_t j = 0; j < row_size; ++j) {
            const int64_t k = r * row_size + j;
            const double w = touched[r] ? ToDouble(var0[k]) - lr * g[k] / (std::sqrt(a1) + epsilon)
                                        : ToDouble(var0[k]);
            ok = ok && (touched[r] ? Close(ToDouble(av[k]), w, Tolerance<T>() * 4)
                                   : std::memcmp(&av[k], &var0[k], sizeof(T)) == 0);
          }
        }
        Check(ok, "row-wise Adagrad = float64 formula, " + what);
        if (c == static_cast<int>(VectorCopy::kBaseline)) {
          first_v = v, first_a = a, first_l = l;
        } else {
          Check(SameBitsOrBothNan(v, first_v) && SameBitsOrBothNan(a, first_a) &&
                    SameBitsOrBothNan(l, first_l),
                "row-wise FTRL: vector copies agree, " + what);
        }
      }
    }
  }
}

// ------------------------------------------------------------------ low-precision state

// Whether `stored` is one of the two values of S around x (x itself when S holds it).
template <typename S>
bool IsNeighbour(S stored, float x) {
  if (static_cast<float>(Load(stored)) == x) return true;
  const S nearest = Store<S>(x);
  if (stored.bits == nearest.bits) return true;
  const float n = Load(nearest);
  const uint16_t other = std::fabs(x) > std::fabs(n) ? nearest.bits + 1 : nearest.bits - 1;
  return stored.bits == other;
}

// Stochastic rounding on its own: exact values stay, each value rounds up with the probability
// of its distance from the value below (over 100,000 positions' bits), negative values mirror
// positive ones, and a small increment that round-to-nearest loses is kept on average.
template <typename S>
void TestStochasticRounding(std::mt19937_64& rng, const char* name) {
  const auto round = [](float x, uint32_t bits) {
    if constexpr (std::is_same_v<S, bfloat16>) {
      return S{FloatToBFloat16Stochastic(x, bits)};
    } else {
      return S{FloatToHalfStochastic(x, bits)};
    }
  };
  const uint64_t key = RoundingKey(static_cast<int64_t>(rng()), 7);
  bool exact = true;
  for (float x : {0.0f, -0.0f, 1.0f, -2.5f, 0.375f, 1024.0f}) {
    for (int64_t p = 0; p < 1000; ++p) {
      exact = exact && round(x, StochasticBits(key, 1, p)).bits == Store<S>(x).bits;
    }
  }
  Check(exact, std::string("stochastic rounding keeps values the format holds, ") + name);
  const float inf = std::numeric_limits<float>::infinity();
  Check(std::isinf(Load(round(inf, 123u))) && std::isnan(Load(round(NAN, 123u))),
        std::string("stochastic rounding keeps inf and NaN, ") + name);
  // Values between neighbours lo and hi (a normal range, and for float16 its subnormals).
  std::vector<float> bases = {1.0f, 3.0f, 1e-3f, 300.0f};
  if (std::is_same_v<S, float16>) bases.push_back(4e-7f);  // subnormal half: steps of 2^-24
  constexpr int64_t kDraws = 100000;
  bool frequencies = true;
  std::string worst;
  for (float base : bases) {
    for (float sign : {1.0f, -1.0f}) {
      const S lo = Store<S>(sign * base);
      const S hi = S{static_cast<uint16_t>(lo.bits + 1)};  // one step further from zero
      for (double f : {0.125, 0.5, 0.8}) {
        const float x = static_cast<float>(Load(lo) + f * (double(Load(hi)) - Load(lo)));
        int64_t up = 0;
        bool neighbours = true;
        for (int64_t p = 0; p < kDraws; ++p) {
          const S r = round(x, StochasticBits(key, 2, p));
          up += r.bits == hi.bits;
          neighbours = neighbours && (r.bits == hi.bits || r.bits == lo.bits);
        }
        const double freq = double(up) / kDraws;
        const double sigma = std::sqrt(f * (1 - f) / kDraws);
        const bool ok = neighbours && std::fabs(freq - f) < 6 * sigma;
        if (!ok) worst = "x " + std::to_string(x) + " freq " + std::to_string(freq);
        frequencies = frequencies && ok;
      }
    }
  }
  Check(frequencies, std::string("stochastic rounding up with probability of its distance, ") +
                         name + " " + worst);
  // Accumulators (one per position) growing by 3e-4 a step from 1: to nearest they never move
  // (3e-4 is below half a step of both formats at 1); stochastically their mean ends at the
  // exact 1 + steps * 3e-4 (one bfloat16 accumulator's spread is some 4% of it).
  constexpr int kSteps = 3000, kAccumulators = 400;
  constexpr float kIncrement = 3e-4f;
  S nearest = Store<S>(1.0f);
  std::vector<S> stochastic(kAccumulators, Store<S>(1.0f));
  for (int step = 0; step < kSteps; ++step) {
    nearest = Store<S>(Load(nearest) + kIncrement);
    for (int p = 0; p < kAccumulators; ++p) {
      stochastic[p] =
          round(Load(stochastic[p]) + kIncrement, StochasticBits(RoundingKey(5, step), 1, p));
    }
  }
  double mean = 0;
  for (const S& x : stochastic) mean += Load(x) / kAccumulators;
  const double exact_sum = 1.0 + kSteps * double(kIncrement);
  Check(Load(nearest) == 1.0f && std::fabs(mean - exact_sum) < 0.01 * exact_sum,
        std::string("growing accumulators: stall to nearest, track stochastically (") + name +
            ": mean " + std::to_string(mean) + " vs " + std::to_string(exact_sum) + ")");
  // The bits depend on the key, the array and the position, each.
  Check(StochasticBits(key, 1, 5) != StochasticBits(key, 2, 5) &&
            StochasticBits(key, 1, 5) != StochasticBits(key, 1, 6) &&
            StochasticBits(key, 1, 5) != StochasticBits(RoundingKey(1, 8), 1, 5) &&
            StochasticBits(key, 1, 5) == StochasticBits(key, 1, 5),
        "stochastic bits: a function of key, array and position");
}

// Runs Optimizer's dense update (no groups) or sparse update on var (float) and state arrays of
// type S.
// x rounded stochastically to S with `bits`.
template <typename S>
S StochasticRound(float x, uint32_t bits) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    return S{FloatToBFloat16Stochastic(x, bits)};
  } else {
    return S{FloatToHalfStochastic(x, bits)};
  }
}

template <typename Optimizer, typename S>
void RunOn(cpu::internal::VectorCopy copy,
           const typename Optimizer::template Hyperparams<float>& h, bool flag,
           std::vector<float>& var, std::vector<std::vector<S>>& slots, StateRounding rounding,
           const std::vector<float>& grad, int64_t rows, int64_t row_size,
           const RowGroups* groups) {
  StateArrays<float, Optimizer::kNumState, S> state;
  state.var = var.data();
  for (int i = 0; i < state.kNumSlots; ++i) state.slots[i] = slots[i].data();
  state.rounding = rounding;
  if (groups != nullptr) {
    cpu::SparseApplyWith<Optimizer>(copy, h, flag, state, grad.data(), row_size, *groups,
                                    ThreadedParallelFor);
  } else if constexpr (Optimizer::kRowwise) {
    cpu::RowwiseApplyWith<Optimizer>(copy, h, flag, state, grad.data(), rows, row_size,
                                     ThreadedParallelFor);
  } else {
    cpu::ApplyWith<Optimizer>(copy, h, flag, state, grad.data(), rows * row_size,
                              ThreadedParallelFor);
  }
}

// State of type S (bfloat16, float16) of a float var: var and the math exactly as with float
// state holding the same values, each state value stored once: to nearest, the float result
// rounded to nearest; stochastically, one of its two neighbours, the same bits for the same key
// in every vector copy, other bits for another key. Rows a sparse update leaves alone keep their
// bits.
template <typename Optimizer, typename S>
void TestLowPrecisionOptimizer(std::mt19937_64& rng, const std::string& name,
                               const typename Optimizer::template Hyperparams<float>& h,
                               bool flag) {
  using cpu::internal::VectorCopy;
  const VectorCopy best = cpu::internal::BestVectorCopy();
  constexpr int kSlots = Optimizer::kNumState - 1;
  for (int64_t row_size : {1, 16, 33}) {
    const int64_t rows = 200, n = 300;
    std::vector<int64_t> indices(n);
    std::uniform_int_distribution<int64_t> pick(1, rows / 2);
    for (auto& i : indices) i = pick(rng);
    for (int64_t p = 0; p < n; p += 2) indices[p] = 0;  // a hot row, beyond one chunk
    RowGroups groups;
    IndexError error;
    Check(groups.Build(indices.data(), n, rows, &error), "indices in range accepted");
    std::vector<bool> touched(rows, false);
    for (int64_t i : indices) touched[i] = true;
    std::vector<std::vector<S>> slots0(kSlots);
    for (int i = 0; i < kSlots; ++i) {
      const int64_t size = Optimizer::kPerRow[i + 1] ? rows : rows * row_size;
      // The accumulator first, then linear.
      slots0[i] = i == 0 ? Random<S>(rng, size, 0.1, 2) : Random<S>(rng, size, -1, 1);
    }
    const auto var0 = Random<float>(rng, rows * row_size, -1, 1);
    for (bool sparse : {false, true}) {
      const auto grad = Random<float>(rng, (sparse ? n : rows) * row_size, -1, 1);
      const RowGroups* g = sparse ? &groups : nullptr;
      const uint64_t key = RoundingKey(static_cast<int64_t>(rng() >> 1), 3);
      std::vector<std::vector<S>> first;
      for (int c = static_cast<int>(VectorCopy::kBaseline); c <= static_cast<int>(best); ++c) {
        const VectorCopy copy = static_cast<VectorCopy>(c);
        const std::string what = name + (sparse ? " sparse" : " dense") + " copy " +
                                 std::to_string(c) + " row size " + std::to_string(row_size);
        // Float state holding the same values.
        std::vector<float> var_f = var0;
        std::vector<std::vector<float>> wide(kSlots);
        for (int i = 0; i < kSlots; ++i) {
          for (const S& x : slots0[i]) wide[i].push_back(Load(x));
        }
        RunOn<Optimizer, float>(copy, h, flag, var_f, wide, {}, grad, rows, row_size, g);
        // To nearest.
        std::vector<float> var_n = var0;
        auto nearest = slots0;
        RunOn<Optimizer, S>(copy, h, flag, var_n, nearest, {}, grad, rows, row_size, g);
        bool ok = SameBitsOrBothNan(var_n, var_f);
        for (int i = 0; i < kSlots; ++i) {
          for (size_t k = 0; k < nearest[i].size(); ++k) {
            ok = ok && nearest[i][k].bits == Store<S>(wide[i][k]).bits;
          }
        }
        Check(ok, "low-precision state to nearest = float state rounded once, " + what);
        // Stochastically.
        std::vector<float> var_s = var0, var_again = var0;
        auto stochastic = slots0, again = slots0;
        RunOn<Optimizer, S>(copy, h, flag, var_s, stochastic, {true, key}, grad, rows, row_size,
                            g);
        RunOn<Optimizer, S>(copy, h, flag, var_again, again, {true, key}, grad, rows, row_size,
                            g);
        ok = SameBitsOrBothNan(var_s, var_f);
        int64_t differ_from_nearest = 0;
        bool untouched_kept = true, exact_bits = true;
        for (int i = 0; i < kSlots; ++i) {
          for (size_t k = 0; k < stochastic[i].size(); ++k) {
            ok = ok && IsNeighbour(stochastic[i][k], wide[i][k]) &&
                 stochastic[i][k].bits == again[i][k].bits;
            differ_from_nearest += stochastic[i][k].bits != nearest[i][k].bits;
            const int64_t row = Optimizer::kPerRow[i + 1] ? int64_t(k) : int64_t(k) / row_size;
            if (sparse && !touched[row]) {
              untouched_kept = untouched_kept && stochastic[i][k].bits == slots0[i][k].bits;
            } else {
              // Element k of array i + 1 (a per-row array's row k) rounds with its own bits.
              exact_bits = exact_bits &&
                           stochastic[i][k].bits ==
                               StochasticRound<S>(wide[i][k], StochasticBits(key, i + 1, k)).bits;
            }
          }
        }
        Check(ok && differ_from_nearest > 0,
              "low-precision state, stochastic: a neighbour of the float result, the same bits "
              "for the same key, " + what + " (" + std::to_string(differ_from_nearest) +
                  " rounded away from nearest)");
        Check(exact_bits,
              "low-precision state, stochastic: each value rounded with StochasticBits of its "
              "key, array and position, " + what);
        Check(untouched_kept, "low-precision state: untouched rows keep their bits, " + what);
        if (c == static_cast<int>(VectorCopy::kBaseline)) {
          first = stochastic;
          auto other = slots0;
          std::vector<float> var_other = var0;
          RunOn<Optimizer, S>(copy, h, flag, var_other, other, {true, key + 1}, grad, rows,
                              row_size, g);
          bool any_differs = false;
          for (int i = 0; i < kSlots; ++i) {
            for (size_t k = 0; k < other[i].size(); ++k) {
              any_differs = any_differs || other[i][k].bits != stochastic[i][k].bits;
            }
          }
          Check(any_differs, "low-precision state: another key, other bits, " + what);
        } else {
          bool same = true;
          for (int i = 0; i < kSlots; ++i) {
            for (size_t k = 0; k < first[i].size(); ++k) {
              same = same && first[i][k].bits == stochastic[i][k].bits;
            }
          }
          Check(same, "low-precision state: vector copies give the same bits, " + what);
        }
      }
    }
  }
}

// Positions on both sides of a multiple of 2^32 (arrays of more than 2^32 elements): the
// element-wise loop and a row-wise row that straddle it store each value with the bits of its
// own position, as StochasticBits gives them (the loops hash the low 32 bits and key the high
// ones once per run).
template <typename S>
void TestStochasticPositionsAcross2To32(std::mt19937_64& rng, const char* name) {
  const uint64_t key = RoundingKey(static_cast<int64_t>(rng() >> 1), 11);
  const FtrlHyperparams<float> ftrl{0.1f, 0.01f, 0.02f, 0.03f, -0.5f};
  constexpr int64_t kTwo32 = int64_t{1} << 32;
  // Element-wise Adagrad over positions [2^32 - 21, 2^32 + 27).
  const int64_t n = 48, position = kTwo32 - 21;
  const auto var0 = Random<float>(rng, n, -1, 1);
  const auto accum0 = Random<S>(rng, n, 0.1, 2);
  const auto grad = Random<float>(rng, n, -1, 1);
  const tf_ftrl::AdagradStep<true, float> adagrad{{0.1f, 1e-3f}};
  std::vector<float> var = var0, var_f = var0, accum_f;
  for (const S& x : accum0) accum_f.push_back(Load(x));
  std::vector<S> accum = accum0;
  cpu::internal::StepLoopRounding<true, decltype(adagrad), float>(
      std::make_index_sequence<2>(), adagrad, key, position, grad.data(), n, var.data(),
      accum.data());
  cpu::internal::StepLoopRounding<false, decltype(adagrad), float>(
      std::make_index_sequence<2>(), adagrad, key, position, grad.data(), n, var_f.data(),
      accum_f.data());
  bool ok = SameBitsOrBothNan(var, var_f);
  for (int64_t i = 0; i < n; ++i) {
    ok = ok && accum[i].bits ==
                   StochasticRound<S>(accum_f[i], StochasticBits(key, 1, position + i)).bits;
  }
  Check(ok, std::string("stochastic bits across 2^32, element-wise, ") + name);
  // A row-wise FTRL row of 48 whose elements straddle 2^32 (row * 48 < 2^32 < row * 48 + 48):
  // linear per element, the accumulator per row.
  const int64_t row = kTwo32 / n;
  Check(row * n < kTwo32 && kTwo32 < row * n + n, "the row straddles 2^32");
  const tf_ftrl::RowwiseFtrlStep<true, false, float> rowwise{ftrl};
  const auto linear0 = Random<S>(rng, n, -1, 1);
  std::vector<float> rvar = var0, rvar_f = var0, linear_f;
  for (const S& x : linear0) linear_f.push_back(Load(x));
  std::vector<S> linear = linear0;
  S row_accum = Store<S>(0.75f);
  float row_accum_f = Load(row_accum);
  cpu::internal::RowLoopRounding<true, decltype(rowwise), float>(
      std::make_index_sequence<3>(), rowwise, key, row, grad.data(), n, rvar.data(), &row_accum,
      linear.data());
  cpu::internal::RowLoopRounding<false, decltype(rowwise), float>(
      std::make_index_sequence<3>(), rowwise, key, row, grad.data(), n, rvar_f.data(),
      &row_accum_f, linear_f.data());
  ok = SameBitsOrBothNan(rvar, rvar_f) &&
       row_accum.bits == StochasticRound<S>(row_accum_f, StochasticBits(key, 1, row)).bits;
  for (int64_t i = 0; i < n; ++i) {
    ok = ok && linear[i].bits ==
                   StochasticRound<S>(linear_f[i], StochasticBits(key, 2, row * n + i)).bits;
  }
  Check(ok, std::string("stochastic bits across 2^32, row-wise, ") + name);
}

template <typename S>
void TestLowPrecisionState(std::mt19937_64& rng, const char* name) {
  const FtrlHyperparams<float> ftrl{0.1f, 0.01f, 0.02f, 0.03f, -0.5f};
  const AdagradHyperparams<float> adagrad{0.1f, 1e-3f};
  for (bool flag : {false, true}) {
    TestLowPrecisionOptimizer<Ftrl, S>(rng, std::string("FTRL ") + name, ftrl, flag);
    TestLowPrecisionOptimizer<RowwiseFtrl, S>(rng, std::string("row-wise FTRL ") + name, ftrl,
                                              flag);
  }
  TestLowPrecisionOptimizer<Adagrad, S>(rng, std::string("Adagrad ") + name, adagrad, true);
  TestLowPrecisionOptimizer<RowwiseAdagrad, S>(rng, std::string("row-wise Adagrad ") + name,
                                               adagrad, true);
  TestLowPrecisionOptimizer<Ftrl, S>(rng, std::string("FTRL power -0.3 ") + name,
                                     {0.1f, 0.0f, 0.02f, 0.0f, -0.3f}, false);
}

// The multi-tensor dense update (MultiApplyWith) of variables of many sizes, empty ones and ones
// across the pool's blocks included, gives every variable the bits that ApplyWith gives it alone,
// in every vector copy, with each variable's own rounding key where the state is narrower.
template <typename Optimizer, typename T, typename S>
void TestMultiApplyOf(std::mt19937_64& rng, const std::string& name,
                      const typename Optimizer::template Hyperparams<AccumulateType<T>>& h,
                      bool flag, bool stochastic) {
  using cpu::internal::VectorCopy;
  using State = StateArrays<T, Optimizer::kNumState, S>;
  constexpr int kSlots = Optimizer::kNumState - 1;
  const VectorCopy best = cpu::internal::BestVectorCopy();
  // Small ones (a deep model's biases and kernels) and ones that cross the blocks of
  // kElementsPerBlock and the serial threshold on their own.
  const std::vector<int64_t> sizes = {4096, 0, 1, 7, 64, 8191, 8193, 4096, 3, 40000, 16, 0, 513};
  const int64_t count = static_cast<int64_t>(sizes.size());
  std::vector<std::vector<T>> var0(count), grads(count);
  std::vector<std::vector<std::vector<S>>> slots0(count);
  std::vector<StateRounding> rounding(count);
  for (int64_t v = 0; v < count; ++v) {
    var0[v] = Random<T>(rng, sizes[v], -1, 1);
    grads[v] = Random<T>(rng, sizes[v], -1, 1);
    slots0[v].resize(kSlots);
    for (int i = 0; i < kSlots; ++i) {
      slots0[v][i] = i == 0 ? Random<S>(rng, sizes[v], 0.1, 2) : Random<S>(rng, sizes[v], -1, 1);
    }
    rounding[v] = {stochastic, RoundingKey(static_cast<int64_t>(rng() >> 1), 7)};
  }
  const cpu::ParallelFor pool(ThreadedParallelFor, 4);
  for (int c = static_cast<int>(VectorCopy::kBaseline); c <= static_cast<int>(best); ++c) {
    const VectorCopy copy = static_cast<VectorCopy>(c);
    // One variable at a time.
    auto var1 = var0;
    auto slots1 = slots0;
    for (int64_t v = 0; v < count; ++v) {
      State state;
      state.var = var1[v].data();
      for (int i = 0; i < kSlots; ++i) state.slots[i] = slots1[v][i].data();
      state.rounding = rounding[v];
      cpu::ApplyWith<Optimizer>(copy, h, flag, state, grads[v].data(), sizes[v], pool);
    }
    // All at once, on the pool and serially.
    for (bool serial : {false, true}) {
      auto var2 = var0;
      auto slots2 = slots0;
      std::vector<State> states(count);
      std::vector<const T*> grad_pointers(count);
      for (int64_t v = 0; v < count; ++v) {
        states[v].var = var2[v].data();
        for (int i = 0; i < kSlots; ++i) states[v].slots[i] = slots2[v][i].data();
        states[v].rounding = rounding[v];
        grad_pointers[v] = grads[v].data();
      }
      cpu::MultiApplyWith<Optimizer>(copy, h, flag, states.data(), grad_pointers.data(),
                                     sizes.data(), count,
                                     serial ? cpu::ParallelFor(cpu::SerialParallelFor) : pool);
      bool same = true;
      bool changed = false;
      for (int64_t v = 0; v < count; ++v) {
        same = same && SameBitsOrBothNan(var2[v], var1[v]);
        changed = changed ||
                  std::memcmp(var2[v].data(), var0[v].data(), sizes[v] * sizeof(T)) != 0;
        for (int i = 0; i < kSlots; ++i) {
          for (int64_t k = 0; k < sizes[v]; ++k) {
            same = same && std::memcmp(&slots2[v][i][k], &slots1[v][i][k], sizeof(S)) == 0;
          }
        }
      }
      Check(same && changed, name + ": multi-tensor apply = one variable at a time, bit for "
                                    "bit, copy " + std::to_string(c) +
                                 (serial ? " serial" : " on the pool") +
                                 (stochastic ? " stochastic" : ""));
    }
  }
}

template <typename T>
void TestMultiApply(std::mt19937_64& rng, const char* name) {
  using A = AccumulateType<T>;
  const FtrlHyperparams<A> ftrl{A(0.1), A(0.01), A(0.02), A(0.03), A(-0.5)};
  const AdagradHyperparams<A> adagrad{A(0.1), A(1e-3)};
  for (bool flag : {false, true}) {
    TestMultiApplyOf<Ftrl, T, T>(rng, std::string("FTRL ") + name, ftrl, flag, false);
    TestMultiApplyOf<Adagrad, T, T>(rng, std::string("Adagrad ") + name, adagrad, flag, false);
  }
  TestMultiApplyOf<Ftrl, T, T>(rng, std::string("FTRL power -0.3 ") + name,
                               {A(0.1), A(0), A(0.02), A(0), A(-0.3)}, false, false);
  if constexpr (std::is_same_v<T, float>) {
    for (bool stochastic : {false, true}) {
      TestMultiApplyOf<Ftrl, float, bfloat16>(rng, "FTRL bfloat16 state", ftrl, false,
                                              stochastic);
      TestMultiApplyOf<Adagrad, float, float16>(rng, "Adagrad float16 state", adagrad, true,
                                                stochastic);
    }
  }
}

}  // namespace tf_ftrl

int main() {
  using namespace tf_ftrl;
  std::mt19937_64 rng(std::random_device{}());
  using testing::Case;
  auto each_type = [&](const char* test, auto fn) {
    Case(std::string(test) + "/float32", [&] { fn(float(), "float32"); });
    Case(std::string(test) + "/float64", [&] { fn(double(), "float64"); });
    Case(std::string(test) + "/float16", [&] { fn(float16(), "float16"); });
    Case(std::string(test) + "/bfloat16", [&] { fn(bfloat16(), "bfloat16"); });
  };
  each_type("DenseFtrl", [&](auto type, const char* name) {
    for (int64_t size : {1, 7, 1000, 100003}) {
      for (double power : {-0.5, 0.0, -0.3}) {
        TestDenseFtrl<decltype(type)>(rng, size, power, name);
      }
    }
  });
  each_type("SparseAdagradWithDuplicates", [&](auto type, const char* name) {
    TestSparseAdagradWithDuplicates<decltype(type)>(rng, name);
  });
  Case("IndexValidation", [&] { TestIndexValidation(); });
  Case("RowGroupsSlotWidths", [&] { TestRowGroupsSlotWidths(rng); });
  Case("HalfConversions", [&] { TestHalfConversions(); });
  Case("RunEnd", [&] { TestRunEnd(rng); });
  Case("WeightedPieces", [&] { TestWeightedPieces(rng); });
  Case("ScheduleUniqueRows", [&] { TestScheduleUniqueRows(rng); });
  each_type("VectorCopiesAgree", [&](auto type, const char* name) {
    TestVectorCopiesAgree<decltype(type)>(rng, name);
  });
  each_type("SparseRowSizesAndCopies", [&](auto type, const char* name) {
    TestSparseRowSizesAndCopies<decltype(type)>(rng, name);
  });
  Case("RowPrefetchChoice", [&] { TestRowPrefetchChoice(); });
  Case("AnotherOptimizer", [&] { TestAnotherOptimizer(rng); });
  each_type("RowSumOfSquaresInVectors", [&](auto type, const char* name) {
    TestRowSumOfSquaresInVectors<decltype(type)>(rng, name);
  });
  each_type("Rowwise", [&](auto type, const char* name) {
    TestRowwise<decltype(type)>(rng, name);
  });
  Case("SplitHotRows/float32", [&] { TestSplitHotRows<float>(rng, "float32"); });
  Case("SplitHotRows/float64", [&] { TestSplitHotRows<double>(rng, "float64"); });
  Case("SplitHotRows/bfloat16", [&] { TestSplitHotRows<bfloat16>(rng, "bfloat16"); });
  Case("StochasticRounding/bfloat16", [&] { TestStochasticRounding<bfloat16>(rng, "bfloat16"); });
  Case("StochasticRounding/float16", [&] { TestStochasticRounding<float16>(rng, "float16"); });
  Case("LowPrecisionState/bfloat16", [&] { TestLowPrecisionState<bfloat16>(rng, "bfloat16"); });
  Case("LowPrecisionState/float16", [&] { TestLowPrecisionState<float16>(rng, "float16"); });
  Case("StochasticPositionsAcross2To32/bfloat16",
       [&] { TestStochasticPositionsAcross2To32<bfloat16>(rng, "bfloat16"); });
  Case("StochasticPositionsAcross2To32/float16",
       [&] { TestStochasticPositionsAcross2To32<float16>(rng, "float16"); });
  each_type("MultiApply", [&](auto type, const char* name) {
    TestMultiApply<decltype(type)>(rng, name);
  });
  std::printf("vector copies checked: up to %d (0 baseline, 1 AVX2, 2 AVX-512)\n",
              static_cast<int>(cpu::internal::BestVectorCopy()));
  return testing::Finish();
}
