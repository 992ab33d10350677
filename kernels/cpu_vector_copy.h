// The choice, at run time, of the copy of a CPU loop to run: the loops are compiled into a
// baseline copy and, on x86-64, AVX2 and AVX-512 copies, and the widest the CPU runs is chosen
// (the formulas vectorise, and FTRL's two square roots and three divisions per element keep a
// narrower loop compute-bound). Every copy does the same IEEE operations in the same order (no
// contraction into FMA in the build), so they round alike, bit for bit.
#pragma once

#include "kernels/numeric.h"

namespace tf_ftrl {
namespace cpu {
namespace internal {

// The loop copies, narrowest first; BestVectorCopy() is the widest this CPU and its OS support.
enum class VectorCopy { kBaseline, kAvx2, kAvx512 };

// Each copy is a function of its own (noinline), whose body is the kernel's call operator, which
// must be TF_FTRL_INLINE so that it is compiled for that copy's instructions.
template <typename Kernel>
__attribute__((noinline)) void RunBaseline(const Kernel& kernel) {
  kernel();
}

// TF_FTRL_BASELINE_COPY_ONLY (the sanitizer build's, .bazelrc) compiles the baseline copy alone:
// the other copies make the same memory accesses from the same source, for wider registers.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(TF_FTRL_BASELINE_COPY_ONLY)
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
template <typename Kernel>
__attribute__((noinline, target("avx2"))) void RunAvx2(const Kernel& kernel) {
  kernel();
}

template <typename Kernel>
__attribute__((noinline,
               target("avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512"))) void
RunAvx512(const Kernel& kernel) {
  kernel();
}
#else
inline VectorCopy BestVectorCopy() { return VectorCopy::kBaseline; }
#endif

// Runs kernel() in the chosen copy (tests run each copy the CPU supports); a copy the build or
// the CPU lacks falls back to the baseline.
template <typename Kernel>
void RunIn(VectorCopy copy, const Kernel& kernel) {
#ifdef TF_FTRL_HAVE_X86_COPIES
  if (copy == VectorCopy::kAvx512) return RunAvx512(kernel);
  if (copy == VectorCopy::kAvx2) return RunAvx2(kernel);
#endif
  RunBaseline(kernel);
}

}  // namespace internal
}  // namespace cpu
}  // namespace tf_ftrl
