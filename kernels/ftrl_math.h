// The FTRL-Proximal update of one element: the single definition of the math, called by the
// CPU loops and the CUDA kernels alike.
//
// It is TensorFlow's ApplyFtrlV2 (and its multiply_linear_by_lr variant), evaluated in the same
// order so results agree with the built-in ops to the last bit where the arithmetic type is the
// same:
//   g_shrunk   = g + 2 * l2_shrinkage * var        (shrinkage uses the old var)
//   new_accum  = accum + g * g                      (the raw gradient, not g_shrunk)
//   sigma      = (new_accum^-p - accum^-p) / lr     (p = lr_power; * lr with multiply_by_lr)
//   linear    += g_shrunk - sigma * var
//   var        = |linear| > l1 ? (l1 * sign(linear) - linear) / (new_accum^-p / lr + 2 * l2) : 0
#pragma once

#include "kernels/numeric.h"

namespace tf_ftrl {

template <typename A>
struct FtrlHyperparams {
  A lr;
  A l1;
  A l2;
  A l2_shrinkage;
  A lr_power;
};

// kSqrtPower: lr_power == -0.5, where x^-p is sqrt(x) (no pow).
// kMultiplyLinearByLr: linear holds lr * (the usual linear), as with multiply_linear_by_lr.
template <bool kSqrtPower, bool kMultiplyLinearByLr, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void FtrlUpdate(const FtrlHyperparams<A>& h, A grad, A& var,
                                                   A& accum, A& linear) {
  const A two(2);
  const A grad_shrunk = grad + two * h.l2_shrinkage * var;
  const A new_accum = accum + grad * grad;
  A new_accum_power;
  A old_accum_power;
  if (kSqrtPower) {
    new_accum_power = Sqrt(new_accum);
    old_accum_power = Sqrt(accum);
  } else {
    new_accum_power = Pow(new_accum, -h.lr_power);
    old_accum_power = Pow(accum, -h.lr_power);
  }
  A l1;
  A denominator;
  if (kMultiplyLinearByLr) {
    linear += grad_shrunk * h.lr - (new_accum_power - old_accum_power) * var;
    l1 = h.l1 * h.lr;
    denominator = new_accum_power + two * h.l2 * h.lr;
  } else {
    linear += grad_shrunk - (new_accum_power - old_accum_power) / h.lr * var;
    l1 = h.l1;
    denominator = new_accum_power / h.lr + two * h.l2;
  }
  // Computed unconditionally and then selected: a division under a condition cannot be
  // vectorised without masked instructions.
  const A unclipped = ((linear > A(0) ? l1 : -l1) - linear) / denominator;
  var = Abs(linear) > l1 ? unclipped : A(0);
  accum = new_accum;
}

}  // namespace tf_ftrl
