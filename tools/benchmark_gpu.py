"""Benchmarks the CUDA kernels through the TensorFlow-free kernel driver, against the GPU's
device-to-device copy bandwidth.

What it measures (one dtype per run, float32 by default):

* Dense: `gpu_apply_ftrl` and `gpu_apply_adagrad` on n-element buffers (default 1e6, 1e7, 1e8).
* Sparse: `gpu_sparse_apply_ftrl` / `gpu_sparse_apply_adagrad` on a `rows x dim` table (default
  2,000,000 x 64) at `ids` int32 indices (default 16,384) drawn with replacement, uniformly (a few
  are duplicates) and, as ids in click logs are, from a Zipf law (`--sparse-zipf`, default exponent
  1.1: the hottest id comes back about 2,000 times per call; its rows are summed in chunks of 32,
  each chunk by its own group of threads, then the chunk sums in order). Each sparse call copies its index check to the host and synchronizes once
  (see gpu_kernels.h): that latency is part of what is measured. The workspace is allocated once.
* Row-wise (`--only rowwise`, and by default): the dense update of the row-wise optimizers (one
  accumulator value per row) on the whole table, and their sparse update on the same table and
  ids, against the element-wise ones.
* Multi-tensor (`--only multi`, and by default): one `gpu_multi_apply_*` launch over
  `--multi-layers` Dense(64, 64) kernels and their biases against one `gpu_apply_*` launch per
  variable. Both go through the driver's Python calls, whose argument parsing (microseconds per
  call) is part of what is measured: the per-variable figure is the cost of a launch per variable
  from a host program, not the GPU's time alone.
* `--state-dtype bfloat16` (or float16) keeps the optimizer's slots in that type for a float32
  var (the traffic counted with the narrower slots).
* Copy: `cudaMemcpy` device to device of a large buffer (default 1 GiB), the reference for
  "% of copy bandwidth".

How: every case runs `--warmup` calls, then `--repeats` trials of `--calls` back-to-back calls on
one stream, timed with CUDA events around each trial. Reported: median (and, in the JSON, min)
milliseconds per call and the effective bandwidth from the minimum memory traffic, counted as
tools/benchmark_ops.py counts it on CPU: dense FTRL reads and writes var, accum and linear and
reads grad (7 element accesses per element), dense Adagrad 5; sparse the same per element of
every id's row (ids counted with duplicates, indices not counted); the copy reads and writes
every byte once.

Device buffers come from CuPy, else PyTorch. No TensorFlow is needed. Run from the repository
root on a GPU machine:

    bash tools/build_kernel_driver.sh --cuda
    python tools/benchmark_gpu.py
    python tools/benchmark_gpu.py --dtype bfloat16 --json results.json
    python tools/benchmark_gpu.py --dense-sizes 1e5 --sparse-rows 1e4 --calls 3 --repeats 2 \\
        --copy-mb 64          # quick smoke run
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import sys
import sysconfig

import numpy as np

from benchmark_ids import distribution_name, id_sampler, zipf_exponents

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER_PATH = ROOT / "build" / "kernel_driver" / (
    "tf_ftrl_kernel_driver" + sysconfig.get_config_var("EXT_SUFFIX"))

LR, L1, L2, L2_SHRINKAGE, LR_POWER, EPSILON = 0.01, 0.001, 0.001, 0.0, -0.5, 1e-7
ACCUM_INIT = 0.1
# Element accesses per updated element (reads + writes), for the effective bandwidth: var read
# and written and grad read (3), the rest the slots'.
ACCESSES = {"ftrl": 7, "adagrad": 5}
SLOTS = {"ftrl": ("accum", "linear"), "adagrad": ("accum",)}
# NumPy storage of each element type (bfloat16 as its bit patterns) and its size.
STORAGE = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
           "bfloat16": np.uint16}


def load_driver():
    if not DRIVER_PATH.is_file():
        sys.exit(f"{DRIVER_PATH} does not exist: run `bash tools/build_kernel_driver.sh --cuda`")
    spec = importlib.util.spec_from_file_location("tf_ftrl_kernel_driver", DRIVER_PATH)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    if not driver.has_cuda:
        sys.exit("the kernel driver was built without CUDA: run "
                 "`bash tools/build_kernel_driver.sh --cuda`")
    if driver.cuda_device_count() == 0:
        sys.exit("no CUDA device")
    return driver


def to_storage(values, dtype):
    """float32 values as the storage array of `dtype` (bfloat16 rounded to nearest even)."""
    values = np.asarray(values, np.float32)
    if dtype != "bfloat16":
        return values.astype(STORAGE[dtype])
    bits = values.view(np.uint32).astype(np.uint64)
    one, half, shift = np.uint64(1), np.uint64(0x7FFF), np.uint64(16)  # typed: NumPy 1.x
    return ((bits + half + ((bits >> shift) & one)) >> shift).astype(np.uint16)


class CupyBackend:
    def __init__(self):
        import cupy
        self.cp = cupy
        self.name = f"cupy {cupy.__version__}"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.device_name = props["name"].decode()
        self.stream = cupy.cuda.get_current_stream().ptr

    def put(self, array):
        buffer = self.cp.asarray(array)
        return buffer, buffer.data.ptr

    def full(self, n, value, dtype):
        buffer = self.cp.empty(n, STORAGE[dtype])
        buffer.fill(to_storage([value], dtype)[0])
        return buffer, buffer.data.ptr

    def copy(self, dst, src):
        dst.data.copy_from_device_async(src.data, src.nbytes)

    def event(self):
        return self.cp.cuda.Event()

    def record(self, event):
        event.record()

    def elapsed_ms(self, start, end):
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(start, end)


class TorchBackend:
    def __init__(self):
        import torch
        self.torch = torch
        self.name = f"torch {torch.__version__}"
        self.device_name = torch.cuda.get_device_name()
        self.stream = torch.cuda.current_stream().cuda_stream

    def put(self, array):
        as_signed = array.view(np.int16) if array.dtype == np.uint16 else array
        buffer = self.torch.from_numpy(np.ascontiguousarray(as_signed)).cuda()
        return buffer, buffer.data_ptr()

    def full(self, n, value, dtype):
        return self.put(np.full(n, to_storage([value], dtype)[0]))

    def copy(self, dst, src):
        dst.copy_(src)

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event):
        event.record()

    def elapsed_ms(self, start, end):
        end.synchronize()
        return start.elapsed_time(end)


def make_backend():
    for backend in (CupyBackend, TorchBackend):
        try:
            return backend()
        except ImportError:
            continue
    sys.exit("tools/benchmark_gpu.py needs CuPy or PyTorch for device buffers")


def time_calls(backend, call, args):
    """Median and min milliseconds per call over the trials."""
    for _ in range(args.warmup):
        call()
    per_call = []
    for _ in range(args.repeats):
        start, end = backend.event(), backend.event()
        backend.record(start)
        for _ in range(args.calls):
            call()
        backend.record(end)
        per_call.append(backend.elapsed_ms(start, end) / args.calls)
    return statistics.median(per_call), min(per_call)


def result(op, kind, size, median_ms, min_ms, traffic_bytes, copy_gbps, **extra):
    gbps = traffic_bytes / (median_ms * 1e-3) / 1e9
    row = dict(op=op, kind=kind, size=size, median_ms=median_ms, min_ms=min_ms, gbps=gbps,
               percent_of_copy=100.0 * gbps / copy_gbps, **extra)
    print(f"{kind:6s} {op:16s} {size:>12,d}  {median_ms:9.4f} ms  {gbps:8.1f} GB/s  "
          f"{row['percent_of_copy']:5.1f}% of copy  {extra.get('id_distribution', '')}")
    return row


def bench_copy(backend, args):
    n = args.copy_mb * (1 << 20)
    src, _ = backend.full(n, 0.0, "bfloat16")  # any 2-byte type; only the bytes matter
    dst, _ = backend.full(n, 0.0, "bfloat16")
    nbytes = 2 * n
    median_ms, min_ms = time_calls(backend, lambda: backend.copy(dst, src), args)
    gbps = 2 * nbytes / (median_ms * 1e-3) / 1e9
    print(f"copy   d2d     {nbytes:>12,d} B {median_ms:9.4f} ms  {gbps:8.1f} GB/s")
    return gbps, dict(bytes=nbytes, median_ms=median_ms, min_ms=min_ms, gbps=gbps)


def state_buffers(backend, n, dtype, rng, op, grad_rows=None, state_dtype=None,
                  accum_size=None):
    """var, accum[, linear] of n elements (slots of state_dtype, accum of accum_size when it is
    per row) and a random gradient of grad_rows or n elements."""
    slot_dtype = state_dtype or dtype
    buffers = {"var": backend.full(n, 0.0, dtype),
               "accum": backend.full(accum_size or n, ACCUM_INIT, slot_dtype)}
    if op == "ftrl":
        buffers["linear"] = backend.full(n, 0.0, slot_dtype)
    grad_size = n if grad_rows is None else grad_rows
    buffers["grad"] = backend.put(to_storage(0.01 * rng.standard_normal(grad_size), dtype))
    return buffers


def element_bytes(op, args):
    """The minimum traffic per updated element: var and grad of the var's type, slots of theirs."""
    item = np.dtype(STORAGE[args.dtype]).itemsize
    slot_item = np.dtype(STORAGE[args.state_dtype or args.dtype]).itemsize
    return 3 * item + (ACCESSES[op] - 3) * slot_item


def hyperparameters(op):
    return (LR, L1, L2, L2_SHRINKAGE, LR_POWER) if op == "ftrl" else (LR, EPSILON)


def bench_dense(driver, backend, args, copy_gbps, rng):
    rows = []
    for size in args.dense_sizes:
        for op in ("ftrl", "adagrad"):
            b = state_buffers(backend, size, args.dtype, rng, op, state_dtype=args.state_dtype)
            p = {name: pointer for name, (_, pointer) in b.items()}
            apply = getattr(driver, f"gpu_apply_{op}")

            def call():
                apply(args.dtype, p["var"], *(p[n] for n in SLOTS[op]), p["grad"], size,
                      *hyperparameters(op), stream=backend.stream, state_dtype=args.state_dtype)
            median_ms, min_ms = time_calls(backend, call, args)
            rows.append(result(op, "dense", size, median_ms, min_ms,
                               element_bytes(op, args) * size, copy_gbps))
            del b
    return rows


def bench_rowwise_dense(driver, backend, args, copy_gbps, rng):
    """The dense update of the row-wise optimizers on the sparse case's table (every row)."""
    rows = []
    num_rows, dim = args.sparse_rows, args.sparse_dim
    slot_item = np.dtype(STORAGE[args.state_dtype or args.dtype]).itemsize
    for op in ("ftrl", "adagrad"):
        b = state_buffers(backend, num_rows * dim, args.dtype, rng, op,
                          state_dtype=args.state_dtype, accum_size=num_rows)
        p = {name: pointer for name, (_, pointer) in b.items()}
        apply = getattr(driver, f"gpu_apply_rowwise_{op}")

        def call():
            apply(args.dtype, p["var"], *(p[n] for n in SLOTS[op]), p["grad"], num_rows, dim,
                  *hyperparameters(op), stream=backend.stream, state_dtype=args.state_dtype)
        median_ms, min_ms = time_calls(backend, call, args)
        traffic = (element_bytes(op, args) * dim - 2 * slot_item * (dim - 1)) * num_rows
        rows.append(result(f"rowwise {op}", "dense", num_rows * dim, median_ms, min_ms, traffic,
                           copy_gbps))
        del b
    return rows


def bench_sparse(driver, backend, args, copy_gbps, rng, rowwise=False):
    rows = []
    for zipf_exponent in zipf_exponents(args.sparse_zipf):
        indices = id_sampler(rng, args.sparse_rows, zipf_exponent)(args.sparse_ids)
        rows += bench_sparse_ids(driver, backend, args, copy_gbps, rng, indices,
                                 distribution_name(zipf_exponent), rowwise)
    return rows


def bench_sparse_ids(driver, backend, args, copy_gbps, rng, indices, distribution, rowwise):
    """The sparse update (with rowwise, the row-wise optimizers') of every id's row."""
    rows = []
    num_rows, dim, ids = args.sparse_rows, args.sparse_dim, args.sparse_ids
    _, counts = np.unique(indices, return_counts=True)
    index_buffer, index_ptr = backend.put(indices)
    workspace_bytes = driver.gpu_sparse_workspace_bytes(args.dtype, "int32", ids, dim,
                                                        rowwise=rowwise)
    workspace, workspace_ptr = backend.put(np.zeros(max(workspace_bytes, 1), np.uint8))
    common = dict(stream=backend.stream, workspace=workspace_ptr,
                  workspace_bytes=workspace_bytes, state_dtype=args.state_dtype)
    slot_item = np.dtype(STORAGE[args.state_dtype or args.dtype]).itemsize
    for op in ("ftrl", "adagrad"):
        b = state_buffers(backend, num_rows * dim, args.dtype, rng, op, grad_rows=ids * dim,
                          state_dtype=args.state_dtype, accum_size=num_rows if rowwise else None)
        p = {name: pointer for name, (_, pointer) in b.items()}
        apply = getattr(driver, f"gpu_sparse_apply_{'rowwise_' if rowwise else ''}{op}")

        def call():
            apply(args.dtype, "int32", p["var"], *(p[n] for n in SLOTS[op]), p["grad"],
                  index_ptr, ids, num_rows, dim, *hyperparameters(op), **common)
        median_ms, min_ms = time_calls(backend, call, args)
        traffic = element_bytes(op, args) * ids * dim
        if rowwise:  # the accumulator's two accesses per element become two per row
            traffic -= 2 * slot_item * ids * (dim - 1)
        rows.append(result(f"{'rowwise ' if rowwise else ''}{op}", "sparse", ids, median_ms,
                           min_ms, traffic, copy_gbps, rows=num_rows, dim=dim,
                           id_distribution=distribution, unique_ids=int(counts.size),
                           most_repeated_id=int(counts.max())))
        del b
    del index_buffer, workspace
    return rows


def bench_multi(driver, backend, args, copy_gbps, rng):
    """One multi-tensor launch over the layers' kernels and biases, against one launch each."""
    rows = []
    sizes = [64 * 64, 64] * args.multi_layers
    for op in ("ftrl", "adagrad"):
        buffers = [state_buffers(backend, n, args.dtype, rng, op, state_dtype=args.state_dtype)
                   for n in sizes]
        pointers = [{name: pointer for name, (_, pointer) in b.items()} for b in buffers]
        states = [(p["var"],) + tuple(p[n] for n in SLOTS[op]) for p in pointers]
        grads = [p["grad"] for p in pointers]
        hyper = hyperparameters(op)
        multi_apply = getattr(driver, f"gpu_multi_apply_{op}")
        apply = getattr(driver, f"gpu_apply_{op}")

        def multi():
            multi_apply(args.dtype, states, grads, sizes, *hyper, stream=backend.stream,
                        state_dtype=args.state_dtype)

        def each():
            for state, grad, size in zip(states, grads, sizes):
                apply(args.dtype, *state, grad, size, *hyper, stream=backend.stream,
                      state_dtype=args.state_dtype)
        each_ms, _ = time_calls(backend, each, args)
        median_ms, min_ms = time_calls(backend, multi, args)
        rows.append(result(op, "multi", sum(sizes), median_ms, min_ms,
                           element_bytes(op, args) * sum(sizes), copy_gbps,
                           variables=len(sizes), one_launch_each_ms=each_ms,
                           id_distribution=f"{len(sizes)} variables; one launch each "
                                           f"{each_ms:.4f} ms ({each_ms / median_ms:.1f}x)"))
        del buffers
    return rows


def parse_sizes(text):
    return [int(float(x)) for x in text.split(",") if x]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=sorted(STORAGE))
    parser.add_argument("--state-dtype", choices=["bfloat16", "float16"],
                        help="keep the slots in this type (a float32 var only)")
    parser.add_argument("--only", choices=["dense", "sparse", "rowwise", "multi"])
    parser.add_argument("--dense-sizes", type=parse_sizes, default=parse_sizes("1e6,1e7,1e8"))
    parser.add_argument("--sparse-rows", type=lambda x: int(float(x)), default=2_000_000)
    parser.add_argument("--sparse-dim", type=int, default=64)
    parser.add_argument("--sparse-ids", type=int, default=16_384)
    parser.add_argument("--sparse-zipf", type=float, default=1.1,
                        help="exponent of the second sparse case's Zipf-distributed ids (0: "
                             "uniform ids only)")
    parser.add_argument("--multi-layers", type=int, default=120,
                        help="Dense(64, 64) layers of the multi-tensor case (2 variables each)")
    parser.add_argument("--copy-mb", type=int, default=1024,
                        help="size of the copied buffer in MiB")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls per trial")
    parser.add_argument("--repeats", type=int, default=7, help="timed trials per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.state_dtype and args.dtype != "float32":
        parser.error("--state-dtype needs --dtype float32")

    driver = load_driver()
    backend = make_backend()
    rng = np.random.default_rng(args.seed)
    print(f"{backend.device_name}, {backend.name}, dtype {args.dtype}"
          f"{', state ' + args.state_dtype if args.state_dtype else ''}")
    copy_gbps, copy = bench_copy(backend, args)
    results = []
    if args.only in (None, "dense"):
        results += bench_dense(driver, backend, args, copy_gbps, rng)
    if args.only in (None, "sparse"):
        results += bench_sparse(driver, backend, args, copy_gbps, rng)
    if args.only in (None, "rowwise"):
        results += bench_rowwise_dense(driver, backend, args, copy_gbps, rng)
        results += bench_sparse(driver, backend, args, copy_gbps, rng, rowwise=True)
    if args.only in (None, "multi"):
        results += bench_multi(driver, backend, args, copy_gbps, rng)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": backend.device_name, "buffers": backend.name,
                       "dtype": args.dtype, "state_dtype": args.state_dtype, "copy": copy, "copy_bandwidth_gbps": copy_gbps,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
