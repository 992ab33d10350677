// The XLA custom-call targets of the fused ops: XLA FFI handlers (platform "Host") that run the
// same TensorFlow-free CPU loops as the OpKernels (cpu_loops.h) on the buffers XLA hands them,
// and, built with CUDA, handlers on platform "CUDA" that run the CUDA launchers (gpu_kernels.h).
// kernels/xla_ops.cc lowers each op to a custom call of its target, "tf_ftrl_" + the op's name,
// with the state buffers aliased to the results, so that the loops update them in place.
//
// A call's operands: the state arrays (var first), grad, (indices,) the hyperparameters (scalars
// of var's type), and optionally [seed, step] (int64) for stochastic rounding; its results: the
// state arrays, each aliased to its operand; its attribute: the optimizer's flag. A multi-tensor
// call (MultiUpdate) has the same for N variables, each kind of operand N times. Every input is
// checked before anything is written: a bad index or hyperparameter fails the call with an
// InvalidArgument error, which the XLA runtime reports, and leaves the state as it was.
//
// Only the XLA FFI headers (their C API, reached through XLA_FFI_GetApi in
// libtensorflow_framework.so.2) and the project's own headers: no TensorFlow header.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu_loops.h"
#include "kernels/optimizers.h"
#include "kernels/row_groups.h"
#if GOOGLE_CUDA
#include <cuda_runtime.h>

#include <optional>

#include "kernels/gpu_kernels.h"
#endif
#include "xla/ffi/api/c_api.h"
#include "xla/ffi/api/ffi.h"

namespace tf_ftrl {
namespace xla_custom_call {
namespace {

namespace ffi = ::xla::ffi;

// Runs fn's shards on XLA's intra-op thread pool and on the calling thread, and returns when all
// have run. The calling thread takes shards too, so the loop finishes even if the pool never
// runs a task (a task that starts after the last shard was taken returns at once; the shared
// state outlives the call for it).
class PoolShards {
 public:
  static cpu::ParallelFor Make(ffi::ThreadPool* pool) {
    const int64_t threads = std::max<int64_t>(1, pool->num_threads());
    return cpu::ParallelFor(
        [pool, threads](int64_t total, int64_t /*cost_per_unit*/,
                        const std::function<void(int64_t, int64_t)>& fn) {
          Run(pool, threads, total, fn);
        },
        threads + 1);
  }

 private:
  struct State {
    std::atomic<int64_t> next{0};
    int64_t num_shards = 0;
    int64_t shard_size = 0;
    int64_t total = 0;
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    std::mutex mu;
    std::condition_variable cv;
    int64_t done = 0;

    // Takes and runs shards until none is left.
    void Work() {
      for (int64_t s = next.fetch_add(1); s < num_shards; s = next.fetch_add(1)) {
        (*fn)(s * shard_size, std::min(total, (s + 1) * shard_size));
        std::lock_guard<std::mutex> lock(mu);
        if (++done == num_shards) cv.notify_all();
      }
    }
  };

  static void Run(ffi::ThreadPool* pool, int64_t threads, int64_t total,
                  const std::function<void(int64_t, int64_t)>& fn) {
    if (total <= 0) return;
    if (threads <= 1 || total == 1) return fn(0, total);
    auto state = std::make_shared<State>();
    state->num_shards = std::min(total, 4 * (threads + 1));
    state->shard_size = (total + state->num_shards - 1) / state->num_shards;
    state->num_shards = (total + state->shard_size - 1) / state->shard_size;
    state->total = total;
    state->fn = &fn;
    const int64_t helpers = std::min(threads, state->num_shards - 1);
    for (int64_t i = 0; i < helpers; ++i) pool->Schedule([state] { state->Work(); });
    state->Work();
    std::unique_lock<std::mutex> lock(state->mu);
    state->cv.wait(lock, [&] { return state->done == state->num_shards; });
  }
};

const char* TypeName(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::F32: return "float";
    case ffi::DataType::F64: return "double";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F16: return "half";
    case ffi::DataType::S32: return "int32";
    case ffi::DataType::S64: return "int64";
    default: return "another type";
  }
}

template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::string s;
  ((s += [](const auto& p) {
     if constexpr (std::is_arithmetic_v<std::decay_t<decltype(p)>>) {
       return std::to_string(p);
     } else {
       return std::string(p);
     }
   }(parts)),
   ...);
  return s;
}

// The message of a hyperparameter outside its bound (or infinite, or NaN), as the OpKernels word
// it (training_kernels.h, CheckBound); empty when it is within.
template <typename A>
std::string BoundError(const char* name, A value, Bound bound) {
  if (std::isinf(value)) return Cat(name, " must be finite but got ", value);
  switch (bound) {
    case Bound::kPositive:
      return value > A(0) ? "" : Cat(name, " must be positive but got ", value);
    case Bound::kNonNegative:
      return value >= A(0) ? "" : Cat(name, " must be non-negative but got ", value);
    case Bound::kNonPositive:
      return value <= A(0) ? "" : Cat(name, " must be non-positive but got ", value);
  }
  return "";
}

// The hyperparameters from their values (of var's storage type T, in the description's order),
// each checked against its bound.
template <typename Optimizer, typename T>
ffi::Error CheckedHyperparams(const T (&scalars)[Optimizer::kNumHyperparams],
                              typename Optimizer::template Hyperparams<AccumulateType<T>>* h) {
  using A = AccumulateType<T>;
  A values[Optimizer::kNumHyperparams];
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    values[i] = static_cast<A>(Load(scalars[i]));
    std::string error = BoundError(Optimizer::kHyperparams[i].name, values[i],
                                   Optimizer::kHyperparams[i].bound);
    if (!error.empty()) return ffi::Error::InvalidArgument(std::move(error));
  }
  *h = Optimizer::FromValues(values);
  return ffi::Error::Success();
}

// The rows of var (its first dimension; the lowering checked it has one) and the elements of
// each.
struct Rows {
  int64_t num_rows;
  int64_t row_size;
};

Rows RowsOf(const ffi::AnyBuffer& var) {
  const auto dims = var.dimensions();
  Rows rows{dims[0], 1};
  for (size_t d = 1; d < dims.size(); ++d) rows.row_size *= dims[d];
  return rows;
}

// The operands and results of one call, as the handler received them.
struct CallBuffers {
  ffi::RemainingArgs args;
  ffi::RemainingRets rets;
};

// The hyperparameters at operands [first, first + kNumHyperparams) (host memory), checked.
template <typename Optimizer, typename T>
ffi::Error ReadHyperparams(const CallBuffers& call, int64_t first,
                           typename Optimizer::template Hyperparams<AccumulateType<T>>* h) {
  T scalars[Optimizer::kNumHyperparams];
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    scalars[i] = *reinterpret_cast<const T*>(
        call.args.get<ffi::AnyBuffer>(first + i)->untyped_data());
  }
  return CheckedHyperparams<Optimizer>(scalars, h);
}

// The buffer of result `index`, holding operand `index`'s values: the results are aliased to
// the state operands, so XLA hands the same buffer; where it did not, the operand is copied.
void* ResultHoldingOperand(const CallBuffers& call, int64_t index) {
  const ffi::AnyBuffer in = *call.args.get<ffi::AnyBuffer>(index);
  ffi::Result<ffi::AnyBuffer> out = *call.rets.get<ffi::AnyBuffer>(index);
  if (out->untyped_data() != in.untyped_data()) {
    std::memcpy(out->untyped_data(), in.untyped_data(), in.size_bytes());
  }
  return out->untyped_data();
}

// The update of `Optimizer` (sparse with Index when Index is not void) on a var of storage type T
// and state of storage type S.
template <typename Optimizer, typename T, typename S, typename Index>
ffi::Error Update(ffi::ThreadPool* pool, const CallBuffers& call, bool flag) {
  using A = AccumulateType<T>;
  constexpr int kNumState = Optimizer::kNumState;
  constexpr bool kSparse = !std::is_void_v<Index>;
  constexpr int kFirstHyperparam = kNumState + 1 + kSparse;

  const ffi::AnyBuffer grad = *call.args.get<ffi::AnyBuffer>(kNumState);
  typename Optimizer::template Hyperparams<A> h;
  if (ffi::Error error = ReadHyperparams<Optimizer, T>(call, kFirstHyperparam, &h);
      error.failure()) {
    return error;
  }

  StateArrays<T, kNumState, S> state;
  state.rounding = StateRounding();
  const int first_rounding = kFirstHyperparam + Optimizer::kNumHyperparams;
  if (call.args.size() > static_cast<size_t>(first_rounding)) {
    const ffi::AnyBuffer pair = *call.args.get<ffi::AnyBuffer>(first_rounding);
    const int64_t* seed_and_step = reinterpret_cast<const int64_t*>(pair.untyped_data());
    state.rounding.stochastic = true;
    state.rounding.key = RoundingKey(seed_and_step[0], seed_and_step[1]);
  }

  // Indices are checked (and grouped) before anything is written, the copies below included.
  thread_local RowGroups groups;
  int64_t num_rows = 0;
  int64_t row_size = 0;
  if constexpr (kSparse) {
    const ffi::AnyBuffer indices = *call.args.get<ffi::AnyBuffer>(kNumState + 1);
    const Rows rows = RowsOf(*call.args.get<ffi::AnyBuffer>(0));
    num_rows = rows.num_rows;
    row_size = rows.row_size;
    IndexError error;
    if (!groups.Build(reinterpret_cast<const Index*>(indices.untyped_data()),
                      static_cast<int64_t>(indices.element_count()), num_rows, &error)) {
      return ffi::Error::InvalidArgument(Cat("indices[", error.position, "] = ", error.value,
                                             " is not in [0, ", num_rows, ")"));
    }
  }

  state.var = static_cast<T*>(ResultHoldingOperand(call, 0));
  for (int i = 1; i < kNumState; ++i) {
    state.slots[i - 1] = static_cast<S*>(ResultHoldingOperand(call, i));
  }

  const cpu::ParallelFor parallel_for = PoolShards::Make(pool);
  const T* grad_data = reinterpret_cast<const T*>(grad.untyped_data());
  if constexpr (kSparse) {
    if (Optimizer::ChangesNothing(h) || row_size == 0) return ffi::Error::Success();
    cpu::SparseApply<Optimizer>(h, flag, state, grad_data, row_size, groups, parallel_for);
  } else if constexpr (Optimizer::kRowwise) {
    if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
    const Rows rows = RowsOf(*call.args.get<ffi::AnyBuffer>(0));
    cpu::RowwiseApply<Optimizer>(h, flag, state, grad_data, rows.num_rows, rows.row_size,
                                 parallel_for);
  } else {
    if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
    cpu::Apply<Optimizer>(h, flag, state, grad_data,
                          static_cast<int64_t>(grad.element_count()), parallel_for);
  }
  return ffi::Error::Success();
}

// Calls fn(T(), S()) with the storage types of var and the state: a float var with float,
// bfloat16 or float16 state (the lowering, xla_ops.cc, emits calls with no other types).
template <typename Fn>
ffi::Error WithStateTypes(ffi::DataType var_type, ffi::DataType state_type, Fn&& fn) {
  if (var_type == ffi::DataType::F32) {
    switch (state_type) {
      case ffi::DataType::F32: return fn(float(), float());
      case ffi::DataType::BF16: return fn(float(), bfloat16());
      case ffi::DataType::F16: return fn(float(), float16());
      default: break;
    }
  }
  return ffi::Error::InvalidArgument(Cat("tf_ftrl's XLA custom call takes a float var with "
                                         "float, bfloat16 or half state, got ",
                                         TypeName(var_type), " and ", TypeName(state_type)));
}

// Calls Update with the storage types of var, the state and the indices.
template <typename Optimizer, bool kSparse>
ffi::Error Dispatch(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                    bool flag) {
  const CallBuffers call{args, rets};
  const ffi::DataType var_type = args.get<ffi::AnyBuffer>(0)->element_type();
  const ffi::DataType state_type = args.get<ffi::AnyBuffer>(1)->element_type();
  const auto with_index = [&](auto t, auto s) -> ffi::Error {
    using T = decltype(t);
    using S = decltype(s);
    if constexpr (kSparse) {
      const ffi::DataType index_type = args.get<ffi::AnyBuffer>(Optimizer::kNumState + 1)
                                           ->element_type();
      if (index_type == ffi::DataType::S32) {
        return Update<Optimizer, T, S, int32_t>(&pool, call, flag);
      }
      if (index_type == ffi::DataType::S64) {
        return Update<Optimizer, T, S, int64_t>(&pool, call, flag);
      }
      return ffi::Error::InvalidArgument(Cat("indices must be int32 or int64, got ",
                                             TypeName(index_type)));
    } else {
      return Update<Optimizer, T, S, void>(&pool, call, flag);
    }
  };
  return WithStateTypes(var_type, state_type, with_index);
}

// The handler on XLA's host platform that decodes a call for `kDispatch` (Dispatch or
// MultiDispatch of Optimizer): the intra-op thread pool, the buffers and the optimizer's flag.
template <typename Optimizer, auto kDispatch>
XLA_FFI_Error* Handler(XLA_FFI_CallFrame* call_frame) {
  static auto* handler = ffi::Ffi::Bind()
                             .Ctx<ffi::ThreadPool>()
                             .RemainingArgs()
                             .RemainingRets()
                             .template Attr<bool>(Optimizer::kFlag.name)
                             .To(kDispatch)
                             .release();
  return handler->Call(call_frame);
}

// The multi-tensor dense update of `Optimizer` (FusedResourceMultiApply<Name>) on `count`
// variables, var of storage type T and state of S: operand i * count + g is state i of variable
// g, then come the count grads, the hyperparameters and optionally each variable's [seed, step]
// ([count, 2] int64); result i * count + g is the new state i of variable g, in that operand's
// buffer.
template <typename Optimizer, typename T, typename S>
ffi::Error MultiUpdate(ffi::ThreadPool* pool, const CallBuffers& call, int64_t count,
                       bool flag) {
  constexpr int kNumState = Optimizer::kNumState;
  const int64_t first_grad = kNumState * count;
  const int64_t first_hyperparam = first_grad + count;
  const int64_t first_rounding = first_hyperparam + Optimizer::kNumHyperparams;
  typename Optimizer::template Hyperparams<AccumulateType<T>> h;
  if (ffi::Error error = ReadHyperparams<Optimizer, T>(call, first_hyperparam, &h);
      error.failure()) {
    return error;
  }
  const int64_t* pairs = nullptr;
  if (static_cast<int64_t>(call.args.size()) > first_rounding) {
    pairs = reinterpret_cast<const int64_t*>(
        call.args.get<ffi::AnyBuffer>(first_rounding)->untyped_data());
  }
  std::vector<StateArrays<T, kNumState, S>> states(count);
  std::vector<const T*> grads(count);
  std::vector<int64_t> sizes(count);
  for (int64_t g = 0; g < count; ++g) {
    states[g].rounding = StateRounding();
    if (pairs != nullptr) {
      states[g].rounding.stochastic = true;
      states[g].rounding.key = RoundingKey(pairs[2 * g], pairs[2 * g + 1]);
    }
    states[g].var = static_cast<T*>(ResultHoldingOperand(call, g));
    for (int i = 1; i < kNumState; ++i) {
      states[g].slots[i - 1] = static_cast<S*>(ResultHoldingOperand(call, i * count + g));
    }
    const ffi::AnyBuffer grad = *call.args.get<ffi::AnyBuffer>(first_grad + g);
    grads[g] = reinterpret_cast<const T*>(grad.untyped_data());
    sizes[g] = static_cast<int64_t>(grad.element_count());
  }
  if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
  cpu::MultiApply<Optimizer>(h, flag, states.data(), grads.data(), sizes.data(), count,
                             PoolShards::Make(pool));
  return ffi::Error::Success();
}

// The number of variables of a multi-tensor call: kNumState results each.
template <typename Optimizer>
int64_t MultiCount(const ffi::RemainingRets& rets) {
  return static_cast<int64_t>(rets.size()) / Optimizer::kNumState;
}

template <typename Optimizer>
ffi::Error MultiDispatch(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                         bool flag) {
  const CallBuffers call{args, rets};
  const int64_t count = MultiCount<Optimizer>(rets);
  return WithStateTypes(args.get<ffi::AnyBuffer>(0)->element_type(),
                        args.get<ffi::AnyBuffer>(count)->element_type(), [&](auto t, auto s) {
                          return MultiUpdate<Optimizer, decltype(t), decltype(s)>(&pool, call,
                                                                                  count, flag);
                        });
}

#if GOOGLE_CUDA
// The same update on XLA's CUDA platform: the buffers are device memory, the work goes to the
// call's stream through the CUDA launchers (gpu_kernels.h) the OpKernels use. The launchers take
// the hyperparameters on the host, so they (and [seed, step]) are copied from the device first,
// one synchronization per call; the sparse launcher checks the indices before it writes
// (another). Compiled with --config=cuda; not yet exercised (the GPU machines have no
// TensorFlow).
ffi::Error CudaError(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(Cat(what, " failed on the GPU: ", cudaGetErrorName(status), ": ",
                                  cudaGetErrorString(status)));
}

// The device buffer of result `index`, holding operand `index`'s values: the same buffer where
// XLA aliased them, else a copy queued on `stream`.
ffi::Error ResultHoldingOperandOnGpu(cudaStream_t stream, const CallBuffers& call, int64_t index,
                                     void** data) {
  const ffi::AnyBuffer in = *call.args.get<ffi::AnyBuffer>(index);
  ffi::Result<ffi::AnyBuffer> out = *call.rets.get<ffi::AnyBuffer>(index);
  *data = out->untyped_data();
  if (out->untyped_data() == in.untyped_data()) return ffi::Error::Success();
  return CudaError(cudaMemcpyAsync(out->untyped_data(), in.untyped_data(), in.size_bytes(),
                                   cudaMemcpyDeviceToDevice, stream),
                   "Copying the state");
}

// The hyperparameters at operands [first, first + kNumHyperparams) and, when `num_pairs` > 0,
// the [seed, step] pairs of operand `rounding` (num_pairs of them, into `pairs`), copied from the
// device (one synchronization of `stream`), the hyperparameters checked.
template <typename Optimizer, typename T>
ffi::Error ReadHyperparamsOnGpu(cudaStream_t stream, const CallBuffers& call, int64_t first,
                                int64_t rounding, int64_t num_pairs, int64_t* pairs,
                                typename Optimizer::template Hyperparams<AccumulateType<T>>* h) {
  T scalars[Optimizer::kNumHyperparams];
  for (int i = 0; i < Optimizer::kNumHyperparams; ++i) {
    const void* scalar = call.args.get<ffi::AnyBuffer>(first + i)->untyped_data();
    if (auto e = CudaError(cudaMemcpyAsync(&scalars[i], scalar, sizeof(T),
                                           cudaMemcpyDeviceToHost, stream),
                           "Copying a hyperparameter");
        e.failure()) {
      return e;
    }
  }
  if (num_pairs > 0) {
    const void* device = call.args.get<ffi::AnyBuffer>(rounding)->untyped_data();
    if (auto e = CudaError(cudaMemcpyAsync(pairs, device, 2 * num_pairs * sizeof(int64_t),
                                           cudaMemcpyDeviceToHost, stream),
                           "Copying stochastic_rounding");
        e.failure()) {
      return e;
    }
  }
  if (auto e = CudaError(cudaStreamSynchronize(stream), "Reading the hyperparameters");
      e.failure()) {
    return e;
  }
  return CheckedHyperparams<Optimizer>(scalars, h);
}

template <typename Optimizer, typename T, typename S, typename Index>
ffi::Error UpdateOnGpu(cudaStream_t stream, ffi::ScratchAllocator* scratch,
                       const CallBuffers& call, bool flag) {
  using A = AccumulateType<T>;
  constexpr int kNumState = Optimizer::kNumState;
  constexpr bool kSparse = !std::is_void_v<Index>;
  constexpr int kFirstHyperparam = kNumState + 1 + kSparse;
  const int first_rounding = kFirstHyperparam + Optimizer::kNumHyperparams;
  const bool stochastic = call.args.size() > static_cast<size_t>(first_rounding);

  int64_t seed_and_step[2] = {0, 0};
  typename Optimizer::template Hyperparams<A> h;
  if (ffi::Error error = ReadHyperparamsOnGpu<Optimizer, T>(
          stream, call, kFirstHyperparam, first_rounding, stochastic ? 1 : 0, seed_and_step, &h);
      error.failure()) {
    return error;
  }

  StateArrays<T, kNumState, S> state;
  state.rounding = StateRounding();
  if (stochastic) {
    state.rounding.stochastic = true;
    state.rounding.key = RoundingKey(seed_and_step[0], seed_and_step[1]);
  }
  // (A copy comes before the sparse launcher's index check: the variables' buffers are not
  // written, as they are not the copies.)
  for (int i = 0; i < kNumState; ++i) {
    void* data = nullptr;
    if (auto e = ResultHoldingOperandOnGpu(stream, call, i, &data); e.failure()) return e;
    if (i == 0) {
      state.var = static_cast<T*>(data);
    } else {
      state.slots[i - 1] = static_cast<S*>(data);
    }
  }

  const ffi::AnyBuffer grad = *call.args.get<ffi::AnyBuffer>(kNumState);
  const T* grad_data = reinterpret_cast<const T*>(grad.untyped_data());
  if constexpr (kSparse) {
    const Rows var_rows = RowsOf(*call.args.get<ffi::AnyBuffer>(0));
    const ffi::AnyBuffer indices = *call.args.get<ffi::AnyBuffer>(kNumState + 1);
    const gpu::SparseRows<Index> rows{reinterpret_cast<const Index*>(indices.untyped_data()),
                                      static_cast<int64_t>(indices.element_count()),
                                      var_rows.num_rows,
                                      Optimizer::ChangesNothing(h) ? 0 : var_rows.row_size};
    if (rows.num_indices > gpu::kMaxSparseIndices) {
      return ffi::Error::InvalidArgument(Cat("indices has ", rows.num_indices,
                                             " elements but the GPU kernel takes at most ",
                                             gpu::kMaxSparseIndices));
    }
    size_t bytes = 0;
    if (auto e = CudaError(gpu::SparseWorkspaceBytes<T, Index>(rows.num_indices, rows.row_size,
                                                               Optimizer::kRowwise, &bytes),
                           "Sizing the sparse update's workspace");
        e.failure()) {
      return e;
    }
    std::optional<void*> workspace = scratch->Allocate(std::max<size_t>(bytes, 1));
    if (!workspace.has_value()) {
      return ffi::Error::Internal(Cat("could not allocate ", bytes, " bytes of workspace"));
    }
    IndexError error;
    if (auto e = CudaError(gpu::SparseApply<Optimizer>(h, flag, state, grad_data, rows,
                                                       *workspace, bytes, stream, &error),
                           "The sparse update");
        e.failure()) {
      return e;
    }
    if (error.position >= 0) {
      return ffi::Error::InvalidArgument(Cat("indices[", error.position, "] = ", error.value,
                                             " is not in [0, ", rows.num_rows, ")"));
    }
    return ffi::Error::Success();
  } else if constexpr (Optimizer::kRowwise) {
    if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
    const Rows var_rows = RowsOf(*call.args.get<ffi::AnyBuffer>(0));
    return CudaError(gpu::RowwiseApply<Optimizer>(h, flag, state, grad_data, var_rows.num_rows,
                                                  var_rows.row_size, stream),
                     "The dense row-wise update");
  } else {
    if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
    return CudaError(gpu::Apply<Optimizer>(h, flag, state, grad_data,
                                           static_cast<int64_t>(grad.element_count()), stream),
                     "The dense update");
  }
}

template <typename Optimizer, bool kSparse>
ffi::Error DispatchOnGpu(cudaStream_t stream, ffi::ScratchAllocator scratch,
                         ffi::RemainingArgs args, ffi::RemainingRets rets, bool flag) {
  const CallBuffers call{args, rets};
  const ffi::DataType var_type = args.get<ffi::AnyBuffer>(0)->element_type();
  const ffi::DataType state_type = args.get<ffi::AnyBuffer>(1)->element_type();
  return WithStateTypes(var_type, state_type, [&](auto t, auto s) -> ffi::Error {
    using T = decltype(t);
    using S = decltype(s);
    if constexpr (kSparse) {
      const ffi::DataType index_type =
          args.get<ffi::AnyBuffer>(Optimizer::kNumState + 1)->element_type();
      if (index_type == ffi::DataType::S32) {
        return UpdateOnGpu<Optimizer, T, S, int32_t>(stream, &scratch, call, flag);
      }
      return UpdateOnGpu<Optimizer, T, S, int64_t>(stream, &scratch, call, flag);
    } else {
      return UpdateOnGpu<Optimizer, T, S, void>(stream, &scratch, call, flag);
    }
  });
}

// MultiUpdate on the GPU: the hyperparameters and the [seed, step] pairs are copied to the host
// (one synchronization), then one launch of the CUDA multi-tensor update (gpu::MultiApply), its
// table of pointers in scratch memory.
template <typename Optimizer, typename T, typename S>
ffi::Error MultiUpdateOnGpu(cudaStream_t stream, ffi::ScratchAllocator* scratch,
                            const CallBuffers& call, int64_t count, bool flag) {
  constexpr int kNumState = Optimizer::kNumState;
  const int64_t first_grad = kNumState * count;
  const int64_t first_hyperparam = first_grad + count;
  const int64_t first_rounding = first_hyperparam + Optimizer::kNumHyperparams;
  const bool stochastic = static_cast<int64_t>(call.args.size()) > first_rounding;
  std::vector<int64_t> pairs(stochastic ? 2 * count : 0);
  typename Optimizer::template Hyperparams<AccumulateType<T>> h;
  if (ffi::Error error = ReadHyperparamsOnGpu<Optimizer, T>(
          stream, call, first_hyperparam, first_rounding, stochastic ? count : 0, pairs.data(),
          &h);
      error.failure()) {
    return error;
  }
  std::vector<StateArrays<T, kNumState, S>> states(count);
  std::vector<const T*> grads(count);
  std::vector<int64_t> sizes(count);
  for (int64_t g = 0; g < count; ++g) {
    states[g].rounding = StateRounding();
    if (stochastic) {
      states[g].rounding.stochastic = true;
      states[g].rounding.key = RoundingKey(pairs[2 * g], pairs[2 * g + 1]);
    }
    for (int i = 0; i < kNumState; ++i) {
      void* data = nullptr;
      if (auto e = ResultHoldingOperandOnGpu(stream, call, i * count + g, &data); e.failure()) {
        return e;
      }
      if (i == 0) {
        states[g].var = static_cast<T*>(data);
      } else {
        states[g].slots[i - 1] = static_cast<S*>(data);
      }
    }
    const ffi::AnyBuffer grad = *call.args.get<ffi::AnyBuffer>(first_grad + g);
    grads[g] = reinterpret_cast<const T*>(grad.untyped_data());
    sizes[g] = static_cast<int64_t>(grad.element_count());
  }
  if (Optimizer::ChangesNothing(h)) return ffi::Error::Success();
  const size_t bytes = gpu::MultiApplyWorkspaceBytes<Optimizer, T, S>(count);
  std::optional<void*> workspace = scratch->Allocate(std::max<size_t>(bytes, 1));
  if (!workspace.has_value()) {
    return ffi::Error::Internal(Cat("could not allocate ", bytes, " bytes of workspace"));
  }
  return CudaError(gpu::MultiApply<Optimizer>(h, flag, states.data(), grads.data(), sizes.data(),
                                              count, *workspace, bytes, stream),
                   "The multi-tensor update");
}

template <typename Optimizer>
ffi::Error MultiDispatchOnGpu(cudaStream_t stream, ffi::ScratchAllocator scratch,
                              ffi::RemainingArgs args, ffi::RemainingRets rets, bool flag) {
  const CallBuffers call{args, rets};
  const int64_t count = MultiCount<Optimizer>(rets);
  return WithStateTypes(args.get<ffi::AnyBuffer>(0)->element_type(),
                        args.get<ffi::AnyBuffer>(count)->element_type(), [&](auto t, auto s) {
                          return MultiUpdateOnGpu<Optimizer, decltype(t), decltype(s)>(
                              stream, &scratch, call, count, flag);
                        });
}

// Handler on platform "CUDA", for DispatchOnGpu or MultiDispatchOnGpu: the call's stream and
// scratch memory instead of the thread pool.
template <typename Optimizer, auto kDispatch>
XLA_FFI_Error* GpuHandler(XLA_FFI_CallFrame* call_frame) {
  static auto* handler = ffi::Ffi::Bind()
                             .Ctx<ffi::PlatformStream<cudaStream_t>>()
                             .Ctx<ffi::ScratchAllocator>()
                             .RemainingArgs()
                             .RemainingRets()
                             .template Attr<bool>(Optimizer::kFlag.name)
                             .To(kDispatch)
                             .release();
  return handler->Call(call_frame);
}
#endif  // GOOGLE_CUDA

template <typename Optimizer>
bool RegisterHandlers() {
  for (const bool sparse : {false, true}) {
    const std::string target = std::string("tf_ftrl_") +
                               (sparse ? "FusedResourceSparseApply" : "FusedResourceApply") +
                               Optimizer::kName;
    XLA_FFI_Error* error = ffi::Ffi::RegisterStaticHandler(
        XLA_FFI_GetApi(), target, "Host",
        sparse ? Handler<Optimizer, Dispatch<Optimizer, true>>
               : Handler<Optimizer, Dispatch<Optimizer, false>>);
    if (error != nullptr) return false;
#if GOOGLE_CUDA
    error = ffi::Ffi::RegisterStaticHandler(
        XLA_FFI_GetApi(), target, "CUDA",
        sparse ? GpuHandler<Optimizer, DispatchOnGpu<Optimizer, true>>
               : GpuHandler<Optimizer, DispatchOnGpu<Optimizer, false>>);
    if (error != nullptr) return false;
#endif
  }
  return true;
}

// The multi-tensor op of an element-wise optimizer.
template <typename Optimizer>
bool RegisterMultiHandlers() {
  const std::string target = std::string("tf_ftrl_FusedResourceMultiApply") + Optimizer::kName;
  if (ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), target, "Host",
                                      Handler<Optimizer, MultiDispatch<Optimizer>>) != nullptr) {
    return false;
  }
#if GOOGLE_CUDA
  if (ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), target, "CUDA",
                                      GpuHandler<Optimizer, MultiDispatchOnGpu<Optimizer>>) !=
                                          nullptr) {
    return false;
  }
#endif
  return true;
}

#define TF_FTRL_REGISTER_HANDLERS(Optimizer) RegisterHandlers<Optimizer>();
#define TF_FTRL_REGISTER_MULTI_HANDLERS(Optimizer) RegisterMultiHandlers<Optimizer>();
[[maybe_unused]] const bool registered = [] {
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_HANDLERS)
  TF_FTRL_FOR_EACH_ROWWISE_OPTIMIZER(TF_FTRL_REGISTER_HANDLERS)
  TF_FTRL_FOR_EACH_OPTIMIZER(TF_FTRL_REGISTER_MULTI_HANDLERS)
  return true;
}();
#undef TF_FTRL_REGISTER_MULTI_HANDLERS
#undef TF_FTRL_REGISTER_HANDLERS

}  // namespace
}  // namespace xla_custom_call
}  // namespace tf_ftrl
