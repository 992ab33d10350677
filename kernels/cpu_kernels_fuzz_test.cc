// Random and adversarial inputs for the CPU loops and RowGroups (cpu_loops.h,
// row_groups.h), meant to run under AddressSanitizer and UndefinedBehaviorSanitizer:
//   bazel test --config=asan //kernels:cpu_kernels_fuzz_test
// The math itself is checked against an independent reference by cpu_kernels_test; here the
// oracle is each optimizer's Step applied element by element, so any input is checkable,
// NaN and infinities included: every touched element must equal that bit for bit (the loops
// only vectorise and shard the same IEEE operations), every other element must be untouched, and
// nothing may be read or written outside the buffers (the sanitizers see to that).
//
// The row-wise updates (rowwise_math.h) and 16-bit state of float32 vars (rounded to nearest or
// stochastically) are fuzzed the same way, with an oracle that updates one row at a time.
//
// TF_FTRL_FUZZ_SEED=<n> replays one run; TF_FTRL_FUZZ_ITERATIONS=<n> runs longer.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/test_support.h"

namespace tf_ftrl {
namespace {

using testing::Check;
using testing::SummedRows;
using testing::ThreadedParallelFor;

template <typename T>
const char* TypeName();
template <>
const char* TypeName<float>() { return "float32"; }
template <>
const char* TypeName<double>() { return "float64"; }
template <>
const char* TypeName<float16>() { return "float16"; }
template <>
const char* TypeName<bfloat16>() { return "bfloat16"; }

// Equal bits, or both NaN (a NaN's payload is not part of the contract).
template <typename T>
bool SameValue(T a, T b) {
  if (std::memcmp(&a, &b, sizeof(T)) == 0) return true;
  const double x = static_cast<double>(Load(a));
  const double y = static_cast<double>(Load(b));
  return std::isnan(x) && std::isnan(y);
}

template <typename T>
bool BitIdentical(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Mostly ordinary values, sometimes the values that break formulas: zeros of both signs,
// infinities, NaN, subnormals, the extremes of the type.
template <typename T>
T RandomValue(std::mt19937_64& rng, double special_rate, bool non_negative) {
  using A = AccumulateType<T>;
  std::uniform_real_distribution<double> unit(0, 1);
  double x;
  if (unit(rng) < special_rate) {
    static const double kSpecials[] = {0.0,
                                       -0.0,
                                       INFINITY,
                                       -INFINITY,
                                       NAN,
                                       1e-40,
                                       -1e-45,
                                       6e-8,
                                       65504.0,
                                       3e38,
                                       -3e38,
                                       1e300,
                                       std::numeric_limits<double>::denorm_min()};
    x = kSpecials[std::uniform_int_distribution<int>(0, std::size(kSpecials) - 1)(rng)];
  } else {
    x = std::normal_distribution<double>(0, 1)(rng) *
        std::pow(10.0, std::uniform_int_distribution<int>(-3, 2)(rng));
  }
  if (non_negative) x = std::fabs(x);
  // A double beyond the range of A would be undefined behaviour to convert: it is infinite.
  if (std::fabs(x) > static_cast<double>(std::numeric_limits<A>::max())) {
    x = std::copysign(INFINITY, x);
  }
  return Store<T>(static_cast<A>(x));
}

template <typename T>
std::vector<T> RandomVector(std::mt19937_64& rng, int64_t n, double special_rate,
                            bool non_negative = false) {
  std::vector<T> out(n);
  for (auto& x : out) x = RandomValue<T>(rng, special_rate, non_negative);
  return out;
}

template <typename A>
FtrlHyperparams<A> RandomFtrlHyperparams(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 3);
  static const double kLr[] = {1e-3, 0.05, 1.0, 7.5};
  static const double kL1[] = {0.0, 0.01, 0.5, 1e3};
  static const double kL2[] = {0.0, 0.03, 1.0, 0.0};
  static const double kPower[] = {-0.5, 0.0, -0.3, -1.0};
  return {A(kLr[pick(rng)]), A(kL1[pick(rng)]), A(kL2[pick(rng)]), A(kL2[pick(rng)] / 2),
          A(kPower[pick(rng)])};
}

template <typename A>
AdagradHyperparams<A> RandomAdagradHyperparams(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 3);
  static const double kLr[] = {1e-3, 0.05, 1.0, 7.5};
  static const double kEpsilon[] = {0.0, 1e-7, 1e-3, 1.0};
  return {A(kLr[pick(rng)]), A(kEpsilon[pick(rng)])};
}

// One update of one element, outside the loops: the oracle.
template <typename T>
struct FtrlOracle {
  FtrlHyperparams<AccumulateType<T>> h;
  bool multiply_linear_by_lr;

  void operator()(T& var, T& accum, T& linear, AccumulateType<T> grad) const {
    using A = AccumulateType<T>;
    A state[3] = {Load(var), Load(accum), Load(linear)};
    Ftrl::WithStep(h, multiply_linear_by_lr, [&](const auto& step) { step(grad, state); });
    var = Store<T>(state[0]);
    accum = Store<T>(state[1]);
    linear = Store<T>(state[2]);
  }
};

template <typename T>
struct AdagradOracle {
  AdagradHyperparams<AccumulateType<T>> h;
  bool update_slots;

  void operator()(T& var, T& accum, AccumulateType<T> grad) const {
    using A = AccumulateType<T>;
    A state[2] = {Load(var), Load(accum)};
    Adagrad::WithStep(h, update_slots, [&](const auto& step) { step(grad, state); });
    var = Store<T>(state[0]);
    if (update_slots) accum = Store<T>(state[1]);
  }
};

std::string Describe(const char* op, const char* type, int64_t rows, int64_t row_size,
                     int64_t n, const char* pattern) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer),
                "%s %s rows=%" PRId64 " row_size=%" PRId64 " indices=%" PRId64 " (%s)", op, type,
                rows, row_size, n, pattern);
  return buffer;
}

// ---------------------------------------------------------------------------------- dense loops

template <typename T>
void FuzzDenseFtrl(std::mt19937_64& rng, int64_t size, double special_rate) {
  using A = AccumulateType<T>;
  auto var = RandomVector<T>(rng, size, special_rate);
  auto accum = RandomVector<T>(rng, size, special_rate, /*non_negative=*/true);
  auto linear = RandomVector<T>(rng, size, special_rate);
  const auto grad = RandomVector<T>(rng, size, special_rate);
  const FtrlOracle<T> oracle{RandomFtrlHyperparams<A>(rng), rng() % 2 == 0};
  auto var1 = var, accum1 = accum, linear1 = linear;
  cpu::Apply<Ftrl>(oracle.h, oracle.multiply_linear_by_lr,
                   {var1.data(), {accum1.data(), linear1.data()}}, grad.data(), size,
                   ThreadedParallelFor);
  bool ok = true;
  for (int64_t i = 0; i < size; ++i) {
    oracle(var[i], accum[i], linear[i], Load(grad[i]));
    ok = ok && SameValue(var[i], var1[i]) && SameValue(accum[i], accum1[i]) &&
         SameValue(linear[i], linear1[i]);
  }
  Check(ok, Describe("dense FTRL", TypeName<T>(), size, 1, 0, "all elements"));
}

template <typename T>
void FuzzDenseAdagrad(std::mt19937_64& rng, int64_t size, double special_rate) {
  using A = AccumulateType<T>;
  auto var = RandomVector<T>(rng, size, special_rate);
  auto accum = RandomVector<T>(rng, size, special_rate, /*non_negative=*/true);
  const auto grad = RandomVector<T>(rng, size, special_rate);
  const AdagradOracle<T> oracle{RandomAdagradHyperparams<A>(rng), rng() % 2 == 0};
  auto var1 = var, accum1 = accum;
  cpu::Apply<Adagrad>(oracle.h, oracle.update_slots, {var1.data(), {accum1.data()}}, grad.data(),
                      size, ThreadedParallelFor);
  bool ok = true;
  for (int64_t i = 0; i < size; ++i) {
    oracle(var[i], accum[i], Load(grad[i]));
    ok = ok && SameValue(var[i], var1[i]) && SameValue(accum[i], accum1[i]);
  }
  Check(ok, Describe("dense Adagrad", TypeName<T>(), size, 1, 0, "all elements"));
}

// --------------------------------------------------------------------------------- sparse loops

enum class Pattern { kRandom, kUnique, kAllSame, kFirstAndLast };

const char* PatternName(Pattern p) {
  switch (p) {
    case Pattern::kRandom:
      return "random with duplicates";
    case Pattern::kUnique:
      return "unique";
    case Pattern::kAllSame:
      return "all duplicates";
    case Pattern::kFirstAndLast:
      return "first and last rows";
  }
  return "";
}

template <typename Index>
std::vector<Index> RandomIndices(std::mt19937_64& rng, int64_t rows, int64_t n, Pattern pattern) {
  std::vector<Index> indices(n);
  if (rows == 0) return indices;  // n is 0 then
  std::uniform_int_distribution<int64_t> any_row(0, rows - 1);
  switch (pattern) {
    case Pattern::kRandom:
      for (auto& i : indices) i = static_cast<Index>(any_row(rng));
      break;
    case Pattern::kUnique: {
      std::vector<Index> all(rows);
      for (int64_t r = 0; r < rows; ++r) all[r] = static_cast<Index>(r);
      std::shuffle(all.begin(), all.end(), rng);
      std::copy(all.begin(), all.begin() + n, indices.begin());
      break;
    }
    case Pattern::kAllSame:
      std::fill(indices.begin(), indices.end(), static_cast<Index>(any_row(rng)));
      break;
    case Pattern::kFirstAndLast:
      for (int64_t p = 0; p < n; ++p) indices[p] = static_cast<Index>(p % 2 ? rows - 1 : 0);
      break;
  }
  return indices;
}

// The test pool, said to have 1, 4 or a million threads: with many, the hottest rows' later
// chunks are summed ahead of the update (cpu_row_schedule.h, PlanSplit), which must not change it.
cpu::ParallelFor RandomThreads(std::mt19937_64& rng) {
  const int64_t threads[] = {1, 4, int64_t{1} << 20};
  return cpu::ParallelFor(ThreadedParallelFor, threads[rng() % 3]);
}

template <typename T, typename Index>
void FuzzSparseFtrl(std::mt19937_64& rng, int64_t rows, int64_t row_size, int64_t n,
                    Pattern pattern, double special_rate, RowGroups* groups) {
  using A = AccumulateType<T>;
  const auto indices = RandomIndices<Index>(rng, rows, n, pattern);
  auto var = RandomVector<T>(rng, rows * row_size, special_rate);
  auto accum = RandomVector<T>(rng, rows * row_size, special_rate, /*non_negative=*/true);
  auto linear = RandomVector<T>(rng, rows * row_size, special_rate);
  const auto grad = RandomVector<T>(rng, n * row_size, special_rate);
  const FtrlOracle<T> oracle{RandomFtrlHyperparams<A>(rng), rng() % 2 == 0};
  IndexError error;
  const std::string what =
      Describe("sparse FTRL", TypeName<T>(), rows, row_size, n, PatternName(pattern));
  if (!groups->Build(indices.data(), n, rows, &error)) {
    Check(false, what + ": in-range indices rejected");
    return;
  }
  auto var1 = var, accum1 = accum, linear1 = linear;
  cpu::SparseApply<Ftrl>(oracle.h, oracle.multiply_linear_by_lr,
                         {var1.data(), {accum1.data(), linear1.data()}}, grad.data(), row_size,
                         *groups, RandomThreads(rng));
  for (const auto& [row, sum] : SummedRows(indices, grad, row_size)) {
    for (int64_t j = 0; j < row_size; ++j) {
      const int64_t k = row * row_size + j;
      oracle(var[k], accum[k], linear[k], sum[j]);
    }
  }
  bool ok = true;
  for (size_t k = 0; k < var.size(); ++k) {
    ok = ok && SameValue(var[k], var1[k]) && SameValue(accum[k], accum1[k]) &&
         SameValue(linear[k], linear1[k]);
  }
  Check(ok, what);
}

template <typename T, typename Index>
void FuzzSparseAdagrad(std::mt19937_64& rng, int64_t rows, int64_t row_size, int64_t n,
                       Pattern pattern, double special_rate, RowGroups* groups) {
  using A = AccumulateType<T>;
  const auto indices = RandomIndices<Index>(rng, rows, n, pattern);
  auto var = RandomVector<T>(rng, rows * row_size, special_rate);
  auto accum = RandomVector<T>(rng, rows * row_size, special_rate, /*non_negative=*/true);
  const auto grad = RandomVector<T>(rng, n * row_size, special_rate);
  const AdagradOracle<T> oracle{RandomAdagradHyperparams<A>(rng), rng() % 2 == 0};
  IndexError error;
  const std::string what =
      Describe("sparse Adagrad", TypeName<T>(), rows, row_size, n, PatternName(pattern));
  if (!groups->Build(indices.data(), n, rows, &error)) {
    Check(false, what + ": in-range indices rejected");
    return;
  }
  auto var1 = var, accum1 = accum;
  cpu::SparseApply<Adagrad>(oracle.h, oracle.update_slots, {var1.data(), {accum1.data()}},
                            grad.data(), row_size, *groups, RandomThreads(rng));
  for (const auto& [row, sum] : SummedRows(indices, grad, row_size)) {
    for (int64_t j = 0; j < row_size; ++j) {
      const int64_t k = row * row_size + j;
      oracle(var[k], accum[k], sum[j]);
    }
  }
  bool ok = true;
  for (size_t k = 0; k < var.size(); ++k) {
    ok = ok && SameValue(var[k], var1[k]) && SameValue(accum[k], accum1[k]);
  }
  Check(ok, what);
}

// ------------------------------------------------------------------------------------ RowGroups

// Checks a successful grouping against std::map: every position in exactly one group, groups
// in ascending order of position, one group per distinct row, each group's count its length, and
// the later chunks' starts (positions kDuplicateChunkRows, 2 kDuplicateChunkRows, ... of each
// group's list) all there, in ascending order of position.
template <typename Index>
bool GroupingIsExact(const RowGroups& groups, const std::vector<Index>& indices) {
  std::map<int64_t, std::vector<int64_t>> expected;
  for (size_t p = 0; p < indices.size(); ++p) {
    expected[static_cast<int64_t>(indices[p])].push_back(static_cast<int64_t>(p));
  }
  if (groups.num_unique() != static_cast<int64_t>(expected.size())) return false;
  std::map<int64_t, std::vector<int64_t>> actual;
  std::vector<std::pair<int64_t, int64_t>> chunk_starts;  // (position, group)
  for (int64_t u = 0; u < groups.num_unique(); ++u) {
    auto& positions = actual[groups.row(u)];
    if (!positions.empty()) return false;  // a row in two groups
    for (int64_t p = groups.first_position(u); p >= 0; p = groups.next_position(p)) {
      if (p >= static_cast<int64_t>(indices.size())) return false;
      const int64_t index_in_list = static_cast<int64_t>(positions.size());
      if (index_in_list > 0 && index_in_list % kDuplicateChunkRows == 0) {
        chunk_starts.emplace_back(p, u);
      }
      positions.push_back(p);
    }
    if (groups.count(u) != static_cast<int64_t>(positions.size())) return false;
  }
  std::sort(chunk_starts.begin(), chunk_starts.end());
  const auto& listed = groups.later_chunk_starts();
  if (listed.size() != chunk_starts.size()) return false;
  for (size_t k = 0; k < listed.size(); ++k) {
    if (listed[k].position != chunk_starts[k].first || listed[k].group != chunk_starts[k].second) {
      return false;
    }
  }
  return actual == expected && groups.num_positions() == static_cast<int64_t>(indices.size());
}

template <typename Index>
void CheckRejected(RowGroups* groups, const std::vector<Index>& indices, int64_t rows,
                   int64_t position, const std::string& what) {
  IndexError error;
  const bool built = groups->Build(indices.data(), static_cast<int64_t>(indices.size()), rows,
                                   &error);
  Check(!built && error.position == position &&
            error.value == static_cast<int64_t>(indices[position]),
        what);
}

template <typename Index>
void CheckAccepted(RowGroups* groups, const std::vector<Index>& indices, int64_t rows,
                   const std::string& what) {
  IndexError error;
  const bool built = groups->Build(indices.data(), static_cast<int64_t>(indices.size()), rows,
                                   &error);
  Check(built && GroupingIsExact(*groups, indices), what);
}

void AdversarialRowGroups(std::mt19937_64& rng) {
  constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
  constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
  constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int32_t kInt32Min = std::numeric_limits<int32_t>::min();
  RowGroups groups;

  CheckAccepted<int64_t>(&groups, {}, 0, "no indices, no rows");
  CheckAccepted<int64_t>(&groups, {}, kInt64Max, "no indices, the most rows");
  CheckRejected<int64_t>(&groups, {0}, 0, 0, "any index of an empty table");
  CheckAccepted<int32_t>(&groups, {0}, 1, "one index, one row");

  // Huge tables exist only as row counts: validation and grouping never touch the rows.
  CheckAccepted<int64_t>(&groups, {kInt64Max - 1, 0, kInt64Max - 1, int64_t{1} << 62}, kInt64Max,
                         "indices near the int64 maximum of a table of 2^63-1 rows");
  CheckRejected<int64_t>(&groups, {0, kInt64Max}, kInt64Max, 1, "int64 maximum out of range");
  CheckRejected<int64_t>(&groups, {kInt64Min, 0}, kInt64Max, 0, "int64 minimum rejected");
  CheckRejected<int64_t>(&groups, {1, 2, -1}, 10, 2, "-1 in last position");
  CheckRejected<int64_t>(&groups, {int64_t{1} << 40, 2}, 10, 0, "2^40 in first position");
  CheckRejected<int64_t>(&groups, {int64_t{1} << 32, 2}, 10, 0, "2^32 (0 in int32) rejected");
  CheckRejected<int32_t>(&groups, {kInt32Min}, kInt64Max, 0, "int32 minimum rejected");
  CheckRejected<int32_t>(&groups, {0, kInt32Max}, kInt32Max, 1, "int32 maximum out of range");
  CheckAccepted<int32_t>(&groups, {kInt32Max, 0, kInt32Max}, int64_t{1} << 40,
                         "int32 maximum within a larger table");

  // The first bad index by position is the one reported, wherever it is.
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 300)(rng);
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 100)(rng);
    std::vector<int64_t> indices = RandomIndices<int64_t>(rng, rows, n, Pattern::kRandom);
    const int64_t bad = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
    indices[bad] = trial % 2 ? rows + trial : -1 - trial;
    if (bad + 1 < n) indices.back() = kInt64Min;
    CheckRejected<int64_t>(&groups, indices, rows, bad, "first bad index reported");
  }

  // Rows that collide in the multiplicative hash's top bits (multiples of large powers of two),
  // and many distinct rows with one duplicate at the end.
  for (int shift : {20, 32, 40, 56}) {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < 64; ++i) indices.push_back((i % 16) << shift);
    CheckAccepted<int64_t>(&groups, indices, kInt64Max,
                           "colliding rows " + std::to_string(shift));
  }
  std::vector<int64_t> many(100000);
  for (int64_t i = 0; i < static_cast<int64_t>(many.size()); ++i) many[i] = i * 7919;
  many.back() = many.front();
  CheckAccepted<int64_t>(&groups, many, kInt64Max, "100000 indices, one duplicate");
  // Reused after a much larger call (its buffers are released) and after a failed call.
  CheckAccepted<int32_t>(&groups, {3, 3, 1}, 4, "small grouping after a large one");
  CheckRejected<int32_t>(&groups, {3, 9}, 4, 1, "rejected in a reused RowGroups");
  CheckAccepted<int32_t>(&groups, {2, 0, 2}, 4, "accepted after a rejection");
  std::vector<int32_t> all_same(50000, 5);
  CheckAccepted<int32_t>(&groups, all_same, 6, "50000 duplicates of one row");
}

// ---------------------------------------------------- row-wise updates and 16-bit state (any S)

template <typename Step, typename = void>
constexpr bool kIsRowwise = false;
template <typename Step>
constexpr bool kIsRowwise<Step, std::void_t<decltype(Step::kPerRow)>> = true;

// One row of an update outside the loops: the oracle for state of type S (var's, or 16-bit for
// a float var). Row-wise: the row's mean square (RowSumOfSquares, the loops' order), BeginRow,
// the per-row values stored, then each element with the row's coefficients; element-wise: each
// element's step. Every store as StoreState does it (rounding by the array and the position: an
// element's index in its array, a per-row value's row), the var's in its own type.
template <typename Step, typename T, typename S>
void OracleRow(const Step& step, const StateRounding& rounding, int64_t row, int64_t row_size,
               const AccumulateType<T>* grad, T* var, S* const* slots) {
  using A = AccumulateType<T>;
  constexpr int kN = Step::kNumState;
  const auto per_row = [](int i) {
    if constexpr (kIsRowwise<Step>) {
      return Step::kPerRow[i];
    } else {
      return false;
    }
  };
  A row_values[kN] = {};
  // Every element of the row with `update(grad, values)`, the step with the row's coefficients.
  const auto elements = [&](const auto& update) {
    for (int64_t j = 0; j < row_size; ++j) {
      const int64_t k = row * row_size + j;
      A values[kN];
      values[0] = static_cast<A>(Load(var[k]));
      for (int i = 1; i < kN; ++i) {
        values[i] = per_row(i) ? row_values[i] : static_cast<A>(Load(slots[i - 1][k]));
      }
      update(grad[j], values);
      var[k] = StoreState<T, T>(rounding, values[0], 0, k);
      for (int i = 1; i < Step::kNumWritten; ++i) {
        if (!per_row(i)) slots[i - 1][k] = StoreState<T, S>(rounding, values[i], i, k);
      }
    }
  };
  if constexpr (kIsRowwise<Step>) {
    for (int i = 1; i < kN; ++i) {
      if (per_row(i)) row_values[i] = static_cast<A>(Load(slots[i - 1][row]));
    }
    const A mean_square = RowSumOfSquares<A>(grad, row_size) / static_cast<A>(row_size);
    const auto coefficients = step.BeginRow(mean_square, row_values);
    for (int i = 1; i < Step::kNumWritten; ++i) {
      if (per_row(i)) slots[i - 1][row] = StoreState<T, S>(rounding, row_values[i], i, row);
    }
    elements([&](A g, A(&values)[kN]) { step(coefficients, g, values); });
  } else {
    elements([&](A g, A(&values)[kN]) { step(g, values); });
  }
}

template <typename Optimizer, typename A>
typename Optimizer::template Hyperparams<A> RandomHyperparams(std::mt19937_64& rng) {
  if constexpr (std::is_same_v<typename Optimizer::template Hyperparams<A>,
                               FtrlHyperparams<A>>) {
    return RandomFtrlHyperparams<A>(rng);
  } else {
    return RandomAdagradHyperparams<A>(rng);
  }
}

// The state of one fuzz case: var (T) and the slots (S; per-row ones one value per row), the
// accumulator non-negative; for 16-bit state, a random rounding.
template <typename Optimizer, typename T, typename S>
struct FuzzState {
  static constexpr int kNumSlots = Optimizer::kNumState - 1;
  std::vector<T> var;
  std::vector<S> slots[kNumSlots];
  StateRounding rounding;

  FuzzState(std::mt19937_64& rng, int64_t rows, int64_t row_size, double special_rate) {
    var = RandomVector<T>(rng, rows * row_size, special_rate);
    for (int i = 0; i < kNumSlots; ++i) {
      slots[i] = RandomVector<S>(rng, PerRow(i + 1) ? rows : rows * row_size, special_rate,
                                 /*non_negative=*/i == 0);
    }
    if (!std::is_same_v<S, T>) {
      const bool stochastic = rng() % 2 == 0;
      const uint64_t seed = rng();
      rounding = {stochastic, RoundingKey(static_cast<int64_t>(seed), rng() % 100000)};
    }
  }
  static bool PerRow(int i) {
    if constexpr (Optimizer::kRowwise) {
      return Optimizer::kPerRow[i];
    } else {
      return false;
    }
  }
  // The arrays as the loops and the oracle take them.
  StateArrays<T, Optimizer::kNumState, S> Arrays() {
    StateArrays<T, Optimizer::kNumState, S> arrays{var.data(), {}, rounding};
    for (int i = 0; i < kNumSlots; ++i) arrays.slots[i] = slots[i].data();
    return arrays;
  }
  bool SameAs(const FuzzState& other) const {
    bool same = var.size() == other.var.size();
    for (size_t k = 0; same && k < var.size(); ++k) same = SameValue(var[k], other.var[k]);
    for (int i = 0; i < kNumSlots; ++i) {
      same = same && slots[i].size() == other.slots[i].size();
      for (size_t k = 0; same && k < slots[i].size(); ++k) {
        same = SameValue(slots[i][k], other.slots[i][k]);
      }
    }
    return same;
  }
};

template <typename Optimizer, typename T, typename S>
std::string DescribeState(const char* kind, int64_t rows, int64_t row_size, int64_t n,
                          const char* pattern, const StateRounding& rounding) {
  return Describe(kind, TypeName<T>(), rows, row_size, n, pattern) + " " + Optimizer::kName +
         " state " + TypeName<S>() + (rounding.stochastic ? " stochastic" : "");
}

template <typename Optimizer, typename T, typename S, typename Index>
void FuzzSparseState(std::mt19937_64& rng, int64_t rows, int64_t row_size, int64_t n,
                     Pattern pattern, double special_rate, RowGroups* groups) {
  using A = AccumulateType<T>;
  const auto indices = RandomIndices<Index>(rng, rows, n, pattern);
  FuzzState<Optimizer, T, S> expected(rng, rows, row_size, special_rate);
  const auto grad = RandomVector<T>(rng, n * row_size, special_rate);
  const auto h = RandomHyperparams<Optimizer, A>(rng);
  const bool flag = rng() % 2 == 0;
  const std::string what = DescribeState<Optimizer, T, S>(
      "sparse", rows, row_size, n, PatternName(pattern), expected.rounding);
  IndexError error;
  if (!groups->Build(indices.data(), n, rows, &error)) {
    Check(false, what + ": in-range indices rejected");
    return;
  }
  auto actual = expected;
  cpu::SparseApply<Optimizer>(h, flag, actual.Arrays(), grad.data(), row_size, *groups,
                              RandomThreads(rng));
  const auto oracle = expected.Arrays();
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    for (const auto& [row, sum] : SummedRows(indices, grad, row_size)) {
      OracleRow<std::decay_t<decltype(step)>, T, S>(step, oracle.rounding, row, row_size,
                                                    sum.data(), oracle.var, oracle.slots);
    }
  });
  Check(actual.SameAs(expected), what);
}

template <typename Optimizer, typename T, typename S>
void FuzzDenseState(std::mt19937_64& rng, int64_t rows, int64_t row_size, double special_rate) {
  using A = AccumulateType<T>;
  FuzzState<Optimizer, T, S> expected(rng, rows, row_size, special_rate);
  const auto grad = RandomVector<T>(rng, rows * row_size, special_rate);
  const auto h = RandomHyperparams<Optimizer, A>(rng);
  const bool flag = rng() % 2 == 0;
  auto actual = expected;
  if constexpr (Optimizer::kRowwise) {
    cpu::RowwiseApply<Optimizer>(h, flag, actual.Arrays(), grad.data(), rows, row_size,
                                 ThreadedParallelFor);
  } else {
    cpu::Apply<Optimizer>(h, flag, actual.Arrays(), grad.data(), rows * row_size,
                          ThreadedParallelFor);
  }
  const auto oracle = expected.Arrays();
  std::vector<A> grad_row(row_size);
  Optimizer::WithStep(h, flag, [&](const auto& step) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < row_size; ++j) grad_row[j] = Load(grad[r * row_size + j]);
      OracleRow<std::decay_t<decltype(step)>, T, S>(step, oracle.rounding, r, row_size,
                                                    grad_row.data(), oracle.var, oracle.slots);
    }
  });
  Check(actual.SameAs(expected), DescribeState<Optimizer, T, S>("dense", rows, row_size, 0,
                                                                "all rows", expected.rounding));
}

// Random sparse and dense cases of Optimizer with state S. Row-wise updates take rows of at
// least one element (the ops return before the loops for rows of none).
template <typename Optimizer, typename T, typename S>
void FuzzWithState(std::mt19937_64& rng, int iterations) {
  static const int64_t kRowSizes[] = {0, 1, 2, 3, 8, 16, 17, 32, 64, 129};
  RowGroups groups;
  for (int i = 0; i < iterations; ++i) {
    int64_t row_size = kRowSizes[rng() % std::size(kRowSizes)];
    if (Optimizer::kRowwise && row_size == 0) row_size = 1;
    int64_t rows = std::uniform_int_distribution<int64_t>(0, 40)(rng);
    int64_t n = std::uniform_int_distribution<int64_t>(0, 60)(rng);
    if (rng() % 8 == 0) {  // enough unique rows to be split over the threads
      rows = 4000;
      const int64_t parallel = cpu::kMinElementsToParallelize / std::max<int64_t>(row_size, 1);
      n = std::min<int64_t>(rows, std::max<int64_t>(600, parallel + 1));
    }
    const Pattern pattern = static_cast<Pattern>(rng() % 4);
    if (rows == 0) n = 0;
    if (pattern == Pattern::kUnique) n = std::min(n, rows);
    const double special_rate = std::uniform_int_distribution<int>(0, 2)(rng) * 0.1;
    if (i % 2) {
      FuzzSparseState<Optimizer, T, S, int32_t>(rng, rows, row_size, n, pattern, special_rate,
                                                &groups);
    } else {
      FuzzSparseState<Optimizer, T, S, int64_t>(rng, rows, row_size, n, pattern, special_rate,
                                                &groups);
    }
    if (i % 4 == 0) {
      // Dense: a few rows, or enough elements for the thread pool.
      const int64_t dense_rows =
          rng() % 4 ? rows : cpu::kMinElementsToParallelize / std::max<int64_t>(row_size, 1) + 3;
      FuzzDenseState<Optimizer, T, S>(rng, dense_rows, row_size, special_rate);
    }
  }
  // 5000 duplicates of one row.
  FuzzSparseState<Optimizer, T, S, int64_t>(rng, 3, 17, 5000, Pattern::kAllSame, 0.0, &groups);
}

// ---------------------------------------------------------------------------------------- runs

template <typename T>
void FuzzDenseSizes(std::mt19937_64& rng) {
  const int64_t block = cpu::kElementsPerBlock;
  const int64_t threshold = cpu::kMinElementsToParallelize;
  const int64_t sizes[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 33, 1001, threshold, threshold + 1,
                           5 * block + 3};
  for (int64_t size : sizes) {
    const double special_rate = size < 100 ? 0.3 : 0.02;
    FuzzDenseFtrl<T>(rng, size, special_rate);
    FuzzDenseAdagrad<T>(rng, size, special_rate);
  }
}

template <typename T, typename Index>
void FuzzSparseOnce(std::mt19937_64& rng, RowGroups* groups) {
  static const int64_t kRowSizes[] = {0, 1, 2, 3, 8, 16, 17, 32, 64, 129};
  const int64_t row_size = kRowSizes[rng() % std::size(kRowSizes)];
  int64_t rows = std::uniform_int_distribution<int64_t>(0, 40)(rng);
  int64_t n = std::uniform_int_distribution<int64_t>(0, 60)(rng);
  if (rng() % 8 == 0) {  // enough unique rows to be split over the threads
    rows = 4000;
    n = std::max<int64_t>(600, cpu::kMinElementsToParallelize / std::max<int64_t>(row_size, 1));
    n = std::min(n, rows);
  }
  const Pattern pattern = static_cast<Pattern>(rng() % 4);
  if (rows == 0) n = 0;
  if (pattern == Pattern::kUnique) n = std::min(n, rows);
  const double special_rate = std::uniform_int_distribution<int>(0, 2)(rng) * 0.1;
  if (rng() % 2) {
    FuzzSparseFtrl<T, Index>(rng, rows, row_size, n, pattern, special_rate, groups);
  } else {
    FuzzSparseAdagrad<T, Index>(rng, rows, row_size, n, pattern, special_rate, groups);
  }
}

template <typename T>
void FuzzType(std::mt19937_64& rng, int iterations) {
  FuzzDenseSizes<T>(rng);
  RowGroups groups;  // reused, as each TensorFlow thread reuses its own
  for (int i = 0; i < iterations; ++i) {
    if (i % 2) {
      FuzzSparseOnce<T, int32_t>(rng, &groups);
    } else {
      FuzzSparseOnce<T, int64_t>(rng, &groups);
    }
  }
  // 5000 duplicates of one row, every row of the table touched at once.
  FuzzSparseFtrl<T, int64_t>(rng, 3, 17, 5000, Pattern::kAllSame, 0.0, &groups);
  FuzzSparseAdagrad<T, int32_t>(rng, 3, 17, 5000, Pattern::kAllSame, 0.0, &groups);
  FuzzSparseFtrl<T, int32_t>(rng, 2, 5, 1, Pattern::kFirstAndLast, 0.0, &groups);
  FuzzSparseAdagrad<T, int64_t>(rng, 1000, 1, 1000, Pattern::kUnique, 0.0, &groups);
}

}  // namespace
}  // namespace tf_ftrl

int main() {
  using namespace tf_ftrl;
  const char* seed_env = std::getenv("TF_FTRL_FUZZ_SEED");
  const char* iterations_env = std::getenv("TF_FTRL_FUZZ_ITERATIONS");
  const uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  const int iterations = iterations_env ? std::atoi(iterations_env) : 100;
  std::printf("TF_FTRL_FUZZ_SEED=%" PRIu64 " TF_FTRL_FUZZ_ITERATIONS=%d\n", seed, iterations);
  std::mt19937_64 rng(seed);
  using testing::Case;
  Case("AdversarialRowGroups", [&] { AdversarialRowGroups(rng); });
  Case("Fuzz/float32", [&] { FuzzType<float>(rng, iterations); });
  Case("Fuzz/float64", [&] { FuzzType<double>(rng, iterations); });
  Case("Fuzz/float16", [&] { FuzzType<float16>(rng, iterations); });
  Case("Fuzz/bfloat16", [&] { FuzzType<bfloat16>(rng, iterations); });
  Case("FuzzRowwise/float32", [&] {
    FuzzWithState<RowwiseFtrl, float, float>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, float, float>(rng, iterations);
  });
  Case("FuzzRowwise/float64", [&] {
    FuzzWithState<RowwiseFtrl, double, double>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, double, double>(rng, iterations);
  });
  Case("FuzzRowwise/float16", [&] {
    FuzzWithState<RowwiseFtrl, float16, float16>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, float16, float16>(rng, iterations);
  });
  Case("FuzzRowwise/bfloat16", [&] {
    FuzzWithState<RowwiseFtrl, bfloat16, bfloat16>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, bfloat16, bfloat16>(rng, iterations);
  });
  // 16-bit state of float32 vars, element-wise and row-wise.
  Case("Fuzz16BitState/bfloat16", [&] {
    FuzzWithState<Ftrl, float, bfloat16>(rng, iterations);
    FuzzWithState<Adagrad, float, bfloat16>(rng, iterations);
    FuzzWithState<RowwiseFtrl, float, bfloat16>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, float, bfloat16>(rng, iterations);
  });
  Case("Fuzz16BitState/float16", [&] {
    FuzzWithState<Ftrl, float, float16>(rng, iterations);
    FuzzWithState<Adagrad, float, float16>(rng, iterations);
    FuzzWithState<RowwiseFtrl, float, float16>(rng, iterations);
    FuzzWithState<RowwiseAdagrad, float, float16>(rng, iterations);
  });
  std::printf("seed %" PRIu64 "\n", seed);
  return testing::Finish();
}
