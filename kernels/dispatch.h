// Turns runtime flags into compile-time constants, so that the CPU loops and the CUDA kernels
// compile one specialised body per flag combination instead of branching per element.
#pragma once

#include <type_traits>

#include "kernels/ftrl_math.h"

namespace tf_ftrl {

template <bool kValue>
using Bool = std::integral_constant<bool, kValue>;

// Calls fn(Bool<a>(), Bool<b>()) and returns its result.
template <typename Fn>
auto DispatchFlags(bool a, bool b, Fn&& fn) {
  if (a) return b ? fn(Bool<true>(), Bool<true>()) : fn(Bool<true>(), Bool<false>());
  return b ? fn(Bool<false>(), Bool<true>()) : fn(Bool<false>(), Bool<false>());
}

// lr_power == -0.5 is FTRL's common case, where x^-p is sqrt(x): FtrlUpdate<kSqrtPower = true>.
template <typename A>
bool IsSqrtPower(const FtrlHyperparams<A>& h) {
  return h.lr_power == A(-0.5);
}

}  // namespace tf_ftrl
