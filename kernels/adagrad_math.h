// Adagrad: the description every layer is derived from (optimizer_spec.h says what one holds),
// and the update of one element (TensorFlow's ApplyAdagradV2 math), the single definition called
// by the CPU loops and the CUDA kernels:
//   accum += g * g                  (only when update_slots)
//   var   -= g * lr / (sqrt(accum) + epsilon)
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/numeric.h"
#include "kernels/optimizer_spec.h"

namespace tf_ftrl {

template <typename A>
struct AdagradHyperparams {
  A lr;
  A epsilon;
};

template <bool kUpdateSlots, typename A>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void AdagradUpdate(const AdagradHyperparams<A>& h, A grad,
                                                      A& var, A& accum) {
  if (kUpdateSlots) accum += grad * grad;
  var -= grad * h.lr / (Sqrt(accum) + h.epsilon);
}

template <bool kUpdateSlots, typename A>
struct AdagradStep {
  static constexpr int kNumState = 2;  // var, accum
  static constexpr int kNumWritten = kUpdateSlots ? 2 : 1;
  static constexpr int64_t kCyclesPerElement = 6;
  AdagradHyperparams<A> h;
  TF_FTRL_HOST_DEVICE TF_FTRL_INLINE void operator()(A grad, A (&state)[kNumState]) const {
    AdagradUpdate<kUpdateSlots>(h, grad, state[0], state[1]);
  }
};

struct Adagrad {
  static constexpr const char* kName = "Adagrad";
  static constexpr const char* kSnakeName = "adagrad";
  static constexpr int kNumState = 2;
  static constexpr const char* kStateNames[kNumState] = {"var", "accum"};
  static constexpr bool kRowwise = false;
  static constexpr bool kPerRow[kNumState] = {false, false};
  static constexpr int kNumHyperparams = 2;
  // At lr = 0 (where warm-up schedules start) the accumulator grows and the variable stays, as in
  // Keras.
  static constexpr HyperparamSpec kHyperparams[kNumHyperparams] = {
      {"lr", Bound::kNonNegative, std::numeric_limits<double>::quiet_NaN()},
      {"epsilon", Bound::kNonNegative, 1e-7},
  };
  static constexpr FlagSpec kFlag = {"update_slots", true};
  static constexpr const char* kSummary =
      "Adagrad update (the math of ResourceApplyAdagradV2):\n"
      "accum += grad^2 (if update_slots); var -= lr * grad / (sqrt(accum) + epsilon).";

  template <typename A>
  using Hyperparams = AdagradHyperparams<A>;

  template <typename A>
  static Hyperparams<A> FromValues(const A (&v)[kNumHyperparams]) {
    return {v[0], v[1]};
  }

  template <typename A>
  static bool ChangesNothing(const Hyperparams<A>&) {
    return false;
  }

  // WithStepOf hands out a Step of the template `Step` (AdagradStep here, RowwiseAdagradStep for
  // the row-wise description).
  template <template <bool, typename> class Step, typename A, typename Fn>
  static auto WithStepOf(const Hyperparams<A>& h, bool update_slots, Fn&& fn) {
    return DispatchFlags(update_slots, false, [&](auto slots, auto) {
      return fn(Step<slots(), A>{h});
    });
  }
  template <typename A, typename Fn>
  static auto WithStep(const Hyperparams<A>& h, bool update_slots, Fn&& fn) {
    return WithStepOf<AdagradStep>(h, update_slots, fn);
  }
};

}  // namespace tf_ftrl
