// CPU OpKernels of the four fused ops. They validate every input, take the variables' locks and
// hand raw pointers to the TensorFlow-free loops in cpu_kernels.h; they never compute themselves.
#define EIGEN_USE_THREADS

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu_kernels.h"
#include "kernels/row_groups.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/lib/core/errors.h"

namespace tensorflow {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;

// The project's storage type for a TensorFlow element type (same size and layout).
template <typename T>
struct StorageOf {
  using type = T;
};
template <>
struct StorageOf<Eigen::half> {
  using type = tf_ftrl::float16;
};
template <>
struct StorageOf<Eigen::bfloat16> {
  using type = tf_ftrl::bfloat16;
};
template <typename T>
using Storage = typename StorageOf<T>::type;
template <typename T>
using Acc = tf_ftrl::AccumulateType<Storage<T>>;

static_assert(sizeof(Storage<Eigen::half>) == sizeof(Eigen::half), "float16 layout");
static_assert(sizeof(Storage<Eigen::bfloat16>) == sizeof(Eigen::bfloat16), "bfloat16 layout");

template <typename T>
Storage<T>* MutableData(Tensor* t) {
  return reinterpret_cast<Storage<T>*>(t->flat<T>().data());
}
template <typename T>
const Storage<T>* ConstData(const Tensor& t) {
  return reinterpret_cast<const Storage<T>*>(t.flat<T>().data());
}

tf_ftrl::cpu::ParallelFor ThreadPoolParallelFor(OpKernelContext* ctx) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  return [workers](int64_t total, int64_t cost_per_unit,
                   const std::function<void(int64_t, int64_t)>& fn) {
    workers->ParallelFor(total, cost_per_unit, fn);
  };
}

// Locks the variable inputs [0, names.size()) and fetches their tensors, checking that each is
// a different variable from the others, initialized and of dtype T.
template <typename T>
class LockedVariables {
 public:
  LockedVariables(OpKernelContext* ctx, bool use_locking, bool sparse,
                  const std::vector<std::string>& names) {
    // Compare the variables themselves: fetching a variable's tensor for a dense update may copy
    // it, so two inputs naming one variable would not show up as one buffer.
    std::vector<core::RefCountPtr<Var>> resources(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      const absl::Status found =
          LookupResource(ctx, HandleFromInput(ctx, static_cast<int>(i)), &resources[i]);
      if (!found.ok()) {
        status_ = errors::FailedPrecondition("Could not read variable ", names[i],
                                             "; it may be uninitialized: ", found.message());
        return;
      }
      for (size_t j = 0; j < i; ++j) {
        if (resources[i].get() == resources[j].get()) {
          status_ = errors::InvalidArgument(names[j], " and ", names[i],
                                            " must be different variables");
          return;
        }
      }
    }
    lock_.emplace(MaybeLockVariableInputMutexesInOrder<CPUDevice, T>(ctx, use_locking, sparse,
                                                                      InputIds(names.size())));
    tensors_.resize(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      status_ = GetInputTensorFromVariable<CPUDevice, T>(ctx, static_cast<int>(i), use_locking,
                                                         sparse, &tensors_[i]);
      if (!status_.ok()) return;
      if (!tensors_[i].IsInitialized()) {
        status_ = errors::FailedPrecondition("Attempting to use uninitialized variable: ",
                                             names[i]);
        return;
      }
      if (tensors_[i].dtype() != DataTypeToEnum<T>::value) {
        status_ = errors::InvalidArgument(
            names[i], " has dtype ", DataTypeString(tensors_[i].dtype()),
            " but grad and the hyperparameters have dtype ",
            DataTypeString(DataTypeToEnum<T>::value));
        return;
      }
      if (i > 0 && !tensors_[0].shape().IsSameSize(tensors_[i].shape())) {
        status_ = errors::InvalidArgument(names[0], " and ", names[i],
                                          " do not have the same shape: ",
                                          tensors_[0].shape().DebugString(), " vs ",
                                          tensors_[i].shape().DebugString());
        return;
      }
    }
  }

  const absl::Status& status() const { return status_; }
  Tensor* tensor(int i) { return &tensors_[i]; }

 private:
  static std::vector<int> InputIds(size_t n) {
    std::vector<int> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int>(i);
    return ids;
  }

  std::optional<VariableInputLockHolder> lock_;
  std::vector<Tensor> tensors_;
  absl::Status status_;
};

// Reads the scalar hyperparameter at `input` as the accumulate type.
template <typename T>
absl::Status ReadScalar(OpKernelContext* ctx, int input, const char* name, Acc<T>* value) {
  const Tensor& t = ctx->input(input);
  if (!TensorShapeUtils::IsScalar(t.shape())) {
    return errors::InvalidArgument(name, " is not a scalar: ", t.shape().DebugString());
  }
  *value = static_cast<Acc<T>>(t.scalar<T>()());
  return absl::OkStatus();
}

enum class Bound { kPositive, kNonNegative, kNonPositive };

template <typename A>
absl::Status CheckBound(const char* name, A value, Bound bound) {
  // Written so that NaN fails every check.
  switch (bound) {
    case Bound::kPositive:
      if (value > A(0)) return absl::OkStatus();
      return errors::InvalidArgument(name, " must be positive but got ", value);
    case Bound::kNonNegative:
      if (value >= A(0)) return absl::OkStatus();
      return errors::InvalidArgument(name, " must be non-negative but got ", value);
    case Bound::kNonPositive:
      if (value <= A(0)) return absl::OkStatus();
      return errors::InvalidArgument(name, " must be non-positive but got ", value);
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadFtrlHyperparams(OpKernelContext* ctx, int first_input,
                                 tf_ftrl::FtrlHyperparams<Acc<T>>* h) {
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 0, "lr", &h->lr));
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 1, "l1", &h->l1));
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 2, "l2", &h->l2));
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 3, "l2_shrinkage", &h->l2_shrinkage));
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 4, "lr_power", &h->lr_power));
  TF_RETURN_IF_ERROR(CheckBound("lr", h->lr, Bound::kPositive));
  TF_RETURN_IF_ERROR(CheckBound("l1", h->l1, Bound::kNonNegative));
  TF_RETURN_IF_ERROR(CheckBound("l2", h->l2, Bound::kNonNegative));
  TF_RETURN_IF_ERROR(CheckBound("l2_shrinkage", h->l2_shrinkage, Bound::kNonNegative));
  return CheckBound("lr_power", h->lr_power, Bound::kNonPositive);
}

template <typename T>
absl::Status ReadAdagradHyperparams(OpKernelContext* ctx, int first_input,
                                    tf_ftrl::AdagradHyperparams<Acc<T>>* h) {
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 0, "lr", &h->lr));
  TF_RETURN_IF_ERROR(ReadScalar<T>(ctx, first_input + 1, "epsilon", &h->epsilon));
  TF_RETURN_IF_ERROR(CheckBound("lr", h->lr, Bound::kPositive));
  return CheckBound("epsilon", h->epsilon, Bound::kNonNegative);
}

absl::Status CheckDenseGrad(const Tensor& var, const Tensor& grad) {
  if (!var.shape().IsSameSize(grad.shape())) {
    return errors::InvalidArgument("var and grad do not have the same shape: ",
                                   var.shape().DebugString(), " vs ",
                                   grad.shape().DebugString());
  }
  return absl::OkStatus();
}

// Checks the shapes of a sparse update and groups its indices by row, so that duplicates are
// summed; fails, before anything is written, on any index outside [0, var rows).
template <typename Index>
absl::Status CheckSparseAndGroup(const Tensor& var, const Tensor& grad, const Tensor& indices,
                                 tf_ftrl::RowGroups* groups, int64_t* row_size) {
  if (var.dims() < 1) {
    return errors::InvalidArgument("var must be at least 1-D, got shape ",
                                   var.shape().DebugString());
  }
  if (!TensorShapeUtils::IsVector(indices.shape())) {
    return errors::InvalidArgument("indices must be a vector, got shape ",
                                   indices.shape().DebugString());
  }
  if (grad.dims() < 1 || grad.dim_size(0) != indices.dim_size(0)) {
    return errors::InvalidArgument(
        "grad must be the same size as indices in the first dimension: ",
        grad.shape().DebugString(), " vs ", indices.shape().DebugString());
  }
  bool rows_match = grad.dims() == var.dims();
  for (int d = 1; rows_match && d < var.dims(); ++d) {
    rows_match = var.dim_size(d) == grad.dim_size(d);
  }
  if (!rows_match) {
    return errors::InvalidArgument("var and grad do not agree beyond the first dimension: ",
                                   var.shape().DebugString(), " vs ",
                                   grad.shape().DebugString());
  }
  *row_size = 1;
  for (int d = 1; d < var.dims(); ++d) *row_size *= var.dim_size(d);
  const int64_t num_rows = var.dim_size(0);
  tf_ftrl::IndexError error;
  if (!groups->Build(indices.flat<Index>().data(), indices.dim_size(0), num_rows, &error)) {
    return errors::InvalidArgument("indices[", error.position, "] = ", error.value,
                                   " is not in [0, ", num_rows, ")");
  }
  return absl::OkStatus();
}

// Each thread keeps its grouping buffers between sparse updates.
tf_ftrl::RowGroups& ThreadRowGroups() {
  thread_local tf_ftrl::RowGroups groups;
  return groups;
}

template <typename T>
class FusedApplyFtrlOp : public OpKernel {
 public:
  explicit FusedApplyFtrlOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("multiply_linear_by_lr", &multiply_linear_by_lr_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<T> vars(ctx, use_locking_, /*sparse=*/false, {"var", "accum", "linear"});
    OP_REQUIRES_OK(ctx, vars.status());
    const Tensor& grad = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckDenseGrad(*vars.tensor(0), grad));
    tf_ftrl::FtrlHyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, ReadFtrlHyperparams<T>(ctx, 4, &h));
    tf_ftrl::cpu::ApplyFtrl(h, multiply_linear_by_lr_, MutableData<T>(vars.tensor(0)),
                            MutableData<T>(vars.tensor(1)), MutableData<T>(vars.tensor(2)),
                            ConstData<T>(grad), grad.NumElements(), ThreadPoolParallelFor(ctx));
  }

 private:
  bool use_locking_;
  bool multiply_linear_by_lr_;
};

template <typename T, typename Index>
class FusedSparseApplyFtrlOp : public OpKernel {
 public:
  explicit FusedSparseApplyFtrlOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("multiply_linear_by_lr", &multiply_linear_by_lr_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<T> vars(ctx, use_locking_, /*sparse=*/true, {"var", "accum", "linear"});
    OP_REQUIRES_OK(ctx, vars.status());
    const Tensor& grad = ctx->input(3);
    tf_ftrl::FtrlHyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, ReadFtrlHyperparams<T>(ctx, 5, &h));
    tf_ftrl::RowGroups& groups = ThreadRowGroups();
    int64_t row_size = 0;
    OP_REQUIRES_OK(ctx, CheckSparseAndGroup<Index>(*vars.tensor(0), grad, ctx->input(4),
                                                   &groups, &row_size));
    tf_ftrl::cpu::SparseApplyFtrl(h, multiply_linear_by_lr_, MutableData<T>(vars.tensor(0)),
                                  MutableData<T>(vars.tensor(1)), MutableData<T>(vars.tensor(2)),
                                  ConstData<T>(grad), row_size, groups,
                                  ThreadPoolParallelFor(ctx));
  }

 private:
  bool use_locking_;
  bool multiply_linear_by_lr_;
};

template <typename T>
class FusedApplyAdagradOp : public OpKernel {
 public:
  explicit FusedApplyAdagradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("update_slots", &update_slots_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<T> vars(ctx, use_locking_, /*sparse=*/false, {"var", "accum"});
    OP_REQUIRES_OK(ctx, vars.status());
    const Tensor& grad = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckDenseGrad(*vars.tensor(0), grad));
    tf_ftrl::AdagradHyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, ReadAdagradHyperparams<T>(ctx, 3, &h));
    tf_ftrl::cpu::ApplyAdagrad(h, update_slots_, MutableData<T>(vars.tensor(0)),
                               MutableData<T>(vars.tensor(1)), ConstData<T>(grad),
                               grad.NumElements(), ThreadPoolParallelFor(ctx));
  }

 private:
  bool use_locking_;
  bool update_slots_;
};

template <typename T, typename Index>
class FusedSparseApplyAdagradOp : public OpKernel {
 public:
  explicit FusedSparseApplyAdagradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("update_slots", &update_slots_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<T> vars(ctx, use_locking_, /*sparse=*/true, {"var", "accum"});
    OP_REQUIRES_OK(ctx, vars.status());
    const Tensor& grad = ctx->input(2);
    tf_ftrl::AdagradHyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, ReadAdagradHyperparams<T>(ctx, 4, &h));
    tf_ftrl::RowGroups& groups = ThreadRowGroups();
    int64_t row_size = 0;
    OP_REQUIRES_OK(ctx, CheckSparseAndGroup<Index>(*vars.tensor(0), grad, ctx->input(3),
                                                   &groups, &row_size));
    tf_ftrl::cpu::SparseApplyAdagrad(h, update_slots_, MutableData<T>(vars.tensor(0)),
                                     MutableData<T>(vars.tensor(1)), ConstData<T>(grad),
                                     row_size, groups, ThreadPoolParallelFor(ctx));
  }

 private:
  bool use_locking_;
  bool update_slots_;
};

#define REGISTER_SPARSE_CPU_KERNELS(T, Index)                                   \
  REGISTER_KERNEL_BUILDER(Name("FusedResourceSparseApplyFtrl")                  \
                              .Device(DEVICE_CPU)                               \
                              .TypeConstraint<T>("T")                           \
                              .TypeConstraint<Index>("Tindices"),               \
                          FusedSparseApplyFtrlOp<T, Index>);                    \
  REGISTER_KERNEL_BUILDER(Name("FusedResourceSparseApplyAdagrad")               \
                              .Device(DEVICE_CPU)                               \
                              .TypeConstraint<T>("T")                           \
                              .TypeConstraint<Index>("Tindices"),               \
                          FusedSparseApplyAdagradOp<T, Index>);

#define REGISTER_CPU_KERNELS(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedResourceApplyFtrl").Device(DEVICE_CPU).TypeConstraint<T>("T"),        \
      FusedApplyFtrlOp<T>);                                                            \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedResourceApplyAdagrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
      FusedApplyAdagradOp<T>);                                                         \
  REGISTER_SPARSE_CPU_KERNELS(T, int32)                                                \
  REGISTER_SPARSE_CPU_KERNELS(T, int64_t)

REGISTER_CPU_KERNELS(float);
REGISTER_CPU_KERNELS(double);
REGISTER_CPU_KERNELS(Eigen::half);
REGISTER_CPU_KERNELS(Eigen::bfloat16);

#undef REGISTER_CPU_KERNELS
#undef REGISTER_SPARSE_CPU_KERNELS

}  // namespace
}  // namespace tensorflow
