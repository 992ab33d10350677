// Row-wise FTRL and Adagrad: the accumulator holds one value per row of the variable (a row is
// everything after the first dimension, D elements), not one per element, which cuts the state
// by D-fold for the accumulator. The descriptions every layer is derived from (optimizer_spec.h
// says what one holds), and their update of one row. With g_r the row's gradient (duplicate
// indices summed) and mean(g_r^2) the mean of its squares over the D elements:
//
// Row-wise Adagrad (FBGEMM's exact row-wise Adagrad):
//   accum_r += mean(g_r^2)                         (only when update_slots)
//   var     -= lr * g / (sqrt(accum_r) + epsilon)  for each element of the row
//
// Row-wise FTRL (the element-wise op's math with the row's accumulator n_r; linear stays per
// element):
//   n_r'    = n_r + mean(g_r^2)
//   sigma   = (n_r'^-p - n_r^-p) / lr              (p = lr_power; * lr with multiply_by_lr)
//   linear += g + 2 * l2_shrinkage * var - sigma * var
//   var     = |linear| > l1 ? (l1 * sign(linear) - linear) / (n_r'^-p / lr + 2 * l2) : 0
//
// With D = 1 both are exactly the element-wise updates.
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/adagrad_math.h"
#include "kernels/ftrl_math.h"
#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"

namespace tf_ftrl {

// The sum of the squares of a row's gradient, in kRowSumLanes partial sums (element i into lane
// i % kRowSumLanes) added pairwise at the end: on the CPU the partial sums vectorise (one chain of
// dependent additions would cost 4 cycles per element), and the order is fixed, so the CPU's
// vector copies and the CUDA kernels all give the same bits.
constexpr int kRowSumLanes = 16;

// Partial sum `lane` of RowSumOfSquares: the squares of elements lane, lane + kRowSumLanes, ...
// in order. (The CUDA kernels compute the partial sums by groups of kRowSumLanes threads, each
// reading every kRowSumLanes-th element, so that a group reads the row in order.)
template <typename A, typename G>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE A RowSquaresPartial(const G* __restrict__ grad, int64_t n,
                                                       int lane) {
  A partial = A(0);
  for (int64_t i = lane; i < n; i += kRowSumLanes) {
    const A g = static_cast<A>(Load(grad[i]));
    partial += g * g;
  }
  return partial;
}

// The partial sums added pairwise (overwrites them): RowSumOfSquares's last step.
template <typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE A AddRowSquaresPartials(A (&partial)[kRowSumLanes]) {
  for (int width = kRowSumLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) partial[k] += partial[k + width];
  }
  return partial[0];
}

template <typename A, typename G>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE A RowSumOfSquares(const G* __restrict__ grad, int64_t n) {
  A partial[kRowSumLanes];
  for (int k = 0; k < kRowSumLanes; ++k) partial[k] = A(0);
  int64_t i = 0;
  for (; i + kRowSumLanes <= n; i += kRowSumLanes) {
    for (int k = 0; k < kRowSumLanes; ++k) {
      const A g = static_cast<A>(Load(grad[i + k]));
      partial[k] += g * g;
    }
  }
  for (int k = 0; i + k < n; ++k) {
    const A g = static_cast<A>(Load(grad[i + k]));
    partial[k] += g * g;
  }
  return AddRowSquaresPartials(partial);
}

template <bool kUpdateSlots, typename A>
struct RowwiseAdagradStep {
  static constexpr int kNumState = 2;  // var, accum (per row)
  static constexpr bool kPerRow[kNumState] = {false, true};
  // kPerRow[i], callable in device code (which cannot read a static array member).
  TF_FTRL_HOST_DEVICE static constexpr bool PerRow(int i) { return i == 1; }
  static constexpr int kNumWritten = kUpdateSlots ? 2 : 1;
  static constexpr int64_t kCyclesPerElement = 4;
  AdagradHyperparams<A> h;

  struct Row {
    A scale;  // lr / (sqrt(accum_r) + epsilon)
  };
  // Updates the row's per-row state in `state` from the mean of its squared gradient.
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE Row BeginRow(A mean_square, A (&state)[kNumState]) const {
    if (kUpdateSlots) state[1] += mean_square;
    return {h.lr / (Sqrt(state[1]) + h.epsilon)};
  }
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void operator()(const Row& row, A grad,
                                                     A (&state)[kNumState]) const {
    state[0] -= grad * row.scale;
  }
};

template <bool kSqrtPower, bool kMultiplyLinearByLr, typename A>
struct RowwiseFtrlStep {
  static constexpr int kNumState = 3;  // var, accum (per row), linear
  static constexpr bool kPerRow[kNumState] = {false, true, false};
  TF_FTRL_HOST_DEVICE static constexpr bool PerRow(int i) { return i == 1; }
  static constexpr int kNumWritten = 3;
  static constexpr int64_t kCyclesPerElement = 8;
  FtrlHyperparams<A> h;

  // The row's coefficients: the element-wise step's, from the row's accumulator.
  using Row = FtrlCoefficients<A>;
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE Row BeginRow(A mean_square, A (&state)[kNumState]) const {
    const A accum = state[1];
    state[1] = accum + mean_square;
    return FtrlCoefficientsOf<kSqrtPower, kMultiplyLinearByLr>(h, accum, state[1]);
  }
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void operator()(const Row& row, A grad,
                                                     A (&state)[kNumState]) const {
    FtrlLinearAndVar<kMultiplyLinearByLr>(h, row, grad, state[0], state[2]);
  }
};

// The descriptions: the element-wise ones' hyperparameters, flags and checks, with row-wise
// steps and per-row accumulators.
struct RowwiseAdagrad : Adagrad {
  static constexpr const char* kName = "RowwiseAdagrad";
  static constexpr const char* kSnakeName = "rowwise_adagrad";
  static constexpr bool kRowwise = true;
  static constexpr bool kPerRow[kNumState] = {false, true};
  static constexpr const char* kSummary =
      "Row-wise Adagrad update (one accumulator value per row of var; accum has shape\n"
      "[var.shape[0]]): accum[r] += mean over the row of grad^2 (if update_slots);\n"
      "var -= lr * grad / (sqrt(accum[r]) + epsilon).";

  template <typename A, typename Fn>
  static auto WithStep(const Hyperparams<A>& h, bool update_slots, Fn&& fn) {
    return WithStepOf<RowwiseAdagradStep>(h, update_slots, fn);
  }
};

struct RowwiseFtrl : Ftrl {
  static constexpr const char* kName = "RowwiseFtrl";
  static constexpr const char* kSnakeName = "rowwise_ftrl";
  static constexpr bool kRowwise = true;
  static constexpr bool kPerRow[kNumState] = {false, true, false};
  static constexpr const char* kSummary =
      "Row-wise FTRL-Proximal update (one accumulator value per row of var; accum has shape\n"
      "[var.shape[0]], linear the shape of var): accum[r] grows by the mean over the row of\n"
      "grad^2, and each element's step is the element-wise op's with accum[r].\n"
      "A step at lr = 0 changes nothing (the formula divides by lr).";

  template <typename A, typename Fn>
  static auto WithStep(const Hyperparams<A>& h, bool multiply_linear_by_lr, Fn&& fn) {
    return WithStepOf<RowwiseFtrlStep>(h, multiply_linear_by_lr, fn);
  }
};

}  // namespace tf_ftrl
