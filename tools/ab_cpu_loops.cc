// The sparse CPU loops of two versions of kernels/ in one binary: this tree's (namespace tf_ftrl)
// and an older revision's (namespace tf_ftrl_old, under kernels_old/, written by
// tools/ab_cpu_loops.sh), timed in interleaved rounds in a new seeded order each round, on the
// same tables and ids (2M x 64 float32, 16,384 uniform ids per call, 2 threads). Prints each
// case's median time in both versions and new / old. Built and run by tools/ab_cpu_loops.sh, in
// several builds with other code alignments: on the Zen 5 VM the placement of a loop alone
// moves its time by up to 13% (docs/benchmarks.md, "Row-wise state").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "tools/started_threads.h"
#include "kernels_old/cpu_loops.h"
#include "kernels_old/optimizers.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kThreads = 2;

void ThreadedParallelFor(int64_t total, int64_t,
                         const std::function<void(int64_t, int64_t)>& fn) {
  tf_ftrl_tools::RunOnStartedThreads(kThreads, total, fn);
}

// Cache-line aligned, as TensorFlow allocates tensors.
template <typename T>
T* Filled(int64_t n, T value) {
  auto* p = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
  std::fill(p, p + n, value);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 120;
  const uint64_t order_seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
  const int64_t rows = 2'000'000, dim = 64, ids = 16'384;
  float* table = Filled(rows * dim, 0.5f);
  float* accum = Filled(rows * dim, 0.3f);
  float* linear = Filled(rows * dim, 0.1f);
  float* row_accum = Filled(rows, 0.3f);
  using B = tf_ftrl::bfloat16;
  using OldB = tf_ftrl_old::bfloat16;
  B* accum16 = Filled(rows * dim, tf_ftrl::Store<B>(0.3f));
  B* linear16 = Filled(rows * dim, tf_ftrl::Store<B>(0.1f));
  B* row_accum16 = Filled(rows, tf_ftrl::Store<B>(0.3f));
  // The same bfloat16 bits under the old namespace's type.
  auto* old_accum16 = reinterpret_cast<OldB*>(accum16);
  auto* old_linear16 = reinterpret_cast<OldB*>(linear16);
  auto* old_row_accum16 = reinterpret_cast<OldB*>(row_accum16);

  // New ids and gradients for every call, from 32 sets.
  constexpr int kSets = 32;
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  std::normal_distribution<float> normal(0, 0.01f);
  std::vector<tf_ftrl::RowGroups> groups(kSets);
  std::vector<tf_ftrl_old::RowGroups> old_groups(kSets);
  std::vector<float*> grads;
  for (int k = 0; k < kSets; ++k) {
    std::vector<int64_t> indices(ids);
    for (auto& i : indices) i = pick(rng);
    tf_ftrl::IndexError error;
    tf_ftrl_old::IndexError old_error;
    groups[k].Build(indices.data(), ids, rows, &error);
    old_groups[k].Build(indices.data(), ids, rows, &old_error);
    float* grad = Filled(ids * dim, 0.0f);
    for (int64_t i = 0; i < ids * dim; ++i) grad[i] = normal(rng);
    grads.push_back(grad);
  }
  const tf_ftrl::AdagradHyperparams<float> adagrad{0.01f, 1e-7f};
  const tf_ftrl_old::AdagradHyperparams<float> old_adagrad{0.01f, 1e-7f};
  const tf_ftrl::FtrlHyperparams<float> ftrl{0.01f, 0.001f, 0.001f, 0.0f, -0.5f};
  const tf_ftrl_old::FtrlHyperparams<float> old_ftrl{0.01f, 0.001f, 0.001f, 0.0f, -0.5f};

  int next = 0;
  // Each case in the old version, then the new one; 16-bit state rounds stochastically.
  namespace o = tf_ftrl_old;
  namespace n = tf_ftrl;
  struct Case {
    const char* name;
    std::function<void()> old_fn, new_fn;
  };
  const auto key = [&] { return uint64_t{7} + next; };
  std::vector<Case> cases = {
      {"FTRL",
       [&] { const int k = next++ % kSets;
             o::cpu::SparseApply<o::Ftrl>(old_ftrl, false, {table, {accum, linear}}, grads[k],
                                          dim, old_groups[k], ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::cpu::SparseApply<n::Ftrl>(ftrl, false, {table, {accum, linear}}, grads[k], dim,
                                          groups[k], ThreadedParallelFor); }},
      {"Adagrad",
       [&] { const int k = next++ % kSets;
             o::cpu::SparseApply<o::Adagrad>(old_adagrad, true, {table, {accum}}, grads[k], dim,
                                             old_groups[k], ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::cpu::SparseApply<n::Adagrad>(adagrad, true, {table, {accum}}, grads[k], dim,
                                             groups[k], ThreadedParallelFor); }},
      {"row-wise FTRL",
       [&] { const int k = next++ % kSets;
             o::cpu::SparseApply<o::RowwiseFtrl>(old_ftrl, false, {table, {row_accum, linear}},
                                                 grads[k], dim, old_groups[k],
                                                 ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::cpu::SparseApply<n::RowwiseFtrl>(ftrl, false, {table, {row_accum, linear}},
                                                 grads[k], dim, groups[k],
                                                 ThreadedParallelFor); }},
      {"row-wise Adagrad",
       [&] { const int k = next++ % kSets;
             o::cpu::SparseApply<o::RowwiseAdagrad>(old_adagrad, true, {table, {row_accum}},
                                                    grads[k], dim, old_groups[k],
                                                    ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::cpu::SparseApply<n::RowwiseAdagrad>(adagrad, true, {table, {row_accum}},
                                                    grads[k], dim, groups[k],
                                                    ThreadedParallelFor); }},
      {"FTRL, bfloat16 state",
       [&] { const int k = next++ % kSets;
             o::StateArrays<float, 3, OldB> state{table, {old_accum16, old_linear16}};
             state.rounding = {true, key()};
             o::cpu::SparseApply<o::Ftrl>(old_ftrl, false, state, grads[k], dim, old_groups[k],
                                          ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::StateArrays<float, 3, B> state{table, {accum16, linear16}};
             state.rounding = {true, key()};
             n::cpu::SparseApply<n::Ftrl>(ftrl, false, state, grads[k], dim, groups[k],
                                          ThreadedParallelFor); }},
      {"Adagrad, bfloat16 state",
       [&] { const int k = next++ % kSets;
             o::StateArrays<float, 2, OldB> state{table, {old_accum16}};
             state.rounding = {true, key()};
             o::cpu::SparseApply<o::Adagrad>(old_adagrad, true, state, grads[k], dim,
                                             old_groups[k], ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::StateArrays<float, 2, B> state{table, {accum16}};
             state.rounding = {true, key()};
             n::cpu::SparseApply<n::Adagrad>(adagrad, true, state, grads[k], dim, groups[k],
                                             ThreadedParallelFor); }},
      {"row-wise FTRL, bfloat16",
       [&] { const int k = next++ % kSets;
             o::StateArrays<float, 3, OldB> state{table, {old_row_accum16, old_linear16}};
             state.rounding = {true, key()};
             o::cpu::SparseApply<o::RowwiseFtrl>(old_ftrl, false, state, grads[k], dim,
                                                 old_groups[k], ThreadedParallelFor); },
       [&] { const int k = next++ % kSets;
             n::StateArrays<float, 3, B> state{table, {row_accum16, linear16}};
             state.rounding = {true, key()};
             n::cpu::SparseApply<n::RowwiseFtrl>(ftrl, false, state, grads[k], dim, groups[k],
                                                 ThreadedParallelFor); }},
  };

  // calls[2 * c] is case c's old version, calls[2 * c + 1] its new one.
  std::vector<const std::function<void()>*> calls;
  for (const Case& c : cases) {
    calls.push_back(&c.old_fn);
    calls.push_back(&c.new_fn);
  }
  for (const auto* call : calls) (*call)();  // warm-up
  std::vector<std::vector<double>> times(calls.size());
  std::vector<size_t> order(calls.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 shuffler(order_seed);
  for (int r = 0; r < rounds; ++r) {
    std::shuffle(order.begin(), order.end(), shuffler);
    for (const size_t i : order) {
      const auto start = Clock::now();
      (*calls[i])();
      times[i].push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
  std::vector<double> medians;
  for (auto& t : times) {
    std::sort(t.begin(), t.end());
    medians.push_back(t[t.size() / 2] * 1e3);
  }
  for (size_t c = 0; c < cases.size(); ++c) {
    std::printf("%-26s old %7.3f ms  new %7.3f ms  new/old %.3f\n", cases[c].name,
                medians[2 * c], medians[2 * c + 1], medians[2 * c + 1] / medians[2 * c]);
  }
  std::printf("%-26s old %.2fx  new %.2fx\n", "row-wise FTRL speed-up", medians[0] / medians[4],
              medians[1] / medians[5]);
  std::printf("%-26s old %.2fx  new %.2fx\n", "row-wise Adagrad speed-up",
              medians[2] / medians[6], medians[3] / medians[7]);
}
