"""Bad inputs raise InvalidArgumentError naming the problem, and change nothing."""

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.reference import Inputs

FTRL = dict(lr=0.1, l1=0.01, l2=0.01, l2_shrinkage=0.0, lr_power=-0.5)
ADAGRAD = dict(lr=0.1, epsilon=1e-7)


@pytest.fixture
def rng():
    return np.random.default_rng()


def call(kind, x, grad=None, indices=None, **overrides):
    v = x.variables
    grad = x.grad if grad is None else grad
    if kind == "ftrl":
        return tf_ftrl.apply_ftrl(v["var"], v["accum"], v["linear"], grad, **{**FTRL, **overrides})
    if kind == "sparse_ftrl":
        return tf_ftrl.sparse_apply_ftrl(v["var"], v["accum"], v["linear"], grad, indices,
                                         **{**FTRL, **overrides})
    if kind == "adagrad":
        return tf_ftrl.apply_adagrad(v["var"], v["accum"], grad, **{**ADAGRAD, **overrides})
    return tf_ftrl.sparse_apply_adagrad(v["var"], v["accum"], grad, indices,
                                        **{**ADAGRAD, **overrides})


def slots(kind):
    return ("accum", "linear") if "ftrl" in kind else ("accum",)


def assert_rejected(x, pattern, fn, *args, **kwargs):
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(*args, **kwargs)
    x.assert_unchanged()


SPARSE = ["sparse_ftrl", "sparse_adagrad"]
ALL = ["ftrl", "sparse_ftrl", "adagrad", "sparse_adagrad"]


@pytest.mark.parametrize("kind", SPARSE)
@pytest.mark.parametrize("index_dtype", [tf.int32, tf.int64], ids=lambda d: d.name)
@pytest.mark.parametrize("bad, position", [(10, 2), (-1, 0), (123456, 3)])
def test_out_of_range_index_names_value_position_and_bound(rng, kind, index_dtype, bad,
                                                           position):
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=(5, 4), slots=slots(kind))
    indices = [1, 2, 3, 4, 5]
    indices[position] = bad
    assert_rejected(x, rf"indices\[{position}\] = {bad} is not in \[0, 10\)", call, kind, x,
                    indices=tf.constant(indices, index_dtype))


@pytest.mark.parametrize("kind", SPARSE)
def test_int64_index_beyond_int32_is_rejected(rng, kind):
    x = Inputs(rng, (10, 2), tf.float32, grad_shape=(2, 2), slots=slots(kind))
    bad = 2**40 + 1
    assert_rejected(x, rf"indices\[1\] = {bad} is not in \[0, 10\)", call, kind, x,
                    indices=tf.constant([0, bad], tf.int64))


@pytest.mark.parametrize("kind", SPARSE)
def test_grad_rows_must_match_indices(rng, kind):
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=(3, 4), slots=slots(kind))
    assert_rejected(x, r"grad must be the same size as indices in the first dimension: "
                    r"\[3,4\] vs \[4\]", call, kind, x, indices=[0, 1, 2, 3])


@pytest.mark.parametrize("kind", SPARSE)
def test_grad_row_shape_must_match_var(rng, kind):
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=(2, 5), slots=slots(kind))
    assert_rejected(x, r"var and grad do not agree beyond the first dimension: \[10,4\] vs "
                    r"\[2,5\]", call, kind, x, indices=[0, 1])


@pytest.mark.parametrize("kind", SPARSE)
def test_indices_must_be_a_vector(rng, kind):
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=(2, 4), slots=slots(kind))
    assert_rejected(x, r"indices must be a vector, got shape \[2,1\]", call, kind, x,
                    indices=[[0], [1]])


@pytest.mark.parametrize("kind", SPARSE)
def test_sparse_var_must_have_rank_at_least_one(rng, kind):
    x = Inputs(rng, (), tf.float32, grad_shape=(), slots=slots(kind))
    assert_rejected(x, r"var must be at least 1-D", call, kind, x, indices=[0])


@pytest.mark.parametrize("kind", SPARSE)
def test_empty_var_with_indices_is_rejected(rng, kind):
    x = Inputs(rng, (0, 3), tf.float32, grad_shape=(1, 3), slots=slots(kind))
    assert_rejected(x, r"indices\[0\] = 0 is not in \[0, 0\)", call, kind, x, indices=[0])


@pytest.mark.parametrize("kind", ["ftrl", "adagrad"])
def test_dense_grad_must_match_var_shape(rng, kind):
    x = Inputs(rng, (4, 3), tf.float32, grad_shape=(3, 4), slots=slots(kind))
    assert_rejected(x, r"var and grad do not have the same shape: \[4,3\] vs \[3,4\]", call,
                    kind, x)


@pytest.mark.parametrize("kind", ALL)
def test_slots_must_match_var_shape(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    x.variables["accum"] = tf.Variable(tf.ones([7]))
    x.start["accum"] = np.ones([7])
    assert_rejected(x, r"var and accum do not have the same shape: \[6\] vs \[7\]", call, kind,
                    x, indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
def test_var_and_slot_must_be_different_variables(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    x.variables["accum"] = x.variables["var"]
    del x.start["accum"]
    assert_rejected(x, r"var and accum must be different variables", call, kind, x,
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
def test_grad_of_another_dtype_is_rejected(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"grad has dtype float64 but the variable has dtype float32", call, kind,
                    x, grad=tf.zeros([6], tf.float64), indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
def test_slot_of_another_dtype_is_rejected(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    x.variables["accum"] = tf.Variable(tf.ones([6], tf.float64))
    x.start["accum"] = np.ones([6])
    assert_rejected(x, r"accum has dtype double but grad and the hyperparameters have dtype "
                    r"float", call, kind, x, indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
def test_hyperparameters_must_be_scalars(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"lr is not a scalar: \[2\]", call, kind, x, lr=[0.1, 0.2],
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_learning_rate_must_be_positive(rng, kind, lr):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"lr must be positive but got", call, kind, x, lr=lr,
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ["ftrl", "sparse_ftrl"])
@pytest.mark.parametrize("name, value, pattern", [
    ("l1", -0.1, r"l1 must be non-negative but got -0\.1"),
    ("l2", -1.0, r"l2 must be non-negative but got -1"),
    ("l2_shrinkage", -0.5, r"l2_shrinkage must be non-negative but got -0\.5"),
    ("lr_power", 0.5, r"lr_power must be non-positive but got 0\.5"),
])
def test_ftrl_hyperparameter_bounds(rng, kind, name, value, pattern):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, pattern, call, kind, x, indices=[0, 1, 2, 3, 4, 5], **{name: value})


@pytest.mark.parametrize("kind", ["adagrad", "sparse_adagrad"])
def test_adagrad_epsilon_must_be_non_negative(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"epsilon must be non-negative but got -1", call, kind, x, epsilon=-1.0,
                    indices=[0, 1, 2, 3, 4, 5])


def test_uninitialized_variable_fails_cleanly():
    with tf.Graph().as_default():
        var = tf.Variable(tf.zeros([3]))
        accum = tf.Variable(tf.ones([3]))
        op = tf_ftrl.apply_adagrad(var, accum, tf.ones([3]), lr=0.1)
        with tf.compat.v1.Session() as session:
            session.run(accum.initializer)
            with pytest.raises(tf.errors.FailedPreconditionError, match="Could not read variable var"):
                session.run(op)
            np.testing.assert_array_equal(session.run(accum.read_value()), np.ones(3))
