"""The CUDA kernels through the TensorFlow-free kernel driver, against the CPU kernels (same
driver) and the float64 NumPy reference. Runs where there is a CUDA device and no TensorFlow:

    bash tools/build_kernel_driver.sh --cuda
    python -m pytest -q tests/gpu tests/test_kernel_driver.py

Device buffers come from CuPy, else PyTorch. Skipped only when there is no CUDA device; with a
device, a driver built without CUDA (or missing CuPy and PyTorch) is an error, not a skip.

GPU and CPU use the same per-element functions and both round without contraction
(--fmad=false, -ffp-contract=off), so they must agree bit for bit, except with lr_power != -0.5
where CUDA's pow and the C library's may differ in the last place. Both flush float32 subnormals
to zero (and the half types', computed in float32), as TensorFlow's CPU and CUDA kernels do;
float64 subnormals only the CPU flushes (CUDA cannot), and a NaN's bits may differ (x86 makes
negative quiet NaNs, CUDA a canonical one): the random inputs here produce neither.
"""

import os
import types

import numpy as np
import pytest

from tests.support.kernel_driver import (
    ADAGRAD_HYPER, FTRL_HYPER, SUBNORMAL_GRADS, State, adagrad_reference, assert_close,
    check_adagrad, check_ftrl, ftrl_reference, load_driver, narrow_state, random_indices,
    rowwise_state)
from tests.support.numpy_reference import DTYPE_NAMES, INDEX_DTYPE_NAMES, densify, to_float64


def _cuda_device_present():
    """Whether to run this module. Where a GPU is meant to be (an NVIDIA device node, or
    TF_FTRL_REQUIRE_GPU=1 as tools/gpu_checks.sh sets on a machine whose nvidia-smi lists one),
    a driver that cannot reach it fails the run instead of skipping every test."""
    driver = load_driver()
    expected = os.path.exists("/dev/nvidiactl") or os.environ.get("TF_FTRL_REQUIRE_GPU") == "1"
    if not driver.has_cuda:
        return expected  # the tests then fail, saying the driver was built without CUDA
    error = driver.cuda_device_error()
    if error and expected:
        raise RuntimeError(f"a GPU is expected here but CUDA finds none: {error} (the driver "
                           "links the CUDA runtime of its nvcc statically; the NVIDIA driver "
                           "must support that CUDA release)")
    return not error


pytestmark = pytest.mark.skipif(not _cuda_device_present(), reason="no CUDA device")

# Sizes around the 16-byte vector widths (2, 4, 8 elements) and the grid-stride tail.
DENSE_SIZES = [1, 3, 7, 8, 37, 1001, 4099, 1 << 20 | 5]
# (rows, row elements): rows that are and are not whole vectors, one-element rows; across the
# dtypes, rows of 1 to 500 vectors, so groups of 1 to 32 lanes, some with lanes left over.
SPARSE_SHAPES = [(50, 1), (40, 9), (64, 16), (30, 40), (100, 64), (7, 1000)]


class Device:
    """Copies NumPy arrays to the GPU and back, and gives their device addresses."""

    def __init__(self):
        try:
            import cupy
            self._cupy, self._torch = cupy, None
            if os.environ.get("TF_FTRL_GPU_UNPOOLED"):
                # One cudaMalloc per array (tools/gpu_checks.sh, under compute-sanitizer): an
                # access past an array's end is then outside any allocation, not inside a pooled
                # block. PyTorch's caching is turned off by PYTORCH_NO_CUDA_MEMORY_CACHING=1.
                cupy.cuda.set_allocator(None)
        except ImportError:
            try:
                import torch
            except ImportError:
                pytest.fail("the GPU tests need CuPy or PyTorch for device buffers")
            self._cupy, self._torch = None, torch

    def put(self, array, offset_elements=0):
        """A device copy of `array`, starting `offset_elements` past a fresh allocation (an
        offset of 1 makes its address miss 16-byte alignment: the kernels' scalar path)."""
        padded = np.concatenate([np.zeros(offset_elements, array.dtype), array.ravel()])
        if self._cupy is not None:
            buffer = self._cupy.asarray(padded)
            return buffer, buffer.data.ptr + offset_elements * array.itemsize
        as_signed = padded.view(np.int16) if padded.dtype == np.uint16 else padded
        buffer = self._torch.from_numpy(as_signed).cuda()
        return buffer, buffer.data_ptr() + offset_elements * array.itemsize

    def get(self, buffer, like, offset_elements=0):
        if self._cupy is not None:
            host = self._cupy.asnumpy(buffer)
        else:
            host = buffer.cpu().numpy().view(like.dtype)
        return host[offset_elements:].reshape(like.shape)

    def synchronize(self):
        if self._cupy is not None:
            self._cupy.cuda.runtime.deviceSynchronize()
        else:
            self._torch.cuda.synchronize()

    def new_stream(self):
        """(a stream that does not synchronise with the default stream, its cudaStream_t)."""
        if self._cupy is not None:
            stream = self._cupy.cuda.Stream(non_blocking=True)
            return stream, stream.ptr
        stream = self._torch.cuda.Stream()
        return stream, stream.cuda_stream


@pytest.fixture(scope="module")
def driver():
    driver = load_driver()
    if not driver.has_cuda:
        pytest.fail("the kernel driver was built without CUDA: run "
                    "`bash tools/build_kernel_driver.sh --cuda`")
    return driver


@pytest.fixture(scope="module")
def device():
    return Device()


def run_on_gpu(device, state, launch, indices=None, offset=0):
    """Runs launch(pointers) on device copies of state's start values (pointers: name -> device
    address, plus "grad" and "indices") and returns the results as host arrays."""
    buffers, pointers = {}, {}
    for name, values in list(state.start.items()) + [("grad", state.grad)]:
        buffers[name], pointers[name] = device.put(values, offset)
    if indices is not None:
        buffers["indices"], pointers["indices"] = device.put(indices)
    launch(pointers)
    device.synchronize()
    return {name: device.get(buffers[name], values, offset)
            for name, values in state.start.items()}


def run_on_cpu(state, launch):
    """Runs launch(arrays) on host copies of state's start values; returns them."""
    arrays = {name: values.copy() for name, values in state.start.items()}
    launch(arrays)
    return arrays


def bits(array):
    """The array's bit patterns (so that -0.0 differs from 0.0, and NaNs by their bits)."""
    return array.view(np.dtype(f"uint{8 * array.itemsize}"))


def assert_same_as_cpu(gpu, cpu, state, exact, magnitudes=None):
    """GPU and CPU results bit for bit, or (not exact) within 4 tolerances of the dtype, the
    absolute one scaled by magnitudes[name] where given (see ftrl_linear_magnitude)."""
    for name in cpu:
        if exact:
            np.testing.assert_array_equal(bits(gpu[name]), bits(cpu[name]),
                                          err_msg=f"{name}: GPU vs CPU, bit for bit")
        else:
            assert_close(to_float64(gpu[name], state.dtype), to_float64(cpu[name], state.dtype),
                         state.dtype, scale=4, what=f"{name}: GPU vs CPU",
                         magnitude=(magnitudes or {}).get(name, 1.0))


def ftrl_linear_magnitude(cpu, state, hyper):
    """The size of the terms that FTRL's linear update cancels, accum'^-p * |var| / lr (no / lr
    with multiply_linear_by_lr): with lr_power != -0.5, CUDA's powf and the C library's differ by
    up to a few units in the last place of accum^-p, and that difference, times var / lr, lands
    on linear whatever linear's own size. Seen on an H200: 1.4e-5 on 5 of 1M elements. One
    magnitude per element."""
    accum = to_float64(cpu["accum"], state.dtype)
    var = to_float64(state.start["var"], state.dtype)
    per_lr = 1.0 if hyper.get("multiply_linear_by_lr") else 1.0 / hyper["lr"]
    return {"linear": accum ** -hyper["lr_power"] * np.abs(var) * per_lr}


def check_against_reference(state, results, reference_check):
    state.arrays = results
    reference_check(state)


# ------------------------------------------------------------------------------------- dense


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("size", DENSE_SIZES)
@pytest.mark.parametrize("lr_power", [-0.5, -0.3])
@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
def test_apply_ftrl(driver, device, rng, dtype, size, lr_power, multiply_linear_by_lr):
    s = State(rng, (size,), dtype, ("accum", "linear"))
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power,
                 multiply_linear_by_lr=multiply_linear_by_lr)
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_apply_ftrl(
        dtype, p["var"], p["accum"], p["linear"], p["grad"], size, **hyper))
    cpu = run_on_cpu(s, lambda a: driver.apply_ftrl(a["var"], a["accum"], a["linear"], s.grad,
                                                    **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=lr_power == -0.5,
                       magnitudes=ftrl_linear_magnitude(cpu, s, hyper))
    check_against_reference(s, gpu, lambda st: check_ftrl(
        st, ftrl_reference(st, to_float64(st.grad, dtype), hyper), hyper))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("size", DENSE_SIZES)
@pytest.mark.parametrize("update_slots", [True, False])
def test_apply_adagrad(driver, device, rng, dtype, size, update_slots):
    s = State(rng, (size,), dtype, ("accum",))
    hyper = dict(ADAGRAD_HYPER, update_slots=update_slots)
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_apply_adagrad(
        dtype, p["var"], p["accum"], p["grad"], size, **hyper))
    cpu = run_on_cpu(s, lambda a: driver.apply_adagrad(a["var"], a["accum"], s.grad, **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=True)
    check_against_reference(s, gpu, lambda st: check_adagrad(
        st, adagrad_reference(st, to_float64(st.grad, dtype), hyper)))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_unaligned_buffers_take_the_scalar_path(driver, device, rng, dtype):
    size = 1001
    s = State(rng, (size,), dtype, ("accum", "linear"))
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_apply_ftrl(
        dtype, p["var"], p["accum"], p["linear"], p["grad"], size, **FTRL_HYPER), offset=1)
    cpu = run_on_cpu(s, lambda a: driver.apply_ftrl(a["var"], a["accum"], a["linear"], s.grad,
                                                    **FTRL_HYPER))
    assert_same_as_cpu(gpu, cpu, s, exact=True)


# ------------------------------------------------------------------------------------ sparse


def sparse_ftrl_on_gpu(driver, device, s, indices, hyper, index_dtype, offset=0):
    rows, row_size = s.start["var"].shape[0], int(np.prod(s.start["var"].shape[1:]))
    return run_on_gpu(device, s, lambda p: driver.gpu_sparse_apply_ftrl(
        s.dtype, index_dtype, p["var"], p["accum"], p["linear"], p["grad"], p["indices"],
        len(indices), rows, row_size, **hyper), indices=indices, offset=offset)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=str)
@pytest.mark.parametrize("lr_power", [-0.5, -0.3])
def test_sparse_apply_ftrl(driver, device, rng, dtype, index_dtype, shape, lr_power):
    num_indices = 2 * shape[0] + 3  # duplicates for sure
    indices = random_indices(rng, shape[0], num_indices, index_dtype)
    s = State(rng, shape, dtype, ("accum", "linear"), grad_shape=(num_indices,) + shape[1:])
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power)
    gpu = sparse_ftrl_on_gpu(driver, device, s, indices, hyper, index_dtype)
    cpu = run_on_cpu(s, lambda a: driver.sparse_apply_ftrl(
        a["var"], a["accum"], a["linear"], s.grad, indices, **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=lr_power == -0.5,
                       magnitudes=ftrl_linear_magnitude(cpu, s, hyper))
    grad64 = densify(to_float64(s.grad, dtype), indices, shape[0])
    touched = np.unique(indices)
    untouched = np.setdiff1d(np.arange(shape[0]), touched)
    for name, values in s.start.items():
        np.testing.assert_array_equal(gpu[name][untouched], values[untouched], err_msg=name)
    check_against_reference(s, gpu, lambda st: check_ftrl(
        st, ftrl_reference(st, grad64, hyper), hyper, rows=touched))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=str)
@pytest.mark.parametrize("update_slots", [True, False])
def test_sparse_apply_adagrad(driver, device, rng, dtype, index_dtype, shape, update_slots):
    num_indices = 2 * shape[0] + 3
    indices = random_indices(rng, shape[0], num_indices, index_dtype)
    s = State(rng, shape, dtype, ("accum",), grad_shape=(num_indices,) + shape[1:])
    hyper = dict(ADAGRAD_HYPER, update_slots=update_slots)
    row_size = int(np.prod(shape[1:]))
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_sparse_apply_adagrad(
        dtype, index_dtype, p["var"], p["accum"], p["grad"], p["indices"], num_indices,
        shape[0], row_size, **hyper), indices=indices)
    cpu = run_on_cpu(s, lambda a: driver.sparse_apply_adagrad(a["var"], a["accum"], s.grad,
                                                              indices, **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=True)
    grad64 = densify(to_float64(s.grad, dtype), indices, shape[0])
    check_against_reference(s, gpu, lambda st: check_adagrad(
        st, adagrad_reference(st, grad64, hyper), rows=np.unique(indices)))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("row_size", [33, 64])
def test_sparse_many_duplicates_is_deterministic(driver, device, rng, dtype, row_size):
    # 20,000 indices into 10 rows: long runs (63 chunks of duplicates each, summed by 63 groups
    # of threads, then added in order), the same sums every time; rows of 33 elements take the
    # scalar path, of 64 the vector path.
    shape, num_indices = (10, row_size), 20000
    indices = random_indices(rng, shape[0], num_indices, "int32")
    s = State(rng, shape, dtype, ("accum", "linear"), grad_shape=(num_indices,) + shape[1:])
    first = sparse_ftrl_on_gpu(driver, device, s, indices, FTRL_HYPER, "int32")
    second = sparse_ftrl_on_gpu(driver, device, s, indices, FTRL_HYPER, "int32")
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    cpu = run_on_cpu(s, lambda a: driver.sparse_apply_ftrl(
        a["var"], a["accum"], a["linear"], s.grad, indices, **FTRL_HYPER))
    assert_same_as_cpu(first, cpu, s, exact=True)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("row_size", [7, 64])
def test_sparse_duplicate_chunks_match_cpu(driver, device, rng, dtype, row_size):
    # Ids repeated just under, at and just over one and two chunks of the summing order (32
    # positions), and many chunks with a part one, their positions shuffled among other ids:
    # the GPU sums later chunks in separate groups, the CPU in one loop; both in the same order.
    counts = [31, 32, 33, 64, 65, 97, 1000]
    hot = np.repeat(np.arange(len(counts)), counts)
    others = rng.integers(len(counts), 500, size=400)
    indices = rng.permutation(np.concatenate([hot, others])).astype(np.int64)
    shape = (500, row_size)
    s = State(rng, shape, dtype, ("accum", "linear"), grad_shape=(len(indices), row_size))
    for index_dtype in INDEX_DTYPE_NAMES:
        gpu = sparse_ftrl_on_gpu(driver, device, s, indices.astype(index_dtype), FTRL_HYPER,
                                 index_dtype)
        cpu = run_on_cpu(s, lambda a: driver.sparse_apply_ftrl(
            a["var"], a["accum"], a["linear"], s.grad, indices.astype(index_dtype), **FTRL_HYPER))
        assert_same_as_cpu(gpu, cpu, s, exact=True)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_sparse_unaligned_buffers(driver, device, rng, dtype):
    shape, num_indices = (64, 16), 100
    indices = random_indices(rng, shape[0], num_indices, "int64")
    s = State(rng, shape, dtype, ("accum", "linear"), grad_shape=(num_indices,) + shape[1:])
    gpu = sparse_ftrl_on_gpu(driver, device, s, indices, FTRL_HYPER, "int64", offset=1)
    cpu = run_on_cpu(s, lambda a: driver.sparse_apply_ftrl(
        a["var"], a["accum"], a["linear"], s.grad, indices, **FTRL_HYPER))
    assert_same_as_cpu(gpu, cpu, s, exact=True)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
# 35 and -29 share their low 5 bits (the bits the sort orders for 20 rows) with row 3, so they
# land inside row 3's run of ~300 duplicates, where the chunk sums (queued before the check's
# result reaches the host) run on them; under compute-sanitizer memcheck they must stay in bounds.
@pytest.mark.parametrize("bad_index", [-1, 20, 2**31 - 1, 35, -29])
def test_out_of_range_index_leaves_everything_unchanged(driver, device, rng, index_dtype,
                                                        bad_index):
    # Positions 3 and 5000 are bad: the lowest is reported, whatever thread finds which first.
    indices = random_indices(rng, 20, 6000, index_dtype)
    indices[[3, 5000]] = bad_index
    s = State(rng, (20, 4), "float32", ("accum", "linear"), grad_shape=(len(indices), 4))
    message = rf"^indices\[3\] = {bad_index} is not in \[0, 20\)$"
    buffers = {name: device.put(values) for name, values in s.start.items()}
    pointers = {name: pointer for name, (_, pointer) in buffers.items()}
    grad, grad_ptr = device.put(s.grad)
    index_buffer, index_ptr = device.put(indices)

    def assert_unchanged():
        device.synchronize()
        for name, (buffer, _) in buffers.items():
            np.testing.assert_array_equal(bits(device.get(buffer, s.start[name])),
                                          bits(s.start[name]), err_msg=name)

    with pytest.raises(ValueError, match=message):
        driver.gpu_sparse_apply_ftrl("float32", index_dtype, pointers["var"], pointers["accum"],
                                     pointers["linear"], grad_ptr, index_ptr, len(indices), 20, 4,
                                     **FTRL_HYPER)
    assert_unchanged()
    with pytest.raises(ValueError, match=message):
        driver.gpu_sparse_apply_adagrad("float32", index_dtype, pointers["var"],
                                        pointers["accum"], grad_ptr, index_ptr, len(indices),
                                        20, 4, **ADAGRAD_HYPER)
    assert_unchanged()


def test_caller_workspace(driver, device, rng):
    shape, num_indices = (100, 8), 300
    indices = random_indices(rng, shape[0], num_indices, "int32")
    indices[::3] = 7  # a hot id: its later chunks of duplicates are summed in the workspace
    s = State(rng, shape, "float32", ("accum",), grad_shape=(num_indices,) + shape[1:])
    workspace_bytes = driver.gpu_sparse_workspace_bytes("float32", "int32", num_indices,
                                                        shape[1])
    # The chunk sums take room per element of a row, in the accumulate type.
    assert driver.gpu_sparse_workspace_bytes("float32", "int32", num_indices, 64) > workspace_bytes
    assert (driver.gpu_sparse_workspace_bytes("float64", "int32", num_indices, 64) >
            driver.gpu_sparse_workspace_bytes("bfloat16", "int32", num_indices, 64))
    workspace, workspace_ptr = device.put(np.zeros(workspace_bytes, np.uint8))
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_sparse_apply_adagrad(
        "float32", "int32", p["var"], p["accum"], p["grad"], p["indices"], num_indices,
        shape[0], shape[1], **ADAGRAD_HYPER, workspace=workspace_ptr,
        workspace_bytes=workspace_bytes), indices=indices)
    cpu = run_on_cpu(s, lambda a: driver.sparse_apply_adagrad(a["var"], a["accum"], s.grad,
                                                              indices, **ADAGRAD_HYPER))
    assert_same_as_cpu(gpu, cpu, s, exact=True)
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        run_on_gpu(device, s, lambda p: driver.gpu_sparse_apply_adagrad(
            "float32", "int32", p["var"], p["accum"], p["grad"], p["indices"], num_indices,
            shape[0], shape[1], **ADAGRAD_HYPER, workspace=workspace_ptr,
            workspace_bytes=workspace_bytes - 1), indices=indices)
    # A workspace at any alignment (here 4 bytes past a 256-byte boundary) is as good.
    workspace, workspace_ptr = device.put(np.zeros(workspace_bytes + 4, np.uint8), 4)
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_sparse_apply_adagrad(
        "float32", "int32", p["var"], p["accum"], p["grad"], p["indices"], num_indices,
        shape[0], shape[1], **ADAGRAD_HYPER, workspace=workspace_ptr,
        workspace_bytes=workspace_bytes), indices=indices)
    assert_same_as_cpu(gpu, cpu, s, exact=True)


# ------------------------------------------------------------------ streams, sizes, subnormals


def test_launches_use_the_given_stream(driver, device, rng):
    # Dense and sparse updates on a stream that does not synchronise with the default stream,
    # waited for on that stream alone: work launched elsewhere would not be waited for.
    stream, stream_ptr = device.new_stream()
    dense = State(rng, (4099,), "float32", ("accum", "linear"))
    buffers = {name: device.put(values) for name, values in dense.start.items()}
    grad, grad_ptr = device.put(dense.grad)
    device.synchronize()  # the copies above ran on the default stream
    driver.gpu_apply_ftrl("float32", buffers["var"][1], buffers["accum"][1],
                          buffers["linear"][1], grad_ptr, 4099, **FTRL_HYPER, stream=stream_ptr)
    stream.synchronize()
    gpu = {name: device.get(buffer, dense.start[name]) for name, (buffer, _) in buffers.items()}
    cpu = run_on_cpu(dense, lambda a: driver.apply_ftrl(a["var"], a["accum"], a["linear"],
                                                        dense.grad, **FTRL_HYPER))
    assert_same_as_cpu(gpu, cpu, dense, exact=True)

    shape, num_indices = (100, 16), 300
    indices = random_indices(rng, shape[0], num_indices, "int64")
    sparse = State(rng, shape, "float32", ("accum",), grad_shape=(num_indices,) + shape[1:])
    buffers = {name: device.put(values) for name, values in sparse.start.items()}
    grad, grad_ptr = device.put(sparse.grad)
    index_buffer, index_ptr = device.put(indices)
    device.synchronize()
    driver.gpu_sparse_apply_adagrad("float32", "int64", buffers["var"][1], buffers["accum"][1],
                                    grad_ptr, index_ptr, num_indices, shape[0], shape[1],
                                    **ADAGRAD_HYPER, stream=stream_ptr)
    stream.synchronize()
    gpu = {name: device.get(buffer, sparse.start[name]) for name, (buffer, _) in buffers.items()}
    cpu = run_on_cpu(sparse, lambda a: driver.sparse_apply_adagrad(
        a["var"], a["accum"], sparse.grad, indices, **ADAGRAD_HYPER))
    assert_same_as_cpu(gpu, cpu, sparse, exact=True)


def test_empty_updates_do_nothing(driver, device, rng):
    # No elements, no indices, or rows of no elements: nothing to read or write.
    driver.gpu_apply_ftrl("float32", 0, 0, 0, 0, 0, **FTRL_HYPER)
    driver.gpu_apply_adagrad("bfloat16", 0, 0, 0, 0, **ADAGRAD_HYPER)
    s = State(rng, (5, 4), "float32", ("accum", "linear"), grad_shape=(3, 4))
    buffers = {name: device.put(values) for name, values in s.start.items()}
    grad, grad_ptr = device.put(s.grad)
    indices, index_ptr = device.put(np.array([4, 0, 4], np.int32))
    driver.gpu_sparse_apply_ftrl("float32", "int32", buffers["var"][1], buffers["accum"][1],
                                 buffers["linear"][1], grad_ptr, index_ptr, 0, 5, 4, **FTRL_HYPER)
    driver.gpu_sparse_apply_adagrad("float32", "int32", buffers["var"][1], buffers["accum"][1],
                                    grad_ptr, index_ptr, 3, 5, 0, **ADAGRAD_HYPER)
    device.synchronize()
    for name, (buffer, _) in buffers.items():
        np.testing.assert_array_equal(bits(device.get(buffer, s.start[name])),
                                      bits(s.start[name]), err_msg=name)


def test_grid_stride_loops_go_round_more_than_once(driver, device, rng):
    # The grids are capped at 65,536 blocks of 256 threads: float64 moves 2 elements per thread
    # and pass, and sparse updates take a group of up to 32 lanes per sorted position (32 for
    # rows of 33 float32 elements: 8 groups per block), so these sizes need second passes.
    size = 65536 * 256 * 2 + 5
    dense = State(rng, (size,), "float64", ("accum",))
    gpu = run_on_gpu(device, dense, lambda p: driver.gpu_apply_adagrad(
        "float64", p["var"], p["accum"], p["grad"], size, **ADAGRAD_HYPER))
    cpu = run_on_cpu(dense, lambda a: driver.apply_adagrad(a["var"], a["accum"], dense.grad,
                                                           **ADAGRAD_HYPER))
    assert_same_as_cpu(gpu, cpu, dense, exact=True)

    # 600,000 ids (about 190,000 unique rows): more positions than the 524,288 groups of a
    # full grid.
    shape, num_indices = (200_000, 33), 600_000
    indices = random_indices(rng, shape[0], num_indices, "int32")
    sparse = State(rng, shape, "float32", ("accum", "linear"),
                   grad_shape=(num_indices,) + shape[1:])
    gpu = sparse_ftrl_on_gpu(driver, device, sparse, indices, FTRL_HYPER, "int32")
    cpu = run_on_cpu(sparse, lambda a: driver.sparse_apply_ftrl(
        a["var"], a["accum"], a["linear"], sparse.grad, indices, **FTRL_HYPER))
    assert_same_as_cpu(gpu, cpu, sparse, exact=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_subnormals_are_flushed_as_on_the_cpu(driver, device, dtype):
    # Built with --ftz=true, as TensorFlow's CUDA kernels are; the CPU side flushes as
    # TensorFlow's kernel threads do (tests/test_kernel_driver.py checks it against TensorFlow).
    grad = SUBNORMAL_GRADS[dtype]
    start = {"var": np.zeros_like(grad), "accum": np.zeros_like(grad)}
    s = types.SimpleNamespace(start=start, grad=grad, dtype=dtype)
    gpu = run_on_gpu(device, s, lambda p: driver.gpu_apply_adagrad(
        dtype, p["var"], p["accum"], p["grad"], len(grad), **ADAGRAD_HYPER))
    cpu = run_on_cpu(s, lambda a: driver.apply_adagrad(a["var"], a["accum"], grad,
                                                       **ADAGRAD_HYPER))
    assert_same_as_cpu(gpu, cpu, s, exact=True)
    assert (to_float64(gpu["var"], dtype)[:-1] == 0).all()
    assert to_float64(gpu["var"], dtype)[-1] != 0


# ---------------------------------------------------------------------------------- row-wise


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(50,), (40, 9), (64, 16), (30, 64)], ids=str)
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_rowwise_dense(driver, device, rng, dtype, shape, optimizer):
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    s = rowwise_state(rng, shape, dtype, slots)
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    rows, row_size = shape[0], int(np.prod(shape[1:]))
    gpu = run_on_gpu(device, s, lambda p: getattr(driver, f"gpu_apply_rowwise_{optimizer}")(
        dtype, p["var"], *(p[name] for name in slots), p["grad"], rows, row_size, **hyper))
    cpu = run_on_cpu(s, lambda a: getattr(driver, f"apply_rowwise_{optimizer}")(
        a["var"], *(a[name] for name in slots), s.grad, **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=True)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(50,), (40, 9), (64, 16), (10, 64)], ids=str)
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_rowwise_sparse(driver, device, rng, dtype, index_dtype, shape, optimizer):
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    num_indices = max(2 * shape[0] + 3, 200)  # duplicates, and runs past one summing chunk
    indices = random_indices(rng, shape[0], num_indices, index_dtype)
    s = rowwise_state(rng, shape, dtype, slots, grad_shape=(num_indices,) + shape[1:])
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    rows, row_size = shape[0], int(np.prod(shape[1:]))
    gpu = run_on_gpu(device, s, lambda p: getattr(driver, f"gpu_sparse_apply_rowwise_{optimizer}")(
        dtype, index_dtype, p["var"], *(p[name] for name in slots), p["grad"], p["indices"],
        num_indices, rows, row_size, **hyper), indices=indices)
    cpu = run_on_cpu(s, lambda a: getattr(driver, f"sparse_apply_rowwise_{optimizer}")(
        a["var"], *(a[name] for name in slots), s.grad, indices, **hyper))
    assert_same_as_cpu(gpu, cpu, s, exact=True)
    untouched = np.setdiff1d(np.arange(rows), indices)
    for name, values in s.start.items():
        np.testing.assert_array_equal(gpu[name][untouched], values[untouched], err_msg=name)


def test_rowwise_workspace_holds_the_summed_rows(driver):
    plain = driver.gpu_sparse_workspace_bytes("float32", "int32", 1000, 64)
    rowwise = driver.gpu_sparse_workspace_bytes("float32", "int32", 1000, 64, rowwise=True)
    # n summed rows of the accumulate type and n rows' coefficients.
    assert rowwise >= plain + 1000 * 64 * 4 + 1000 * 16


# ------------------------------------------------------------------------ narrower state


def apply_narrow(driver, device, s, optimizer, layout, indices, state_dtype, stochastic, key):
    """(GPU results, CPU results) of one update of `layout` on s, slots of state_dtype."""
    slots = [name for name in s.start if name != "var"]
    rowwise = layout.startswith("rowwise")
    name = f"rowwise_{optimizer}" if rowwise else optimizer
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    rounding = dict(stochastic=stochastic, rounding_key=key)
    rows, row_size = s.start["var"].shape[0], int(np.prod(s.start["var"].shape[1:]))
    if layout.endswith("sparse"):
        gpu = run_on_gpu(device, s, lambda p: getattr(driver, f"gpu_sparse_apply_{name}")(
            "float32", "int32", p["var"], *(p[n] for n in slots), p["grad"], p["indices"],
            len(indices), rows, row_size, **hyper, state_dtype=state_dtype, **rounding),
            indices=indices)
        cpu = run_on_cpu(s, lambda a: getattr(driver, f"sparse_apply_{name}")(
            a["var"], *(a[n] for n in slots), s.grad, indices, **hyper, **rounding))
    else:
        sizes = (rows, row_size) if rowwise else (rows * row_size,)
        gpu = run_on_gpu(device, s, lambda p: getattr(driver, f"gpu_apply_{name}")(
            "float32", p["var"], *(p[n] for n in slots), p["grad"], *sizes, **hyper,
            state_dtype=state_dtype, **rounding))
        cpu = run_on_cpu(s, lambda a: getattr(driver, f"apply_{name}")(
            a["var"], *(a[n] for n in slots), s.grad, **hyper, **rounding))
    return gpu, cpu


@pytest.mark.parametrize("state_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("layout", ["dense", "sparse", "rowwise_dense", "rowwise_sparse"])
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_narrow_state_same_bits_as_cpu(driver, device, rng, state_dtype, stochastic, layout,
                                       optimizer):
    """bfloat16 / float16 state of a float32 var: the GPU stores the CPU's bits, rounded to
    nearest or stochastically (the same bits for the same key, array and position)."""
    shape = (300, 33)  # rows that are not whole vectors, over 2^13 elements of each array
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    rowwise = layout.startswith("rowwise")
    indices = None
    grad_shape = None
    if layout.endswith("sparse"):
        indices = random_indices(rng, shape[0], 2 * shape[0] + 3, "int32")
        grad_shape = (len(indices),) + shape[1:]
    s = narrow_state(rng, shape, state_dtype, slots, grad_shape, rowwise)
    key = int(rng.integers(0, 2**63))
    gpu, cpu = apply_narrow(driver, device, s, optimizer, layout, indices, state_dtype,
                            stochastic, key)
    for name in cpu:
        np.testing.assert_array_equal(bits(gpu[name]), bits(cpu[name]),
                                      err_msg=f"{name}: GPU vs CPU, bit for bit")
    if indices is not None:
        untouched = np.setdiff1d(np.arange(shape[0]), indices)
        for name, values in s.start.items():
            np.testing.assert_array_equal(gpu[name][untouched], values[untouched], err_msg=name)
    if stochastic:
        # The flag reaches the kernels: rounding to nearest stores other bits somewhere.
        _, nearest = apply_narrow(driver, device, s, optimizer, layout, indices, state_dtype,
                                  False, key)
        assert any(not np.array_equal(cpu[name], nearest[name]) for name in slots)


def put_state(device, state, offset):
    """Device copies of state's start values and gradient: ({name: buffer}, {name: address})."""
    buffers, pointers = {}, {}
    for name, values in list(state.start.items()) + [("grad", state.grad)]:
        buffers[name], pointers[name] = device.put(values, offset)
    return buffers, pointers


@pytest.mark.parametrize("dtype,state_dtype", [
    ("float32", None), ("float64", None), ("float16", None), ("bfloat16", None),
    ("float32", "bfloat16"), ("float32", "float16")])
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_multi_apply_same_bits_as_one_launch_each_and_cpu(driver, device, rng, dtype,
                                                          state_dtype, optimizer):
    """One launch over many variables (a device table of their pointers and sizes) gives each
    the bits of its own launch and of the CPU's multi-tensor loop: sizes around the vector
    widths and blocks, an empty variable, and unaligned ones (the scalar path)."""
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    sizes = [1001, 0, 1, 7, 8, 37, 4099, 70_001, 3, 256 * 8, 5]
    offsets = [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    states = []
    for size in sizes:
        if state_dtype:
            states.append(narrow_state(rng, (size,), state_dtype, slots))
        else:
            states.append(State(rng, (size,), dtype, slots))
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    stochastic = state_dtype is not None
    keys = [int(k) for k in rng.integers(0, 2**63, size=len(sizes))]
    names = ("var",) + slots

    placed = [put_state(device, s, offset) for s, offset in zip(states, offsets)]
    getattr(driver, f"gpu_multi_apply_{optimizer}")(
        dtype, [tuple(p[n] for n in names) for _, p in placed], [p["grad"] for _, p in placed],
        sizes, **hyper, state_dtype=state_dtype, stochastic=stochastic, rounding_keys=keys)
    device.synchronize()
    multi = [{n: device.get(b[n], s.start[n], offset) for n in names}
             for (b, _), s, offset in zip(placed, states, offsets)]

    cpu = [{n: s.start[n].copy() for n in names} for s in states]
    getattr(driver, f"multi_apply_{optimizer}")(
        [tuple(a[n] for n in names) for a in cpu], [s.grad for s in states], **hyper,
        stochastic=stochastic, rounding_keys=keys)

    for v, (s, offset, key) in enumerate(zip(states, offsets, keys)):
        one = run_on_gpu(device, s, lambda p: getattr(driver, f"gpu_apply_{optimizer}")(
            dtype, *(p[n] for n in names), p["grad"], sizes[v], **hyper,
            state_dtype=state_dtype, stochastic=stochastic, rounding_key=key), offset=offset)
        for n in names:
            np.testing.assert_array_equal(bits(multi[v][n]), bits(one[n]),
                                          err_msg=f"variable {v} {n}: multi vs one launch")
            np.testing.assert_array_equal(bits(multi[v][n]), bits(cpu[v][n]),
                                          err_msg=f"variable {v} {n}: GPU vs CPU")
    # Every variable of 7 or more elements changed (the launch reached the last of them too).
    for v, s in enumerate(states):
        if sizes[v] >= 7:
            assert not np.array_equal(multi[v]["var"], s.start["var"]), f"variable {v}"
