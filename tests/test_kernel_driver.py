"""The CPU loops through the TensorFlow-free kernel driver (tools/build_kernel_driver.sh), against
the float64 NumPy reference: every dtype and index type, odd sizes, duplicate indices and a bad
index. The same driver runs the GPU tests (tests/gpu/), so this also checks their CPU side."""

import numpy as np
import pytest

from tests.support.kernel_driver import (
    ADAGRAD_HYPER, FTRL_HYPER, SUBNORMAL_GRADS, State, adagrad_reference, assert_close,
    check_adagrad, check_ftrl, ftrl_reference, load_driver, narrow_state, random_indices,
    rounded_hyper, rowwise_state)
from tests.support.numpy_reference import (
    DTYPE_NAMES, INDEX_DTYPE_NAMES, densify, rowwise_adagrad, rowwise_ftrl, to_float64,
    to_storage)

DENSE_SHAPES = [(1,), (37,), (5, 13), (1001,)]
SPARSE_SHAPES = [(50,), (40, 9), (12, 3, 5), (64, 16)]


@pytest.fixture(scope="module")
def driver():
    return load_driver()


def sparse_grad64(state, indices):
    return densify(to_float64(state.grad, state.dtype), indices, state.arrays["var"].shape[0])


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("lr_power", [-0.5, -0.3])
@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
def test_apply_ftrl(driver, rng, dtype, shape, lr_power, multiply_linear_by_lr):
    s = State(rng, shape, dtype, ("accum", "linear"))
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power,
                 multiply_linear_by_lr=multiply_linear_by_lr)
    driver.apply_ftrl(s.arrays["var"], s.arrays["accum"], s.arrays["linear"], s.grad, **hyper)
    check_ftrl(s, ftrl_reference(s, to_float64(s.grad, dtype), hyper), hyper)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("update_slots", [True, False])
def test_apply_adagrad(driver, rng, dtype, shape, update_slots):
    s = State(rng, shape, dtype, ("accum",))
    hyper = dict(ADAGRAD_HYPER, update_slots=update_slots)
    driver.apply_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, **hyper)
    check_adagrad(s, adagrad_reference(s, to_float64(s.grad, dtype), hyper))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=str)
def test_sparse_apply_ftrl_sums_duplicates(driver, rng, dtype, index_dtype, shape):
    num_indices = shape[0] + 7  # more indices than rows: duplicates for sure
    indices = random_indices(rng, shape[0], num_indices, index_dtype)
    s = State(rng, shape, dtype, ("accum", "linear"), grad_shape=(num_indices,) + shape[1:])
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=-0.5)
    driver.sparse_apply_ftrl(s.arrays["var"], s.arrays["accum"], s.arrays["linear"], s.grad,
                             indices, **hyper)
    touched = np.unique(indices)
    check_ftrl(s, ftrl_reference(s, sparse_grad64(s, indices), hyper), hyper, rows=touched)
    untouched = np.setdiff1d(np.arange(shape[0]), touched)
    for name, values in s.start.items():
        np.testing.assert_array_equal(s.arrays[name][untouched], values[untouched], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("update_slots", [True, False])
def test_sparse_apply_adagrad_sums_duplicates(driver, rng, dtype, index_dtype, update_slots):
    shape = (30, 7)
    indices = np.array([3, 0, 3, 29, 3, 0], index_dtype)
    s = State(rng, shape, dtype, ("accum",), grad_shape=(len(indices),) + shape[1:])
    hyper = dict(ADAGRAD_HYPER, update_slots=update_slots)
    driver.sparse_apply_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, indices, **hyper)
    check_adagrad(s, adagrad_reference(s, sparse_grad64(s, indices), hyper), rows=[0, 3, 29])


@pytest.mark.parametrize("index_dtype", INDEX_DTYPE_NAMES)
@pytest.mark.parametrize("bad_index", [-1, 20])
def test_out_of_range_index_is_reported_and_nothing_written(driver, rng, index_dtype, bad_index):
    indices = np.array([0, 5, 19, bad_index, 2, bad_index], index_dtype)
    s = State(rng, (20, 4), "float32", ("accum", "linear"), grad_shape=(len(indices), 4))
    with pytest.raises(ValueError, match=rf"^indices\[3\] = {bad_index} is not in \[0, 20\)$"):
        driver.sparse_apply_ftrl(s.arrays["var"], s.arrays["accum"], s.arrays["linear"], s.grad,
                                 indices, **FTRL_HYPER)
    with pytest.raises(ValueError, match=rf"^indices\[3\] = {bad_index} is not in \[0, 20\)$"):
        driver.sparse_apply_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, indices,
                                    **ADAGRAD_HYPER)
    s.assert_unchanged()


def test_mismatched_arrays_are_rejected(driver, rng):
    s = State(rng, (8,), "float32", ("accum",))
    with pytest.raises(TypeError, match="accum has dtype float64 but var has float32"):
        driver.apply_adagrad(s.arrays["var"], s.arrays["accum"].astype(np.float64), s.grad,
                             **ADAGRAD_HYPER)
    with pytest.raises(ValueError, match="var and grad do not have the same shape"):
        driver.apply_adagrad(s.arrays["var"], s.arrays["accum"], s.grad[:4], **ADAGRAD_HYPER)
    s.assert_unchanged()


def subnormal_case(driver, dtype, sparse):
    """Adagrad from var = accum = 0 on gradients that are subnormal but for the last element
    (0.5): the state after one update, as float64."""
    grad = SUBNORMAL_GRADS[dtype]
    var, accum = np.zeros_like(grad), np.zeros_like(grad)
    if sparse:
        driver.sparse_apply_adagrad(var, accum, grad, np.arange(len(grad), dtype=np.int32),
                                    lr=0.05, epsilon=1e-7)
    else:
        driver.apply_adagrad(var, accum, grad, lr=0.05, epsilon=1e-7)
    return to_float64(var, dtype), to_float64(accum, dtype)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_subnormals_are_flushed_as_in_tensorflow(driver, dtype, sparse):
    # TensorFlow's CPU kernel threads read subnormal inputs as 0 and store subnormal results as
    # 0; the driver's CPU calls do too (and the CUDA kernels are built with --ftz=true), so a
    # subnormal gradient leaves var and accum at 0, while the normal one updates them.
    var, accum = subnormal_case(driver, dtype, sparse)
    assert (var[:-1] == 0).all() and (accum[:-1] == 0).all()
    assert var[-1] < 0 and accum[-1] == 0.25


def test_subnormal_flush_matches_tensorflow_bit_for_bit(driver):
    tf = pytest.importorskip("tensorflow")
    import tf_ftrl

    grad = SUBNORMAL_GRADS["float32"]
    var, accum = tf.Variable(np.zeros_like(grad)), tf.Variable(np.zeros_like(grad))
    tf_ftrl.ops.apply_adagrad(var, accum, grad, lr=0.05, epsilon=1e-7)
    expected_var, expected_accum = var.numpy(), accum.numpy()
    builtin_var, builtin_accum = tf.Variable(np.zeros_like(grad)), tf.Variable(np.zeros_like(grad))
    tf.raw_ops.ResourceApplyAdagradV2(var=builtin_var.handle, accum=builtin_accum.handle,
                                      lr=np.float32(0.05), epsilon=np.float32(1e-7), grad=grad)
    np.testing.assert_array_equal(expected_var.view(np.uint32), builtin_var.numpy().view(np.uint32))
    got_var, got_accum = subnormal_case(driver, "float32", sparse=False)
    np.testing.assert_array_equal(got_var.astype(np.float32).view(np.uint32),
                                  expected_var.view(np.uint32))
    np.testing.assert_array_equal(got_accum.astype(np.float32).view(np.uint32),
                                  expected_accum.view(np.uint32))


# Row-wise optimizers (one accumulator value per row): dense and sparse against the float64
# references of their formulas.
ROWWISE_SHAPES = [(50,), (40, 9), (12, 3, 5), (64, 16)]


def _rowwise_check(s, expected, names, rows=slice(None)):
    for name, values in zip(names, expected):
        assert_close(s.float64(name)[rows], values[rows], s.dtype, scale=4, what=name)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", ROWWISE_SHAPES, ids=str)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_rowwise_ftrl(driver, rng, dtype, shape, sparse):
    num_indices = 2 * shape[0] + 3
    s = rowwise_state(rng, shape, dtype, ("accum", "linear"),
                      grad_shape=((num_indices,) + shape[1:]) if sparse else None)
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05)
    if sparse:
        indices = random_indices(rng, shape[0], num_indices, "int64")
        driver.sparse_apply_rowwise_ftrl(s.arrays["var"], s.arrays["accum"], s.arrays["linear"],
                                         s.grad, indices, **hyper)
        grad64, rows = densify(to_float64(s.grad, dtype), indices, shape[0]), np.unique(indices)
    else:
        driver.apply_rowwise_ftrl(s.arrays["var"], s.arrays["accum"], s.arrays["linear"], s.grad,
                                  **hyper)
        grad64, rows = to_float64(s.grad, dtype), slice(None)
    expected = rowwise_ftrl(s.float64("var", True), s.float64("accum", True),
                            s.float64("linear", True), grad64, **rounded_hyper(hyper, dtype))
    _rowwise_check(s, expected, ("var", "accum", "linear"), rows)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", ROWWISE_SHAPES, ids=str)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_rowwise_adagrad(driver, rng, dtype, shape, sparse):
    num_indices = 2 * shape[0] + 3
    s = rowwise_state(rng, shape, dtype, ("accum",),
                      grad_shape=((num_indices,) + shape[1:]) if sparse else None)
    hyper = dict(ADAGRAD_HYPER)
    if sparse:
        indices = random_indices(rng, shape[0], num_indices, "int32")
        driver.sparse_apply_rowwise_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, indices,
                                            **hyper)
        grad64, rows = densify(to_float64(s.grad, dtype), indices, shape[0]), np.unique(indices)
    else:
        driver.apply_rowwise_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, **hyper)
        grad64, rows = to_float64(s.grad, dtype), slice(None)
    expected = rowwise_adagrad(s.float64("var", True), s.float64("accum", True), grad64,
                               **rounded_hyper(hyper, dtype))
    _rowwise_check(s, expected, ("var", "accum"), rows)


def test_rowwise_accumulator_of_the_wrong_shape_is_rejected(driver, rng):
    s = State(rng, (10, 4), "float32", ("accum",))
    with pytest.raises(ValueError, match="accum must hold one value per row of var"):
        driver.apply_rowwise_adagrad(s.arrays["var"], s.arrays["accum"], s.grad, lr=0.1)
    s.assert_unchanged()


# ------------------------------------------------------------------------ narrower state

NARROW_LAYOUTS = ["dense", "sparse", "rowwise_dense", "rowwise_sparse"]


def apply_layout(driver, optimizer, layout, arrays, grad, indices, **kwargs):
    """One update of `layout` ("dense", "sparse", "rowwise_...") on arrays (var first)."""
    name = f"rowwise_{optimizer}" if layout.startswith("rowwise") else optimizer
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    if layout.endswith("sparse"):
        getattr(driver, f"sparse_apply_{name}")(*arrays, grad, indices, **hyper, **kwargs)
    else:
        getattr(driver, f"apply_{name}")(*arrays, grad, **hyper, **kwargs)


def narrow_case(rng, optimizer, layout, state_dtype):
    shape = (60, 33)
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    indices, grad_shape = None, None
    if layout.endswith("sparse"):
        indices = random_indices(rng, shape[0], 2 * shape[0] + 3, "int32")
        grad_shape = (len(indices),) + shape[1:]
    s = narrow_state(rng, shape, state_dtype, slots, grad_shape, layout.startswith("rowwise"))
    return s, ("var",) + slots, indices


def wide_result(driver, s, names, optimizer, layout, indices):
    """The update with the narrow state widened to float32 (exactly): float32 results."""
    wide = [s.start["var"].copy()] + [
        to_float64(s.start[n], "bfloat16" if s.start[n].dtype == np.uint16 else "float16")
        .astype(np.float32) for n in names[1:]]
    apply_layout(driver, optimizer, layout, wide, s.grad, indices)
    return dict(zip(names, wide))


@pytest.mark.parametrize("state_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("layout", NARROW_LAYOUTS)
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_narrow_state_rounds_once_to_nearest(driver, rng, state_dtype, layout, optimizer):
    """bfloat16 / float16 state: the float32 math on the widened state, each slot rounded once to
    nearest when stored; var exactly the float32 result."""
    s, names, indices = narrow_case(rng, optimizer, layout, state_dtype)
    apply_layout(driver, optimizer, layout, [s.arrays[n] for n in names], s.grad, indices)
    wide = wide_result(driver, s, names, optimizer, layout, indices)
    np.testing.assert_array_equal(s.arrays["var"], wide["var"], err_msg="var")
    for n in names[1:]:
        expected = to_storage(wide[n], state_dtype)
        # float16 subnormals: the kernels flush the half types' as TensorFlow does.
        normal = np.abs(wide[n]) >= (2.0**-14 if state_dtype == "float16" else 0.0)
        np.testing.assert_array_equal(s.arrays[n][normal], expected[normal], err_msg=n)


def bfloat16_neighbours(values):
    """The bfloat16 bit patterns just below and above float32 values in magnitude."""
    low = (values.astype(np.float32).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    exact = (values.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF)) == 0
    return low, np.where(exact, low, low + np.uint16(1))


@pytest.mark.parametrize("layout", NARROW_LAYOUTS)
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_narrow_state_rounds_stochastically_by_key(driver, rng, layout, optimizer):
    """Stochastic rounding stores one of the two bfloat16 neighbours of the float32 result, the
    same ones again for the same key, other ones for another key."""
    s, names, indices = narrow_case(rng, optimizer, layout, "bfloat16")
    key = int(rng.integers(0, 2**63))
    runs = []
    for k in (key, key, key ^ 1):
        arrays = [s.start[n].copy() for n in names]
        apply_layout(driver, optimizer, layout, arrays, s.grad, indices, stochastic=True,
                     rounding_key=k)
        runs.append(dict(zip(names, arrays)))
    wide = wide_result(driver, s, names, optimizer, layout, indices)
    np.testing.assert_array_equal(runs[0]["var"], wide["var"], err_msg="var")
    for n in names[1:]:
        low, high = bfloat16_neighbours(wide[n])
        stored = runs[0][n]
        assert np.all((stored == low) | (stored == high)), n
        np.testing.assert_array_equal(runs[1][n], stored, err_msg=f"{n}: same key")
    assert any(not np.array_equal(runs[2][n], runs[0][n]) for n in names[1:]), "another key"


@pytest.mark.parametrize("dtype,state_dtype", [
    ("float32", None), ("float64", None), ("float16", None), ("bfloat16", None),
    ("float32", "bfloat16"), ("float32", "float16")])
@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
def test_multi_apply_same_bits_as_one_call_each(driver, rng, dtype, state_dtype, optimizer):
    slots = ("accum", "linear") if optimizer == "ftrl" else ("accum",)
    names = ("var",) + slots
    sizes = [1001, 0, 1, 7, 8, 37, 4099, 70_001, 3]
    states = [narrow_state(rng, (n,), state_dtype, slots) if state_dtype else
              State(rng, (n,), dtype, slots) for n in sizes]
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05) if optimizer == "ftrl" else dict(ADAGRAD_HYPER)
    stochastic = state_dtype is not None
    keys = [int(k) for k in rng.integers(0, 2**63, size=len(sizes))]
    getattr(driver, f"multi_apply_{optimizer}")(
        [tuple(s.arrays[n] for n in names) for s in states], [s.grad for s in states], **hyper,
        stochastic=stochastic, rounding_keys=keys)
    for v, (s, key) in enumerate(zip(states, keys)):
        one = {n: s.start[n].copy() for n in names}
        getattr(driver, f"apply_{optimizer}")(*(one[n] for n in names), s.grad, **hyper,
                                              stochastic=stochastic, rounding_key=key)
        for n in names:
            np.testing.assert_array_equal(s.arrays[n], one[n], err_msg=f"variable {v} {n}")
        if sizes[v] >= 7:
            assert not np.array_equal(s.arrays["var"], s.start["var"]), f"variable {v}"


def test_state_of_another_dtype_is_rejected(driver, rng):
    s = narrow_state(rng, (8,), "bfloat16", ("accum", "linear"))
    with pytest.raises(TypeError, match="linear has dtype float32 but accum has bfloat16"):
        driver.apply_ftrl(s.arrays["var"], s.arrays["accum"], s.start["var"].copy(), s.grad,
                          **FTRL_HYPER)
    s.assert_unchanged()
