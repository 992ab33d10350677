// One sparse update of the CPU loops, called over and over, for a profiler (perf record) or for
// the time of that update alone: 2M x 64 float32 table, 16,384 uniform ids per call from 32 sets
// (ids and gradients), 2 threads started per call as tools/bench_cpu_kernels.cc does, huge pages
// advised for every array. Prints the median time per call.
//
//   bazel build -c opt //tools:profile_sparse_update
//   perf record bazel-bin/tools/profile_sparse_update rowwise_adagrad 6000 [--warm-gradient]
//
// Updates: ftrl, adagrad, rowwise_ftrl, rowwise_adagrad (float32 state). --warm-gradient reads
// each call's gradient just before the call, as a backward pass writes it just before its
// update; without it the gradient comes from memory (the 32 sets are 128 MiB).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "tools/started_threads.h"

namespace {

namespace cpu = tf_ftrl::cpu;
using Clock = std::chrono::steady_clock;

void ThreadedParallelFor(int64_t total, int64_t,
                         const std::function<void(int64_t, int64_t)>& fn) {
  tf_ftrl_tools::RunOnStartedThreads(2, total, fn);
}

// 2 MiB aligned and advised for huge pages, as the optimizers advise large variables.
float* Filled(int64_t n, float value) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = (n * sizeof(float) + kHuge - 1) / kHuge * kHuge;
  auto* p = static_cast<float*>(std::aligned_alloc(kHuge, bytes));
  madvise(p, bytes, MADV_HUGEPAGE);
  std::fill(p, p + n, value);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string update = argc > 1 ? argv[1] : "";
  const int calls = argc > 2 ? std::atoi(argv[2]) : 2000;
  const bool warm = argc > 3 && std::string(argv[3]) == "--warm-gradient";
  const std::vector<std::string> updates = {"ftrl", "adagrad", "rowwise_ftrl", "rowwise_adagrad"};
  if (std::find(updates.begin(), updates.end(), update) == updates.end() || calls < 1) {
    std::fprintf(stderr, "usage: %s ftrl|adagrad|rowwise_ftrl|rowwise_adagrad [CALLS] "
                 "[--warm-gradient]\n", argv[0]);
    return 2;
  }
  const int64_t rows = 2'000'000, dim = 64, ids = 16'384;
  const bool rowwise = update.rfind("rowwise_", 0) == 0;
  float* table = Filled(rows * dim, 0.5f);
  float* accum = Filled(rowwise ? rows : rows * dim, 0.3f);
  float* linear = update.find("ftrl") != std::string::npos ? Filled(rows * dim, 0.1f) : nullptr;
  constexpr int kSets = 32;
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  std::normal_distribution<float> normal(0, 0.01f);
  std::vector<tf_ftrl::RowGroups> groups(kSets);
  std::vector<float*> grads;
  for (int k = 0; k < kSets; ++k) {
    std::vector<int64_t> indices(ids);
    for (auto& i : indices) i = pick(rng);
    tf_ftrl::IndexError error;
    groups[k].Build(indices.data(), ids, rows, &error);
    float* grad = Filled(ids * dim, 0.0f);
    for (int64_t i = 0; i < ids * dim; ++i) grad[i] = normal(rng);
    grads.push_back(grad);
  }
  const tf_ftrl::AdagradHyperparams<float> adagrad{0.01f, 1e-7f};
  const tf_ftrl::FtrlHyperparams<float> ftrl{0.01f, 0.001f, 0.001f, 0.0f, -0.5f};
  std::vector<double> ms;
  volatile float sink = 0;
  for (int c = 0; c < calls; ++c) {
    const int k = c % kSets;
    if (warm) {
      float sum = 0;
      for (int64_t i = 0; i < ids * dim; i += 16) sum += grads[k][i];
      sink = sum;
    }
    const auto start = Clock::now();
    if (update == "ftrl") {
      cpu::SparseApply<tf_ftrl::Ftrl>(ftrl, false, {table, {accum, linear}}, grads[k], dim,
                                      groups[k], ThreadedParallelFor);
    } else if (update == "adagrad") {
      cpu::SparseApply<tf_ftrl::Adagrad>(adagrad, true, {table, {accum}}, grads[k], dim,
                                         groups[k], ThreadedParallelFor);
    } else if (update == "rowwise_ftrl") {
      cpu::SparseApply<tf_ftrl::RowwiseFtrl>(ftrl, false, {table, {accum, linear}}, grads[k],
                                             dim, groups[k], ThreadedParallelFor);
    } else {
      cpu::SparseApply<tf_ftrl::RowwiseAdagrad>(adagrad, true, {table, {accum}}, grads[k], dim,
                                                groups[k], ThreadedParallelFor);
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  (void)sink;
  std::sort(ms.begin(), ms.end());
  std::printf("%s, %d calls%s: median %.3f ms per call\n", update.c_str(), calls,
              warm ? ", gradient read just before each" : "", ms[ms.size() / 2]);
  return 0;
}
