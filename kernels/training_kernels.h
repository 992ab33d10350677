// The OpKernels of every optimizer's fused ops (dense, sparse, and for the element-wise ones the
// multi-tensor dense op), on CPU and (when built with CUDA) GPU, made
// from its description (optimizer_spec.h) for each optimizer of optimizers.h. Included by one
// training_kernels_<dtype>.cc per element type, which registers that type's kernels: the
// instantiations (optimizer x flags x vector copy x row size) are split over several files, so
// that the build compiles them on every core. An op validates
// every input, takes the variables' locks and hands raw pointers to FusedUpdate<Device, T>, which
// runs the TensorFlow-free loops: cpu_loops.h on the op's thread pool, or gpu_kernels.h on the
// op's CUDA stream. The OpKernels never compute themselves, and validation exists once for every
// optimizer and both devices.
#pragma once

#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <cmath>
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/row_groups.h"
#include "kernels/shape_checks.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/kernel_def_builder.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/kernels/dense_update_functor.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/lib/core/errors.h"

#if GOOGLE_CUDA
#include "kernels/gpu_kernels.h"
#include "xla/stream_executor/stream.h"
#endif

namespace tensorflow {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;
#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;
#endif

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
  return tf_ftrl::cpu::ParallelFor(
      [workers](int64_t total, int64_t cost_per_unit,
                const std::function<void(int64_t, int64_t)>& fn) {
        // Deprecated in newer TensorFlow in favour of SchedulingParams::Adaptive, which older
        // releases lack; this form builds against all of them.
        workers->ParallelFor(total, cost_per_unit, fn);
      },
      workers->NumThreads());
}

// Calls fn(X()) with the TensorFlow element type X of `dtype`, one of the types the fused ops
// take; any other dtype gives `otherwise`.
template <typename Fn>
absl::Status WithElementType(DataType dtype, absl::Status otherwise, Fn&& fn) {
  switch (dtype) {
    case DT_FLOAT: return fn(float());
    case DT_DOUBLE: return fn(double());
    case DT_HALF: return fn(Eigen::half());
    case DT_BFLOAT16: return fn(Eigen::bfloat16());
    default: return otherwise;
  }
}

// Whether optimizer state of `state` dtype may go with a var (and grad) of dtype T: its own
// dtype, or bfloat16 or float16 state for a float32 var.
template <typename T>
bool IsStateDtypeOf(DataType state) {
  return state == DataTypeToEnum<T>::value ||
         (std::is_same_v<T, float> && (state == DT_BFLOAT16 || state == DT_HALF));
}

// Locks the variable inputs of an update of `num_groups` variables (1, or N for a multi-tensor
// op) and fetches their tensors. names[i] is the i-th state input (var first); with several
// groups each is a list of N inputs (input i * N + g is state i of variable g, named "var[g]").
// Checks that every variable is a different one from the others and initialized, that each var
// has dtype T, that the state variables share one dtype that IsStateDtypeOf<T>, and each group's
// shapes.
template <typename Device, typename T>
class LockedVariables {
 public:
  // per_row[i]: variable i holds one value per row of variable 0 (shape [var.shape[0]]).
  LockedVariables(OpKernelContext* ctx, bool use_locking, bool sparse,
                  const std::vector<std::string>& names, const std::vector<bool>& per_row,
                  int num_groups = 1)
      : num_groups_(num_groups) {
    const int num_states = static_cast<int>(names.size());
    const int num_inputs = num_states * num_groups;
    // Compare the variables themselves: fetching a variable's tensor for a dense update may copy
    // it, so two inputs naming one variable would not show up as one buffer.
    resources_.resize(num_inputs);
    std::vector<std::pair<const Var*, int>> by_address(num_inputs);
    for (int input = 0; input < num_inputs; ++input) {
      const absl::Status found = LookupResource(ctx, HandleFromInput(ctx, input),
                                                &resources_[input]);
      if (!found.ok()) {
        status_ = absl::FailedPreconditionError(absl::StrCat(
            "Could not read variable ", Name(names, input), "; it may be uninitialized: ",
            found.message()));
        return;
      }
      by_address[input] = {resources_[input].get(), input};
    }
    std::sort(by_address.begin(), by_address.end());
    for (int k = 1; k < num_inputs; ++k) {
      if (by_address[k].first == by_address[k - 1].first) {
        const int a = std::min(by_address[k].second, by_address[k - 1].second);
        const int b = std::max(by_address[k].second, by_address[k - 1].second);
        status_ = absl::InvalidArgumentError(absl::StrCat(
            Name(names, a), " and ", Name(names, b), " must be different variables"));
        return;
      }
    }
    // A sparse update takes TensorFlow's sparse path (a shared lock, the buffer updated in place
    // under it) only for variables that are in copy-on-read mode already. Entering that mode is
    // what TensorFlow's sparse ops do, but from then on every ReadVariableOp copies the whole
    // variable, and Keras 3's Embedding reads its whole table each step (it gathers from the
    // read value): a 128 MB table cost ~5 ms of copying per training step. Otherwise the update
    // takes the dense path: an exclusive lock, and a copy only while a reader still holds the
    // buffer. (The mode only ever switches on, so a stale check at worst costs that copy.)
    bool shared = false;
    for (const auto& resource : resources_) {
      shared = shared || (sparse && resource->copy_on_read_mode.load());
    }
    // TensorFlow's helpers copy a variable as their element type T, and the state may be of
    // another type than var: each variable is prepared with its own. (A variable's dtype never
    // changes; a dtype the ops do not take is reported below, after the lock.)
    if (shared) {
      for (const auto& resource : resources_) {
        WithElementType(resource->tensor()->dtype(), absl::OkStatus(), [&](auto x) {
          return EnsureSparseVariableAccess<Device, decltype(x)>(ctx, resource.get());
        }).IgnoreError();
      }
    }
    // Every variable's mutex, locked once in address order as TensorFlow's training ops lock
    // theirs (so no deadlock against them): exclusively, or shared for a sparse update of
    // variables in copy-on-read mode without use_locking. (TensorFlow's helper for this looks
    // every variable up a second time and finds repeated mutexes in quadratic time: a tenth of a
    // multi-tensor call on 240 variables. Inputs naming one variable were refused above.)
    const bool exclusive = !shared || use_locking;
    if (exclusive) {
      locks_.reserve(num_inputs);
    } else {
      shared_locks_.reserve(num_inputs);
    }
    for (const auto& entry : by_address) {
      mutex* mu = resources_[entry.second]->mu();
      if (exclusive) {
        locks_.emplace_back(*mu);
      } else {
        shared_locks_.emplace_back(*mu);
      }
    }
    tensors_.resize(num_inputs);
    for (int input = 0; input < num_inputs; ++input) {
      if (shared) {
        tensors_[input] = *resources_[input]->tensor();
      } else {
        // Held exclusively: update in place unless a reader still holds the buffer (the buffer's
        // reference count tells). TensorFlow's helper also copies every variable that its sparse
        // ops switched to copy-on-read mode, on every dense update; under the exclusive lock no
        // sparse update or read can be running, so the reference count is all that matters.
        Tensor* tensor = resources_[input]->tensor();
        status_ = WithElementType(tensor->dtype(), absl::OkStatus(), [&](auto x) {
          return PrepareToUpdateVariable<Device, decltype(x)>(ctx, tensor,
                                                              /*copy_on_read_mode=*/false);
        });
        if (!status_.ok()) return;
        tensors_[input] = *resources_[input]->tensor();
      }
      if (!tensors_[input].IsInitialized()) {
        status_ = absl::FailedPreconditionError(absl::StrCat(
            "Attempting to use uninitialized variable: ", Name(names, input)));
        return;
      }
    }
    for (int g = 0; g < num_groups && status_.ok(); ++g) status_ = CheckGroup(names, per_row, g);
  }

  const absl::Status& status() const { return status_; }
  // State i of variable g (0: var).
  Tensor* tensor(int i, int g = 0) { return &tensors_[i * num_groups_ + g]; }
  // The dtype of the state variables (after var).
  DataType state_dtype() const { return tensors_[num_groups_].dtype(); }
  // The buffers of the first kNumState variables of group g, for the loops: var of type T, the
  // state of type S (state_dtype()'s).
  template <int kNumState, typename S>
  tf_ftrl::StateArrays<Storage<T>, kNumState, Storage<S>> state(
      const tf_ftrl::StateRounding& rounding, int g = 0) {
    tf_ftrl::StateArrays<Storage<T>, kNumState, Storage<S>> arrays;
    arrays.var = MutableData<T>(tensor(0, g));
    for (int i = 1; i < kNumState; ++i) arrays.slots[i - 1] = MutableData<S>(tensor(i, g));
    arrays.rounding = rounding;
    return arrays;
  }

 private:
  // The name of variable input `input`: "accum", or "accum[3]" with several groups.
  std::string Name(const std::vector<std::string>& names, int input) const {
    if (num_groups_ == 1) return names[input];
    return absl::StrCat(names[input / num_groups_], "[", input % num_groups_, "]");
  }

  absl::Status CheckGroup(const std::vector<std::string>& names, const std::vector<bool>& per_row,
                          int g) {
    const auto name = [&](int i) { return Name(names, i * num_groups_ + g); };
    const Tensor& var = *tensor(0, g);
    if (var.dtype() != DataTypeToEnum<T>::value) {
      return absl::InvalidArgumentError(absl::StrCat(
          name(0), " has dtype ", DataTypeString(var.dtype()),
          " but grad and the hyperparameters have dtype ",
          DataTypeString(DataTypeToEnum<T>::value)));
    }
    for (int i = 1; i < static_cast<int>(names.size()); ++i) {
      const Tensor& t = *tensor(i, g);
      // Every state variable, of every group, has the dtype of the first one's.
      const Tensor& first_state = *tensor(1, 0);
      if ((i > 1 || g > 0) && t.dtype() != first_state.dtype()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name(i), " has dtype ", DataTypeString(t.dtype()), " but ", Name(names, num_groups_),
            " has dtype ", DataTypeString(first_state.dtype()),
            ": the optimizer's state variables share one dtype"));
      }
      if (i == 1 && !IsStateDtypeOf<T>(t.dtype())) {
        return absl::InvalidArgumentError(absl::StrCat(
            name(i), " has dtype ", DataTypeString(t.dtype()), " but ", name(0), " has dtype ",
            DataTypeString(DataTypeToEnum<T>::value),
            ": the state has var's dtype, or bfloat16 or half for a float var"));
      }
      if (per_row[i]) {
        if (var.dims() < 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              name(0), " must be at least 1-D for a row-wise update, got shape ",
              var.shape().DebugString()));
        }
        if (t.dims() != 1 || t.dim_size(0) != var.dim_size(0)) {
          return absl::InvalidArgumentError(absl::StrCat(
              name(i), " must hold one value per row of ", name(0), ", shape [",
              var.dim_size(0), "], but has shape ", t.shape().DebugString()));
        }
        continue;
      }
      if (!var.shape().IsSameSize(t.shape())) {
        return absl::InvalidArgumentError(absl::StrCat(
            name(0), " and ", name(i), " do not have the same shape: ",
            var.shape().DebugString(), " vs ", t.shape().DebugString()));
      }
    }
    return absl::OkStatus();
  }

  int num_groups_;
  // The variables, kept until the locks (declared after them, so released first) are released.
  std::vector<core::RefCountPtr<Var>> resources_;
  std::vector<mutex_lock> locks_;
  std::vector<tf_shared_lock> shared_locks_;
  std::vector<Tensor> tensors_;
  absl::Status status_;
};

// Reads the scalar hyperparameter at `input` as the accumulate type.
template <typename T>
absl::Status ReadScalar(OpKernelContext* ctx, int input, const char* name, Acc<T>* value) {
  const Tensor& t = ctx->input(input);
  if (!TensorShapeUtils::IsScalar(t.shape())) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is not a scalar: ", t.shape().DebugString()));
  }
  *value = static_cast<Acc<T>>(t.scalar<T>()());
  return absl::OkStatus();
}

using tf_ftrl::Bound;

template <typename A>
absl::Status CheckBound(const char* name, A value, Bound bound) {
  // An infinite hyperparameter passes the bounds but is never meaningful: it turns updated
  // elements into inf or NaN, or freezes them (TensorFlow's own ops accept it).
  if (std::isinf(value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be finite but got ", value));
  }
  // Written so that NaN fails every check.
  switch (bound) {
    case Bound::kPositive:
      if (value > A(0)) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(name, " must be positive but got ", value));
    case Bound::kNonNegative:
      if (value >= A(0)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be non-negative but got ", value));
    case Bound::kNonPositive:
      if (value <= A(0)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be non-positive but got ", value));
  }
  return absl::OkStatus();
}

// Reads the optimizer's hyperparameters (inputs first_input, first_input + 1, ..., in the order
// of its description), then checks each against its bound.
template <typename T, typename Optimizer>
absl::Status ReadHyperparams(OpKernelContext* ctx, int first_input,
                             typename Optimizer::template Hyperparams<Acc<T>>* h) {
  Acc<T> values[Optimizer::kNumHyperparams];
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    TF_RETURN_IF_ERROR(
        ReadScalar<T>(ctx, first_input + i, Optimizer::kHyperparams[i].name, &values[i]));
  }
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    TF_RETURN_IF_ERROR(CheckBound(Optimizer::kHyperparams[i].name, values[i],
                                  Optimizer::kHyperparams[i].bound));
  }
  *h = Optimizer::FromValues(values);
  return absl::OkStatus();
}

absl::Status IndexOutOfRange(const tf_ftrl::IndexError& error, int64_t num_rows) {
  return absl::InvalidArgumentError(absl::StrCat("indices[", error.position, "] = ",
                                                 error.value, " is not in [0, ", num_rows, ")"));
}

// The device-specific half of the ops: applies an update whose shapes and hyperparameters have
// been checked. The sparse one checks the indices' values itself (where the indices live),
// before anything is written.
template <typename Device, typename T>
struct FusedUpdate;

// Each thread keeps its grouping buffers between sparse updates.
tf_ftrl::RowGroups& ThreadRowGroups() {
  thread_local tf_ftrl::RowGroups groups;
  return groups;
}

// Groups the rows of a sparse update so that duplicates are summed; fails on any index outside
// [0, num_rows).
template <typename Index>
absl::Status GroupRows(const Tensor& indices, int64_t num_rows, tf_ftrl::RowGroups* groups) {
  tf_ftrl::IndexError error;
  if (!groups->Build(indices.flat<Index>().data(), indices.dim_size(0), num_rows, &error)) {
    return IndexOutOfRange(error, num_rows);
  }
  return absl::OkStatus();
}

template <typename T>
struct FusedUpdate<CPUDevice, T> {
  template <typename Optimizer, typename State>
  static absl::Status Apply(OpKernelContext* ctx,
                            const typename Optimizer::template Hyperparams<Acc<T>>& h, bool flag,
                            const State& state, const Tensor& grad) {
    tf_ftrl::cpu::Apply<Optimizer>(h, flag, state, ConstData<T>(grad), grad.NumElements(),
                                   ThreadPoolParallelFor(ctx));
    return absl::OkStatus();
  }

  template <typename Optimizer, typename State>
  static absl::Status RowwiseApply(OpKernelContext* ctx,
                                   const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                   bool flag, const State& state,
                                   const Tensor& grad, int64_t num_rows, int64_t row_size) {
    tf_ftrl::cpu::RowwiseApply<Optimizer>(h, flag, state, ConstData<T>(grad), num_rows,
                                          row_size, ThreadPoolParallelFor(ctx));
    return absl::OkStatus();
  }

  template <typename Optimizer, typename State>
  static absl::Status MultiApply(OpKernelContext* ctx,
                                 const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                 bool flag, const std::vector<State>& states,
                                 const std::vector<const Storage<T>*>& grads,
                                 const std::vector<int64_t>& sizes) {
    tf_ftrl::cpu::MultiApply<Optimizer>(h, flag, states.data(), grads.data(), sizes.data(),
                                        static_cast<int64_t>(states.size()),
                                        ThreadPoolParallelFor(ctx));
    return absl::OkStatus();
  }

  template <typename Optimizer, typename Index, typename State>
  static absl::Status SparseApply(OpKernelContext* ctx,
                                  const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                  bool flag, const State& state,
                                  const Tensor& grad, const Tensor& indices, int64_t num_rows,
                                  int64_t row_size) {
    tf_ftrl::RowGroups& groups = ThreadRowGroups();
    TF_RETURN_IF_ERROR(GroupRows<Index>(indices, num_rows, &groups));
    if (row_size == 0) return absl::OkStatus();
    tf_ftrl::cpu::SparseApply<Optimizer>(h, flag, state, ConstData<T>(grad), row_size, groups,
                                         ThreadPoolParallelFor(ctx));
    return absl::OkStatus();
  }
};

#if GOOGLE_CUDA
}  // namespace

namespace functor {
// training_op_helpers.h copies a variable with DenseUpdate<Device, T, ASSIGN> when an update
// must not write the buffer a reader holds. TensorFlow defines the GPU version in its CUDA
// sources, which a custom op cannot link against (and the CPU-only wheel lacks, where this
// library must still load): this is the same device-to-device copy, on the op's stream.
template <typename T>
struct DenseUpdate<GPUDevice, T, ASSIGN> {
  void operator()(const GPUDevice& d, typename TTypes<T>::Flat params,
                  typename TTypes<T>::ConstFlat update) {
    d.memcpy(params.data(), update.data(), params.size() * sizeof(T));
  }
};
}  // namespace functor

namespace {

absl::Status CudaStatus(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed on the GPU: ", cudaGetErrorName(status),
                                          ": ", cudaGetErrorString(status)));
}

cudaStream_t OpStream(OpKernelContext* ctx) {
  return reinterpret_cast<cudaStream_t>(
      ctx->op_device_context()->stream()->platform_specific_handle().stream);
}

// The sparse launchers' device workspace, from TensorFlow's allocator (stream-ordered, so it may
// be released when Compute returns although the kernels are still queued).
template <typename T, typename Index>
absl::Status AllocateSparseWorkspace(OpKernelContext* ctx, int64_t num_indices, int64_t row_size,
                                     bool rowwise, Tensor* workspace) {
  if (num_indices > tf_ftrl::gpu::kMaxSparseIndices) {
    return absl::InvalidArgumentError(absl::StrCat("indices has ", num_indices,
                                                   " elements but the GPU kernel takes at most ",
                                                   tf_ftrl::gpu::kMaxSparseIndices));
  }
  size_t bytes = 0;
  TF_RETURN_IF_ERROR(
      CudaStatus(tf_ftrl::gpu::SparseWorkspaceBytes<T, Index>(num_indices, row_size, rowwise,
                                                              &bytes),
                 "Sizing the sparse update's workspace"));
  return ctx->allocate_temp(DT_INT8, TensorShape({static_cast<int64_t>(bytes)}), workspace);
}

// The GPU launchers take the same storage types as the CPU loops.
template <typename T>
struct FusedUpdate<GPUDevice, T> {
  template <typename Optimizer, typename State>
  static absl::Status Apply(OpKernelContext* ctx,
                            const typename Optimizer::template Hyperparams<Acc<T>>& h, bool flag,
                            const State& state, const Tensor& grad) {
    return CudaStatus(tf_ftrl::gpu::Apply<Optimizer>(h, flag, state, ConstData<T>(grad),
                                                     grad.NumElements(), OpStream(ctx)),
                      ctx->op_kernel().type_string().c_str());
  }

  template <typename Optimizer, typename State>
  static absl::Status MultiApply(OpKernelContext* ctx,
                                 const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                 bool flag, const std::vector<State>& states,
                                 const std::vector<const Storage<T>*>& grads,
                                 const std::vector<int64_t>& sizes) {
    using S = typename State::Slot;
    const int64_t count = static_cast<int64_t>(states.size());
    const size_t bytes =
        tf_ftrl::gpu::MultiApplyWorkspaceBytes<Optimizer, Storage<T>, S>(count);
    Tensor workspace;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(
        DT_INT8, TensorShape({static_cast<int64_t>(bytes)}), &workspace));
    return CudaStatus(
        tf_ftrl::gpu::MultiApply<Optimizer>(h, flag, states.data(), grads.data(), sizes.data(),
                                            count, workspace.flat<int8_t>().data(), bytes,
                                            OpStream(ctx)),
        ctx->op_kernel().type_string().c_str());
  }

  template <typename Optimizer, typename State>
  static absl::Status RowwiseApply(OpKernelContext* ctx,
                                   const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                   bool flag, const State& state,
                                   const Tensor& grad, int64_t num_rows, int64_t row_size) {
    return CudaStatus(tf_ftrl::gpu::RowwiseApply<Optimizer>(h, flag, state, ConstData<T>(grad),
                                                            num_rows, row_size, OpStream(ctx)),
                      ctx->op_kernel().type_string().c_str());
  }

  template <typename Optimizer, typename Index, typename State>
  static absl::Status SparseApply(OpKernelContext* ctx,
                                  const typename Optimizer::template Hyperparams<Acc<T>>& h,
                                  bool flag, const State& state,
                                  const Tensor& grad, const Tensor& indices, int64_t num_rows,
                                  int64_t row_size) {
    Tensor workspace;
    TF_RETURN_IF_ERROR(AllocateSparseWorkspace<Storage<T>, Index>(
        ctx, indices.dim_size(0), row_size, Optimizer::kRowwise, &workspace));
    const tf_ftrl::gpu::SparseRows<Index> rows{indices.flat<Index>().data(), indices.dim_size(0),
                                               num_rows, row_size};
    tf_ftrl::IndexError error;
    TF_RETURN_IF_ERROR(CudaStatus(
        tf_ftrl::gpu::SparseApply<Optimizer>(h, flag, state, ConstData<T>(grad), rows,
                                             workspace.flat<int8_t>().data(),
                                             workspace.NumElements(), OpStream(ctx), &error),
        ctx->op_kernel().type_string().c_str()));
    if (error.position >= 0) return IndexOutOfRange(error, num_rows);
    return absl::OkStatus();
  }
};
#endif  // GOOGLE_CUDA

template <typename Optimizer>
std::vector<std::string> StateNames() {
  return {std::begin(Optimizer::kStateNames), std::end(Optimizer::kStateNames)};
}

template <typename Optimizer>
std::vector<bool> PerRow() {
  return std::vector<bool>(std::begin(Optimizer::kPerRow), std::end(Optimizer::kPerRow));
}

// The name of the ops' optional last input: [seed, step] of the stochastic rounding of state
// narrower than var, or nothing (round to nearest).
constexpr char kStochasticRounding[] = "stochastic_rounding";

// Reads the ops' stochastic_rounding input (at `first_input`; a list of at most one tensor),
// checking that there is narrower state to round: for the one-variable ops (`num_variables` 0)
// [seed, step] into rounding[0], for the multi-tensor ops each of the N variables' pair of an
// [N, 2] tensor into rounding[0..N).
template <typename T>
absl::Status ReadRounding(OpKernelContext* ctx, int first_input, DataType state_dtype,
                          int num_variables, tf_ftrl::StateRounding* rounding) {
  const int given = ctx->num_inputs() - first_input;
  if (given == 0) return absl::OkStatus();
  const std::string expected = num_variables == 0
                                   ? "[seed, step], a vector of 2 int64"
                                   : absl::StrCat("[N, 2] int64, each variable's [seed, step], "
                                                  "with N = ", num_variables);
  if (given > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        kStochasticRounding, " takes at most one tensor (", expected, "), got ", given));
  }
  const Tensor& t = ctx->input(first_input);
  const bool shape_ok = num_variables == 0
                            ? TensorShapeUtils::IsVector(t.shape()) && t.NumElements() == 2
                            : t.dims() == 2 && t.dim_size(0) == num_variables &&
                                  t.dim_size(1) == 2;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        kStochasticRounding, " must be ", expected, ", got shape ", t.shape().DebugString()));
  }
  if (state_dtype == DataTypeToEnum<T>::value) {
    return absl::InvalidArgumentError(absl::StrCat(
        kStochasticRounding, " rounds state narrower than var (bfloat16 or half state of a "
        "float var), but the state has var's dtype, ", DataTypeString(state_dtype)));
  }
  const auto pairs = t.flat<int64_t>();
  for (int v = 0; v < std::max(num_variables, 1); ++v) {
    rounding[v].stochastic = true;
    rounding[v].key = tf_ftrl::RoundingKey(pairs(2 * v), pairs(2 * v + 1));
  }
  return absl::OkStatus();
}

// Calls fn(S()) with the TensorFlow type S of the state, `state_dtype` (checked by
// LockedVariables): T, or for a float T bfloat16 or half.
template <typename T, typename Fn>
absl::Status WithStateType(DataType state_dtype, Fn&& fn) {
  if constexpr (std::is_same_v<T, float>) {
    if (state_dtype == DT_BFLOAT16) return fn(Eigen::bfloat16());
    if (state_dtype == DT_HALF) return fn(Eigen::half());
  }
  return fn(T());
}

// The op of `Optimizer` on element type T: the dense op when Index is void, else the sparse op
// with indices of type Index. Its inputs: the state variables, grad, (indices,) the
// hyperparameters, stochastic_rounding; its attrs: use_locking and the optimizer's flag.
template <typename Device, typename T, typename Optimizer, typename Index = void>
class FusedApplyOp : public OpKernel {
 public:
  static constexpr int kNumState = Optimizer::kNumState;
  static constexpr bool kSparse = !std::is_void_v<Index>;
  static constexpr int kFirstHyperparam = kNumState + 1 + kSparse;

  explicit FusedApplyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(Optimizer::kFlag.name, &flag_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<Device, T> vars(ctx, use_locking_, kSparse, StateNames<Optimizer>(),
                                    PerRow<Optimizer>());
    OP_REQUIRES_OK(ctx, vars.status());
    const Tensor& grad = ctx->input(kNumState);
    if constexpr (!kSparse) {
      OP_REQUIRES_OK(ctx, tf_ftrl_checks::CheckDenseGrad(vars.tensor(0)->shape(), grad.shape()));
    }
    typename Optimizer::template Hyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, (ReadHyperparams<T, Optimizer>(ctx, kFirstHyperparam, &h)));
    tf_ftrl::StateRounding rounding;
    OP_REQUIRES_OK(ctx, ReadRounding<T>(ctx, kFirstHyperparam + Optimizer::kNumHyperparams,
                                        vars.state_dtype(), 0, &rounding));
    OP_REQUIRES_OK(ctx, WithStateType<T>(vars.state_dtype(), [&](auto s) {
      return Update(ctx, h, vars, vars.template state<kNumState, decltype(s)>(rounding), grad);
    }));
  }

 private:
  template <typename State>
  absl::Status Update(OpKernelContext* ctx,
                      const typename Optimizer::template Hyperparams<Acc<T>>& h,
                      LockedVariables<Device, T>& vars, const State& state, const Tensor& grad) {
    if constexpr (kSparse) {
      const Tensor& indices = ctx->input(kNumState + 1);
      int64_t row_size = 0;
      TF_RETURN_IF_ERROR(tf_ftrl_checks::CheckSparseShapes(vars.tensor(0)->shape(), grad.shape(),
                                                            indices.shape(), &row_size));
      // An update of rows of no elements checks the indices and writes nothing.
      if (Optimizer::ChangesNothing(h)) row_size = 0;
      return FusedUpdate<Device, T>::template SparseApply<Optimizer, Index>(
          ctx, h, flag_, state, grad, indices, vars.tensor(0)->dim_size(0), row_size);
    } else {
      if (Optimizer::ChangesNothing(h)) return absl::OkStatus();
      if constexpr (Optimizer::kRowwise) {
        // (var is at least 1-D: LockedVariables checked it against the per-row arrays.)
        const Tensor& var = *vars.tensor(0);
        const int64_t num_rows = var.dim_size(0);
        int64_t row_size = 1;
        for (int d = 1; d < var.dims(); ++d) row_size *= var.dim_size(d);
        return FusedUpdate<Device, T>::template RowwiseApply<Optimizer>(ctx, h, flag_, state,
                                                                         grad, num_rows,
                                                                         row_size);
      } else {
        return FusedUpdate<Device, T>::template Apply<Optimizer>(ctx, h, flag_, state, grad);
      }
    }
  }

  bool use_locking_;
  bool flag_;
};

// The multi-tensor dense op of an element-wise `Optimizer` on element type T: N variables in one
// call. Its inputs: each state's list of N variables (var first), the N grads, the
// hyperparameters (shared), stochastic_rounding (zero or one [N, 2] tensor: each variable's
// [seed, step]); its attrs: N, M, use_locking and the optimizer's flag. Every variable gets the
// update that the dense op gives it alone, bit for bit; all are checked before any is written.
template <typename Device, typename T, typename Optimizer>
class FusedMultiApplyOp : public OpKernel {
 public:
  static constexpr int kNumState = Optimizer::kNumState;

  explicit FusedMultiApplyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &num_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_locking", &use_locking_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(Optimizer::kFlag.name, &flag_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables<Device, T> vars(ctx, use_locking_, /*sparse=*/false, StateNames<Optimizer>(),
                                    PerRow<Optimizer>(), num_);
    OP_REQUIRES_OK(ctx, vars.status());
    const int first_grad = kNumState * num_;
    for (int g = 0; g < num_; ++g) {
      const Tensor& var = *vars.tensor(0, g);
      const Tensor& grad = ctx->input(first_grad + g);
      OP_REQUIRES(ctx, var.shape().IsSameSize(grad.shape()),
                  absl::InvalidArgumentError(absl::StrCat(
                      "var[", g, "] and grad[", g, "] do not have the same shape: ",
                      var.shape().DebugString(), " vs ", grad.shape().DebugString())));
    }
    const int first_hyperparam = first_grad + num_;
    typename Optimizer::template Hyperparams<Acc<T>> h;
    OP_REQUIRES_OK(ctx, (ReadHyperparams<T, Optimizer>(ctx, first_hyperparam, &h)));
    std::vector<tf_ftrl::StateRounding> rounding(num_);
    OP_REQUIRES_OK(ctx, ReadRounding<T>(ctx, first_hyperparam + Optimizer::kNumHyperparams,
                                        vars.state_dtype(), num_, rounding.data()));
    if (Optimizer::ChangesNothing(h)) return;
    std::vector<const Storage<T>*> grads(num_);
    std::vector<int64_t> sizes(num_);
    for (int g = 0; g < num_; ++g) {
      grads[g] = ConstData<T>(ctx->input(first_grad + g));
      sizes[g] = ctx->input(first_grad + g).NumElements();
    }
    OP_REQUIRES_OK(ctx, WithStateType<T>(vars.state_dtype(), [&](auto s) {
      using State = tf_ftrl::StateArrays<Storage<T>, kNumState, Storage<decltype(s)>>;
      std::vector<State> states(num_);
      for (int g = 0; g < num_; ++g) {
        states[g] = vars.template state<kNumState, decltype(s)>(rounding[g], g);
      }
      return FusedUpdate<Device, T>::template MultiApply<Optimizer>(ctx, h, flag_, states,
                                                                    grads, sizes);
    }));
  }

 private:
  int num_;
  bool use_locking_;
  bool flag_;
};

template <typename Kernel>
OpKernel* CreateKernel(OpKernelConstruction* ctx) {
  return new Kernel(ctx);
}

// Registers `Kernel` for the op `name` on `device`, with element type T (and index type Index
// for a sparse op). The scalar hyperparameters stay in host memory on every device: they are
// read and checked on the host before anything is launched.
template <typename Optimizer, typename Kernel, typename T, typename Index = void>
void RegisterKernel(const char* device, const char* prefix) {
  const std::string name = std::string(prefix) + Optimizer::kName;
  KernelDefBuilder builder(name.c_str());
  builder.Device(device).TypeConstraint<T>("T");
  if constexpr (!std::is_void_v<Index>) builder.TypeConstraint<Index>("Tindices");
  for (const tf_ftrl::HyperparamSpec& h : Optimizer::kHyperparams) builder.HostMemory(h.name);
  builder.HostMemory(kStochasticRounding);
  kernel_factory::OpKernelRegistrar(builder.Build(), name, &CreateKernel<Kernel>);
}

template <typename Optimizer, typename Device, typename T>
void RegisterKernels(const char* device) {
  RegisterKernel<Optimizer, FusedApplyOp<Device, T, Optimizer>, T>(device, "FusedResourceApply");
  RegisterKernel<Optimizer, FusedApplyOp<Device, T, Optimizer, int32_t>, T, int32_t>(
      device, "FusedResourceSparseApply");
  RegisterKernel<Optimizer, FusedApplyOp<Device, T, Optimizer, int64_t>, T, int64_t>(
      device, "FusedResourceSparseApply");
}

// The multi-tensor dense op of an element-wise optimizer.
template <typename Optimizer, typename Device, typename T>
void RegisterMultiKernel(const char* device) {
  RegisterKernel<Optimizer, FusedMultiApplyOp<Device, T, Optimizer>, T>(
      device, "FusedResourceMultiApply");
}

// (Nothing without CUDA.)
template <typename Optimizer, typename T>
void RegisterGpuKernels() {
#if GOOGLE_CUDA
  RegisterKernels<Optimizer, GPUDevice, T>(DEVICE_GPU);
#endif
}

template <typename Optimizer, typename T>
void RegisterGpuMultiKernel() {
#if GOOGLE_CUDA
  RegisterMultiKernel<Optimizer, GPUDevice, T>(DEVICE_GPU);
#endif
}

// Registers every optimizer's kernels for element type T on the CPU (and the GPU when built with
// CUDA), at load time.
template <typename T>
bool RegisterKernelsForType() {
#define TF_FTRL_REGISTER_KERNELS(Optimizer)                      \
  RegisterKernels<tf_ftrl::Optimizer, CPUDevice, T>(DEVICE_CPU); \
  RegisterGpuKernels<tf_ftrl::Optimizer, T>();
#define TF_FTRL_REGISTER_MULTI_KERNEL(Optimizer)                     \
  RegisterMultiKernel<tf_ftrl::Optimizer, CPUDevice, T>(DEVICE_CPU); \
  RegisterGpuMultiKernel<tf_ftrl::Optimizer, T>();
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_KERNELS)
  TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_REGISTER_KERNELS)
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_MULTI_KERNEL)
#undef TF_FTRL_REGISTER_MULTI_KERNEL
#undef TF_FTRL_REGISTER_KERNELS
  return true;
}

}  // namespace
}  // namespace tensorflow
