// A TensorFlow-free Python entry point to the kernels (a pybind11 module), for tests and
// benchmarks where TensorFlow is absent (the GPU machines) or in the way.
//
// CPU: apply_ftrl, sparse_apply_ftrl, apply_adagrad, sparse_apply_adagrad update NumPy arrays in
// place with the loops of cpu_kernels.h. Element types: float32, float64, float16, and bfloat16
// as uint16 arrays holding its bit patterns.
// GPU (only when built with TF_FTRL_DRIVER_WITH_CUDA; `has_cuda` says which): gpu_* run the
// launchers of gpu_kernels.h on device pointers passed as integers (CuPy's `.data.ptr`, PyTorch's
// `.data_ptr()`), with the element type named by a string and an optional stream (an integer
// cudaStream_t, default the legacy default stream).
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

#include <cstdint>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "kernels/cpu_kernels.h"
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

template <typename T>
FtrlHyperparams<AccumulateType<T>> FtrlHyper(double lr, double l1, double l2,
                                             double l2_shrinkage, double lr_power) {
  return {Hyper<T>(lr), Hyper<T>(l1), Hyper<T>(l2), Hyper<T>(l2_shrinkage), Hyper<T>(lr_power)};
}

template <typename T>
AdagradHyperparams<AccumulateType<T>> AdagradHyper(double lr, double epsilon) {
  return {Hyper<T>(lr), Hyper<T>(epsilon)};
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

// The arrays' common storage type, after checking they share it and one shape (`grad` may have
// another first dimension when sparse).
std::string CheckArrays(std::initializer_list<std::pair<const char*, py::array>> state,
                        const py::array& grad, bool sparse) {
  const py::array& var = state.begin()->second;
  const std::string dtype = StorageName(var);
  for (const auto& [name, array] : state) {
    CheckContiguous(array, name, /*writeable=*/true);
    if (StorageName(array) != dtype) {
      throw py::type_error(std::string(name) + " has dtype " + StorageName(array) +
                           " but var has " + dtype);
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
  return dtype;
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

void ApplyFtrlCpu(py::array var, py::array accum, py::array linear, py::array grad, double lr,
                  double l1, double l2, double l2_shrinkage, double lr_power,
                  bool multiply_linear_by_lr) {
  const std::string dtype =
      CheckArrays({{"var", var}, {"accum", accum}, {"linear", linear}}, grad, false);
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    cpu::ApplyFtrl(FtrlHyper<T>(lr, l1, l2, l2_shrinkage, lr_power), multiply_linear_by_lr,
                   Data<T>(var), Data<T>(accum), Data<T>(linear), ConstData<T>(grad),
                   grad.size(), cpu::SerialParallelFor);
  });
}

void SparseApplyFtrlCpu(py::array var, py::array accum, py::array linear, py::array grad,
                        py::array indices, double lr, double l1, double l2, double l2_shrinkage,
                        double lr_power, bool multiply_linear_by_lr) {
  const std::string dtype =
      CheckArrays({{"var", var}, {"accum", accum}, {"linear", linear}}, grad, true);
  const RowGroups groups = GroupIndices(indices, var, grad);
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    cpu::SparseApplyFtrl(FtrlHyper<T>(lr, l1, l2, l2_shrinkage, lr_power), multiply_linear_by_lr,
                         Data<T>(var), Data<T>(accum), Data<T>(linear), ConstData<T>(grad),
                         RowSize(var), groups, cpu::SerialParallelFor);
  });
}

void ApplyAdagradCpu(py::array var, py::array accum, py::array grad, double lr, double epsilon,
                     bool update_slots) {
  const std::string dtype = CheckArrays({{"var", var}, {"accum", accum}}, grad, false);
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    cpu::ApplyAdagrad(AdagradHyper<T>(lr, epsilon), update_slots, Data<T>(var), Data<T>(accum),
                      ConstData<T>(grad), grad.size(), cpu::SerialParallelFor);
  });
}

void SparseApplyAdagradCpu(py::array var, py::array accum, py::array grad, py::array indices,
                           double lr, double epsilon, bool update_slots) {
  const std::string dtype = CheckArrays({{"var", var}, {"accum", accum}}, grad, true);
  const RowGroups groups = GroupIndices(indices, var, grad);
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    py::gil_scoped_release release;
    ScopedFlushDenormals flush;
    cpu::SparseApplyAdagrad(AdagradHyper<T>(lr, epsilon), update_slots, Data<T>(var),
                            Data<T>(accum), ConstData<T>(grad), RowSize(var), groups,
                            cpu::SerialParallelFor);
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
                               int64_t num_indices, int64_t row_size) {
  size_t bytes = 0;
  WithStorageType(dtype, [&](auto type) {
    WithIndexType(index_dtype, [&](auto index) {
      using T = decltype(type);
      using Index = decltype(index);
      CheckCuda(gpu::SparseWorkspaceBytes<T, Index>(num_indices, row_size, &bytes),
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

void ApplyFtrlGpu(const std::string& dtype, uintptr_t var, uintptr_t accum, uintptr_t linear,
                  uintptr_t grad, int64_t size, double lr, double l1, double l2,
                  double l2_shrinkage, double lr_power, bool multiply_linear_by_lr,
                  uintptr_t stream) {
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    CheckCuda(gpu::ApplyFtrl(FtrlHyper<T>(lr, l1, l2, l2_shrinkage, lr_power),
                             multiply_linear_by_lr, DevicePointer<T>(var),
                             DevicePointer<T>(accum), DevicePointer<T>(linear),
                             DevicePointer<const T>(grad), size, Stream(stream)),
              "gpu_apply_ftrl");
  });
}

void ApplyAdagradGpu(const std::string& dtype, uintptr_t var, uintptr_t accum, uintptr_t grad,
                     int64_t size, double lr, double epsilon, bool update_slots,
                     uintptr_t stream) {
  WithStorageType(dtype, [&](auto type) {
    using T = decltype(type);
    CheckCuda(gpu::ApplyAdagrad(AdagradHyper<T>(lr, epsilon), update_slots,
                                DevicePointer<T>(var), DevicePointer<T>(accum),
                                DevicePointer<const T>(grad), size, Stream(stream)),
              "gpu_apply_adagrad");
  });
}

// Runs launch(T(), Index(), rows, workspace) for a sparse launcher and raises on a bad index.
template <typename Launch>
void RunSparseGpu(const std::string& dtype, const std::string& index_dtype, uintptr_t indices,
                  int64_t num_indices, int64_t num_rows, int64_t row_size, uintptr_t workspace,
                  size_t workspace_bytes, uintptr_t stream, const char* what, Launch&& launch) {
  IndexError error;
  WithStorageType(dtype, [&](auto type) {
    WithIndexType(index_dtype, [&](auto index) {
      using Index = decltype(index);
      const gpu::SparseRows<Index> rows{DevicePointer<const Index>(indices), num_indices,
                                        num_rows, row_size};
      size_t needed = 0;
      CheckCuda(gpu::SparseWorkspaceBytes<decltype(type), Index>(num_indices, row_size, &needed),
                what);
      const Workspace buffer(workspace, workspace_bytes, needed, Stream(stream));
      cudaError_t status;
      {
        // The launcher waits for the index check on the stream: let other Python threads run.
        py::gil_scoped_release release;
        status = launch(type, rows, buffer.pointer(), buffer.bytes(), &error);
      }
      CheckCuda(status, what);
    });
  });
  if (error.position >= 0) ThrowIndexError(error, num_rows);
}

void SparseApplyFtrlGpu(const std::string& dtype, const std::string& index_dtype, uintptr_t var,
                        uintptr_t accum, uintptr_t linear, uintptr_t grad, uintptr_t indices,
                        int64_t num_indices, int64_t num_rows, int64_t row_size, double lr,
                        double l1, double l2, double l2_shrinkage, double lr_power,
                        bool multiply_linear_by_lr, uintptr_t stream, uintptr_t workspace,
                        size_t workspace_bytes) {
  RunSparseGpu(dtype, index_dtype, indices, num_indices, num_rows, row_size, workspace,
               workspace_bytes, stream, "gpu_sparse_apply_ftrl",
               [&](auto type, const auto& rows, void* buffer, size_t bytes, IndexError* error) {
                 using T = decltype(type);
                 return gpu::SparseApplyFtrl(
                     FtrlHyper<T>(lr, l1, l2, l2_shrinkage, lr_power), multiply_linear_by_lr,
                     DevicePointer<T>(var), DevicePointer<T>(accum), DevicePointer<T>(linear),
                     DevicePointer<const T>(grad), rows, buffer, bytes, Stream(stream), error);
               });
}

void SparseApplyAdagradGpu(const std::string& dtype, const std::string& index_dtype,
                           uintptr_t var, uintptr_t accum, uintptr_t grad, uintptr_t indices,
                           int64_t num_indices, int64_t num_rows, int64_t row_size, double lr,
                           double epsilon, bool update_slots, uintptr_t stream,
                           uintptr_t workspace, size_t workspace_bytes) {
  RunSparseGpu(dtype, index_dtype, indices, num_indices, num_rows, row_size, workspace,
               workspace_bytes, stream, "gpu_sparse_apply_adagrad",
               [&](auto type, const auto& rows, void* buffer, size_t bytes, IndexError* error) {
                 using T = decltype(type);
                 return gpu::SparseApplyAdagrad(
                     AdagradHyper<T>(lr, epsilon), update_slots, DevicePointer<T>(var),
                     DevicePointer<T>(accum), DevicePointer<const T>(grad), rows, buffer, bytes,
                     Stream(stream), error);
               });
}

#endif  // TF_FTRL_DRIVER_WITH_CUDA

}  // namespace
}  // namespace tf_ftrl

PYBIND11_MODULE(tf_ftrl_kernel_driver, m) {
  using namespace pybind11::literals;
  namespace t = tf_ftrl;
  m.doc() = "TensorFlow-free entry point to tf_ftrl's CPU (and, if built so, CUDA) kernels.";

  m.def("apply_ftrl", &t::ApplyFtrlCpu, "var"_a, "accum"_a, "linear"_a, "grad"_a, "lr"_a, "l1"_a,
        "l2"_a, "l2_shrinkage"_a = 0.0, "lr_power"_a = -0.5, "multiply_linear_by_lr"_a = false);
  m.def("sparse_apply_ftrl", &t::SparseApplyFtrlCpu, "var"_a, "accum"_a, "linear"_a, "grad"_a,
        "indices"_a, "lr"_a, "l1"_a, "l2"_a, "l2_shrinkage"_a = 0.0, "lr_power"_a = -0.5,
        "multiply_linear_by_lr"_a = false);
  m.def("apply_adagrad", &t::ApplyAdagradCpu, "var"_a, "accum"_a, "grad"_a, "lr"_a,
        "epsilon"_a = 1e-7, "update_slots"_a = true);
  m.def("sparse_apply_adagrad", &t::SparseApplyAdagradCpu, "var"_a, "accum"_a, "grad"_a,
        "indices"_a, "lr"_a, "epsilon"_a = 1e-7, "update_slots"_a = true);

#if TF_FTRL_DRIVER_WITH_CUDA
  m.attr("has_cuda") = true;
  m.def("cuda_device_count", &t::CudaDeviceCount);
  m.def("cuda_device_error", &t::CudaDeviceError);
  m.def("gpu_sparse_workspace_bytes", &t::GpuSparseWorkspaceBytes, "dtype"_a, "index_dtype"_a,
        "num_indices"_a, "row_size"_a);
  m.def("gpu_apply_ftrl", &t::ApplyFtrlGpu, "dtype"_a, "var"_a, "accum"_a, "linear"_a, "grad"_a,
        "size"_a, "lr"_a, "l1"_a, "l2"_a, "l2_shrinkage"_a = 0.0, "lr_power"_a = -0.5,
        "multiply_linear_by_lr"_a = false, "stream"_a = 0);
  m.def("gpu_apply_adagrad", &t::ApplyAdagradGpu, "dtype"_a, "var"_a, "accum"_a, "grad"_a,
        "size"_a, "lr"_a, "epsilon"_a = 1e-7, "update_slots"_a = true, "stream"_a = 0);
  m.def("gpu_sparse_apply_ftrl", &t::SparseApplyFtrlGpu, "dtype"_a, "index_dtype"_a, "var"_a,
        "accum"_a, "linear"_a, "grad"_a, "indices"_a, "num_indices"_a, "num_rows"_a,
        "row_size"_a, "lr"_a, "l1"_a, "l2"_a, "l2_shrinkage"_a = 0.0, "lr_power"_a = -0.5,
        "multiply_linear_by_lr"_a = false, "stream"_a = 0, "workspace"_a = 0,
        "workspace_bytes"_a = 0);
  m.def("gpu_sparse_apply_adagrad", &t::SparseApplyAdagradGpu, "dtype"_a, "index_dtype"_a,
        "var"_a, "accum"_a, "grad"_a, "indices"_a, "num_indices"_a, "num_rows"_a, "row_size"_a,
        "lr"_a, "epsilon"_a = 1e-7, "update_slots"_a = true, "stream"_a = 0, "workspace"_a = 0,
        "workspace_bytes"_a = 0);
#else
  m.attr("has_cuda") = false;
#endif
}
