// Registrations of every optimizer's fused ops (inputs, attrs, shape functions and docs),
// derived from its description (optimizer_spec.h) for each optimizer of optimizers.h:
//   FusedResourceApply<Name>(state..., grad, hyperparameters..., stochastic_rounding)
//   FusedResourceSparseApply<Name>(state..., grad, indices, hyperparameters..., ...)
// and for the element-wise ones the multi-tensor dense op:
//   FusedResourceMultiApply<Name>(N * state..., N * grad, hyperparameters..., ...)
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

#include "kernels/optimizers.h"
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

// A shape function's failure, opened with the words the kernels use for the same problem (the
// shape function fails first, as a graph is built, with shape inference's own words after them).
absl::Status Explained(const absl::Status& status, const std::string& what) {
  if (status.ok()) return status;
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", status.message()));
}

absl::Status ScalarInputs(InferenceContext* c, int first, int end) {
  ShapeHandle unused;
  for (int i = first; i < end; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &unused));
  return absl::OkStatus();
}

// The number of stochastic_rounding inputs (the last inputs), each [seed, step].
int RoundingInputs(InferenceContext* c) {
  int n = 0;
  if (!c->GetAttr("N", &n).ok()) return 0;
  return n;
}

absl::Status RoundingShapes(InferenceContext* c) {
  for (int i = c->num_inputs() - RoundingInputs(c); i < c->num_inputs(); ++i) {
    ShapeHandle pair;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &pair));
    shape_inference::DimensionHandle unused;
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(pair, 0), 2, &unused));
  }
  return absl::OkStatus();
}

// Merges the shapes of the variable inputs [1, per_row.size()) (named `names`) into var's
// `shape`; a per-row variable holds one value per row of var (shape [var.shape[0]]).
absl::Status MergeVariables(InferenceContext* c, const std::vector<bool>& per_row,
                            const std::vector<std::string>& names, ShapeHandle* shape) {
  *shape = VariableShape(c, 0);
  for (size_t i = 1; i < per_row.size(); ++i) {
    if (per_row[i]) {
      const std::string what = absl::StrCat(names[i], " must hold one value per row of var");
      TF_RETURN_IF_ERROR(Explained(c->WithRankAtLeast(*shape, 1, shape), what));
      ShapeHandle rows;
      TF_RETURN_IF_ERROR(
          Explained(c->WithRank(VariableShape(c, static_cast<int>(i)), 1, &rows), what));
      shape_inference::DimensionHandle unused;
      TF_RETURN_IF_ERROR(Explained(c->Merge(c->Dim(*shape, 0), c->Dim(rows, 0), &unused), what));
    } else {
      TF_RETURN_IF_ERROR(
          Explained(c->Merge(*shape, VariableShape(c, static_cast<int>(i)), shape),
                    absl::StrCat("var and ", names[i], " do not have the same shape")));
    }
  }
  return absl::OkStatus();
}

// Inputs [0, num_variables) are variables (of var's shape, or one value per row); grad follows.
absl::Status DenseShapeFn(InferenceContext* c, const std::vector<bool>& per_row,
                          const std::vector<std::string>& names) {
  const int num_variables = static_cast<int>(per_row.size());
  ShapeHandle shape;
  TF_RETURN_IF_ERROR(MergeVariables(c, per_row, names, &shape));
  TF_RETURN_IF_ERROR(Explained(c->Merge(shape, c->input(num_variables), &shape),
                               "var and grad do not have the same shape"));
  return ScalarInputs(c, num_variables + 1, c->num_inputs() - RoundingInputs(c));
}

// Inputs [0, num_variables) are variables (of var's shape, rank >= 1, or one value per row),
// then grad, then indices:
// grad is [len(indices)] + var.shape[1:].
absl::Status SparseShapeFn(InferenceContext* c, const std::vector<bool>& per_row,
                           const std::vector<std::string>& names) {
  const int num_variables = static_cast<int>(per_row.size());
  ShapeHandle shape;
  TF_RETURN_IF_ERROR(MergeVariables(c, per_row, names, &shape));
  TF_RETURN_IF_ERROR(
      Explained(c->WithRankAtLeast(shape, 1, &shape), "var must be at least 1-D"));
  ShapeHandle grad;
  const char* const grad_rows = "grad must be the same size as indices in the first dimension";
  TF_RETURN_IF_ERROR(Explained(c->WithRankAtLeast(c->input(num_variables), 1, &grad), grad_rows));
  ShapeHandle indices;
  TF_RETURN_IF_ERROR(Explained(c->WithRank(c->input(num_variables + 1), 1, &indices),
                               "indices must be a vector"));
  shape_inference::DimensionHandle unused_dim;
  TF_RETURN_IF_ERROR(
      Explained(c->Merge(c->Dim(grad, 0), c->Dim(indices, 0), &unused_dim), grad_rows));
  ShapeHandle var_row;
  ShapeHandle grad_row;
  const char* const beyond = "var and grad do not agree beyond the first dimension";
  TF_RETURN_IF_ERROR(c->Subshape(shape, 1, &var_row));
  TF_RETURN_IF_ERROR(c->Subshape(grad, 1, &grad_row));
  TF_RETURN_IF_ERROR(Explained(c->Merge(var_row, grad_row, &var_row), beyond));
  return ScalarInputs(c, num_variables + 2, c->num_inputs() - RoundingInputs(c));
}

const char* BoundText(tf_ftrl::Bound bound) {
  switch (bound) {
    case tf_ftrl::Bound::kPositive: return "> 0";
    case tf_ftrl::Bound::kNonNegative: return ">= 0";
    case tf_ftrl::Bound::kNonPositive: return "<= 0";
  }
  return "";
}

template <typename Optimizer>
void RegisterOps() {
  for (const bool sparse : {false, true}) {
    const std::string name =
        std::string(sparse ? "FusedResourceSparseApply" : "FusedResourceApply") + Optimizer::kName;
    register_op::OpDefBuilderWrapper op(name.c_str());
    for (const char* state : Optimizer::kStateNames) op.Input(std::string(state) + ": resource");
    op.Input("grad: T");
    if (sparse) op.Input("indices: Tindices");
    std::string bounds;
    for (const tf_ftrl::HyperparamSpec& h : Optimizer::kHyperparams) {
      op.Input(std::string(h.name) + ": T");
      bounds += std::string(bounds.empty() ? "" : ", ") + h.name + " " + BoundText(h.bound);
    }
    // Optional (a list of zero or one tensor, so graphs saved before it existed still load):
    // [seed, step] to round state narrower than var stochastically.
    op.Input("stochastic_rounding: N * int64");
    op.Attr("T: {float, double, half, bfloat16}");
    if (sparse) op.Attr("Tindices: {int32, int64}");
    op.Attr("N: int >= 0 = 0");
    op.Attr("use_locking: bool = false");
    op.Attr(std::string(Optimizer::kFlag.name) +
            ": bool = " + (Optimizer::kFlag.default_value ? "true" : "false"));
    const std::vector<bool> per_row(std::begin(Optimizer::kPerRow),
                                    std::end(Optimizer::kPerRow));
    const std::vector<std::string> names(std::begin(Optimizer::kStateNames),
                                         std::end(Optimizer::kStateNames));
    op.SetShapeFn([per_row, names, sparse](InferenceContext* c) {
      TF_RETURN_IF_ERROR(RoundingShapes(c));
      return sparse ? SparseShapeFn(c, per_row, names) : DenseShapeFn(c, per_row, names);
    });
    op.Doc(std::string("\nFused one-pass ") + Optimizer::kSummary + "\n" +
           (sparse ? "Only the rows named by indices change; duplicate indices are summed first, "
                     "so the result\nequals the dense update with the densified gradient on "
                     "those rows. Every index is checked\nagainst [0, rows) before anything is "
                     "written.\n"
                   : "") +
           "Requires " + bounds + ", all finite.\n" +
           "The state variables (after var) have var's dtype, or bfloat16 or half for a float "
           "var:\nthe math is float, with one rounding per store, to nearest, or "
           "stochastically when\nstochastic_rounding holds [seed, step] (the bits depend only on "
           "them, the array and the\nelement's position).\n");
    op();
  }
}

// The multi-tensor dense op of an element-wise optimizer:
//   FusedResourceMultiApply<Name>(state: N * resource ..., grad: N * T, hyperparameters...)
// Input i * N + g is state i of variable g; grad[g] has var[g]'s shape.
template <typename Optimizer>
void RegisterMultiOp() {
  const std::string name = std::string("FusedResourceMultiApply") + Optimizer::kName;
  register_op::OpDefBuilderWrapper op(name.c_str());
  for (const char* state : Optimizer::kStateNames) op.Input(std::string(state) + ": N * resource");
  op.Input("grad: N * T");
  for (const tf_ftrl::HyperparamSpec& h : Optimizer::kHyperparams) {
    op.Input(std::string(h.name) + ": T");
  }
  op.Input("stochastic_rounding: M * int64");
  op.Attr("T: {float, double, half, bfloat16}");
  op.Attr("N: int >= 1");
  op.Attr("M: int >= 0 = 0");
  op.Attr("use_locking: bool = false");
  op.Attr(std::string(Optimizer::kFlag.name) +
          ": bool = " + (Optimizer::kFlag.default_value ? "true" : "false"));
  op.SetShapeFn([](InferenceContext* c) {
    int n = 0;
    int m = 0;
    TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
    TF_RETURN_IF_ERROR(c->GetAttr("M", &m));
    const int num_states = Optimizer::kNumState;
    for (int g = 0; g < n; ++g) {
      ShapeHandle shape = VariableShape(c, g);
      for (int i = 1; i < num_states; ++i) {
        TF_RETURN_IF_ERROR(Explained(
            c->Merge(shape, VariableShape(c, i * n + g), &shape),
            absl::StrCat("var[", g, "] and ", Optimizer::kStateNames[i], "[", g,
                         "] do not have the same shape")));
      }
      TF_RETURN_IF_ERROR(Explained(
          c->Merge(shape, c->input(num_states * n + g), &shape),
          absl::StrCat("var[", g, "] and grad[", g, "] do not have the same shape")));
    }
    const int first_rounding = c->num_inputs() - m;
    TF_RETURN_IF_ERROR(ScalarInputs(c, (num_states + 1) * n, first_rounding));
    for (int i = first_rounding; i < c->num_inputs(); ++i) {
      ShapeHandle pairs;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 2, &pairs));
      shape_inference::DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(pairs, 0), n, &unused));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(pairs, 1), 2, &unused));
    }
    return absl::OkStatus();
  });
  op.Doc(std::string("\nFused one-pass ") + Optimizer::kSummary +
         " on N variables in one call.\nEach variable gets the update FusedResourceApply" +
         Optimizer::kName + " gives it alone, bit for bit; the work is\ncut by elements over "
         "all of them. Every input is checked before any variable is written.\n"
         "stochastic_rounding: zero or one [N, 2] tensor, each variable's [seed, step].\n");
  op();
}

#define TF_FTRL_REGISTER_OPS(Optimizer) RegisterOps<tf_ftrl::Optimizer>();
#define TF_FTRL_REGISTER_MULTI_OP(Optimizer) RegisterMultiOp<tf_ftrl::Optimizer>();
[[maybe_unused]] const bool registered = [] {
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_OPS)
  TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_REGISTER_OPS)
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_MULTI_OP)
  return true;
}();
#undef TF_FTRL_REGISTER_MULTI_OP
#undef TF_FTRL_REGISTER_OPS

}  // namespace
}  // namespace tensorflow
