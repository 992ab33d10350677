// A TensorFlow-free Python entry point to the kernels (a pybind11 module), for tests and
// benchmarks where TensorFlow is absent (the GPU machines) or in the way.
//
// Its functions are made from each optimizer's description (optimizer_spec.h, optimizers.h); for
// an optimizer `x` (kSnakeName) with state arrays S..., hyperparameters H... and flag F:
// CPU: apply_x(S..., grad, H..., F) and sparse_apply_x(S..., grad, indices, H..., F) update NumPy
// arrays in place with the loops of cpu_loops.h. Element types: float32, float64, float16, and
// bfloat16 as uint16 arrays holding its bit patterns.
// A row-wise optimizer's (rowwise_math.h) per-row arrays have shape [var.shape[0]].
// multi_apply_x(states, grads, H..., F) is the dense update of several variables in one call
// (states[v]: variable v's arrays, var first; not for row-wise optimizers).
// The state after var may be narrower than var (bfloat16 or float16 state of a float32 var,
// StateArrays): the CPU functions take it from the arrays' dtypes, the GPU ones from
// state_dtype=; both take stochastic=False and rounding_key=0 (rounding_keys=[...], one per
// variable, for the multi-tensor ones) for how it rounds (StateRounding).
// GPU (only when built with TF_FTRL_DRIVER_WITH_CUDA; `has_cuda` says which):
// gpu_apply_x(dtype, S..., grad, size, H..., F, stream=0) (a row-wise optimizer's takes
// num_rows, row_size instead of size), gpu_sparse_apply_x(dtype,
// index_dtype, S..., grad, indices, num_indices, num_rows, row_size, H..., F, stream=0,
// workspace=0, workspace_bytes=0) and gpu_multi_apply_x(dtype, states, grads, sizes, H..., F,
// stream=0, ...) run the launchers of gpu_kernels.h on device pointers passed as
// integers (CuPy's `.data.ptr`, PyTorch's `.data_ptr()`), with the element type named by a
// string and an optional stream (an integer cudaStream_t, default the legacy default stream).
// Arguments go by position or keyword, as in Python; H and F have the description's defaults
// where it gives one (HyperparamSpec::driver_default).
//
// As in the TensorFlow ops, hyperparameters are rounded to the element type first (the ops take
// them as tensors of that type), subnormal inputs and results are flushed to zero on the CPU as
// TensorFlow's kernel threads do (the CUDA kernels are built with --ftz=true, as TensorFlow's
// are), and an out-of-range index raises
// ValueError("indices[P] = V is not in [0, R)") with nothing written. Unlike the ops, nothing
// else is validated: this is a test harness, not a user API.
//
// Built by tools/build_kernel_driver.sh into build/kernel_driver/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/row_groups.h"

#if TF_FTRL_DRIVER_WITH_CUDA
#include "kernels/gpu_kernels.h"
#endif

namespace py = pybind11;

namespace tf_ftrl {
namespace {

// A hyperparameter as the op sees it: rounded to T, computed with in AccumulateType<T>.
template <typename T>
AccumulateType<T> Hyper(double value) {
  return Load(Store<T>(static_cast<AccumulateType<T>>(value)));
}

[[noreturn]] void ThrowIndexError(const IndexError& error, int64_t num_rows) {
  throw py::value_error("indices[" + std::to_string(error.position) + "] = " +
                        std::to_string(error.value) + " is not in [0, " +
                        std::to_string(num_rows) + ")");
}

// Calls fn(T()) with T the storage type named `dtype`.
template <typename Fn>
void WithStorageType(const std::string& dtype, Fn&& fn) {
  if (dtype == "float32") return fn(float());
  if (dtype == "float64") return fn(double());
  if (dtype == "float16") return fn(float16());
  if (dtype == "bfloat16") return fn(bfloat16());
  throw py::value_error("dtype must be float32, float64, float16 or bfloat16; got " + dtype);
}

// Whether a var of `dtype` may keep state of `state_dtype`: its own, or a float32 var's
// narrower (bfloat16 or float16) state.
bool StateDtypeAllowed(const std::string& dtype, const std::string& state_dtype) {
  return state_dtype == dtype ||
         (dtype == "float32" && (state_dtype == "bfloat16" || state_dtype == "float16"));
}

constexpr const char* kStateDtypeRule = "only a float32 var keeps bfloat16 or float16 state";

// Calls fn(T(), S()) with T the var's storage type `dtype` and S the state's, `state_dtype`
// ("" for T's).
template <typename Fn>
void WithStorageTypes(const std::string& dtype, const std::string& state_dtype, Fn&& fn) {
  if (state_dtype.empty() || state_dtype == dtype) {
    return WithStorageType(dtype, [&](auto type) { fn(type, type); });
  }
  if (!StateDtypeAllowed(dtype, state_dtype)) {
    throw py::value_error("state_dtype " + state_dtype + " with var of " + dtype + ": " +
                          kStateDtypeRule);
  }
  if (state_dtype == "bfloat16") return fn(float(), bfloat16());
  return fn(float(), float16());
}

// A state_dtype argument: None for the var's own.
std::string StateDtypeArgument(const py::object& value) {
  return value.is_none() ? std::string() : py::cast<std::string>(value);
}

template <typename Fn>
void WithIndexType(const std::string& dtype, Fn&& fn) {
  if (dtype == "int32") return fn(int32_t());
  if (dtype == "int64") return fn(int64_t());
  throw py::value_error("index dtype must be int32 or int64; got " + dtype);
}

// ------------------------------------------------------------------------------------------ CPU

// The storage type name of a NumPy array's dtype (uint16 stands for bfloat16).
std::string StorageName(const py::array& a) {
  const py::dtype dtype = a.dtype();
  if (dtype.kind() == 'f' && dtype.itemsize() == 4) return "float32";
  if (dtype.kind() == 'f' && dtype.itemsize() == 8) return "float64";
  if (dtype.kind() == 'f' && dtype.itemsize() == 2) return "float16";
  if (dtype.kind() == 'u' && dtype.itemsize() == 2) return "bfloat16";
  throw py::type_error("arrays must be float32, float64, float16 or uint16 (bfloat16 bits); got " +
                       std::string(py::str(dtype)));
}

std::string IndexName(const py::array& a) {
  const py::dtype dtype = a.dtype();
  if (dtype.kind() == 'i' && dtype.itemsize() == 4) return "int32";
  if (dtype.kind() == 'i' && dtype.itemsize() == 8) return "int64";
  throw py::type_error("indices must be int32 or int64; got " + std::string(py::str(dtype)));
}

void CheckContiguous(const py::array& a, const char* name, bool writeable) {
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  if (writeable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
}

// The storage types of var (and grad) and of the state after var, after checking that the state
// arrays share theirs and var's shape (`grad` may have another first dimension when sparse; a
// per-row array has shape [var.shape[0]]).
std::pair<std::string, std::string> CheckArrays(
    const std::vector<std::pair<const char*, py::array>>& state, const std::vector<bool>& per_row,
    const py::array& grad, bool sparse) {
  const py::array& var = state.front().second;
  const std::string dtype = StorageName(var);
  const std::string state_dtype = state.size() > 1 ? StorageName(state[1].second) : dtype;
  if (!StateDtypeAllowed(dtype, state_dtype)) {
    throw py::type_error(std::string(state[1].first) + " has dtype " + state_dtype +
                         " but var has " + dtype + " (" + kStateDtypeRule + ")");
  }
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& [name, array] = state[i];
    CheckContiguous(array, name, /*writeable=*/true);
    if (i > 0 && StorageName(array) != state_dtype) {
      throw py::type_error(std::string(name) + " has dtype " + StorageName(array) + " but " +
                           state[1].first + " has " + state_dtype);
    }
    if (per_row[i]) {
      if (var.ndim() < 1 || array.ndim() != 1 || array.shape(0) != var.shape(0)) {
        throw py::value_error(std::string(name) + " must hold one value per row of var");
      }
      continue;
    }
    if (array.ndim() != var.ndim() ||
        !std::equal(var.shape(), var.shape() + var.ndim(), array.shape())) {
      throw py::value_error(std::string(name) + " and var do not have the same shape");
    }
  }
  CheckContiguous(grad, "grad", /*writeable=*/false);
  if (StorageName(grad) != dtype) {
    throw py::type_error("grad has dtype " + StorageName(grad) + " but var has " + dtype);
  }
  const int skip = sparse ? 1 : 0;
  if (grad.ndim() != var.ndim() || (sparse && var.ndim() < 1) ||
      !std::equal(var.shape() + skip, var.shape() + var.ndim(), grad.shape() + skip)) {
    throw py::value_error(sparse ? "var and grad do not agree beyond the first dimension"
                                 : "var and grad do not have the same shape");
  }
  return {dtype, state_dtype};
}

template <typename T>
T* Data(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}
template <typename T>
const T* ConstData(const py::array& a) {
  return static_cast<const T*>(a.data());
}

// Groups the indices of a sparse update; raises on an out-of-range index.
RowGroups GroupIndices(const py::array& indices, const py::array& var, const py::array& grad) {
  CheckContiguous(indices, "indices", /*writeable=*/false);
  if (indices.ndim() != 1 || grad.shape(0) != indices.shape(0)) {
    throw py::value_error("grad must be the same size as indices in the first dimension");
  }
  RowGroups groups;
  IndexError error;
  bool ok = false;
  WithIndexType(IndexName(indices), [&](auto index) {
    using Index = decltype(index);
    ok = groups.Build(ConstData<Index>(indices), indices.shape(0), var.shape(0), &error);
  });
  if (!ok) ThrowIndexError(error, var.shape(0));
  return groups;
}

// Subnormal inputs read as zero and subnormal results stored as zero (x86: MXCSR's DAZ and FTZ;
// AArch64: FPCR's FZ) for the lifetime of the object, on this thread: what TensorFlow sets on
// the threads that run its CPU kernels.
class ScopedFlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  ScopedFlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~ScopedFlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#elif defined(__aarch64__)
  ScopedFlushDenormals() {
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t flushed = saved_ | (uint64_t{1} << 24);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(flushed));
  }
  ~ScopedFlushDenormals() { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#endif
};

int64_t RowSize(const py::array& var) {
  int64_t row_size = 1;
  for (py::ssize_t d = 1; d < var.ndim(); ++d) row_size *= var.shape(d);
  return row_size;
}

// ------------------------------------------------------------------------------------ arguments

// A parameter of a driver function; a null default: the argument is required.
struct Param {
  std::string name;
  py::object default_value;
};

// The arguments of a call to `function` in the order of `params`: positional ones first, then
// keywords, then the defaults, with Python's errors for a missing, repeated or unknown argument.
std::vector<py::object> BindArguments(const std::string& function,
                                      const std::vector<Param>& params, const py::args& args,
                                      const py::kwargs& kwargs) {
  if (args.size() > params.size()) {
    throw py::type_error(function + "() takes at most " + std::to_string(params.size()) +
                         " arguments (" + std::to_string(args.size()) + " given)");
  }
  std::vector<py::object> values(params.size());
  for (size_t i = 0; i < args.size(); ++i) values[i] = py::reinterpret_borrow<py::object>(args[i]);
  for (const auto& [key, value] : kwargs) {
    const std::string name = py::cast<std::string>(key);
    size_t i = 0;
    while (i < params.size() && params[i].name != name) ++i;
    if (i == params.size()) {
      throw py::type_error(function + "() got an unexpected keyword argument '" + name + "'");
    }
    if (values[i]) {
      throw py::type_error(function + "() got multiple values for argument '" + name + "'");
    }
    values[i] = py::reinterpret_borrow<py::object>(value);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (values[i]) continue;
    if (!params[i].default_value) {
      throw py::type_error(function + "() missing required argument '" + params[i].name + "'");
    }
    values[i] = params[i].default_value;
  }
  return values;
}

template <typename Optimizer>
std::vector<Param> StateParams() {
  std::vector<Param> params;
  for (const char* name : Optimizer::kStateNames) params.push_back({name, py::object()});
  return params;
}

// The hyperparameters, then the flag.
template <typename Optimizer>
std::vector<Param> HyperparamParams() {
  std::vector<Param> params;
  for (const HyperparamSpec& h : Optimizer::kHyperparams) {
    params.push_back({h.name, std::isnan(h.driver_default) ? py::object()
                                                           : py::float_(h.driver_default)});
  }
  params.push_back({Optimizer::kFlag.name, py::bool_(Optimizer::kFlag.default_value)});
  return params;
}

// How narrower state rounds (StateRounding): stochastic=False, rounding_key=0.
std::vector<Param> RoundingParams() {
  return {{"stochastic", py::bool_(false)}, {"rounding_key", py::int_(0)}};
}

StateRounding RoundingOf(const py::object& stochastic, const py::object& key) {
  return StateRounding{py::cast<bool>(stochastic), py::cast<uint64_t>(key)};
}

std::vector<Param> Concat(std::vector<std::vector<Param>> lists) {
  std::vector<Param> params;
  for (auto& list : lists) params.insert(params.end(), list.begin(), list.end());
  return params;
}

// The hyperparameters at values[0, kNumHyperparams) as the ops see them.
template <typename Optimizer, typename T>
typename Optimizer::template Hyperparams<AccumulateType<T>> HyperparamsOf(
    const py::object* values) {
  AccumulateType<T> hyper[Optimizer::kNumHyperparams];
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i)
    hyper[i] = Hyper<T>(py::cast<double>(values[i]));
  return Optimizer::FromValues(hyper);
}

py::array ArrayArgument(const py::object& value, const std::string& name) {
  if (!py::isinstance<py::array>(value)) throw py::type_error(name + " must be a NumPy array");
  return py::reinterpret_borrow<py::array>(value);
}

// ------------------------------------------------------------------------------------------ CPU

// apply_x(S..., grad, H..., F, stochastic=False, rounding_key=0) or sparse_apply_x(S..., grad,
// indices, H..., F, ...). The state after var may be narrower than var (StateArrays).
template <typename Optimizer>
void ApplyCpu(const std::string& function, bool sparse, const py::args& args,
              const py::kwargs& kwargs) {
  constexpr int kNumState = Optimizer::kNumState;
  std::vector<Param> inputs = StateParams<Optimizer>();
  inputs.push_back({"grad", py::object()});
  if (sparse) inputs.push_back({"indices", py::object()});
  const std::vector<py::object> values = BindArguments(
      function, Concat({inputs, HyperparamParams<Optimizer>(), RoundingParams()}), args, kwargs);
  std::vector<std::pair<const char*, py::array>> state;
  for (int i = 0; i < kNumState; ++i) {
    state.emplace_back(Optimizer::kStateNames[i],
                       ArrayArgument(values[i], Optimizer::kStateNames[i]));
  }
  const py::array grad = ArrayArgument(values[kNumState], "grad");
  const auto [dtype, state_dtype] = CheckArrays(
      state, std::vector<bool>(std::begin(Optimizer::kPerRow), std::end(Optimizer::kPerRow)),
      grad, sparse);
  const py::array& var = state.front().second;
  RowGroups groups;
  if (sparse) groups = GroupIndices(ArrayArgument(values[kNumState + 1], "indices"), var, grad);
  const py::object* hyper = values.data() + inputs.size();
  const size_t after = inputs.size() + Optimizer::kNumHyperparams;
  const bool flag = py::cast<bool>(values[after]);
  const StateRounding rounding = RoundingOf(values[after + 1], values[after + 2]);
  WithStorageTypes(dtype, state_dtype, [&](auto type, auto state_type) {
    using T = decltype(type);
    using S = decltype(state_type);
    const auto h = HyperparamsOf<Optimizer, T>(hyper);
    StateArrays<T, kNumState, S> arrays;
    arrays.var = Data<T>(state[0].second);
    for (int i = 1; i < kNumState; ++i) arrays.slots[i - 1] = Data<S>(state[i].second);
    arrays.rounding = rounding;
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    if (sparse) {
      cpu::SparseApply<Optimizer>(h, flag, arrays, ConstData<T>(grad), RowSize(var), groups,
                                  cpu::SerialParallelFor);
    } else if constexpr (Optimizer::kRowwise) {
      cpu::RowwiseApply<Optimizer>(h, flag, arrays, ConstData<T>(grad), var.shape(0),
                                   RowSize(var), cpu::SerialParallelFor);
    } else {
      cpu::Apply<Optimizer>(h, flag, arrays, ConstData<T>(grad), grad.size(),
                            cpu::SerialParallelFor);
    }
  });
}

// The rounding keys of a multi-tensor call: one per variable, or None for 0 each.
std::vector<uint64_t> RoundingKeys(const py::object& keys, size_t count) {
  std::vector<uint64_t> result(count, 0);
  if (keys.is_none()) return result;
  const py::sequence sequence = py::reinterpret_borrow<py::sequence>(keys);
  if (sequence.size() != count) {
    throw py::value_error("rounding_keys must hold one key per variable");
  }
  for (size_t v = 0; v < count; ++v) result[v] = py::cast<uint64_t>(sequence[v]);
  return result;
}

// multi_apply_x(states, grads, H..., F, stochastic=False, rounding_keys=None): the dense update
// of several variables in one call (cpu::MultiApply); states[v] is the sequence of variable v's
// arrays (var first), grads[v] its gradient, rounding_keys[v] its StateRounding key.
template <typename Optimizer>
void MultiApplyCpu(const std::string& function, const py::args& args, const py::kwargs& kwargs) {
  constexpr int kNumState = Optimizer::kNumState;
  const std::vector<Param> inputs = {{"states", py::object()}, {"grads", py::object()}};
  const std::vector<py::object> values = BindArguments(
      function,
      Concat({inputs, HyperparamParams<Optimizer>(),
              {{"stochastic", py::bool_(false)}, {"rounding_keys", py::none()}}}),
      args, kwargs);
  const py::sequence state_lists = py::reinterpret_borrow<py::sequence>(values[0]);
  const py::sequence grad_list = py::reinterpret_borrow<py::sequence>(values[1]);
  const size_t count = state_lists.size();
  if (grad_list.size() != count) throw py::value_error("states and grads differ in length");
  std::vector<std::vector<std::pair<const char*, py::array>>> states(count);
  std::vector<py::array> grads(count);
  std::string dtype, state_dtype;
  for (size_t v = 0; v < count; ++v) {
    const py::sequence arrays = py::reinterpret_borrow<py::sequence>(state_lists[v]);
    if (arrays.size() != kNumState) {
      throw py::value_error("each variable has " + std::to_string(kNumState) + " arrays");
    }
    for (int i = 0; i < kNumState; ++i) {
      states[v].emplace_back(Optimizer::kStateNames[i],
                             ArrayArgument(arrays[i], Optimizer::kStateNames[i]));
    }
    grads[v] = ArrayArgument(grad_list[v], "grad");
    const auto types = CheckArrays(states[v], std::vector<bool>(kNumState, false), grads[v],
                                   /*sparse=*/false);
    if (v > 0 && types != std::make_pair(dtype, state_dtype)) {
      throw py::type_error("every variable must have the first one's dtypes");
    }
    std::tie(dtype, state_dtype) = types;
  }
  if (count == 0) return;
  const py::object* hyper = values.data() + inputs.size();
  const size_t after = inputs.size() + Optimizer::kNumHyperparams;
  const bool flag = py::cast<bool>(values[after]);
  const bool stochastic = py::cast<bool>(values[after + 1]);
  const std::vector<uint64_t> keys = RoundingKeys(values[after + 2], count);
  WithStorageTypes(dtype, state_dtype, [&](auto type, auto state_type) {
    using T = decltype(type);
    using S = decltype(state_type);
    const auto h = HyperparamsOf<Optimizer, T>(hyper);
    std::vector<StateArrays<T, kNumState, S>> arrays(count);
    std::vector<const T*> grad_pointers(count);
    std::vector<int64_t> sizes(count);
    for (size_t v = 0; v < count; ++v) {
      arrays[v].var = Data<T>(states[v][0].second);
      for (int i = 1; i < kNumState; ++i) arrays[v].slots[i - 1] = Data<S>(states[v][i].second);
      arrays[v].rounding = StateRounding{stochastic, keys[v]};
      grad_pointers[v] = ConstData<T>(grads[v]);
      sizes[v] = grads[v].size();
    }
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    cpu::MultiApply<Optimizer>(h, flag, arrays.data(), grad_pointers.data(), sizes.data(),
                               static_cast<int64_t>(count), cpu::SerialParallelFor);
  });
}

// ------------------------------------------------------------------------------------------ GPU

#if TF_FTRL_DRIVER_WITH_CUDA

void CheckCuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorName(status) + ": " +
                             cudaGetErrorString(status));
  }
}

template <typename T>
T* DevicePointer(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

cudaStream_t Stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

int CudaDeviceCount() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// Why CudaDeviceCount() found no device: "" when it found some, else the CUDA error's name
// (cudaErrorNoDevice; cudaErrorInsufficientDriver where the driver is older than this runtime or
// absent). The GPU tests fail rather than skip when a GPU machine reports an error here.
std::string CudaDeviceError() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess && count > 0) return "";
  cudaGetLastError();  // clear it, so that it is not reported by a later launcher
  return status == cudaSuccess ? "no device" : cudaGetErrorName(status);
}

size_t GpuSparseWorkspaceBytes(const std::string& dtype, const std::string& index_dtype,
                               int64_t num_indices, int64_t row_size, bool rowwise) {
  size_t bytes = 0;
  WithStorageType(dtype, [&](auto type) {
    WithIndexType(index_dtype, [&](auto index) {
      using T = decltype(type);
      using Index = decltype(index);
      CheckCuda(gpu::SparseWorkspaceBytes<T, Index>(num_indices, row_size, rowwise, &bytes),
                "SparseWorkspaceBytes");
    });
  });
  return bytes;
}

// Device memory for a sparse launcher: the caller's, or allocated (stream-ordered) for one call.
class Workspace {
 public:
  Workspace(uintptr_t given, size_t given_bytes, size_t needed, cudaStream_t stream)
      : stream_(stream) {
    if (given != 0) {
      pointer_ = DevicePointer<void>(given);
      bytes_ = given_bytes;
    } else if (needed > 0) {
      CheckCuda(cudaMallocAsync(&pointer_, needed, stream), "cudaMallocAsync");
      owned_ = true;
      bytes_ = needed;
    }
  }
  ~Workspace() {
    // A failed free cannot be reported from here; clear it, or the next call's launch check
    // would report it as its own.
    if (owned_ && cudaFreeAsync(pointer_, stream_) != cudaSuccess) cudaGetLastError();
  }
  void* pointer() const { return pointer_; }
  size_t bytes() const { return bytes_; }

 private:
  cudaStream_t stream_;
  void* pointer_ = nullptr;
  size_t bytes_ = 0;
  bool owned_ = false;
};

// gpu_apply_x(dtype, S..., grad, size, H..., F, stream=0, state_dtype=None, stochastic=False,
// rounding_key=0).
template <typename Optimizer>
void ApplyGpu(const std::string& function, const py::args& args, const py::kwargs& kwargs) {
  constexpr int kNumState = Optimizer::kNumState;
  // A row-wise update takes the rows and their size instead of the size.
  const std::vector<Param> sizes =
      Optimizer::kRowwise
          ? std::vector<Param>{{"num_rows", py::object()}, {"row_size", py::object()}}
          : std::vector<Param>{{"size", py::object()}};
  const std::vector<Param> inputs =
      Concat({{{"dtype", py::object()}}, StateParams<Optimizer>(), {{"grad", py::object()}},
              sizes});
  const std::vector<py::object> values = BindArguments(
      function,
      Concat({inputs, HyperparamParams<Optimizer>(),
              {{"stream", py::int_(0)}, {"state_dtype", py::none()}}, RoundingParams()}),
      args, kwargs);
  const py::object* hyper = values.data() + inputs.size();
  const size_t after = inputs.size() + Optimizer::kNumHyperparams;
  const bool flag = py::cast<bool>(values[after]);
  const cudaStream_t stream = Stream(py::cast<uintptr_t>(values[after + 1]));
  const StateRounding rounding = RoundingOf(values[after + 3], values[after + 4]);
  WithStorageTypes(py::cast<std::string>(values[0]), StateDtypeArgument(values[after + 2]),
                   [&](auto type, auto state_type) {
    using T = decltype(type);
    using S = decltype(state_type);
    StateArrays<T, kNumState, S> state;
    state.var = DevicePointer<T>(py::cast<uintptr_t>(values[1]));
    for (int i = 1; i < kNumState; ++i) {
      state.slots[i - 1] = DevicePointer<S>(py::cast<uintptr_t>(values[1 + i]));
    }
    state.rounding = rounding;
    const T* grad = DevicePointer<const T>(py::cast<uintptr_t>(values[1 + kNumState]));
    const auto h = HyperparamsOf<Optimizer, T>(hyper);
    if constexpr (Optimizer::kRowwise) {
      CheckCuda(gpu::RowwiseApply<Optimizer>(h, flag, state, grad,
                                             py::cast<int64_t>(values[2 + kNumState]),
                                             py::cast<int64_t>(values[3 + kNumState]), stream),
                function.c_str());
    } else {
      CheckCuda(gpu::Apply<Optimizer>(h, flag, state, grad,
                                      py::cast<int64_t>(values[2 + kNumState]), stream),
                function.c_str());
    }
  });
}

// gpu_sparse_apply_x(dtype, index_dtype, S..., grad, indices, num_indices, num_rows, row_size,
// H..., F, stream=0, workspace=0, workspace_bytes=0, state_dtype=None, stochastic=False,
// rounding_key=0); raises on a bad index.
template <typename Optimizer>
void SparseApplyGpu(const std::string& function, const py::args& args,
                    const py::kwargs& kwargs) {
  constexpr int kNumState = Optimizer::kNumState;
  const std::vector<Param> inputs =
      Concat({{{"dtype", py::object()}, {"index_dtype", py::object()}}, StateParams<Optimizer>(),
              {{"grad", py::object()},
               {"indices", py::object()},
               {"num_indices", py::object()},
               {"num_rows", py::object()},
               {"row_size", py::object()}}});
  const std::vector<py::object> values = BindArguments(function,
                                                       Concat({inputs,
                                                               HyperparamParams<Optimizer>(),
                                                               {{"stream", py::int_(0)},
                                                                {"workspace", py::int_(0)},
                                                                {"workspace_bytes", py::int_(0)},
                                                                {"state_dtype", py::none()}},
                                                               RoundingParams()}),
                                                       args, kwargs);
  const py::object* hyper = values.data() + inputs.size();
  const size_t after = inputs.size() + Optimizer::kNumHyperparams;
  const bool flag = py::cast<bool>(values[after]);
  const uintptr_t stream = py::cast<uintptr_t>(values[after + 1]);
  const uintptr_t workspace = py::cast<uintptr_t>(values[after + 2]);
  const size_t workspace_bytes = py::cast<size_t>(values[after + 3]);
  const std::string state_dtype = StateDtypeArgument(values[after + 4]);
  const StateRounding rounding = RoundingOf(values[after + 5], values[after + 6]);
  const int grad_at = 2 + kNumState;  // then indices, num_indices, num_rows, row_size
  const int64_t num_indices = py::cast<int64_t>(values[grad_at + 2]);
  const int64_t num_rows = py::cast<int64_t>(values[grad_at + 3]);
  const int64_t row_size = py::cast<int64_t>(values[grad_at + 4]);
  IndexError error;
  WithStorageTypes(py::cast<std::string>(values[0]), state_dtype,
                   [&](auto type, auto state_type) {
    WithIndexType(py::cast<std::string>(values[1]), [&](auto index) {
      using T = decltype(type);
      using S = decltype(state_type);
      using Index = decltype(index);
      const gpu::SparseRows<Index> rows{
          DevicePointer<const Index>(py::cast<uintptr_t>(values[grad_at + 1])), num_indices,
          num_rows, row_size};
      StateArrays<T, kNumState, S> state;
      state.var = DevicePointer<T>(py::cast<uintptr_t>(values[2]));
      for (int i = 1; i < kNumState; ++i) {
        state.slots[i - 1] = DevicePointer<S>(py::cast<uintptr_t>(values[2 + i]));
      }
      state.rounding = rounding;
      const T* grad = DevicePointer<const T>(py::cast<uintptr_t>(values[grad_at]));
      const auto h = HyperparamsOf<Optimizer, T>(hyper);
      size_t needed = 0;
      CheckCuda(gpu::SparseWorkspaceBytes<T, Index>(num_indices, row_size, Optimizer::kRowwise,
                                                    &needed),
                function.c_str());
      const Workspace buffer(workspace, workspace_bytes, needed, Stream(stream));
      cudaError_t status;
      {
        // The launcher waits for the index check on the stream: let other Python threads run.
        py::gil_scoped_release release;
        status = gpu::SparseApply<Optimizer>(h, flag, state, grad, rows, buffer.pointer(),
                                             buffer.bytes(), Stream(stream), &error);
      }
      CheckCuda(status, function.c_str());
    });
  });
  if (error.position >= 0) ThrowIndexError(error, num_rows);
}

// gpu_multi_apply_x(dtype, states, grads, sizes, H..., F, stream=0, state_dtype=None,
// stochastic=False, rounding_keys=None, workspace=0, workspace_bytes=0): gpu::MultiApply on
// states[v] (variable v's device pointers, var first), grads[v] and sizes[v] elements.
template <typename Optimizer>
void MultiApplyGpu(const std::string& function, const py::args& args, const py::kwargs& kwargs) {
  constexpr int kNumState = Optimizer::kNumState;
  const std::vector<Param> inputs = {{"dtype", py::object()},
                                     {"states", py::object()},
                                     {"grads", py::object()},
                                     {"sizes", py::object()}};
  const std::vector<py::object> values = BindArguments(
      function,
      Concat({inputs, HyperparamParams<Optimizer>(),
              {{"stream", py::int_(0)},
               {"state_dtype", py::none()},
               {"stochastic", py::bool_(false)},
               {"rounding_keys", py::none()},
               {"workspace", py::int_(0)},
               {"workspace_bytes", py::int_(0)}}}),
      args, kwargs);
  const py::sequence state_lists = py::reinterpret_borrow<py::sequence>(values[1]);
  const py::sequence grad_list = py::reinterpret_borrow<py::sequence>(values[2]);
  const py::sequence size_list = py::reinterpret_borrow<py::sequence>(values[3]);
  const size_t count = state_lists.size();
  if (grad_list.size() != count || size_list.size() != count) {
    throw py::value_error("states, grads and sizes differ in length");
  }
  const py::object* hyper = values.data() + inputs.size();
  const size_t after = inputs.size() + Optimizer::kNumHyperparams;
  const bool flag = py::cast<bool>(values[after]);
  const cudaStream_t stream = Stream(py::cast<uintptr_t>(values[after + 1]));
  const bool stochastic = py::cast<bool>(values[after + 3]);
  const std::vector<uint64_t> keys = RoundingKeys(values[after + 4], count);
  const uintptr_t workspace = py::cast<uintptr_t>(values[after + 5]);
  const size_t workspace_bytes = py::cast<size_t>(values[after + 6]);
  WithStorageTypes(py::cast<std::string>(values[0]), StateDtypeArgument(values[after + 2]),
                   [&](auto type, auto state_type) {
    using T = decltype(type);
    using S = decltype(state_type);
    std::vector<StateArrays<T, kNumState, S>> states(count);
    std::vector<const T*> grads(count);
    std::vector<int64_t> sizes(count);
    for (size_t v = 0; v < count; ++v) {
      const py::sequence pointers = py::reinterpret_borrow<py::sequence>(state_lists[v]);
      if (pointers.size() != kNumState) {
        throw py::value_error("each variable has " + std::to_string(kNumState) + " arrays");
      }
      states[v].var = DevicePointer<T>(py::cast<uintptr_t>(pointers[0]));
      for (int i = 1; i < kNumState; ++i) {
        states[v].slots[i - 1] = DevicePointer<S>(py::cast<uintptr_t>(pointers[i]));
      }
      states[v].rounding = StateRounding{stochastic, keys[v]};
      grads[v] = DevicePointer<const T>(py::cast<uintptr_t>(grad_list[v]));
      sizes[v] = py::cast<int64_t>(size_list[v]);
    }
    const size_t needed =
        gpu::MultiApplyWorkspaceBytes<Optimizer, T, S>(static_cast<int64_t>(count));
    const Workspace buffer(workspace, workspace_bytes, needed, stream);
    CheckCuda(gpu::MultiApply<Optimizer>(HyperparamsOf<Optimizer, T>(hyper), flag, states.data(),
                                         grads.data(), sizes.data(),
                                         static_cast<int64_t>(count), buffer.pointer(),
                                         buffer.bytes(), stream),
              function.c_str());
  });
}

#endif  // TF_FTRL_DRIVER_WITH_CUDA

// Defines apply_x and sparse_apply_x (and the gpu_ ones) for `Optimizer` in module m.
template <typename Optimizer>
void DefineFunctions(py::module_& m) {
  const std::string snake = Optimizer::kSnakeName;
  for (const bool sparse : {false, true}) {
    const std::string name = (sparse ? "sparse_apply_" : "apply_") + snake;
    m.def(name.c_str(), [name, sparse](const py::args& args, const py::kwargs& kwargs) {
      ApplyCpu<Optimizer>(name, sparse, args, kwargs);
    });
  }
#if TF_FTRL_DRIVER_WITH_CUDA
  const std::string dense = "gpu_apply_" + snake;
  m.def(dense.c_str(), [dense](const py::args& args, const py::kwargs& kwargs) {
    ApplyGpu<Optimizer>(dense, args, kwargs);
  });
  const std::string sparse = "gpu_sparse_apply_" + snake;
  m.def(sparse.c_str(), [sparse](const py::args& args, const py::kwargs& kwargs) {
    SparseApplyGpu<Optimizer>(sparse, args, kwargs);
  });
#endif
  if constexpr (!Optimizer::kRowwise) {
    const std::string multi = "multi_apply_" + snake;
    m.def(multi.c_str(), [multi](const py::args& args, const py::kwargs& kwargs) {
      MultiApplyCpu<Optimizer>(multi, args, kwargs);
    });
#if TF_FTRL_DRIVER_WITH_CUDA
    const std::string gpu_multi = "gpu_multi_apply_" + snake;
    m.def(gpu_multi.c_str(), [gpu_multi](const py::args& args, const py::kwargs& kwargs) {
      MultiApplyGpu<Optimizer>(gpu_multi, args, kwargs);
    });
#endif
  }
}

}  // namespace
}  // namespace tf_ftrl

PYBIND11_MODULE(tf_ftrl_kernel_driver, m) {
  using namespace pybind11::literals;
  namespace t = tf_ftrl;
  m.doc() = "TensorFlow-free entry point to tf_ftrl's CPU (and, if built so, CUDA) kernels.";
#define TF_FTRL_DEFINE_FUNCTIONS(Optimizer) t::DefineFunctions<t::Optimizer>(m);
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_DEFINE_FUNCTIONS)
  TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_DEFINE_FUNCTIONS)
#undef TF_FTRL_DEFINE_FUNCTIONS

#if TF_FTRL_DRIVER_WITH_CUDA
  m.attr("has_cuda") = true;
  m.def("cuda_device_count", &t::CudaDeviceCount);
  m.def("cuda_device_error", &t::CudaDeviceError);
  m.def("gpu_sparse_workspace_bytes", &t::GpuSparseWorkspaceBytes, "dtype"_a, "index_dtype"_a,
        "num_indices"_a, "row_size"_a, "rowwise"_a = false);
#else
  m.attr("has_cuda") = false;
#endif
}
