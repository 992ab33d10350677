// FTRL-Proximal: the description every layer is derived from (optimizer_spec.h says what one
// holds), and the update of one element, the single definition of the math, called by the CPU
// loops and the CUDA kernels alike.
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

#include <cstdint>
#include <limits>

#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"

namespace tf_ftrl {

template <typename A>
struct FtrlHyperparams {
  A lr;
  A l1;
  A l2;
  A l2_shrinkage;
  A lr_power;
};

// What a step computes once for the elements that share an accumulator (one element, or with
// row-wise state a whole row) from its old and new value.
template <typename A>
struct FtrlCoefficients {
  A sigma;        // what multiplies var in linear's update
  A l1;           // the threshold: l1 (* lr with multiply_linear_by_lr)
  A denominator;  // new_accum^-p / lr + 2 * l2 (both * lr with multiply_linear_by_lr)
};

// kSqrtPower: lr_power == -0.5, where x^-p is sqrt(x) (no pow).
// kMultiplyLinearByLr: linear holds lr * (the usual linear), as with multiply_linear_by_lr.
template <bool kSqrtPower, bool kMultiplyLinearByLr, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE FtrlCoefficients<A> FtrlCoefficientsOf(
    const FtrlHyperparams<A>& h, A accum, A new_accum) {
  const A two(2);
  A new_accum_power;
  A old_accum_power;
  if (kSqrtPower) {
    new_accum_power = Sqrt(new_accum);
    old_accum_power = Sqrt(accum);
  } else {
    new_accum_power = Pow(new_accum, -h.lr_power);
    old_accum_power = Pow(accum, -h.lr_power);
  }
  if (kMultiplyLinearByLr) {
    return {new_accum_power - old_accum_power, h.l1 * h.lr,
            new_accum_power + two * h.l2 * h.lr};
  }
  return {(new_accum_power - old_accum_power) / h.lr, h.l1, new_accum_power / h.lr + two * h.l2};
}

// linear's update and var's closed form, for one element.
template <bool kMultiplyLinearByLr, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void FtrlLinearAndVar(const FtrlHyperparams<A>& h,
                                                         const FtrlCoefficients<A>& c, A grad,
                                                         A& var, A& linear) {
  const A grad_shrunk = grad + A(2) * h.l2_shrinkage * var;  // shrinkage uses the old var
  if (kMultiplyLinearByLr) {
    linear += grad_shrunk * h.lr - c.sigma * var;
  } else {
    linear += grad_shrunk - c.sigma * var;
  }
  // Computed unconditionally and then selected: a division under a condition cannot be
  // vectorised without masked instructions.
  const A unclipped = ((linear > A(0) ? c.l1 : -c.l1) - linear) / c.denominator;
  var = Abs(linear) > c.l1 ? unclipped : A(0);
}

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void FtrlUpdate(const FtrlHyperparams<A>& h, A grad, A& var,
                                                   A& accum, A& linear) {
  const A new_accum = accum + grad * grad;  // the raw gradient, not the shrunk one
  FtrlLinearAndVar<kMultiplyLinearByLr>(
      h, FtrlCoefficientsOf<kSqrtPower, kMultiplyLinearByLr>(h, accum, new_accum), grad, var,
      linear);
  accum = new_accum;
}

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename A>
struct FtrlStep {
  static constexpr int kNumState = 3;  // var, accum, linear
  static constexpr int kNumWritten = 3;
  // Approximate CPU cycles per element: two square roots and three divisions, or two pows.
  static constexpr int64_t kCyclesPerElement = kSqrtPower ? 12 : 60;
  FtrlHyperparams<A> h;
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void operator()(A grad, A (&state)[kNumState]) const {
    FtrlUpdate<kSqrtPower, kMultiplyLinearByLr>(h, grad, state[0], state[1], state[2]);
  }
};

struct Ftrl {
  static constexpr const char* kName = "Ftrl";
  static constexpr const char* kSnakeName = "ftrl";
  static constexpr int kNumState = 3;
  static constexpr const char* kStateNames[kNumState] = {"var", "accum", "linear"};
  static constexpr bool kRowwise = false;
  static constexpr bool kPerRow[kNumState] = {false, false, false};
  static constexpr int kNumHyperparams = 5;
  // lr = 0 is a step that changes nothing (see ChangesNothing).
  static constexpr HyperparamSpec kHyperparams[kNumHyperparams] = {
      {"lr", Bound::kNonNegative, std::numeric_limits<double>::quiet_NaN()},
      {"l1", Bound::kNonNegative, std::numeric_limits<double>::quiet_NaN()},
      {"l2", Bound::kNonNegative, std::numeric_limits<double>::quiet_NaN()},
      {"l2_shrinkage", Bound::kNonNegative, 0.0},
      {"lr_power", Bound::kNonPositive, -0.5},
  };
  static constexpr FlagSpec kFlag = {"multiply_linear_by_lr", false};
  static constexpr const char* kSummary =
      "FTRL-Proximal update of var, accum and linear (the math of ResourceApplyFtrlV2):\n"
      "l2_shrinkage shrinks the gradient used for linear, the accumulator uses the raw gradient.\n"
      "A step at lr = 0 changes nothing (the formula divides by lr).";

  template <typename A>
  using Hyperparams = FtrlHyperparams<A>;

  template <typename A>
  static Hyperparams<A> FromValues(const A (&v)[kNumHyperparams]) {
    return {v[0], v[1], v[2], v[3], v[4]};
  }

  // FTRL divides by lr, so its formula has no value at lr = 0 (TensorFlow's op rejects it, Keras
  // writes NaN). Such a step, where warm-up schedules start, changes nothing: the variable and
  // both slots keep their values.
  template <typename A>
  static bool ChangesNothing(const Hyperparams<A>& h) {
    return h.lr == A(0);
  }

  // lr_power == -0.5 is FTRL's common case, where x^-p is sqrt(x). WithStepOf hands out a Step
  // of the template `Step` (FtrlStep here, RowwiseFtrlStep for the row-wise description).
  template <template <bool, bool, typename> class Step, typename A, typename Fn>
  static auto WithStepOf(const Hyperparams<A>& h, bool multiply_linear_by_lr, Fn&& fn) {
    return DispatchFlags(h.lr_power == A(-0.5), multiply_linear_by_lr,
                         [&](auto sqrt_power, auto by_lr) {
                           return fn(Step<sqrt_power(), by_lr(), A>{h});
                         });
  }
  template <typename A, typename Fn>
  static auto WithStep(const Hyperparams<A>& h, bool multiply_linear_by_lr, Fn&& fn) {
    return WithStepOf<FtrlStep>(h, multiply_linear_by_lr, fn);
  }
};

}  // namespace tf_ftrl
