"""Bad inputs raise InvalidArgumentError naming the problem, and change nothing."""

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support.reference import Inputs

FTRL = dict(lr=0.1, l1=0.01, l2=0.01, l2_shrinkage=0.0, lr_power=-0.5)
ADAGRAD = dict(lr=0.1, epsilon=1e-7)


def call(kind, x, grad=None, indices=None, **overrides):
    v = x.variables
    grad = x.grad if grad is None else grad
    if kind == "ftrl":
        return tf_ftrl.ops.apply_ftrl(v["var"], v["accum"], v["linear"], grad,
                                      **{**FTRL, **overrides})
    if kind == "sparse_ftrl":
        return tf_ftrl.ops.sparse_apply_ftrl(v["var"], v["accum"], v["linear"], grad, indices,
                                             **{**FTRL, **overrides})
    if kind == "adagrad":
        return tf_ftrl.ops.apply_adagrad(v["var"], v["accum"], grad, **{**ADAGRAD, **overrides})
    return tf_ftrl.ops.sparse_apply_adagrad(v["var"], v["accum"], grad, indices,
                                            **{**ADAGRAD, **overrides})


def slots(kind):
    return ("accum", "linear") if "ftrl" in kind else ("accum",)


def bits(x):
    """The bytes of every variable of x (NaN payloads and the sign of zero included)."""
    return {name: v.numpy().tobytes() for name, v in x.variables.items()}


def assert_rejected(x, pattern, fn, *args, **kwargs):
    before = bits(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(*args, **kwargs)
    x.assert_unchanged()
    after = bits(x)
    for name in before:
        assert after[name] == before[name], f"the error changed {name}"


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


@pytest.mark.parametrize("kind, grad_shape, indices, words", [
    ("sparse_ftrl", (2, 5), [0, 1], "var and grad do not agree beyond the first dimension"),
    ("sparse_adagrad", (2, 4, 1), [0, 1],
     "var and grad do not agree beyond the first dimension"),
    ("sparse_ftrl", (3, 4), [0, 1, 2, 3],
     "grad must be the same size as indices in the first dimension"),
    ("sparse_adagrad", (2, 4), [[0, 1]], "indices must be a vector"),
    ("ftrl", (10, 5), None, "var and grad do not have the same shape"),
    ("adagrad", (4,), None, "var and grad do not have the same shape"),
])
def test_shape_errors_in_a_graph_open_with_the_kernels_words(rng, kind, grad_shape, indices,
                                                             words):
    # In a tf.function the op's shape function fails first, as the graph is built (a
    # ValueError, as for TensorFlow's own ops); its message opens with what the kernel would say.
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=grad_shape, slots=slots(kind))
    before = bits(x)

    @tf.function
    def step():
        call(kind, x, indices=None if indices is None else tf.constant(indices))

    with pytest.raises(ValueError, match=rf"{words}: "):
        step()
    assert bits(x) == before


def test_rowwise_accumulator_shape_error_in_a_graph_names_it():
    var = tf.Variable(tf.zeros((10, 4)))
    accum = tf.Variable(tf.zeros((9,)))

    @tf.function
    def step():
        tf_ftrl.ops.sparse_apply_rowwise_adagrad(var, accum, tf.ones((2, 4)), tf.constant([0, 1]),
                                                 **ADAGRAD)

    with pytest.raises(ValueError, match="accum must hold one value per row of var: "):
        step()


@pytest.mark.parametrize("kind", SPARSE)
@pytest.mark.parametrize("index_dtype", [tf.int32, tf.int64], ids=lambda d: d.name)
@pytest.mark.parametrize("indices, grad_shape, shape", [
    (1, (4,), r"\[\]"),
    (1, (1, 4), r"\[\]"),
    ([[0], [1]], (2, 4), r"\[2,1\]"),
    ([[0, 1]], (1, 4), r"\[1,2\]"),
], ids=["rank0", "rank0-grad-rank2", "rank2-column", "rank2-row"])
def test_indices_must_be_a_vector(rng, kind, index_dtype, indices, grad_shape, shape):
    x = Inputs(rng, (10, 4), tf.float32, grad_shape=grad_shape, slots=slots(kind))
    assert_rejected(x, rf"indices must be a vector, got shape {shape}", call, kind, x,
                    indices=tf.constant(indices, index_dtype))


# int64 values that int32 cannot hold: 2**32 and 2**40 + 1 would wrap to 0 and 1 (rows in range)
# if they were truncated anywhere, in the kernel or in the Python conversion of the indices.
FAR_OUTSIDE_INT32 = [2**31, 2**32, 2**40 + 1, 2**62, 2**63 - 1, -(2**31) - 1, -(2**32),
                     -(2**63)]


@pytest.mark.parametrize("kind", SPARSE)
@pytest.mark.parametrize("bad", FAR_OUTSIDE_INT32)
@pytest.mark.parametrize("position", [0, 2])
@pytest.mark.parametrize("form", ["tensor", "numpy", "list"])
def test_int64_indices_far_outside_int32_are_rejected(rng, kind, bad, position, form):
    x = Inputs(rng, (10, 2), tf.float32, grad_shape=(3, 2), slots=slots(kind))
    indices = [0, 1, 2]
    indices[position] = bad
    indices = {"tensor": lambda: tf.constant(indices, tf.int64),
               "numpy": lambda: np.array(indices, np.int64),
               "list": lambda: indices}[form]()
    assert_rejected(x, rf"indices\[{position}\] = {bad} is not in \[0, 10\)", call, kind, x,
                    indices=indices)


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
    assert_rejected(x, r"accum has dtype double but var has dtype float: the state has var's "
                    r"dtype, or bfloat16 or half for a float var", call, kind, x,
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
def test_hyperparameters_must_be_scalars(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"lr is not a scalar: \[2\]", call, kind, x, lr=[0.1, 0.2],
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("lr", [-0.1, -1e-30, float("nan")])
def test_learning_rate_must_be_non_negative(rng, kind, lr):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"lr must be non-negative but got", call, kind, x, lr=lr,
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ["ftrl", "sparse_ftrl"])
@pytest.mark.parametrize("lr", [0.0, -0.0])
def test_ftrl_step_at_zero_learning_rate_changes_nothing(rng, kind, lr):
    # FTRL's formula divides by lr (TensorFlow's op rejects 0, Keras writes NaN).
    x = Inputs(rng, (6, 3), tf.float32, grad_shape=(6, 3), slots=slots(kind))
    before = bits(x)
    call(kind, x, lr=lr, l2=0.0, indices=[5, 0, 5, 2, 1, 3])
    assert bits(x) == before


def test_ftrl_step_at_zero_learning_rate_still_checks_indices(rng):
    x = Inputs(rng, (6, 3), tf.float32, grad_shape=(4, 3), slots=slots("sparse_ftrl"))
    assert_rejected(x, r"indices\[2\] = 9 is not in \[0, 6\)", call, "sparse_ftrl", x, lr=0.0,
                    indices=[0, 1, 9, 2])


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_adagrad_at_zero_learning_rate_matches_tensorflow(rng, sparse):
    # As TensorFlow's ResourceApplyAdagradV2 (and Keras) at lr 0: the accumulator grows and the
    # variable keeps its value.
    var0 = rng.normal(size=(6, 2))
    accum0 = rng.uniform(0.1, 1.0, size=(6, 2))
    grad = rng.normal(size=(6, 2))
    ours = [tf.Variable(var0), tf.Variable(accum0)]
    theirs = [tf.Variable(var0), tf.Variable(accum0)]
    if sparse:
        indices = [4, 0, 4, 2, 1, 5]
        tf_ftrl.ops.sparse_apply_adagrad(*ours, grad, indices, lr=0.0, epsilon=1e-7)
        summed = tf.math.unsorted_segment_sum(grad, indices, 6)
        tf.raw_ops.ResourceApplyAdagradV2(var=theirs[0].handle, accum=theirs[1].handle,
                                          lr=tf.constant(0.0, tf.float64),
                                          epsilon=tf.constant(1e-7, tf.float64), grad=summed)
    else:
        tf_ftrl.ops.apply_adagrad(*ours, grad, lr=0.0, epsilon=1e-7)
        tf.raw_ops.ResourceApplyAdagradV2(var=theirs[0].handle, accum=theirs[1].handle,
                                          lr=tf.constant(0.0, tf.float64),
                                          epsilon=tf.constant(1e-7, tf.float64),
                                          grad=tf.constant(grad))
    np.testing.assert_array_equal(ours[0].numpy(), var0)
    assert not np.allclose(ours[1].numpy(), accum0)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-15)


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


HYPERPARAMETERS = {"ftrl": list(FTRL), "sparse_ftrl": list(FTRL), "adagrad": list(ADAGRAD),
                   "sparse_adagrad": list(ADAGRAD)}
BOUND = {"lr": "non-negative", "l1": "non-negative", "l2": "non-negative",
         "l2_shrinkage": "non-negative", "lr_power": "non-positive", "epsilon": "non-negative"}


@pytest.mark.parametrize("kind, name", [(kind, name) for kind in ALL
                                        for name in HYPERPARAMETERS[kind]])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
def test_nan_and_infinite_hyperparameters_are_rejected(rng, kind, name, value):
    x = Inputs(rng, (6, 2), tf.float32, grad_shape=(6, 2), slots=slots(kind))
    pattern = (rf"{name} must be {BOUND[name]} but got nan" if np.isnan(value) else
               rf"{name} must be finite but got {value}")
    assert_rejected(x, pattern, call, kind, x, indices=[0, 1, 2, 3, 4, 5], **{name: value})


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=lambda d: d.name)
def test_hyperparameter_that_overflows_the_dtype_is_rejected(rng, kind, dtype):
    # The ops take hyperparameters in the variable's dtype: 1e5 is inf in float16, and a float64
    # tensor of 1e39 is inf once cast to bfloat16.
    x = Inputs(rng, (6,), dtype, slots=slots(kind))
    value = 1e5 if dtype == tf.float16 else tf.constant(1e39, tf.float64)
    assert_rejected(x, r"lr must be finite but got inf", call, kind, x, lr=value,
                    indices=[0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("kind", ["adagrad", "sparse_adagrad"])
def test_adagrad_epsilon_must_be_non_negative(rng, kind):
    x = Inputs(rng, (6,), tf.float32, slots=slots(kind))
    assert_rejected(x, r"epsilon must be non-negative but got -1", call, kind, x, epsilon=-1.0,
                    indices=[0, 1, 2, 3, 4, 5])


def test_uninitialized_variable_fails_cleanly():
    with tf.Graph().as_default():
        var = tf.Variable(tf.zeros([3]))
        accum = tf.Variable(tf.ones([3]))
        op = tf_ftrl.ops.apply_adagrad(var, accum, tf.ones([3]), lr=0.1)
        with tf.compat.v1.Session() as session:
            session.run(accum.initializer)
            with pytest.raises(tf.errors.FailedPreconditionError, match="Could not read variable var"):
                session.run(op)
            np.testing.assert_array_equal(session.run(accum.read_value()), np.ones(3))
