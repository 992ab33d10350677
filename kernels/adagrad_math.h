// The Adagrad update of one element (TensorFlow's ApplyAdagradV2 math), the single definition
// called by the CPU loops and the CUDA kernels:
//   accum += g * g                  (only when update_slots)
//   var   -= g * lr / (sqrt(accum) + epsilon)
#pragma once

#include "kernels/numeric.h"

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

}  // namespace tf_ftrl
