"""FTRL's warm start (`warm_start=True`, `warm_start_linear()`): the linear slot against a float64
reference of the closed form's inverse, zero-gradient steps that keep the weights, steps against
the float64 reference and stock Keras from the same state, and the front ends' plumbing.

tf_keras (legacy) and MirroredStrategy run in fresh processes (tests/support/warm_start_worker.py).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import numpy_reference, warm_start_worker, workers

ROWS, COLUMNS = 64, 8

# name: Ftrl arguments (lr_power -0.5 takes the kernels' sqrt path, others pow).
CASES = {
    "plain": dict(learning_rate=0.1),
    "small_lr": dict(learning_rate=0.001),
    "l1_l2": dict(learning_rate=0.05, l1_regularization_strength=0.01,
                  l2_regularization_strength=0.02),
    "beta_power": dict(learning_rate=0.2, beta=0.3, learning_rate_power=-0.7,
                       initial_accumulator_value=0.4),
    "by_lr": dict(learning_rate=0.05, multiply_linear_by_lr=True),
    "by_lr_l1_beta": dict(learning_rate=0.05, multiply_linear_by_lr=True, beta=0.5,
                          l1_regularization_strength=0.003, l2_regularization_strength=0.01),
}
LAYOUTS = ("elementwise", "rowwise")


def _assert_at_most(difference, bound, err_msg=""):
    difference, bound = np.broadcast_arrays(np.asarray(difference), np.asarray(bound))
    over = difference > bound
    assert not over.any(), (f"{err_msg}: {over.sum()} of {over.size} over the bound, e.g. "
                            f"{difference[over][:5]} > {bound[over][:5]}")


def _pretrained(rng, shape=(ROWS, COLUMNS)):
    """Pretrained-looking float32 weights with some exact zeros."""
    values = rng.normal(scale=0.3, size=shape).astype(np.float32)
    values.flat[::7] = 0.0
    return values


def _optimizer(case, layout, **kwargs):
    return tf_ftrl.Ftrl(warm_start=True, rowwise=layout == "rowwise", **CASES[case], **kwargs)


def _built(case, layout, weights, **kwargs):
    var = tf.Variable(weights)
    optimizer = _optimizer(case, layout, **kwargs)
    optimizer.build([var])
    return optimizer, var


def _slots(optimizer, var):
    return [np.asarray(optimizer.get_slot(var, name), np.float64)
            for name in ("accumulator", "linear")]


def _sigma_and_threshold(args, accum, var):
    """FTRL's sigma (the closed form's denominator) and threshold in float64 for Ftrl arguments
    `args`, as the stored linear slot holds them (times lr with multiply_linear_by_lr)."""
    lr = args["learning_rate"]
    power = np.asarray(accum, np.float64) ** -args.get("learning_rate_power", -0.5)
    if power.ndim == 1:
        power = power.reshape(-1, *(1,) * (var.ndim - 1))
    l2 = args.get("l2_regularization_strength", 0.0) + args.get("beta", 0.0) / (2 * lr)
    l1 = args.get("l1_regularization_strength", 0.0)
    if args.get("multiply_linear_by_lr"):
        return power + 2 * l2 * lr, l1 * lr
    return power / lr + 2 * l2, l1


def _reference_linear(args, accum, w):
    """The float64 inverse of the closed form: z = -(w * sigma + sign(w) * l1)."""
    w = np.asarray(w, np.float64)
    sigma, threshold = _sigma_and_threshold(args, accum, w)
    return -(w * sigma + np.sign(w) * threshold)


def _reference_step(case, layout, var, accum, linear, grad):
    args = CASES[case]
    lr = args["learning_rate"]
    step = numpy_reference.rowwise_ftrl if layout == "rowwise" else numpy_reference.ftrl
    return step(var, accum, linear, grad, lr, args.get("l1_regularization_strength", 0.0),
                args.get("l2_regularization_strength", 0.0) + args.get("beta", 0.0) / (2 * lr),
                lr_power=args.get("learning_rate_power", -0.5),
                multiply_linear_by_lr=args.get("multiply_linear_by_lr", False))


def _closed_form_bound(args, accum, w, linear):
    """How far a zero-gradient step may move float32 weights: 1 ulp of w, plus, where l1 > 0,
    1 ulp of the stored z over sigma (z sits near l1, which limits the precision of small w)."""
    sigma, threshold = _sigma_and_threshold(args, accum, w)
    slack = np.spacing(np.abs(w).astype(np.float32)).astype(np.float64)
    if threshold > 0:
        slack = slack + np.spacing(np.abs(linear).astype(np.float32)) / sigma
    return slack


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_linear_is_the_float64_inverse(rng, case, layout):
    weights = _pretrained(rng)
    optimizer, var = _built(case, layout, weights)
    accum, linear = _slots(optimizer, var)
    expected = _reference_linear(CASES[case], accum, weights)
    # The stored value is one of the float32 values within 2 ulp of the float64 inverse.
    _assert_at_most(np.abs(linear - expected),
                                 2.5 * np.spacing(np.abs(expected).astype(np.float32)))
    assert np.all(linear[weights == 0] == 0)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_gradient_step_keeps_the_weights(rng, case, layout, sparse):
    weights = _pretrained(rng)
    optimizer, var = _built(case, layout, weights)
    accum, linear = _slots(optimizer, var)
    if sparse:
        rows = np.arange(0, ROWS, 2)
        grad = tf.IndexedSlices(tf.zeros([len(rows), COLUMNS]), tf.constant(rows, tf.int32),
                                tf.constant([ROWS, COLUMNS]))
    else:
        grad = tf.zeros_like(weights)
    for _ in range(3):
        optimizer.apply([grad], [var])
    after = var.numpy()
    _assert_at_most(np.abs(after.astype(np.float64) - weights),
                                 _closed_form_bound(CASES[case], accum, weights, linear))
    exact = np.mean(after == weights)
    # Measured on 32,000 elements: 85-98% exactly, with l1 = 0 and l1 > 0 alike.
    assert exact >= (0.5 if CASES[case].get("l1_regularization_strength") else 0.75), exact
    assert np.all(after[weights == 0] == 0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_from_warm_linear_matches_float64_reference(rng, case, layout):
    weights = _pretrained(rng)
    optimizer, var = _built(case, layout, weights)
    accum, linear = _slots(optimizer, var)
    grad = rng.normal(scale=0.1, size=weights.shape).astype(np.float32)
    expected, expected_accum, expected_linear = _reference_step(case, layout, weights, accum,
                                                                linear, grad)
    optimizer.apply([tf.constant(grad)], [var])
    new_accum, new_linear = _slots(optimizer, var)
    magnitude = float(np.max(np.abs(linear)))
    numpy_reference.assert_close(new_linear, expected_linear, "float32", magnitude=magnitude,
                                 what="linear")
    numpy_reference.assert_close(new_accum, expected_accum, "float32", what="accumulator")
    numpy_reference.assert_close(var.numpy(), expected, "float32", scale=4, what="var",
                                 magnitude=magnitude / float(np.min(
                                     _sigma_and_threshold(CASES[case], new_accum, weights)[0])))


@pytest.mark.parametrize("case", ["plain", "small_lr", "l1_l2", "beta_power"])
def test_stock_keras_ftrl_from_the_same_linear_takes_the_same_step(rng, case):
    weights = _pretrained(rng)
    ours, var = _built(case, "elementwise", weights)
    stock_var = tf.Variable(weights)
    stock = keras.optimizers.Ftrl(**CASES[case])
    stock.build([stock_var])
    stock_linear = stock.variables[-1]  # iterations, learning_rate, accumulator, linear
    assert "linear" in stock_linear.path
    stock_linear.assign(ours.get_slot(var, "linear"))
    for step in range(3):
        grad = rng.normal(scale=0.1, size=weights.shape).astype(np.float32)
        grad[::3] = 0.0  # rows with a zero gradient: stock keeps them too, from this linear
        ours.apply([tf.constant(grad)], [var])
        stock.apply([tf.constant(grad)], [stock_var])
        np.testing.assert_allclose(var.numpy(), stock_var.numpy(), rtol=2e-5, atol=2e-7,
                                   err_msg=f"step {step}")
    np.testing.assert_allclose(stock_var.numpy()[::3], weights[::3], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("state_dtype, bits", [("bfloat16", 8), ("float16", 11)])
@pytest.mark.parametrize("case", ["plain", "l1_l2", "by_lr"])
def test_low_precision_state_keeps_the_weights_within_its_rounding(rng, case, state_dtype,
                                                                    bits):
    weights = _pretrained(rng)
    optimizer, var = _built(case, "elementwise", weights, state_dtype=state_dtype)
    accum, linear = _slots(optimizer, var)
    assert optimizer.get_slot(var, "linear").dtype == state_dtype
    optimizer.apply([tf.zeros_like(weights)], [var])
    sigma, threshold = _sigma_and_threshold(CASES[case], accum, weights)
    # z rounded to nearest moves w by at most |z| * 2^-bits / sigma = (|w| + l1/sigma) 2^-bits,
    # and where z is subnormal in the state dtype (float16 below 6.1e-5) by at most the
    # subnormals' spacing over sigma.
    subnormal_spacing = {"float16": 2.0 ** -24, "bfloat16": 2.0 ** -133}[state_dtype]
    bound = (np.abs(weights) + threshold / sigma) * 2.0 ** -bits + subnormal_spacing / sigma
    bound = bound + np.spacing(np.abs(weights))
    _assert_at_most(np.abs(var.numpy().astype(np.float64) - weights), bound)


def test_float16_state_that_would_overflow_is_an_error(rng):
    var = tf.Variable(np.full((4, 2), 100.0, np.float32))
    optimizer = tf_ftrl.Ftrl(learning_rate=1e-4, warm_start=True, state_dtype="float16")
    with pytest.raises(ValueError, match="would overflow float16"):
        optimizer.build([var])


def test_warm_up_schedule_from_zero_uses_its_first_positive_rate(rng):
    weights = _pretrained(rng)
    schedule = keras.optimizers.schedules.PolynomialDecay(
        0.0, decay_steps=10, end_learning_rate=0.5, power=1.0)  # 0, 0.05, 0.1, ...
    var = tf.Variable(weights)
    optimizer = tf_ftrl.Ftrl(learning_rate=schedule, warm_start=True)
    optimizer.build([var])
    accum, linear = _slots(optimizer, var)
    np.testing.assert_allclose(linear, -weights * np.sqrt(accum) / 0.05, rtol=1e-6)
    zero = tf.zeros_like(weights)
    optimizer.apply([zero], [var])  # lr 0: changes nothing
    np.testing.assert_array_equal(var.numpy(), weights)
    optimizer.apply([zero], [var])  # lr 0.05: the warm start's rate
    _assert_at_most(np.abs(var.numpy() - weights), np.spacing(np.abs(weights)))


def test_constant_zero_learning_rate_is_an_error():
    optimizer = tf_ftrl.Ftrl(learning_rate=0.0, warm_start=True)
    with pytest.raises(ValueError, match="`warm_start` needs a positive learning rate"):
        optimizer.build([tf.Variable(np.ones((2, 2), np.float32))])


def test_zero_accumulator_without_l2_is_an_error():
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1, initial_accumulator_value=0.0, warm_start=True)
    with pytest.raises(ValueError, match="cannot represent the nonzero weights"):
        optimizer.build([tf.Variable(np.ones((2, 2), np.float32))])


@pytest.mark.parametrize("multiply_linear_by_lr", [False, True])
def test_later_learning_rate_rescales_zero_gradient_rows_without_multiply_by_lr(
        rng, multiply_linear_by_lr):
    # What the docstring states: z is consistent with the warm start's rate; a step at another
    # rate recomputes w = -z / (n^p / lr_new) = w * lr_new / lr_old (l1 = l2 = beta = 0), while
    # lr * z = -w * n^p does not depend on lr.
    weights = _pretrained(rng)
    var = tf.Variable(weights)
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1, warm_start=True,
                             multiply_linear_by_lr=multiply_linear_by_lr)
    optimizer.build([var])
    optimizer.learning_rate = 0.2
    optimizer.apply([tf.zeros_like(weights)], [var])
    expected = weights if multiply_linear_by_lr else weights * 2.0
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6)


def test_default_keeps_linear_at_zero_and_zero_gradient_wipes_the_weights(rng):
    weights = _pretrained(rng)
    var = tf.Variable(weights)
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    optimizer.build([var])
    assert not optimizer.get_config()["warm_start"]
    np.testing.assert_array_equal(optimizer.get_slot(var, "linear").numpy(), 0.0)
    optimizer.apply([tf.zeros_like(weights)], [var])
    np.testing.assert_array_equal(var.numpy(), 0.0)  # the issue: without warm start, wiped


def test_config_round_trip():
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1, warm_start=True, multiply_linear_by_lr=True)
    config = optimizer.get_config()
    assert config["warm_start"] is True
    again = tf_ftrl.Ftrl.from_config(config)
    assert again.warm_start and again.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, tf_ftrl.Ftrl) and restored.warm_start


def _embedding_model(table, ids_per_example=3):
    """Embedding (pretrained) -> Dense with a zero kernel: the first step's gradient of every
    touched row of the table is exactly 0."""
    model = keras.Sequential([
        keras.Input((ids_per_example,), dtype="int32"),
        keras.layers.Embedding(table.shape[0], table.shape[1]),
        keras.layers.Flatten(),
        keras.layers.Dense(1, kernel_initializer="zeros"),
    ])
    model.layers[0].embeddings.assign(table)
    return model


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("warm_start", [True, False])
def test_fit_keeps_pretrained_embedding_rows(rng, warm_start, jit_compile):
    # Keras builds the optimizer inside the first step: compiled with XLA, the warm linear
    # slots' initializers (the variables' values) could not be lifted out of it.
    table = _pretrained(rng, (40, 4))
    model = _embedding_model(table)
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.05, warm_start=warm_start), loss="mse",
                  jit_compile=jit_compile)
    ids = rng.integers(0, 20, size=(16, 3)).astype(np.int32)  # rows 20.. never touched
    model.fit(ids, rng.normal(size=(16, 1)), batch_size=16, epochs=1, verbose=0)
    after = model.layers[0].embeddings.numpy()
    touched = np.unique(ids)
    np.testing.assert_array_equal(after[20:], table[20:])
    if warm_start:
        _assert_at_most(np.abs(after[touched] - table[touched]),
                                     np.spacing(np.abs(table[touched])))
    else:
        np.testing.assert_array_equal(after[touched], 0.0)


def test_checkpoint_restore_overwrites_the_warm_linear(rng, tmp_path):
    weights = _pretrained(rng)
    var = tf.Variable(weights)
    trained = tf_ftrl.Ftrl(learning_rate=0.1)
    trained.apply([tf.constant(rng.normal(size=weights.shape).astype(np.float32))], [var])
    saved_linear = trained.get_slot(var, "linear").numpy()
    path = tf.train.Checkpoint(optimizer=trained).save(str(tmp_path / "ckpt"))

    # Restored before the slots exist (deferred, as restoring before the first step is) and
    # after.
    deferred = tf_ftrl.Ftrl(learning_rate=0.1, warm_start=True)
    tf.train.Checkpoint(optimizer=deferred).restore(path)
    deferred.build([var])
    np.testing.assert_array_equal(deferred.get_slot(var, "linear").numpy(), saved_linear)
    after = tf_ftrl.Ftrl(learning_rate=0.1, warm_start=True)
    after.build([var])
    tf.train.Checkpoint(optimizer=after).restore(path)
    np.testing.assert_array_equal(after.get_slot(var, "linear").numpy(), saved_linear)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_warm_start_linear_uses_the_trained_accumulator(rng, layout):
    weights = _pretrained(rng)
    var = tf.Variable(weights)
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1, l1_regularization_strength=0.001,
                             rowwise=layout == "rowwise")
    for _ in range(3):
        rows = rng.choice(ROWS, size=10, replace=False).astype(np.int32)
        grad = rng.normal(size=(10, COLUMNS)).astype(np.float32)
        optimizer.apply([tf.IndexedSlices(tf.constant(grad), tf.constant(rows),
                                          tf.constant([ROWS, COLUMNS]))], [var])
    new_weights = _pretrained(rng)  # loaded into the trained model
    var.assign(new_weights)
    optimizer.warm_start_linear()
    accum, linear = _slots(optimizer, var)
    assert np.unique(accum).size > 1  # trained accumulators, not the initial value
    args = dict(learning_rate=0.1, l1_regularization_strength=0.001)
    expected = _reference_linear(args, accum, new_weights)
    bound = _closed_form_bound(args, accum, new_weights, linear)
    _assert_at_most(np.abs(linear - expected),
                                 2.5 * np.spacing(np.abs(expected).astype(np.float32)))
    optimizer.apply([tf.zeros_like(new_weights)], [var])
    _assert_at_most(np.abs(var.numpy() - new_weights), bound)


def test_warm_start_linear_before_build_is_an_error():
    with pytest.raises(ValueError, match="build it first"):
        tf_ftrl.Ftrl().warm_start_linear()


# --- fresh processes: MirroredStrategy (2 logical CPUs), tf_keras ---


@pytest.fixture(scope="module")
def mirrored():
    return workers.run_for_result("-m", "tests.support.warm_start_worker", "mirrored",
                                  timeout=300)


@pytest.fixture(scope="module")
def legacy():
    env = workers.environment(TF_USE_LEGACY_KERAS="1")
    return workers.run_for_result("-m", "tests.support.warm_start_worker", "legacy",
                                  env=env, timeout=300)


@pytest.mark.parametrize("front_end", ["keras", "legacy"])
def test_mirrored_fit_keeps_pretrained_rows(mirrored, legacy, front_end):
    result = (mirrored if front_end == "keras" else legacy)["mirrored"]
    assert result["replicas"] == 2
    table = np.asarray(result["table"])
    after = np.asarray(result["after"])
    touched = np.asarray(result["touched"])
    assert result["replica_linears_equal"]
    untouched = np.setdiff1d(np.arange(len(table)), touched)
    np.testing.assert_array_equal(after[untouched], table[untouched])
    _assert_at_most(np.abs(after[touched] - table[touched]),
                                 np.spacing(np.abs(table[touched]).astype(np.float32)))
    _assert_at_most(np.abs(np.asarray(result["rebuilt_after"]) - table),
                                 np.spacing(np.abs(table).astype(np.float32)))


@pytest.mark.parametrize("case", sorted(warm_start_worker.LEGACY_CASES))
def test_legacy_linear_and_zero_gradient_steps(legacy, case):
    result = legacy["cases"][case]
    weights, accum, linear = (np.asarray(result[k], np.float64)
                              for k in ("weights", "accum", "linear"))
    args = warm_start_worker.LEGACY_CASES[case]
    expected = _reference_linear(args, accum, weights)
    bound = _closed_form_bound(args, accum, weights, linear)
    _assert_at_most(np.abs(linear - expected),
                                 2.5 * np.spacing(np.abs(expected).astype(np.float32)))
    for name in ("dense_after", "sparse_after"):
        _assert_at_most(np.abs(np.asarray(result[name]) - weights), bound,
                                     err_msg=name)
    # The same linear slot as the Keras 3 front end computes.
    var = tf.Variable(np.asarray(result["weights"], np.float32))
    ours = tf_ftrl.Ftrl(warm_start=True, **args)
    ours.build([var])
    np.testing.assert_array_equal(ours.get_slot(var, "linear").numpy(), linear)


def test_legacy_config_method_and_fit(legacy):
    assert legacy["config"] == [True, True, False]
    assert legacy["warm_start_linear_kept"]
    assert legacy["fit_touched_rows_kept"] and legacy["fit_untouched_rows_kept"]
    assert legacy["default_wipes"]
