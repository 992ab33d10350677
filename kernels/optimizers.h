// The optimizers the library is built with: one line each. X(Name) is called with each
// description (optimizer_spec.h); the op registrations, the OpKernels, the CUDA launchers'
// instantiations and the kernel driver's functions are all made from this list.
#pragma once

#include "kernels/adagrad_math.h"
#include "kernels/ftrl_math.h"
#include "kernels/rowwise_math.h"

#define TF_FTRL_FOR_EACH_OPTIMIZER(X) \
  X(Ftrl)                             \
  X(Adagrad)

// The row-wise optimizers (rowwise_math.h): their dense CUDA launcher is gpu::RowwiseApply (it
// takes rows and row size), and their OpKernels and driver functions are made from this list.
#define TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(X) \
  X(RowwiseFtrl)                              \
  X(RowwiseAdagrad)
