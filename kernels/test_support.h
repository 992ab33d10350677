// What the TensorFlow-free C++ tests share: named cases that can be filtered, a pass/fail tally
// that prints the closing line "N passed, M failed", a ParallelFor over real threads so the loops'
// sharding is exercised, and random values of every element type.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/numeric.h"
#include "kernels/row_groups.h"

namespace tf_ftrl {
namespace testing {

struct Tally {
  int passed = 0;
  int failed = 0;
};

inline Tally& GlobalTally() {
  static Tally tally;
  return tally;
}

inline void Check(bool ok, const std::string& what) {
  if (ok) {
    ++GlobalTally().passed;
  } else {
    ++GlobalTally().failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

// The case filter: `bazel test --test_filter=PATTERN` (Bazel passes it as TESTBRIDGE_TEST_ONLY)
// or TF_FTRL_TEST_FILTER when the test binary runs by hand. A case runs when its name contains
// one of the pattern's comma-separated parts; no filter runs every case.
inline bool Selected(const std::string& name) {
  const char* filter = std::getenv("TESTBRIDGE_TEST_ONLY");
  if (filter == nullptr || *filter == '\0') filter = std::getenv("TF_FTRL_TEST_FILTER");
  if (filter == nullptr || *filter == '\0') return true;
  const std::string patterns = filter;
  size_t begin = 0;
  while (begin <= patterns.size()) {
    size_t end = patterns.find(',', begin);
    if (end == std::string::npos) end = patterns.size();
    const std::string part = patterns.substr(begin, end - begin);
    if (!part.empty() && name.find(part) != std::string::npos) return true;
    begin = end + 1;
  }
  return false;
}

// Runs the named case fn() unless the filter leaves it out, and prints its outcome.
template <typename Fn>
void Case(const std::string& name, Fn&& fn) {
  if (!Selected(name)) return;
  const int failed_before = GlobalTally().failed;
  const int passed_before = GlobalTally().passed;
  fn();
  const int failed = GlobalTally().failed - failed_before;
  std::printf("%s %s (%d checks)\n", failed == 0 ? "[  OK  ]" : "[FAILED]", name.c_str(),
              GlobalTally().passed - passed_before + failed);
}

// Prints the closing line and returns main's exit status: failure when a check failed or no
// check ran (a filter that matches no case).
inline int Finish() {
  std::printf("%d passed, %d failed\n", GlobalTally().passed, GlobalTally().failed);
  if (GlobalTally().passed + GlobalTally().failed == 0) {
    std::printf("no case ran: the filter matches no case name\n");
    return 1;
  }
  return GlobalTally().failed == 0 ? 0 : 1;
}

// Splits [0, total) over up to 4 std::threads.
inline void ThreadedParallelFor(int64_t total, int64_t,
                                const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t shards = std::min<int64_t>(4, total);
  std::vector<std::thread> threads;
  for (int64_t s = 0; s < shards; ++s) {
    threads.emplace_back([&, s] { fn(total * s / shards, total * (s + 1) / shards); });
  }
  for (auto& t : threads) t.join();
}

template <typename T>
double ToDouble(T x) {
  return static_cast<double>(Load(x));
}

template <typename T>
T FromDouble(double x) {
  return Store<T>(static_cast<AccumulateType<T>>(x));
}

// n values drawn uniformly from [lo, hi), rounded to T.
template <typename T>
std::vector<T> Random(std::mt19937_64& rng, size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> out(n);
  for (auto& x : out) x = FromDouble<T>(dist(rng));
  return out;
}

// The gradient every touched row must get, in the accumulate type: its rows' positions in
// ascending order, cut into chunks of kDuplicateChunkRows, each chunk summed in order from its
// first row, and the chunk sums added in order (row_groups.h). Written out on its own, not with
// the kernels' loop.
template <typename T, typename Index>
std::map<int64_t, std::vector<AccumulateType<T>>> SummedRows(const std::vector<Index>& indices,
                                                             const std::vector<T>& grad,
                                                             int64_t row_size) {
  using A = AccumulateType<T>;
  std::map<int64_t, std::vector<int64_t>> positions;
  for (size_t p = 0; p < indices.size(); ++p) {
    positions[static_cast<int64_t>(indices[p])].push_back(static_cast<int64_t>(p));
  }
  std::map<int64_t, std::vector<A>> sums;
  for (const auto& [row, list] : positions) {
    std::vector<std::vector<A>> chunks;
    for (size_t i = 0; i < list.size(); ++i) {
      const T* g = grad.data() + list[i] * row_size;
      if (i % kDuplicateChunkRows == 0) {
        // A chunk starts from its first row as is (0 + g would turn -0 into +0).
        chunks.emplace_back(row_size);
        for (int64_t j = 0; j < row_size; ++j) chunks.back()[j] = Load(g[j]);
      } else {
        for (int64_t j = 0; j < row_size; ++j) chunks.back()[j] += Load(g[j]);
      }
    }
    std::vector<A> sum = chunks[0];
    for (size_t c = 1; c < chunks.size(); ++c) {
      for (int64_t j = 0; j < row_size; ++j) sum[j] += chunks[c][j];
    }
    sums.emplace(row, std::move(sum));
  }
  return sums;
}

}  // namespace testing
}  // namespace tf_ftrl
