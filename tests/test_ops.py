"""The four fused ops against a float64 NumPy reference and against TensorFlow's built-in ops."""

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import reference, workers
from tests.support.numpy_reference import assert_close
from tests.support.reference import DTYPES, INDEX_DTYPES, TOLERANCE, Inputs, buffer_address

DENSE_SHAPES = [(1,), (37,), (5, 13), (3, 4, 67)]
# Row sizes 1, 9 and 15 take the CPU loops for any row size; 16, 32 and 64 the loops compiled for
# their size (cpu::internal::DispatchRowSize).
SPARSE_SHAPES = [(50,), (40, 9), (12, 3, 5), (40, 16), (30, 4, 8), (25, 64)]
LR_POWERS = [-0.5, 0.0, -0.3]

FTRL_HYPER = dict(lr=0.05, l1=0.02, l2=0.03)


def away_from_threshold(linear, threshold, dtype):
    """Elements whose |linear| is not so close to the l1 threshold that rounding could flip the
    clip (there var is either 0 or tiny, and both are right)."""
    rtol, _ = TOLERANCE[dtype]
    return np.abs(np.abs(linear) - threshold) > 20 * rtol * (1 + np.abs(linear))


def check_ftrl_result(inputs, expected, threshold, tolerance_scale=1.0, rows=None):
    var, accum, linear = expected
    select = (lambda x: x) if rows is None else (lambda x: x[rows])
    dtype = inputs.dtype
    mask = away_from_threshold(select(linear), threshold, dtype)
    assert_close(select(inputs.current("accum")), select(accum), dtype, scale=tolerance_scale,
                 what="accum")
    # linear adds terms about as large as its largest values and often cancels them.
    assert_close(select(inputs.current("linear")), select(linear), dtype,
                 scale=tolerance_scale * 4, what="linear",
                 magnitude=float(np.abs(select(linear)).max(initial=0.0)))
    assert_close(select(inputs.current("var")), select(var), dtype, mask=mask,
                 scale=tolerance_scale * 4, what="var")


# ---------------------------------------------------------------------------------- dense FTRL


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("lr_power", LR_POWERS)
@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
@pytest.mark.parametrize("l2_shrinkage", [0.0, 0.05])
def test_apply_ftrl_matches_reference(rng, dtype, shape, lr_power, multiply_linear_by_lr,
                                      l2_shrinkage):
    x = Inputs(rng, shape, dtype)
    hyper = dict(FTRL_HYPER, l2_shrinkage=l2_shrinkage, lr_power=lr_power,
                 multiply_linear_by_lr=multiply_linear_by_lr)
    tf_ftrl.ops.apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"], x.grad,
                           **hyper)
    expected = reference.ftrl(x.start["var"], x.start["accum"], x.start["linear"], x.grad64,
                              **hyper)
    check_ftrl_result(x, expected, reference.ftrl_threshold(0.05, 0.02, multiply_linear_by_lr))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("lr_power", LR_POWERS)
@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
def test_apply_ftrl_matches_builtin(rng, dtype, lr_power, multiply_linear_by_lr):
    ours = Inputs(rng, (1000,), dtype)
    theirs = {name: tf.Variable(v) for name, v in ours.variables.items()}
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power)
    tf_ftrl.ops.apply_ftrl(ours.variables["var"], ours.variables["accum"], ours.variables["linear"],
                           ours.grad, multiply_linear_by_lr=multiply_linear_by_lr, **hyper)
    tf.raw_ops.ResourceApplyFtrlV2(
        var=theirs["var"].handle, accum=theirs["accum"].handle, linear=theirs["linear"].handle,
        grad=ours.grad, multiply_linear_by_lr=multiply_linear_by_lr,
        **{k: tf.constant(v, dtype) for k, v in hyper.items()})
    linear = reference.to_numpy64(theirs["linear"])
    threshold = reference.ftrl_threshold(0.05, 0.02, multiply_linear_by_lr)
    # The built-in rounds every intermediate to the half types; ours computes in float32. Its
    # pow (Eigen's) is a few ulp less accurate than libm's, and linear takes the difference of two
    # powers, which magnifies that (against the float64 reference ours meets the tight bound).
    scale = 1.0 if dtype in (tf.float32, tf.float64) else 8.0
    if lr_power != -0.5:
        scale *= 16.0
    check_ftrl_result(ours, (reference.to_numpy64(theirs["var"]),
                             reference.to_numpy64(theirs["accum"]), linear),
                      threshold, tolerance_scale=scale)


def test_apply_ftrl_float32_sqrt_path_is_bit_identical_to_builtin(rng):
    ours = Inputs(rng, (4099,), tf.float32)
    theirs = {name: tf.Variable(v) for name, v in ours.variables.items()}
    tf_ftrl.ops.apply_ftrl(ours.variables["var"], ours.variables["accum"], ours.variables["linear"],
                           ours.grad, l2_shrinkage=0.05, **FTRL_HYPER)
    tf.raw_ops.ResourceApplyFtrlV2(
        var=theirs["var"].handle, accum=theirs["accum"].handle, linear=theirs["linear"].handle,
        grad=ours.grad, lr=0.05, l1=0.02, l2=0.03, l2_shrinkage=0.05, lr_power=-0.5)
    for name in ("var", "accum", "linear"):
        np.testing.assert_array_equal(ours.variables[name].numpy(), theirs[name].numpy(),
                                      err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_apply_ftrl_large_l1_clips_to_exactly_zero(rng, dtype):
    x = Inputs(rng, (300,), dtype)
    tf_ftrl.ops.apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"], x.grad,
                           lr=0.05, l1=1e4, l2=0.0)
    assert np.all(x.variables["var"].numpy() == 0)
    expected = reference.ftrl(x.start["var"], x.start["accum"], x.start["linear"], x.grad64,
                              lr=0.05, l1=1e4, l2=0.0)
    assert_close(x.current("linear"), expected[2], dtype, scale=4, what="linear")


def test_apply_ftrl_large_tensor_uses_all_blocks(rng):
    # Big enough to be split over the thread pool; every block must be updated.
    x = Inputs(rng, (300_001,), tf.float32)
    tf_ftrl.ops.apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"], x.grad,
                           **FTRL_HYPER)
    expected = reference.ftrl(x.start["var"], x.start["accum"], x.start["linear"], x.grad64,
                              **FTRL_HYPER)
    check_ftrl_result(x, expected, 0.02)


# --------------------------------------------------------------------------------- sparse FTRL


def random_indices(rng, num_rows, n, duplicates):
    if duplicates:
        return rng.integers(0, num_rows, size=n)
    return rng.permutation(num_rows)[:n]


def sparse_inputs(rng, shape, dtype, n, duplicates, slots=("accum", "linear")):
    indices = random_indices(rng, shape[0], n, duplicates)
    inputs = Inputs(rng, shape, dtype, grad_shape=(len(indices),) + shape[1:], slots=slots)
    return inputs, indices


def expected_sparse_ftrl(x, indices, **hyper):
    """Reference: the dense update with the densified gradient, on the touched rows."""
    dense_grad = reference.densify(x.grad64, indices, x.start["var"].shape[0])
    return reference.ftrl(x.start["var"], x.start["accum"], x.start["linear"], dense_grad,
                          **hyper)


def assert_untouched_rows_identical(x, indices):
    untouched = np.setdiff1d(np.arange(x.start["var"].shape[0]), indices)
    for name, start in x.start.items():
        np.testing.assert_array_equal(x.current(name)[untouched], start[untouched],
                                      err_msg=f"untouched rows of {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=str)
@pytest.mark.parametrize("lr_power", LR_POWERS)
@pytest.mark.parametrize("duplicates", [False, True], ids=["unique", "duplicates"])
def test_sparse_apply_ftrl_matches_reference(rng, dtype, index_dtype, shape, lr_power,
                                             duplicates):
    x, indices = sparse_inputs(rng, shape, dtype, n=9, duplicates=duplicates)
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, tf.constant(indices, index_dtype), **hyper)
    expected = expected_sparse_ftrl(x, indices, **hyper)
    # Summing duplicates rounds once more in the half types.
    check_ftrl_result(x, expected, 0.02, tolerance_scale=2.0, rows=np.unique(indices))
    assert_untouched_rows_identical(x, indices)


@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
def test_sparse_apply_ftrl_multiply_linear_by_lr(rng, multiply_linear_by_lr):
    x, indices = sparse_inputs(rng, (30, 7), tf.float32, n=20, duplicates=True)
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, multiply_linear_by_lr=multiply_linear_by_lr)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, indices, **hyper)
    expected = expected_sparse_ftrl(x, indices, **hyper)
    check_ftrl_result(x, expected, reference.ftrl_threshold(0.05, 0.02, multiply_linear_by_lr),
                      rows=np.unique(indices))
    assert_untouched_rows_identical(x, indices)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda d: d.name)
@pytest.mark.parametrize("lr_power", LR_POWERS)
def test_sparse_ftrl_with_duplicates_equals_dense_op_on_densified_grad(rng, dtype, lr_power):
    x, indices = sparse_inputs(rng, (64, 33), dtype, n=200, duplicates=True)
    dense = {name: tf.Variable(v) for name, v in x.variables.items()}
    dense_grad = reference.densify(x.grad.numpy(), indices, 64)  # summed in dtype, in order
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=lr_power)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, indices, **hyper)
    tf_ftrl.ops.apply_ftrl(dense["var"], dense["accum"], dense["linear"], dense_grad, **hyper)
    rows = np.unique(indices)
    for name in ("var", "accum", "linear"):
        np.testing.assert_array_equal(x.variables[name].numpy()[rows],
                                      dense[name].numpy()[rows], err_msg=name)
    assert_untouched_rows_identical(x, indices)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=lambda d: d.name)
def test_sparse_apply_ftrl_matches_builtin_with_dedup(rng, dtype, index_dtype):
    x, indices = sparse_inputs(rng, (100, 6), dtype, n=150, duplicates=True)
    theirs = {name: tf.Variable(v) for name, v in x.variables.items()}
    hyper = dict(FTRL_HYPER, l2_shrinkage=0.05, lr_power=-0.5)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, tf.constant(indices, index_dtype), **hyper)
    unique, positions = tf.unique(tf.constant(indices, index_dtype))
    sum_dtype = dtype if dtype in (tf.float32, tf.float64) else tf.float32
    summed = tf.math.unsorted_segment_sum(tf.cast(x.grad, sum_dtype), positions,
                                          tf.shape(unique)[0])
    tf.raw_ops.ResourceSparseApplyFtrlV2(
        var=theirs["var"].handle, accum=theirs["accum"].handle, linear=theirs["linear"].handle,
        grad=tf.cast(summed, dtype), indices=unique,
        **{k: tf.constant(v, dtype) for k, v in hyper.items()})
    scale = 1.0 if dtype in (tf.float32, tf.float64) else 8.0
    check_ftrl_result(x, tuple(reference.to_numpy64(theirs[n]) for n in ("var", "accum",
                                                                          "linear")),
                      0.02, tolerance_scale=scale)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=lambda d: d.name)
def test_sparse_ops_with_empty_indices_change_nothing(rng, index_dtype):
    x = Inputs(rng, (10, 3), tf.float32, grad_shape=(0, 3))
    empty = tf.zeros([0], index_dtype)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, empty, **FTRL_HYPER)
    tf_ftrl.ops.sparse_apply_adagrad(x.variables["var"], x.variables["accum"], x.grad, empty,
                                     lr=0.1)
    x.assert_unchanged()


def test_sparse_apply_ftrl_large_update_uses_all_rows(rng):
    # Enough rows to be split over the thread pool.
    x, indices = sparse_inputs(rng, (20_000, 16), tf.float32, n=8_000, duplicates=True)
    tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"], x.variables["linear"],
                                  x.grad, indices, **FTRL_HYPER)
    expected = expected_sparse_ftrl(x, indices, **FTRL_HYPER)
    check_ftrl_result(x, expected, 0.02, rows=np.unique(indices))
    assert_untouched_rows_identical(x, indices)


# ------------------------------------------------------------------------------------- Adagrad


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("update_slots", [True, False])
def test_apply_adagrad_matches_reference(rng, dtype, shape, update_slots):
    x = Inputs(rng, shape, dtype, slots=("accum",))
    tf_ftrl.ops.apply_adagrad(x.variables["var"], x.variables["accum"], x.grad, lr=0.05,
                              epsilon=1e-3, update_slots=update_slots)
    var, accum = reference.adagrad(x.start["var"], x.start["accum"], x.grad64, lr=0.05,
                                   epsilon=1e-3, update_slots=update_slots)
    assert_close(x.current("var"), var, dtype, what="var")
    assert_close(x.current("accum"), accum, dtype, what="accum")
    if not update_slots:
        np.testing.assert_array_equal(x.current("accum"), x.start["accum"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("update_slots", [True, False])
def test_apply_adagrad_matches_builtin(rng, dtype, update_slots):
    ours = Inputs(rng, (1001,), dtype, slots=("accum",))
    theirs = {name: tf.Variable(v) for name, v in ours.variables.items()}
    tf_ftrl.ops.apply_adagrad(ours.variables["var"], ours.variables["accum"], ours.grad, lr=0.05,
                              epsilon=1e-3, update_slots=update_slots)
    tf.raw_ops.ResourceApplyAdagradV2(var=theirs["var"].handle, accum=theirs["accum"].handle,
                                      lr=tf.constant(0.05, dtype),
                                      epsilon=tf.constant(1e-3, dtype), grad=ours.grad,
                                      update_slots=update_slots)
    scale = 1.0 if dtype in (tf.float32, tf.float64) else 4.0
    for name in ("var", "accum"):
        assert_close(ours.current(name), reference.to_numpy64(theirs[name]), dtype, scale=scale,
                     what=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=str)
@pytest.mark.parametrize("duplicates", [False, True], ids=["unique", "duplicates"])
@pytest.mark.parametrize("update_slots", [True, False])
def test_sparse_apply_adagrad_matches_reference(rng, dtype, index_dtype, shape, duplicates,
                                                update_slots):
    x, indices = sparse_inputs(rng, shape, dtype, n=9, duplicates=duplicates, slots=("accum",))
    tf_ftrl.ops.sparse_apply_adagrad(x.variables["var"], x.variables["accum"], x.grad,
                                     tf.constant(indices, index_dtype), lr=0.05, epsilon=1e-3,
                                     update_slots=update_slots)
    dense_grad = reference.densify(x.grad64, indices, shape[0])
    var, accum = reference.adagrad(x.start["var"], x.start["accum"], dense_grad, lr=0.05,
                                   epsilon=1e-3, update_slots=update_slots)
    rows = np.unique(indices)
    assert_close(x.current("var")[rows], var[rows], dtype, scale=2, what="var")
    assert_close(x.current("accum")[rows], accum[rows], dtype, scale=2, what="accum")
    assert_untouched_rows_identical(x, indices)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda d: d.name)
def test_sparse_adagrad_with_duplicates_equals_dense_op_on_densified_grad(rng, dtype):
    x, indices = sparse_inputs(rng, (50, 17), dtype, n=120, duplicates=True, slots=("accum",))
    dense = {name: tf.Variable(v) for name, v in x.variables.items()}
    tf_ftrl.ops.sparse_apply_adagrad(x.variables["var"], x.variables["accum"], x.grad, indices,
                                     lr=0.05)
    tf_ftrl.ops.apply_adagrad(dense["var"], dense["accum"],
                              reference.densify(x.grad.numpy(), indices, 50), lr=0.05)
    rows = np.unique(indices)
    for name in ("var", "accum"):
        np.testing.assert_array_equal(x.variables[name].numpy()[rows],
                                      dense[name].numpy()[rows], err_msg=name)
    assert_untouched_rows_identical(x, indices)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_sparse_apply_adagrad_matches_builtin_on_unique_indices(rng, dtype):
    x, indices = sparse_inputs(rng, (100, 6), dtype, n=40, duplicates=False, slots=("accum",))
    theirs = {name: tf.Variable(v) for name, v in x.variables.items()}
    tf_ftrl.ops.sparse_apply_adagrad(x.variables["var"], x.variables["accum"], x.grad, indices,
                                     lr=0.05, epsilon=1e-3)
    tf.raw_ops.ResourceSparseApplyAdagradV2(
        var=theirs["var"].handle, accum=theirs["accum"].handle, lr=tf.constant(0.05, dtype),
        epsilon=tf.constant(1e-3, dtype), grad=x.grad, indices=tf.constant(indices))
    scale = 1.0 if dtype in (tf.float32, tf.float64) else 4.0
    for name in ("var", "accum"):
        assert_close(x.current(name), reference.to_numpy64(theirs[name]), dtype, scale=scale,
                     what=name)


# ---------------------------------------------------------------------------- tf.function, misc


def test_ops_work_inside_tf_function(rng):
    x, indices = sparse_inputs(rng, (20, 4), tf.float32, n=10, duplicates=True)

    @tf.function
    def step(grad, idx):
        tf_ftrl.ops.sparse_apply_ftrl(x.variables["var"], x.variables["accum"],
                                      x.variables["linear"], grad, idx, **FTRL_HYPER)

    step(x.grad, tf.constant(indices))
    expected = expected_sparse_ftrl(x, indices, **FTRL_HYPER)
    check_ftrl_result(x, expected, 0.02, rows=np.unique(indices))


def test_hyperparameters_may_be_tensors_of_another_dtype(rng):
    x = Inputs(rng, (16,), tf.float16, slots=("accum",))
    tf_ftrl.ops.apply_adagrad(x.variables["var"], x.variables["accum"], x.grad,
                              lr=tf.constant(0.05, tf.float32), epsilon=tf.constant(1e-3))
    var, _ = reference.adagrad(x.start["var"], x.start["accum"], x.grad64, lr=0.05,
                               epsilon=1e-3)
    assert_close(x.current("var"), var, tf.float16)


# ---------------------------------------------------------------- variable reads and snapshots


def reads_share_the_buffer(variable):
    """Whether two live reads of `variable` alias one buffer: false once TensorFlow has put the
    variable in copy-on-read mode, where every read copies the whole variable."""
    first, second = variable.value(), variable.value()
    return buffer_address(first) == buffer_address(second)


def put_in_copy_on_read_mode(var, accum):
    """What any of TensorFlow's own sparse ops does to its variables (values unchanged here)."""
    tf.raw_ops.ResourceSparseApplyAdagradV2(
        var=var.handle, accum=accum.handle, lr=tf.constant(0.0), epsilon=tf.constant(0.0),
        grad=tf.zeros([1] + var.shape[1:]), indices=tf.constant([0]), update_slots=False)


def sparse_update(op, state, grad, indices):
    if op == "ftrl":
        tf_ftrl.ops.sparse_apply_ftrl(*state, grad, indices, **FTRL_HYPER)
    else:
        tf_ftrl.ops.sparse_apply_adagrad(*state[:2], grad, indices, lr=0.1)


@pytest.mark.parametrize("op", ["ftrl", "adagrad"])
@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf.function"])
def test_sparse_updates_keep_reads_copy_free(rng, op, in_function):
    # Keras 3's Embedding reads its whole table every step; in copy-on-read mode each read copies
    # it. Our sparse updates must not switch a variable into that mode (TensorFlow's do).
    state = [tf.Variable(rng.uniform(-1, 1, (300, 4)).astype(np.float32)) for _ in range(3)]
    update = tf.function(sparse_update, autograph=False) if in_function else sparse_update
    for _ in range(2):
        update(op, state, tf.ones([5, 4]), tf.constant([1, 7, 7, 0, 299]))
    assert all(reads_share_the_buffer(v) for v in state)
    # The check can tell: after one of TensorFlow's sparse ops, reads copy.
    put_in_copy_on_read_mode(state[0], state[1])
    assert not reads_share_the_buffer(state[0])


@pytest.mark.parametrize("op", ["ftrl", "adagrad"])
@pytest.mark.parametrize("copy_on_read", [False, True], ids=["normal", "copy-on-read"])
def test_sparse_update_leaves_earlier_reads_alone(rng, op, copy_on_read):
    # A read taken before the update keeps the old values, whichever mode the variable is in
    # (in place under an exclusive lock once no reader holds the buffer, else on a copy), and
    # both modes compute the same update.
    init = [rng.uniform(-1, 1, (300, 4)).astype(np.float32) for _ in range(3)]
    init[1] = np.abs(init[1]) + 0.1  # accumulators
    grad = tf.constant(rng.uniform(-1, 1, (6, 4)).astype(np.float32))
    indices = tf.constant([3, 8, 3, 0, 299, 150])
    state = [tf.Variable(x) for x in init]
    if copy_on_read:
        put_in_copy_on_read_mode(state[0], state[1])
    held = [v.value() for v in state]
    sparse_update(op, state, grad, indices)
    for before, tensor in zip(init, held):
        np.testing.assert_array_equal(tensor.numpy(), before)
    fresh = [tf.Variable(x) for x in init]
    sparse_update(op, fresh, grad, indices)
    for updated, expected in zip(state, fresh):
        np.testing.assert_array_equal(updated.numpy(), expected.numpy())
    assert not np.array_equal(state[0].numpy(), init[0])
    assert reads_share_the_buffer(state[0]) != copy_on_read


DENSE_UPDATE_OF_COPY_ON_READ_VARIABLE = """
import sys
import numpy as np, tensorflow as tf, tf_ftrl
from tests.support.workers import print_result
implementation = sys.argv[1]
n = 10_000_000  # 40 MB per variable


def update(var, accum, grad):
    if implementation == "tf_ftrl":
        tf_ftrl.ops.apply_adagrad(var, accum, grad, lr=0.1, epsilon=1e-7)
    else:
        tf.raw_ops.ResourceApplyAdagradV2(var=var.handle, accum=accum.handle, lr=tf.constant(0.1),
                                          epsilon=tf.constant(1e-7), grad=grad)


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size restarts from the current one


update(tf.Variable(tf.fill([10], 0.5)), tf.Variable(tf.fill([10], 0.1)), tf.fill([10], 0.01))
var, accum = tf.Variable(tf.fill([n], 0.5)), tf.Variable(tf.fill([n], 0.1))
# No temporaries freed before the update: memory they leave behind could hold a copy unseen.
grad = tf.fill([n], 0.01)
# What TensorFlow's own sparse ops (and ResourceGather, e.g. tf_keras's Embedding) do.
tf.raw_ops.ResourceSparseApplyAdagradV2(
    var=var.handle, accum=accum.handle, lr=tf.constant(0.0), epsilon=tf.constant(0.0),
    grad=tf.zeros([1]), indices=tf.constant([0]), update_slots=False)
held = var.value()
reset_peak()
before = status_mb("VmRSS")
update(var, accum, grad)
grown = status_mb("VmHWM") - before
print_result({"grown_mb": grown, "held_unchanged": bool(np.all(held.numpy() == 0.5)),
              "var_sum": float(np.sum(var.numpy(), dtype=np.float64)),
              "accum_sum": float(np.sum(accum.numpy(), dtype=np.float64))})
"""


def test_dense_update_of_a_copy_on_read_variable_is_in_place():
    # TensorFlow's dense ops copy a variable in copy-on-read mode on every update; ours hold the
    # lock exclusively and update in place once no reader holds the buffer (in that mode reads
    # copy, so none does). Seen in the peak resident memory of a
    # fresh process during the update: TensorFlow's op makes a 40 MB copy of each variable in
    # turn (each freeing the old buffer), ours none.
    results = {}
    for implementation in ("tf_ftrl", "builtin"):
        results[implementation] = workers.run_for_result(
            "-c", DENSE_UPDATE_OF_COPY_ON_READ_VARIABLE, implementation, timeout=300)
    ours, builtin = results["tf_ftrl"], results["builtin"]
    assert builtin["grown_mb"] > 30, builtin  # the probe sees copies
    assert ours["grown_mb"] < 10, ours
    assert ours["held_unchanged"] and builtin["held_unchanged"]
    assert ours["var_sum"] == builtin["var_sum"] and ours["accum_sum"] == builtin["accum_sum"]
