// The thread pool of the standalone CPU benchmarks (bench_cpu_kernels, profile_sparse_update,
// ab_cpu_loops): a cpu::ParallelFor whose shards each get a std::thread started for the call.
// With 2-4 threads the start (~20 us) is small next to a sparse update's work.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace tf_ftrl_tools {

// fn over [0, total) in min(num_threads, total) equal shards: the first on the calling thread,
// each other on a thread of its own.
inline void RunOnStartedThreads(int64_t num_threads, int64_t total,
                                const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t shards = std::min<int64_t>(num_threads, total);
  std::vector<std::thread> threads;
  for (int64_t s = 1; s < shards; ++s) {
    threads.emplace_back([&, s] { fn(total * s / shards, total * (s + 1) / shards); });
  }
  if (shards > 0) fn(0, total / shards);
  for (auto& t : threads) t.join();
}

}  // namespace tf_ftrl_tools
