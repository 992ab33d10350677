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
# Element accesses per updated element (reads + writes), for the effective bandwidth.
ACCESSES = {"ftrl": 7, "adagrad": 5}
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
    print(f"{kind:6s} {op:7s} {size:>12,d}  {median_ms:9.4f} ms  {gbps:8.1f} GB/s  "
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


def state_buffers(backend, n, dtype, rng, op, grad_rows=None):
    """var, accum[, linear] of n elements and a random gradient of grad_rows or n elements."""
    buffers = {"var": backend.full(n, 0.0, dtype), "accum": backend.full(n, ACCUM_INIT, dtype)}
    if op == "ftrl":
        buffers["linear"] = backend.full(n, 0.0, dtype)
    grad_size = n if grad_rows is None else grad_rows
    buffers["grad"] = backend.put(to_storage(0.01 * rng.standard_normal(grad_size), dtype))
    return buffers


def bench_dense(driver, backend, args, copy_gbps, rng):
    rows = []
    itemsize = np.dtype(STORAGE[args.dtype]).itemsize
    for size in args.dense_sizes:
        for op in ("ftrl", "adagrad"):
            b = state_buffers(backend, size, args.dtype, rng, op)
            p = {name: pointer for name, (_, pointer) in b.items()}
            if op == "ftrl":
                def call():
                    driver.gpu_apply_ftrl(args.dtype, p["var"], p["accum"], p["linear"],
                                          p["grad"], size, LR, L1, L2, L2_SHRINKAGE, LR_POWER,
                                          stream=backend.stream)
            else:
                def call():
                    driver.gpu_apply_adagrad(args.dtype, p["var"], p["accum"], p["grad"], size,
                                             LR, EPSILON, stream=backend.stream)
            median_ms, min_ms = time_calls(backend, call, args)
            rows.append(result(op, "dense", size, median_ms, min_ms,
                               ACCESSES[op] * itemsize * size, copy_gbps))
            del b
    return rows


def bench_sparse(driver, backend, args, copy_gbps, rng):
    rows = []
    for zipf_exponent in zipf_exponents(args.sparse_zipf):
        indices = id_sampler(rng, args.sparse_rows, zipf_exponent)(args.sparse_ids)
        rows += bench_sparse_ids(driver, backend, args, copy_gbps, rng, indices,
                                 distribution_name(zipf_exponent))
    return rows


def bench_sparse_ids(driver, backend, args, copy_gbps, rng, indices, distribution):
    rows = []
    itemsize = np.dtype(STORAGE[args.dtype]).itemsize
    num_rows, dim, ids = args.sparse_rows, args.sparse_dim, args.sparse_ids
    _, counts = np.unique(indices, return_counts=True)
    index_buffer, index_ptr = backend.put(indices)
    workspace_bytes = driver.gpu_sparse_workspace_bytes(args.dtype, "int32", ids, dim)
    workspace, workspace_ptr = backend.put(np.zeros(max(workspace_bytes, 1), np.uint8))
    common = dict(stream=backend.stream, workspace=workspace_ptr,
                  workspace_bytes=workspace_bytes)
    for op in ("ftrl", "adagrad"):
        b = state_buffers(backend, num_rows * dim, args.dtype, rng, op, grad_rows=ids * dim)
        p = {name: pointer for name, (_, pointer) in b.items()}
        if op == "ftrl":
            def call():
                driver.gpu_sparse_apply_ftrl(args.dtype, "int32", p["var"], p["accum"],
                                             p["linear"], p["grad"], index_ptr, ids, num_rows,
                                             dim, LR, L1, L2, L2_SHRINKAGE, LR_POWER, **common)
        else:
            def call():
                driver.gpu_sparse_apply_adagrad(args.dtype, "int32", p["var"], p["accum"],
                                                p["grad"], index_ptr, ids, num_rows, dim, LR,
                                                EPSILON, **common)
        median_ms, min_ms = time_calls(backend, call, args)
        rows.append(result(op, "sparse", ids, median_ms, min_ms,
                           ACCESSES[op] * itemsize * ids * dim, copy_gbps, rows=num_rows,
                           dim=dim, id_distribution=distribution, unique_ids=int(counts.size),
                           most_repeated_id=int(counts.max())))
        del b
    del index_buffer, workspace
    return rows


def parse_sizes(text):
    return [int(float(x)) for x in text.split(",") if x]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=sorted(STORAGE))
    parser.add_argument("--only", choices=["dense", "sparse"])
    parser.add_argument("--dense-sizes", type=parse_sizes, default=parse_sizes("1e6,1e7,1e8"))
    parser.add_argument("--sparse-rows", type=lambda x: int(float(x)), default=2_000_000)
    parser.add_argument("--sparse-dim", type=int, default=64)
    parser.add_argument("--sparse-ids", type=int, default=16_384)
    parser.add_argument("--sparse-zipf", type=float, default=1.1,
                        help="exponent of the second sparse case's Zipf-distributed ids (0: "
                             "uniform ids only)")
    parser.add_argument("--copy-mb", type=int, default=1024,
                        help="size of the copied buffer in MiB")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls per trial")
    parser.add_argument("--repeats", type=int, default=7, help="timed trials per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    driver = load_driver()
    backend = make_backend()
    rng = np.random.default_rng(args.seed)
    print(f"{backend.device_name}, {backend.name}, dtype {args.dtype}")
    copy_gbps, copy = bench_copy(backend, args)
    results = []
    if args.only in (None, "dense"):
        results += bench_dense(driver, backend, args, copy_gbps, rng)
    if args.only in (None, "sparse"):
        results += bench_sparse(driver, backend, args, copy_gbps, rng)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": backend.device_name, "buffers": backend.name,
                       "dtype": args.dtype, "copy": copy, "copy_bandwidth_gbps": copy_gbps,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
