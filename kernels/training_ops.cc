// Registrations of the four fused ops: inputs, attrs, shape functions and docs.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tf_version.h"

// The TensorFlow version this library was compiled against, as a marker that tf_ftrl/ops.py
// reads from the file before loading it (a library built for another version may not load).
extern "C" __attribute__((used, visibility("default"))) const char tf_ftrl_build_info[] =
    "tf_ftrl:built_against_tensorflow=" TF_FTRL_BUILT_AGAINST_TF_VERSION ";";

namespace tensorflow {
namespace {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// The shape held by a resource-variable input, or unknown.
ShapeHandle VariableShape(InferenceContext* c, int input) {
  const auto* handle_data = c->input_handle_shapes_and_types(input);
  if (handle_data != nullptr && handle_data->size() == 1) return (*handle_data)[0].shape;
  return c->UnknownShape();
}

absl::Status ScalarInputs(InferenceContext* c, int first, int end) {
  ShapeHandle unused;
  for (int i = first; i < end; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &unused));
  return absl::OkStatus();
}

// Inputs [0, num_variables) are variables of one shape; grad follows them.
absl::Status DenseShapeFn(InferenceContext* c, int num_variables) {
  ShapeHandle shape = VariableShape(c, 0);
  for (int i = 1; i < num_variables; ++i) {
    TF_RETURN_IF_ERROR(c->Merge(shape, VariableShape(c, i), &shape));
  }
  TF_RETURN_IF_ERROR(c->Merge(shape, c->input(num_variables), &shape));
  return ScalarInputs(c, num_variables + 1, c->num_inputs());
}

// Inputs [0, num_variables) are variables of one shape (rank >= 1), then grad, then indices:
// grad is [len(indices)] + var.shape[1:].
absl::Status SparseShapeFn(InferenceContext* c, int num_variables) {
  ShapeHandle shape = VariableShape(c, 0);
  for (int i = 1; i < num_variables; ++i) {
    TF_RETURN_IF_ERROR(c->Merge(shape, VariableShape(c, i), &shape));
  }
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(shape, 1, &shape));
  ShapeHandle grad;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(num_variables), 1, &grad));
  ShapeHandle indices;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(num_variables + 1), 1, &indices));
  shape_inference::DimensionHandle unused_dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(grad, 0), c->Dim(indices, 0), &unused_dim));
  ShapeHandle var_row;
  ShapeHandle grad_row;
  TF_RETURN_IF_ERROR(c->Subshape(shape, 1, &var_row));
  TF_RETURN_IF_ERROR(c->Subshape(grad, 1, &grad_row));
  TF_RETURN_IF_ERROR(c->Merge(var_row, grad_row, &var_row));
  return ScalarInputs(c, num_variables + 2, c->num_inputs());
}

}  // namespace

REGISTER_OP("FusedResourceApplyFtrl")
    .Input("var: resource")
    .Input("accum: resource")
    .Input("linear: resource")
    .Input("grad: T")
    .Input("lr: T")
    .Input("l1: T")
    .Input("l2: T")
    .Input("l2_shrinkage: T")
    .Input("lr_power: T")
    .Attr("T: {float, double, half, bfloat16}")
    .Attr("use_locking: bool = false")
    .Attr("multiply_linear_by_lr: bool = false")
    .SetShapeFn([](InferenceContext* c) { return DenseShapeFn(c, 3); })
    .Doc(R"doc(
Fused one-pass FTRL-Proximal update of var, accum and linear (the math of
ResourceApplyFtrlV2): l2_shrinkage shrinks the gradient used for linear, the accumulator uses the
raw gradient. Requires lr >= 0, l1 >= 0, l2 >= 0, l2_shrinkage >= 0, lr_power <= 0; a step
at lr = 0 changes nothing (the formula divides by lr).
)doc");

REGISTER_OP("FusedResourceSparseApplyFtrl")
    .Input("var: resource")
    .Input("accum: resource")
    .Input("linear: resource")
    .Input("grad: T")
    .Input("indices: Tindices")
    .Input("lr: T")
    .Input("l1: T")
    .Input("l2: T")
    .Input("l2_shrinkage: T")
    .Input("lr_power: T")
    .Attr("T: {float, double, half, bfloat16}")
    .Attr("Tindices: {int32, int64}")
    .Attr("use_locking: bool = false")
    .Attr("multiply_linear_by_lr: bool = false")
    .SetShapeFn([](InferenceContext* c) { return SparseShapeFn(c, 3); })
    .Doc(R"doc(
Fused FTRL-Proximal update of the rows of var, accum and linear named by indices. Duplicate
indices are summed first, so the result equals the dense update with the densified gradient on
those rows; other rows are untouched. Every index is checked against [0, rows) before anything
is written.
)doc");

REGISTER_OP("FusedResourceApplyAdagrad")
    .Input("var: resource")
    .Input("accum: resource")
    .Input("grad: T")
    .Input("lr: T")
    .Input("epsilon: T")
    .Attr("T: {float, double, half, bfloat16}")
    .Attr("use_locking: bool = false")
    .Attr("update_slots: bool = true")
    .SetShapeFn([](InferenceContext* c) { return DenseShapeFn(c, 2); })
    .Doc(R"doc(
Fused one-pass Adagrad update (the math of ResourceApplyAdagradV2):
accum += grad^2 (if update_slots); var -= lr * grad / (sqrt(accum) + epsilon). Requires
lr >= 0, epsilon >= 0.
)doc");

REGISTER_OP("FusedResourceSparseApplyAdagrad")
    .Input("var: resource")
    .Input("accum: resource")
    .Input("grad: T")
    .Input("indices: Tindices")
    .Input("lr: T")
    .Input("epsilon: T")
    .Attr("T: {float, double, half, bfloat16}")
    .Attr("Tindices: {int32, int64}")
    .Attr("use_locking: bool = false")
    .Attr("update_slots: bool = true")
    .SetShapeFn([](InferenceContext* c) { return SparseShapeFn(c, 2); })
    .Doc(R"doc(
Fused Adagrad update of the rows of var and accum named by indices; duplicate indices are summed
first. Every index is checked against [0, rows) before anything is written.
)doc");

}  // namespace tensorflow
