// The thread pool interface of the CPU loops: the TensorFlow OpKernels pass the op's pool, tests
// and drivers without TensorFlow pass their own threads or none.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

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

}  // namespace internal
}  // namespace cpu
}  // namespace tf_ftrl
