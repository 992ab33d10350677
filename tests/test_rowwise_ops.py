"""The row-wise ops (`tf_ftrl.ops.apply_rowwise_ftrl` and co., one accumulator value per row)
against float64 references of their formulas (tests/support/numpy_reference.py) on fresh random
inputs: dense and sparse with repeated ids, every flag, every dtype, row sizes the loops compile
for and others, sizes large enough for the thread pool; untouched rows bit-identical; bad input
rejected with nothing written."""

import re

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import numpy_reference as ref
from tests.support import reference
from tests.support.reference import DTYPES, TOLERANCE, to_numpy64

OPTIMIZERS = ["ftrl", "adagrad"]
# (rows, row shape): row sizes 1 (rank 1), 7 (generic), 16 and 64 (compiled), a rank-3 table,
# and one past the thread pool's threshold (32,768 elements).
SHAPES = [(50, ()), (40, (7,)), (30, (16,)), (20, (64,)), (12, (3, 5)), (3000, (16,))]


def rounded(values, dtype):
    """values rounded to dtype, as float64."""
    return reference.rounded(values, dtype)[1]


def _hyperparameters(name, rng, variant):
    if name == "ftrl":
        h = dict(lr=float(rng.uniform(0.05, 0.5)), l1=float(rng.uniform(0, 0.05)),
                 l2=float(rng.uniform(0, 0.1)), l2_shrinkage=float(rng.uniform(0, 0.05)),
                 lr_power=-0.5 if variant != "pow" else -0.3,
                 multiply_linear_by_lr=variant == "by_lr")
    else:
        h = dict(lr=float(rng.uniform(0.05, 0.5)), epsilon=float(rng.uniform(1e-7, 1e-2)),
                 update_slots=variant != "no_slot_update")
    return h


def _state(name, rng, rows, row_shape, dtype):
    shape = (rows,) + row_shape
    start = {"var": ref.random_start(rng, "var", shape),
             "accum": ref.random_start(rng, "accum", (rows,))}
    if name == "ftrl":
        start["linear"] = ref.random_start(rng, "linear", shape)
    start = {k: rounded(v, dtype) for k, v in start.items()}
    return start, {k: tf.Variable(tf.constant(v, dtype)) for k, v in start.items()}


def _reference(name, start, grad, h):
    if name == "ftrl":
        var, accum, linear = ref.rowwise_ftrl(start["var"], start["accum"], start["linear"], grad,
                                              **h)
        return {"var": var, "accum": accum, "linear": linear}
    var, accum = ref.rowwise_adagrad(start["var"], start["accum"], grad, **h)
    return {"var": var, "accum": accum}


def _apply(name, variables, grad, h, indices=None):
    slots = [variables["accum"]] + ([variables["linear"]] if name == "ftrl" else [])
    if indices is None:
        getattr(tf_ftrl.ops, f"apply_rowwise_{name}")(variables["var"], *slots, grad, **h)
    else:
        getattr(tf_ftrl.ops, f"sparse_apply_rowwise_{name}")(variables["var"], *slots, grad,
                                                             indices, **h)


def _check(variables, expected, dtype, rows=None):
    rtol, atol = TOLERANCE[dtype]
    # The accumulator's mean of squares sums D values: allow for that sum's rounding.
    for key, value in expected.items():
        actual = to_numpy64(variables[key])
        if rows is not None:
            actual, value = actual[rows], value[rows]
        np.testing.assert_allclose(actual, value, rtol=rtol * 4, atol=atol * 4, err_msg=key)


VARIANTS = {"ftrl": ["sqrt", "pow", "by_lr"], "adagrad": ["slots", "no_slot_update"]}
CASES = [(name, variant) for name in OPTIMIZERS for variant in VARIANTS[name]]


@pytest.mark.parametrize("name,variant", CASES)
@pytest.mark.parametrize("rows,row_shape", SHAPES, ids=[f"{r}x{s}" for r, s in SHAPES])
def test_dense_matches_float64_reference(rng, name, variant, rows, row_shape):
    dtype = tf.float32
    start, variables = _state(name, rng, rows, row_shape, dtype)
    grad = rounded(rng.normal(size=(rows,) + row_shape), dtype)
    h = _hyperparameters(name, rng, variant)
    _apply(name, variables, tf.constant(grad, dtype), h)
    _check(variables, _reference(name, start, grad, h), dtype)


@pytest.mark.parametrize("name,variant", CASES)
@pytest.mark.parametrize("rows,row_shape", SHAPES, ids=[f"{r}x{s}" for r, s in SHAPES])
def test_sparse_sums_duplicates_and_leaves_other_rows(rng, name, variant, rows, row_shape):
    dtype = tf.float32
    start, variables = _state(name, rng, rows, row_shape, dtype)
    # Ids from half the rows, many repeated (a hot id beyond the 32-duplicate chunk too).
    n = max(8, rows)
    indices = rng.integers(0, rows // 2 + 1, n)
    indices[: min(n, 40)] = indices[0]
    values = rounded(rng.normal(size=(n,) + row_shape), dtype)
    h = _hyperparameters(name, rng, variant)
    _apply(name, variables, tf.constant(values, dtype), h, tf.constant(indices, tf.int64))
    dense = np.zeros((rows,) + row_shape)
    np.add.at(dense, indices, values)
    touched = np.unique(indices)
    expected = _reference(name, start, dense, h)
    _check(variables, expected, dtype, touched)
    untouched = np.setdiff1d(np.arange(rows), touched)
    for key, value in start.items():
        np.testing.assert_array_equal(to_numpy64(variables[key])[untouched], value[untouched],
                                      err_msg=key)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=[d.name for d in DTYPES])
def test_every_dtype(rng, name, dtype):
    rows, row_shape = 24, (8,)
    start, variables = _state(name, rng, rows, row_shape, dtype)
    grad = rounded(rng.normal(size=(rows,) + row_shape), dtype)
    h = _hyperparameters(name, rng, "sqrt" if name == "ftrl" else "slots")
    _apply(name, variables, tf.constant(grad, dtype), h)
    _check(variables, _reference(name, start, grad, h), dtype)
    indices = np.array([3, 5, 3, 20], np.int32)
    values = rounded(rng.normal(size=(4,) + row_shape), dtype)
    start = {k: to_numpy64(v) for k, v in variables.items()}
    _apply(name, variables, tf.constant(values, dtype), h, tf.constant(indices))
    dense = np.zeros((rows,) + row_shape)
    np.add.at(dense, indices, values)
    _check(variables, _reference(name, start, dense, h), dtype, np.unique(indices))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_row_size_one_is_the_element_wise_update(rng, name):
    rows = 64
    start, variables = _state(name, rng, rows, (), tf.float64)
    grad = rng.normal(size=rows)
    h = _hyperparameters(name, rng, "sqrt" if name == "ftrl" else "slots")
    _apply(name, variables, tf.constant(grad), h)
    if name == "ftrl":
        expected = ref.ftrl(start["var"], start["accum"], start["linear"], grad, **h)
    else:
        expected = ref.adagrad(start["var"], start["accum"], grad, **h)
    for key, value in zip(["var", "accum", "linear"], expected):
        np.testing.assert_allclose(variables[key].numpy(), value, rtol=1e-12, atol=1e-12)


def test_ftrl_at_learning_rate_zero_changes_nothing(rng):
    start, variables = _state("ftrl", rng, 10, (4,), tf.float32)
    h = dict(lr=0.0, l1=0.01, l2=0.01)
    _apply("ftrl", variables, tf.constant(rng.normal(size=(10, 4)), tf.float32), h)
    _apply("ftrl", variables, tf.constant(rng.normal(size=(2, 4)), tf.float32), h,
           tf.constant([1, 2]))
    for key, value in start.items():
        np.testing.assert_array_equal(to_numpy64(variables[key]), value)


def _bad_inputs():
    yield ("accum of var's shape", "accum must hold one value per row of var, shape [10]",
           dict(accum=(10, 4)))
    yield ("accum of another length", "accum must hold one value per row of var, shape [10]",
           dict(accum=(9,)))
    yield ("scalar var", "var must be at least 1-D for a row-wise update", dict(var=()))
    yield ("linear of another shape", "var and linear do not have the same shape",
           dict(linear=(10, 5)))


@pytest.mark.parametrize("case,message,shapes", list(_bad_inputs()),
                         ids=[c[0] for c in _bad_inputs()])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_bad_shapes_are_named_and_change_nothing(rng, case, message, shapes, sparse):
    shapes = {"var": (10, 4), "accum": (10,), "linear": (10, 4), **shapes}
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    variables = {k: tf.Variable(v) for k, v in start.items()}
    grad_shape = ((2,) if sparse else ()) + shapes["var"][1 if sparse else 0:]
    grad = tf.constant(rng.normal(size=grad_shape), tf.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=re.escape(message)):
        _apply("ftrl", variables, grad, dict(lr=0.1, l1=0.0, l2=0.0),
               tf.constant([0, 1]) if sparse else None)
    for key, value in start.items():
        np.testing.assert_array_equal(variables[key].numpy(), value)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_out_of_range_index_is_named_and_writes_nothing(rng, name):
    start, variables = _state(name, rng, 10, (4,), tf.float32)
    h = _hyperparameters(name, rng, "sqrt" if name == "ftrl" else "slots")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[2\] = 10 is not in "
                                                               r"\[0, 10\)"):
        _apply(name, variables, tf.constant(rng.normal(size=(3, 4)), tf.float32), h,
               tf.constant([1, 9, 10]))
    for key, value in start.items():
        np.testing.assert_array_equal(to_numpy64(variables[key]), value)
