// The shape checks of the fused ops, shared by the OpKernels (training_kernels.h) and the XLA
// lowering (xla_ops.cc), so that both reject a bad call with the same message.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tensorflow {
namespace tf_ftrl_checks {

inline absl::Status CheckDenseGrad(const TensorShape& var, const TensorShape& grad) {
  if (!var.IsSameSize(grad)) {
    return absl::InvalidArgumentError(absl::StrCat("var and grad do not have the same shape: ",
                                                   var.DebugString(), " vs ",
                                                   grad.DebugString()));
  }
  return absl::OkStatus();
}

// Checks the shapes of a sparse update (the indices' values are checked where they live, before
// anything is written) and sets *row_size, the elements per row of var.
inline absl::Status CheckSparseShapes(const TensorShape& var, const TensorShape& grad,
                                      const TensorShape& indices, int64_t* row_size) {
  if (var.dims() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("var must be at least 1-D, got shape ", var.DebugString()));
  }
  if (!TensorShapeUtils::IsVector(indices)) {
    return absl::InvalidArgumentError(
        absl::StrCat("indices must be a vector, got shape ", indices.DebugString()));
  }
  if (grad.dims() < 1 || grad.dim_size(0) != indices.dim_size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grad must be the same size as indices in the first dimension: ", grad.DebugString(),
        " vs ", indices.DebugString()));
  }
  bool rows_match = grad.dims() == var.dims();
  for (int d = 1; rows_match && d < var.dims(); ++d) {
    rows_match = var.dim_size(d) == grad.dim_size(d);
  }
  if (!rows_match) {
    return absl::InvalidArgumentError(
        absl::StrCat("var and grad do not agree beyond the first dimension: ",
                     var.DebugString(), " vs ", grad.DebugString()));
  }
  *row_size = 1;
  for (int d = 1; d < var.dims(); ++d) *row_size *= var.dim_size(d);
  return absl::OkStatus();
}

}  // namespace tf_ftrl_checks
}  // namespace tensorflow
