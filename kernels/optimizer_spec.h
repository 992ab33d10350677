// What an optimizer description (ftrl_math.h, adagrad_math.h) declares, and the helpers every
// layer uses to read one. No TensorFlow or CUDA header: included by the CPU loops, the CUDA
// kernels, the OpKernels, the op registrations and the kernel driver alike.
//
// A description is a struct with:
//   kName                   "Ftrl": the ops are FusedResourceApply<kName> and
//                           FusedResourceSparseApply<kName>;
//   kSnakeName              "ftrl": the kernel driver's functions are apply_<kSnakeName>, ...;
//   kNumState, kStateNames  the arrays it updates, var first, as the ops' resource inputs;
//   kRowwise, kPerRow       whether its step is row-wise, and which arrays hold one value per
//                           row of var (shape [var.shape[0]]) instead of one per element;
//   kNumHyperparams, kHyperparams
//                           its scalar hyperparameters in the ops' input order (HyperparamSpec);
//   kFlag                   its one boolean attr (FlagSpec);
//   kSummary                what the dense op does, for the op's documentation;
//   Hyperparams<A>          the hyperparameters as the step reads them, made from values in
//                           kHyperparams order by FromValues;
//   ChangesNothing(h)       whether a step with these hyperparameters leaves every array as it
//                           is (the ops then write nothing, but a sparse op still checks indices);
//   WithStep(h, flag, fn)   calls fn(step) with the per-element Step for these hyperparameters
//                           and flag, and returns its result.
// A Step has kNumState, kNumWritten (the first kNumWritten arrays change and are stored back),
// kCyclesPerElement (for the CPU thread pool's sharding) and
// operator()(A grad, A (&state)[kNumState]), the update of one element. A row-wise Step (of a
// description with kRowwise) has kPerRow too, and updates a row in two parts:
// BeginRow(A mean_square, A (&state)[kNumState]) updates the per-row values in state from the
// mean of the row's squared gradient and returns a Row of per-row coefficients; then
// operator()(const Row&, A grad, A (&state)[kNumState]) updates each element's values.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/numeric.h"

namespace tf_ftrl {

// The values a hyperparameter may take. Every bound also rejects NaN and infinities.
enum class Bound { kPositive, kNonNegative, kNonPositive };

struct HyperparamSpec {
  const char* name;  // as the ops' input and the kernel driver's keyword
  Bound bound;
  // The kernel driver's default; NaN: the argument is required.
  double driver_default;
};

struct FlagSpec {
  const char* name;  // the ops' attr and the kernel driver's keyword
  bool default_value;
};

// The arrays an update reads and writes, in the order its Step takes them: var (of type T, grad's
// type) first, then the optimizer's state (slots, of type S: T, or bfloat16 or float16 for a
// float32 var, stored as `rounding` says). The math runs in T's accumulate type either way.
template <typename T, int kNumArrays, typename S = T>
struct StateArrays {
  using Var = T;
  using Slot = S;
  static constexpr int kNumSlots = kNumArrays - 1;
  T* var;
  S* slots[kNumSlots];
  StateRounding rounding;
};

// Array I of `state` (0: var).
template <int I, typename State>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE auto* ArrayAt(const State& state) {
  if constexpr (I == 0) {
    return state.var;
  } else {
    return state.slots[I - 1];
  }
}

template <bool kValue>
using Bool = std::integral_constant<bool, kValue>;

// Turns runtime flags into compile-time constants, so that the CPU loops and the CUDA kernels
// compile one specialised body per flag combination instead of branching per element: calls
// fn(Bool<a>(), Bool<b>()) and returns its result.
template <typename Fn>
auto DispatchFlags(bool a, bool b, Fn&& fn) {
  if (a) return b ? fn(Bool<true>(), Bool<true>()) : fn(Bool<true>(), Bool<false>());
  return b ? fn(Bool<false>(), Bool<true>()) : fn(Bool<false>(), Bool<false>());
}

}  // namespace tf_ftrl
