// The XLA lowering of the fused ops (FusedResourceApply<Name> and FusedResourceSparseApply<Name>
// of each optimizer of TF_FTRL_FOR_EACH_OPTIMIZER and TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER, and
// FusedResourceMultiApply<Name> of the element-wise ones): under
// `tf.function(jit_compile=True)` (or Keras's `jit_compile`), each op becomes one XLA custom call
// of the target "tf_ftrl_" + the op's name (xla_custom_calls.cc), which runs the CPU loops.
//
// The call takes the variables' current values, grad, (indices,) the hyperparameters and the
// optional [seed, step], and returns the new state; its results are aliased to the state operands
// (output_operand_aliasing), so XLA hands the call the variables' buffers to update in place
// instead of writing a copy of a whole table. The new values are assigned back to the variables
// as any XLA-compiled resource update is.
//
// The shapes are checked here, with the OpKernels' messages (shape_checks.h); the hyperparameters'
// bounds and the indices' values are only known when the call runs, and the custom call checks
// them before it writes anything.
//
// Registered for XLA's CPU JIT device (targets on XLA's host platform), and when built with CUDA
// (--config=cuda) for its GPU JIT device too (targets on platform "CUDA").
#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/optimizers.h"
#include "kernels/shape_checks.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/compiler/tf2xla/xla_resource.h"
#include "tensorflow/core/framework/kernel_def_builder.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/types.h"
#include "tf_version.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/shape_util.h"

// The TensorFlow version this library was compiled against, which tf_ftrl/ops.py reads from the
// file before loading it, as for the op library (training_ops.cc).
extern "C" __attribute__((used, visibility("default"))) const char tf_ftrl_xla_build_info[] =
    "tf_ftrl:built_against_tensorflow=" TF_FTRL_BUILT_AGAINST_TF_VERSION ";";

namespace tensorflow {
namespace {

// The optimizer's flag attr, as the custom call's attribute dictionary (MLIR syntax, which the
// XLA FFI decodes into the handler's attributes).
std::string FlagAttribute(const char* name, bool value) {
  return absl::StrCat("{", name, " = ", value ? "true" : "false", "}");
}

// The rules of the OpKernels (training_kernels.h, LockedVariables) for state variable `name` of
// var `var`, with their messages. Its dtype: the state variables share one, the first one's
// (`first`, of `first_type`), which is var's or, narrower, bfloat16 or half (the registrations
// take float vars only).
absl::Status CheckStateDtype(const std::string& name, DataType type, const std::string& first,
                             DataType first_type, const std::string& var, DataType var_type) {
  if (type != first_type) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has dtype ", DataTypeString(type), " but ", first, " has dtype ",
        DataTypeString(first_type), ": the optimizer's state variables share one dtype"));
  }
  if (type != var_type && type != DT_BFLOAT16 && type != DT_HALF) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has dtype ", DataTypeString(type), " but ", var, " has dtype ",
        DataTypeString(var_type),
        ": the state has var's dtype, or bfloat16 or half for a float var"));
  }
  return absl::OkStatus();
}

// Its shape: var's, or for a per-row array (Optimizer::kPerRow) one value per row of var.
absl::Status CheckStateShape(const std::string& name, bool per_row, const TensorShape& shape,
                             const std::string& var, const TensorShape& var_shape) {
  if (per_row) {
    if (var_shape.dims() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          var, " must be at least 1-D for a row-wise update, got shape ",
          var_shape.DebugString()));
    }
    if (shape.dims() != 1 || shape.dim_size(0) != var_shape.dim_size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " must hold one value per row of ", var, ", shape [", var_shape.dim_size(0),
          "], but has shape ", shape.DebugString()));
    }
    return absl::OkStatus();
  }
  if (!shape.IsSameSize(var_shape)) {
    return absl::InvalidArgumentError(absl::StrCat(var, " and ", name,
                                                   " do not have the same shape: ",
                                                   var_shape.DebugString(), " vs ",
                                                   shape.DebugString()));
  }
  return absl::OkStatus();
}

// Appends the hyperparameters, inputs [first, first + kNumHyperparams), to `operands`: run-time
// scalars, each checked to be a scalar.
template <typename Optimizer>
absl::Status AddHyperparams(XlaOpKernelContext* ctx, int first,
                            std::vector<xla::XlaOp>* operands) {
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    const TensorShape shape = ctx->InputShape(first + i);
    if (!TensorShapeUtils::IsScalar(shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Optimizer::kHyperparams[i].name, " is not a scalar: ", shape.DebugString()));
    }
    operands->push_back(ctx->Input(first + i));
  }
  return absl::OkStatus();
}

// A sparse update's grad and indices made static where their first dimension is dynamic, as
// inside XLA after tf.unique or a boolean mask (a bounded size, known only when the call runs),
// which a custom call cannot take: the arrays at their bound, where the positions past the size
// repeat the first index with gradient rows of -0.0, which leave that row's summed gradient
// unchanged, bit for bit (x + -0.0 == x for every x). With no positions at all they hold index 0
// with rows of +0.0, and `any` (a scalar pred, "some position is real") is set for the caller,
// which makes the step one that changes nothing (FTRL: lr = 0; Adagrad's step with a zero
// gradient writes back every value it read). Unchanged where nothing is dynamic (`any` stays
// invalid).
absl::Status StaticSparseRows(xla::XlaBuilder* builder, xla::XlaOp* grad, xla::XlaOp* indices,
                              xla::XlaOp* any) {
  absl::StatusOr<xla::Shape> grad_shape = builder->GetShape(*grad);
  TF_RETURN_IF_ERROR(grad_shape.status());
  absl::StatusOr<xla::Shape> index_shape = builder->GetShape(*indices);
  TF_RETURN_IF_ERROR(index_shape.status());
  const bool dynamic_grad =
      grad_shape->dimensions_size() >= 1 && grad_shape->is_dynamic_dimension(0);
  const bool dynamic_indices =
      index_shape->dimensions_size() == 1 && index_shape->is_dynamic_dimension(0);
  if (!dynamic_grad && !dynamic_indices) return absl::OkStatus();
  for (int d = 1; d < grad_shape->dimensions_size(); ++d) {
    if (grad_shape->is_dynamic_dimension(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grad's dimension ", d, " has a dynamic size inside XLA; only the first (the number of "
          "indices) may"));
    }
  }
  const xla::XlaOp size = xla::GetDimensionSize(dynamic_indices ? *indices : *grad, 0);
  xla::XlaOp rows = dynamic_indices ? xla::RemoveDynamicDimension(*indices, 0) : *indices;
  xla::XlaOp values = dynamic_grad ? xla::RemoveDynamicDimension(*grad, 0) : *grad;
  const int64_t bound = index_shape->dimensions(0);
  std::vector<int64_t> grad_dims(grad_shape->dimensions().begin(),
                                 grad_shape->dimensions().end());
  *any = xla::Gt(size, xla::ConstantR0<int32_t>(builder, 0));
  if (bound == 0) {
    *indices = rows;
    *grad = values;
    return absl::OkStatus();
  }
  const xla::XlaOp real =
      xla::Lt(xla::Iota(builder, xla::S32, bound), xla::Broadcast(size, {bound}));
  const xla::XlaOp first = xla::Reshape(xla::Slice(rows, {0}, {1}, {1}), {});
  const xla::XlaOp filler = xla::Select(
      *any, first,
      xla::ConvertElementType(xla::ConstantR0<int32_t>(builder, 0), index_shape->element_type()));
  *indices = xla::Select(real, rows, xla::Broadcast(filler, {bound}));
  const xla::XlaOp pad = xla::ConvertElementType(
      xla::Select(*any, xla::ConstantR0<float>(builder, -0.0f),
                  xla::ConstantR0<float>(builder, 0.0f)),
      grad_shape->element_type());
  *grad = xla::Select(xla::BroadcastInDim(real, grad_dims, {0}), values,
                      xla::Broadcast(pad, grad_dims));
  return absl::OkStatus();
}

template <typename Optimizer, bool kSparse>
class FusedApplyXlaOp : public XlaOpKernel {
 public:
  static constexpr int kNumState = Optimizer::kNumState;
  static constexpr int kFirstHyperparam = kNumState + 1 + kSparse;

  explicit FusedApplyXlaOp(OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr(Optimizer::kFlag.name, &flag_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    const DataType dtype = ctx->input_type(kNumState);  // grad's, var's
    std::vector<xla::XlaOp> operands;
    std::vector<xla::Shape> state_shapes;
    std::vector<DataType> state_dtypes;
    TensorShape var_shape;
    XlaResource* resources[kNumState];
    for (int i = 0; i < kNumState; ++i) {
      OP_REQUIRES_OK(ctx, ctx->GetResourceInput(i, &resources[i]));
      for (int j = 0; j < i; ++j) {
        OP_REQUIRES(ctx, resources[i] != resources[j],
                    absl::InvalidArgumentError(absl::StrCat(
                        Optimizer::kStateNames[j], " and ", Optimizer::kStateNames[i],
                        " must be different variables")));
      }
      DataType type;
      TensorShape shape;
      OP_REQUIRES_OK(ctx, ctx->GetVariableTypeAndShape(i, &type, &shape));
      xla::XlaOp value;
      OP_REQUIRES_OK(ctx, ctx->ReadVariableInput(i, type, &shape, &value));
      if (i == 0) {
        var_shape = shape;
        OP_REQUIRES(ctx, type == dtype,
                    absl::InvalidArgumentError(absl::StrCat(
                        "var has dtype ", DataTypeString(type),
                        " but grad and the hyperparameters have dtype ", DataTypeString(dtype))));
      } else {
        const char* name = Optimizer::kStateNames[i];
        OP_REQUIRES_OK(ctx, CheckStateShape(name, Optimizer::kPerRow[i], shape, "var",
                                            var_shape));
        OP_REQUIRES_OK(ctx, CheckStateDtype(name, type, Optimizer::kStateNames[1],
                                            i == 1 ? type : state_dtypes[1], "var", dtype));
      }
      absl::StatusOr<xla::Shape> xla_shape = ctx->builder()->GetShape(value);
      OP_REQUIRES_OK(ctx, xla_shape.status());
      state_shapes.push_back(*xla_shape);
      state_dtypes.push_back(type);
      operands.push_back(value);
    }
    const TensorShape grad_shape = ctx->InputShape(kNumState);
    if constexpr (kSparse) {
      int64_t row_size = 0;
      OP_REQUIRES_OK(ctx, tf_ftrl_checks::CheckSparseShapes(
                              var_shape, grad_shape, ctx->InputShape(kNumState + 1), &row_size));
    } else {
      OP_REQUIRES_OK(ctx, tf_ftrl_checks::CheckDenseGrad(var_shape, grad_shape));
    }
    for (int i = kNumState; i < kFirstHyperparam; ++i) operands.push_back(ctx->Input(i));
    OP_REQUIRES_OK(ctx, AddHyperparams<Optimizer>(ctx, kFirstHyperparam, &operands));
    if constexpr (kSparse) {
      xla::XlaOp any;
      OP_REQUIRES_OK(ctx, StaticSparseRows(ctx->builder(), &operands[kNumState],
                                           &operands[kNumState + 1], &any));
      // No position at all: a step at lr = 0 where that changes nothing (FTRL). lr is the first
      // hyperparameter.
      const float zeros[Optimizer::kNumHyperparams] = {};
      if (any.valid() && std::string_view(Optimizer::kHyperparams[0].name) == "lr" &&
          Optimizer::ChangesNothing(Optimizer::template FromValues<float>(zeros))) {
        xla::XlaOp& lr = operands[kFirstHyperparam];
        absl::StatusOr<xla::Shape> lr_shape = ctx->builder()->GetShape(lr);
        OP_REQUIRES_OK(ctx, lr_shape.status());
        const xla::XlaOp zero = xla::ConvertElementType(
            xla::ConstantR0<float>(ctx->builder(), 0.0f), lr_shape->element_type());
        lr = xla::Select(any, lr, zero);
      }
    }
    const int first_rounding = kFirstHyperparam + Optimizer::kNumHyperparams;
    const int num_rounding = ctx->num_inputs() - first_rounding;
    OP_REQUIRES(ctx, num_rounding <= 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "stochastic_rounding takes at most one tensor ([seed, step], a vector of 2 "
                    "int64), got ", num_rounding)));
    if (num_rounding == 1) {
      const TensorShape shape = ctx->InputShape(first_rounding);
      OP_REQUIRES(ctx, TensorShapeUtils::IsVector(shape) && shape.num_elements() == 2,
                  absl::InvalidArgumentError(absl::StrCat(
                      "stochastic_rounding must be [seed, step], a vector of 2 int64, got shape ",
                      shape.DebugString())));
      OP_REQUIRES(ctx, state_dtypes[1] != dtype,
                  absl::InvalidArgumentError(absl::StrCat(
                      "stochastic_rounding rounds state narrower than var (bfloat16 or half "
                      "state of a float var), but the state has var's dtype, ",
                      DataTypeString(state_dtypes[1]))));
      operands.push_back(ctx->Input(first_rounding));
    }

    // Result i is state i, in the buffer of operand i.
    std::vector<std::pair<xla::ShapeIndex, std::pair<int64_t, xla::ShapeIndex>>> aliasing;
    for (int i = 0; i < kNumState; ++i) aliasing.push_back({{i}, {i, {}}});
    const std::string target = absl::StrCat("tf_ftrl_", type_string());
    xla::XlaOp call = xla::CustomCall(
        ctx->builder(), target, operands, xla::ShapeUtil::MakeTupleShape(state_shapes),
        FlagAttribute(Optimizer::kFlag.name, flag_), /*has_side_effect=*/false, aliasing,
        /*literal=*/nullptr, xla::CustomCallSchedule::SCHEDULE_NONE,
        xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
    for (int i = 0; i < kNumState; ++i) {
      OP_REQUIRES_OK(ctx, ctx->AssignVariable(i, state_dtypes[i], xla::GetTupleElement(call, i)));
    }
  }

 private:
  bool flag_;
};

// The lowering of the multi-tensor dense op of an element-wise optimizer
// (FusedResourceMultiApply<Name>): one custom call of the target "tf_ftrl_" + the op's name for
// all N variables. Its operands: state i of variable g at i * N + g (the op's input order), the N
// grads, the hyperparameters and the optional [N, 2] stochastic_rounding; its results: the
// N * kNumState state arrays, each aliased to its operand. The checks are the OpKernel's
// (FusedMultiApplyOp), with its names ("accum[3]").
template <typename Optimizer>
class FusedMultiApplyXlaOp : public XlaOpKernel {
 public:
  static constexpr int kNumState = Optimizer::kNumState;

  explicit FusedMultiApplyXlaOp(OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &num_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(Optimizer::kFlag.name, &flag_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    const int num_arrays = kNumState * num_;  // the state inputs, then the grads
    const DataType dtype = ctx->input_type(num_arrays);
    const auto name = [&](int input) {
      return absl::StrCat(Optimizer::kStateNames[input / num_], "[", input % num_, "]");
    };
    std::vector<std::pair<XlaResource*, int>> by_resource(num_arrays);
    for (int k = 0; k < num_arrays; ++k) {
      OP_REQUIRES_OK(ctx, ctx->GetResourceInput(k, &by_resource[k].first));
      by_resource[k].second = k;
    }
    std::sort(by_resource.begin(), by_resource.end());
    for (int k = 1; k < num_arrays; ++k) {
      OP_REQUIRES(ctx, by_resource[k].first != by_resource[k - 1].first,
                  absl::InvalidArgumentError(absl::StrCat(
                      name(std::min(by_resource[k].second, by_resource[k - 1].second)), " and ",
                      name(std::max(by_resource[k].second, by_resource[k - 1].second)),
                      " must be different variables")));
    }
    std::vector<xla::XlaOp> operands(num_arrays);
    std::vector<xla::Shape> state_shapes(num_arrays);
    std::vector<DataType> types(num_arrays);
    std::vector<TensorShape> shapes(num_arrays);
    for (int k = 0; k < num_arrays; ++k) {
      OP_REQUIRES_OK(ctx, ctx->GetVariableTypeAndShape(k, &types[k], &shapes[k]));
      OP_REQUIRES_OK(ctx, ctx->ReadVariableInput(k, types[k], &shapes[k], &operands[k]));
      absl::StatusOr<xla::Shape> xla_shape = ctx->builder()->GetShape(operands[k]);
      OP_REQUIRES_OK(ctx, xla_shape.status());
      state_shapes[k] = *xla_shape;
    }
    for (int g = 0; g < num_; ++g) {
      OP_REQUIRES(ctx, types[g] == dtype,
                  absl::InvalidArgumentError(absl::StrCat(
                      name(g), " has dtype ", DataTypeString(types[g]),
                      " but grad and the hyperparameters have dtype ", DataTypeString(dtype))));
      for (int i = 1; i < kNumState; ++i) {
        const int k = i * num_ + g;
        OP_REQUIRES_OK(ctx, CheckStateShape(name(k), Optimizer::kPerRow[i], shapes[k], name(g),
                                            shapes[g]));
        OP_REQUIRES_OK(ctx, CheckStateDtype(name(k), types[k], name(num_), types[num_], name(g),
                                            dtype));
      }
      const TensorShape grad_shape = ctx->InputShape(num_arrays + g);
      OP_REQUIRES(ctx, shapes[g].IsSameSize(grad_shape),
                  absl::InvalidArgumentError(absl::StrCat(
                      "var[", g, "] and grad[", g, "] do not have the same shape: ",
                      shapes[g].DebugString(), " vs ", grad_shape.DebugString())));
      operands.push_back(ctx->Input(num_arrays + g));
    }
    const int first_hyperparam = num_arrays + num_;
    OP_REQUIRES_OK(ctx, AddHyperparams<Optimizer>(ctx, first_hyperparam, &operands));
    const int first_rounding = first_hyperparam + Optimizer::kNumHyperparams;
    const int num_rounding = ctx->num_inputs() - first_rounding;
    const std::string expected =
        absl::StrCat("[N, 2] int64, each variable's [seed, step], with N = ", num_);
    OP_REQUIRES(ctx, num_rounding <= 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "stochastic_rounding takes at most one tensor (", expected, "), got ",
                    num_rounding)));
    if (num_rounding == 1) {
      const TensorShape shape = ctx->InputShape(first_rounding);
      OP_REQUIRES(ctx, shape.dims() == 2 && shape.dim_size(0) == num_ && shape.dim_size(1) == 2,
                  absl::InvalidArgumentError(absl::StrCat(
                      "stochastic_rounding must be ", expected, ", got shape ",
                      shape.DebugString())));
      OP_REQUIRES(ctx, types[num_] != dtype,
                  absl::InvalidArgumentError(absl::StrCat(
                      "stochastic_rounding rounds state narrower than var (bfloat16 or half "
                      "state of a float var), but the state has var's dtype, ",
                      DataTypeString(types[num_]))));
      operands.push_back(ctx->Input(first_rounding));
    }

    std::vector<std::pair<xla::ShapeIndex, std::pair<int64_t, xla::ShapeIndex>>> aliasing;
    for (int k = 0; k < num_arrays; ++k) aliasing.push_back({{k}, {k, {}}});
    xla::XlaOp call = xla::CustomCall(
        ctx->builder(), absl::StrCat("tf_ftrl_", type_string()), operands,
        xla::ShapeUtil::MakeTupleShape(state_shapes), FlagAttribute(Optimizer::kFlag.name, flag_),
        /*has_side_effect=*/false, aliasing, /*literal=*/nullptr,
        xla::CustomCallSchedule::SCHEDULE_NONE, xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
    for (int k = 0; k < num_arrays; ++k) {
      OP_REQUIRES_OK(ctx, ctx->AssignVariable(k, types[k], xla::GetTupleElement(call, k)));
    }
  }

 private:
  int num_;
  bool flag_;
};

template <typename Kernel>
OpKernel* CreateXlaKernel(OpKernelConstruction* ctx) {
  return new Kernel(ctx);
}

// Registers the lowering `Kernel` of op `name` (its scalar inputs are ordinary run-time operands:
// none has to be a compile-time constant). XlaOpRegistry turns its registrations into kernels of
// the XLA JIT devices once per process, at the first XLA compilation, and never again: a library
// loaded after that (tf_ftrl loads on first use) would have no kernels. So the kernel of XLA's CPU
// JIT device is registered here, directly, after RegisterCompilationKernels has run (it is
// idempotent, and then never registers a second copy).
template <typename Kernel>
void RegisterXlaKernel(const char* device, const std::string& name, bool sparse) {
  XlaOpRegistrationBuilder registration = XlaOpRegistrationBuilder::Name(name);
  registration.Device(device).TypeConstraint("T", DT_FLOAT).AllowResourceTypes();
  KernelDefBuilder kernel(name.c_str());
  kernel.Device(device).TypeConstraint<float>("T");
  if (sparse) {
    registration.TypeConstraint("Tindices", {DT_INT32, DT_INT64});
    kernel.TypeConstraint("Tindices", {DT_INT32, DT_INT64});
  }
  XlaOpRegistrar registrar(registration.Build(&CreateXlaKernel<Kernel>));
  kernel_factory::OpKernelRegistrar(kernel.Build(), "XlaJitOp", &CreateXlaKernel<Kernel>);
}

// XLA's CPU JIT device, and with CUDA its GPU JIT device (targets on platform "CUDA").
std::vector<const char*> XlaDevices() {
#if GOOGLE_CUDA
  return {DEVICE_CPU_XLA_JIT, DEVICE_GPU_XLA_JIT};
#else
  return {DEVICE_CPU_XLA_JIT};
#endif
}

template <typename Optimizer>
void RegisterXlaKernels() {
  for (const char* device : XlaDevices()) {
    RegisterXlaKernel<FusedApplyXlaOp<Optimizer, false>>(
        device, std::string("FusedResourceApply") + Optimizer::kName, false);
    RegisterXlaKernel<FusedApplyXlaOp<Optimizer, true>>(
        device, std::string("FusedResourceSparseApply") + Optimizer::kName, true);
  }
}

// The multi-tensor op of an element-wise optimizer.
template <typename Optimizer>
void RegisterMultiXlaKernel() {
  for (const char* device : XlaDevices()) {
    RegisterXlaKernel<FusedMultiApplyXlaOp<Optimizer>>(
        device, std::string("FusedResourceMultiApply") + Optimizer::kName, false);
  }
}

#define TF_FTRL_REGISTER_XLA_OPS(Optimizer) RegisterXlaKernels<tf_ftrl::Optimizer>();
#define TF_FTRL_REGISTER_MULTI_XLA_OP(Optimizer) RegisterMultiXlaKernel<tf_ftrl::Optimizer>();
[[maybe_unused]] const bool registered = [] {
  XlaOpRegistry::RegisterCompilationKernels();
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_XLA_OPS)
  TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_REGISTER_XLA_OPS)
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_MULTI_XLA_OP)
  return true;
}();
#undef TF_FTRL_REGISTER_MULTI_XLA_OP
#undef TF_FTRL_REGISTER_XLA_OPS

}  // namespace
}  // namespace tensorflow
