"""Learning rates that reach 0 or go wrong, and dtypes the fused kernels are not compiled for,
in both front ends (tf_ftrl's Keras 3 optimizers and tf_ftrl.legacy), against the stock
optimizers.

- The callbacks that set the learning rate between epochs (LearningRateScheduler,
  ReduceLROnPlateau) under model.fit: the same rates and weights as the stock optimizers.
- Adagrad at lr = 0 (where warm-up schedules start): the accumulator grows, the weights stay.
- FTRL at lr = 0: the step changes nothing (its formula divides by lr; stock Keras writes NaN).
- A constant learning rate that is negative, NaN or infinite, or a negative beta: a ValueError
  from the constructor naming the argument.
- A schedule that gives a bad learning rate: an error naming the optimizer, the schedule and the
  step, before anything is written.
- complex64/complex128: Adagrad trains them with the stock math; FTRL rejects them by name.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import keras

import tf_ftrl
import tf_ftrl.legacy

ROWS, ROW_SIZE = 5, 3
INDICES = [0, 3, 3, 1]
TOUCHED = [0, 1, 3]


def _sparse(values, dtype=tf.float32):
    return tf.IndexedSlices(tf.constant(values, dtype), tf.constant(INDICES),
                            tf.constant([ROWS, ROW_SIZE]))


def _dense(values, dtype=tf.float32):
    return tf.math.unsorted_segment_sum(tf.constant(values, dtype), INDICES, ROWS)


def _apply(optimizer, gradient, variable, jit_compile=False):
    def step():
        optimizer.apply_gradients([(gradient, variable)])

    tf.function(step, jit_compile=jit_compile)()


def _slots(optimizer, variable):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return [v.numpy() for v in optimizer.variables if tuple(v.shape) == tuple(variable.shape)]
    return [optimizer.get_slot(variable, name).numpy() for name in optimizer.get_slot_names()]


def _state(optimizer, variable):
    return [variable.numpy()] + _slots(optimizer, variable)


# Step 0 at lr 0, then 0.1 and 0.2: what a warm-up schedule does.
def warm_up():
    return keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], [0.0, 0.1, 0.2])


def warm_up_legacy():
    return tf_keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], [0.0, 0.1, 0.2])


@pytest.mark.parametrize("front_end", ["keras", "legacy"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_adagrad_at_zero_learning_rate_grows_the_accumulator_and_keeps_the_weights(
        rng, front_end, kind):
    if front_end == "keras":
        ours = tf_ftrl.Adagrad(learning_rate=warm_up(), epsilon=0.0)
        # Keras 3 densifies sparse gradients itself; epsilon 0: it adds epsilon inside the root.
        stock = keras.optimizers.Adagrad(learning_rate=warm_up(), epsilon=0.0)
    else:
        ours = tf_ftrl.legacy.Adagrad(learning_rate=warm_up_legacy())
        stock = tf_keras.optimizers.legacy.Adagrad(learning_rate=warm_up_legacy())
    initial = rng.normal(size=(ROWS, ROW_SIZE)).astype("float32")
    ours_var, stock_var = tf.Variable(initial), tf.Variable(initial)
    for step in range(3):
        values = rng.normal(size=(len(INDICES), ROW_SIZE)).astype("float32")
        gradient = _sparse(values) if kind == "sparse" else _dense(values)
        _apply(ours, gradient, ours_var)
        _apply(stock, _dense(values) if front_end == "keras" else gradient, stock_var)
        if step == 0:
            np.testing.assert_array_equal(ours_var.numpy(), initial)
            accumulator = _slots(ours, ours_var)[0]
            np.testing.assert_allclose(accumulator, 0.1 + _dense(values).numpy() ** 2,
                                       rtol=1e-6)
        for a, b in zip(_state(ours, ours_var), _state(stock, stock_var)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours_var.numpy()[TOUCHED], initial[TOUCHED])


def _ftrl(front_end, learning_rate, **kwargs):
    hyper = dict(learning_rate=learning_rate, l1_regularization_strength=0.01,
                 l2_regularization_strength=0.01, beta=0.5, **kwargs)
    if front_end == "keras":
        return tf_ftrl.Ftrl(**hyper)
    return tf_ftrl.legacy.Ftrl(**hyper)


# tf_ftrl.legacy has no plain-TensorFlow path for XLA (see the README's limits).
@pytest.mark.parametrize("front_end, jit_compile",
                         [("keras", False), ("keras", True), ("legacy", False)],
                         ids=["keras-fused", "keras-xla", "legacy-fused"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_ftrl_step_at_zero_learning_rate_changes_nothing(rng, front_end, kind, jit_compile):
    schedule = warm_up() if front_end == "keras" else warm_up_legacy()
    ours = _ftrl(front_end, schedule)
    # The same two steps at lr 0.1 and 0.2, without the step at 0.
    later = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.2])
    reference = _ftrl("keras", later)
    initial = rng.normal(size=(ROWS, ROW_SIZE)).astype("float32")
    ours_var, reference_var = tf.Variable(initial), tf.Variable(initial)
    gradients = [rng.normal(size=(len(INDICES), ROW_SIZE)).astype("float32") for _ in range(3)]
    make = _sparse if kind == "sparse" else _dense
    _apply(ours, make(gradients[0]), ours_var, jit_compile)
    state = _state(ours, ours_var)
    np.testing.assert_array_equal(state[0], initial)
    np.testing.assert_array_equal(state[1], np.full_like(initial, 0.1))
    np.testing.assert_array_equal(state[2], np.zeros_like(initial))
    for values in gradients[1:]:
        _apply(ours, make(values), ours_var, jit_compile)
        _apply(reference, make(values), reference_var)
    for a, b in zip(_state(ours, ours_var), _state(reference, reference_var)):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours_var.numpy()[TOUCHED], initial[TOUCHED])


@pytest.mark.parametrize("optimizer", ["Ftrl", "Adagrad"])
def test_model_fit_with_a_warm_up_schedule_from_zero(optimizer):
    schedule = keras.optimizers.schedules.CosineDecay(0.0, 20, warmup_target=0.2,
                                                      warmup_steps=5)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, size=(256, 4))
    labels = (ids.sum(axis=1) % 2).astype("float32")
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=getattr(tf_ftrl, optimizer)(learning_rate=schedule),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(ids, labels, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert int(model.optimizer.iterations.numpy()) == 16
    for w, b in zip(model.get_weights(), before):
        assert np.isfinite(w).all()
        assert not np.array_equal(w, b)



@pytest.mark.parametrize("callback", ["LearningRateScheduler", "ReduceLROnPlateau"])
@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
@pytest.mark.parametrize("front_end", ["keras", "legacy"])
def test_model_fit_follows_learning_rate_callbacks_as_stock_does(front_end, name, callback):
    # The callbacks assign optimizer.learning_rate between epochs, after the training function
    # was traced: the fused kernels must read the new value, as the stock optimizers do.
    k, ours, stock = ((keras, tf_ftrl, keras.optimizers) if front_end == "keras" else
                      (tf_keras, tf_ftrl.legacy, tf_keras.optimizers.legacy))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    # Keras 3's Adagrad adds epsilon inside the square root, the kernels outside.
    hyper = {"learning_rate": 0.1, **({"epsilon": 0.0} if (front_end, name) == ("keras", "Adagrad")
                                      else {})}

    def fit(optimizer):
        k.utils.set_random_seed(3)
        model = k.Sequential([k.Input((6,)), k.layers.Dense(1)])
        model.compile(optimizer, "mse")
        schedule = (k.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.3 ** epoch)
                    if callback == "LearningRateScheduler" else
                    # The first epoch sets the best loss; each later one is a plateau
                    # (min_delta), and the rate halves after it.
                    k.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=1e9))
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[schedule])
        rates = history.history.get("learning_rate", history.history.get("lr"))
        return model.get_weights(), [float(r) for r in rates]

    weights, rates = fit(getattr(ours, name)(**hyper))
    stock_weights, stock_rates = fit(getattr(stock, name)(**hyper))
    expected = ([0.1, 0.03, 0.009] if callback == "LearningRateScheduler" else [0.1, 0.1, 0.05])
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert rates == stock_rates
    for w, s in zip(weights, stock_weights, strict=True):
        np.testing.assert_allclose(w, s, rtol=1e-6, atol=1e-6)

CONSTRUCTORS = {"keras/Ftrl": tf_ftrl.Ftrl, "keras/Adagrad": tf_ftrl.Adagrad,
                "legacy/Ftrl": tf_ftrl.legacy.Ftrl, "legacy/Adagrad": tf_ftrl.legacy.Adagrad}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@pytest.mark.parametrize("value, message", [
    (-0.1, r"`learning_rate` needs to be positive or zero. Received: learning_rate=-0.1."),
    (float("nan"), r"`learning_rate` needs to be finite. Received: learning_rate=nan."),
    (float("inf"), r"`learning_rate` needs to be finite. Received: learning_rate=inf."),
    (np.float32(-2.0), r"Received: learning_rate=-2.0."),
])
def test_invalid_constant_learning_rate_is_rejected_by_the_constructor(name, value, message):
    with pytest.raises(ValueError, match=message):
        CONSTRUCTORS[name](learning_rate=value)


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_constant_zero_learning_rate_is_accepted(name):
    assert CONSTRUCTORS[name](learning_rate=0.0) is not None


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_stochastic_rounding_takes_only_true_or_false(name):
    # Its truth value would make "no" (or "False" from a config file) mean True.
    for value in ["no", "False", 0, None]:
        with pytest.raises(ValueError, match=r"`stochastic_rounding` must be True or False. "
                                             rf"Received: stochastic_rounding={value!r}"):
            CONSTRUCTORS[name](stochastic_rounding=value)
    for value in [False, np.bool_(True)]:
        optimizer = CONSTRUCTORS[name](stochastic_rounding=value)
        assert optimizer.stochastic_rounding is bool(value)


@pytest.mark.parametrize("name", ["keras/Ftrl", "legacy/Ftrl"])
def test_negative_beta_is_named(name):
    with pytest.raises(ValueError, match=r"`beta` needs to be positive or zero. "
                                         r"Received: beta=-1.0."):
        CONSTRUCTORS[name](learning_rate=0.1, beta=-1.0)


class NegativeAfterTwoSteps(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return tf.where(step < 2, 0.1, -0.1)

    def get_config(self):
        return {}


class NegativeAfterTwoStepsLegacy(tf_keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return tf.where(step < 2, 0.1, -0.1)

    def get_config(self):
        return {}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_schedule_with_a_bad_learning_rate_names_itself_and_the_step(rng, name, kind):
    schedule = (NegativeAfterTwoStepsLegacy() if name.startswith("legacy")
                else NegativeAfterTwoSteps())
    optimizer = CONSTRUCTORS[name](learning_rate=schedule)
    variable = tf.Variable(rng.normal(size=(ROWS, ROW_SIZE)).astype("float32"))
    make = _sparse if kind == "sparse" else _dense
    for _ in range(2):
        _apply(optimizer, make(rng.normal(size=(len(INDICES), ROW_SIZE))), variable)
    before = _state(optimizer, variable)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _apply(optimizer, make(rng.normal(size=(len(INDICES), ROW_SIZE))), variable)
    message = str(error.value)
    for part in [f"[{name.split('/')[1]}: the learning rate schedule NegativeAfterTwoSteps",
                 "gave learning rate] [-0.1] [at optimizer step] [2]",
                 "must be finite and >= 0"]:
        assert part in message, f"{part!r} not in {message!r}"
    for a, b in zip(_state(optimizer, variable), before):
        np.testing.assert_array_equal(a, b)


class BadAfterTwoSteps(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, bad):
        self.bad = bad

    def __call__(self, step):
        return tf.where(step < 2, 0.1, self.bad)

    def get_config(self):
        return {"bad": self.bad}


@pytest.mark.parametrize("bad", [-0.1, float("nan")], ids=["negative", "nan"])
@pytest.mark.parametrize("rowwise", [False, True], ids=["elementwise", "rowwise"])
@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_bad_scheduled_learning_rate_inside_xla_changes_nothing(rng, bad, rowwise, name, kind):
    # XLA drops the learning rate's assertion. float64 runs as plain TensorFlow ops inside XLA
    # (as every update does on a GPU): the bad step must write nothing rather than wrong
    # weights or NaN. float32 on the CPU runs the fused ops as custom calls, whose own check
    # stops the step.
    for dtype in [tf.float64, tf.float32]:
        optimizer = getattr(tf_ftrl, name)(learning_rate=BadAfterTwoSteps(bad), rowwise=rowwise)
        variable = tf.Variable(rng.normal(size=(ROWS, ROW_SIZE)).astype(dtype.as_numpy_dtype))
        make = _sparse if kind == "sparse" else _dense
        for _ in range(2):
            _apply(optimizer, make(rng.normal(size=(len(INDICES), ROW_SIZE)), dtype), variable,
                   jit_compile=True)
        def state():
            return [variable.numpy()] + [v.numpy() for v in optimizer.variables
                                         if len(v.shape) >= 1]

        before = state()
        assert len(before) == (3 if name == "Ftrl" else 2)
        gradient = make(rng.normal(size=(len(INDICES), ROW_SIZE)), dtype)
        if dtype == tf.float32:
            with pytest.raises(tf.errors.InvalidArgumentError, match="lr must be"):
                _apply(optimizer, gradient, variable, jit_compile=True)
        else:
            _apply(optimizer, gradient, variable, jit_compile=True)
            assert "inside XLA" in optimizer.kernels_used()[variable.name.split(":")[0]]
        for a, b in zip(state(), before):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [tf.complex64, tf.complex128], ids=lambda d: d.name)
@pytest.mark.parametrize("front_end", ["keras", "legacy"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_complex_adagrad_matches_stock(rng, dtype, front_end, kind):
    def complex_values(shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    initial = complex_values((ROWS, ROW_SIZE)).astype(dtype.as_numpy_dtype)
    ours_var = tf.Variable(tf.constant(initial, dtype))
    stock_var = tf.Variable(tf.constant(initial, dtype))
    if front_end == "keras":
        ours = tf_ftrl.Adagrad(learning_rate=0.1, epsilon=0.0)
        stock = keras.optimizers.Adagrad(learning_rate=0.1, epsilon=0.0)
    else:
        ours = tf_ftrl.legacy.Adagrad(learning_rate=0.1)
        stock = tf_keras.optimizers.legacy.Adagrad(learning_rate=0.1)
    for _ in range(3):
        values = complex_values((len(INDICES), ROW_SIZE))
        gradient = _sparse(values, dtype) if kind == "sparse" else _dense(values, dtype)
        _apply(ours, gradient, ours_var)
        # Keras 3's Adagrad fails on complex IndexedSlices: it gets the densified gradient.
        _apply(stock, _dense(values, dtype) if front_end == "keras" else gradient, stock_var)
    # Keras 3 computes part of its update in float32 (its learning rate variable).
    tolerance = (dict(rtol=1e-5, atol=1e-6) if dtype == tf.complex64 or front_end == "keras"
                 else dict(rtol=1e-12))
    for a, b in zip(_state(ours, ours_var), _state(stock, stock_var)):
        assert a.dtype == dtype.as_numpy_dtype
        np.testing.assert_allclose(a, b, **tolerance)
    assert not np.allclose(ours_var.numpy()[TOUCHED], initial[TOUCHED])
    if kind == "sparse":
        untouched = [r for r in range(ROWS) if r not in TOUCHED]
        np.testing.assert_array_equal(ours_var.numpy()[untouched], initial[untouched])


@pytest.mark.parametrize("name", ["keras/Ftrl", "legacy/Ftrl"])
@pytest.mark.parametrize("dtype", [tf.complex64, tf.complex128], ids=lambda d: d.name)
def test_complex_ftrl_is_rejected_by_name(name, dtype):
    variable = tf.Variable(tf.zeros([2, 2], dtype), name="table")
    optimizer = CONSTRUCTORS[name](learning_rate=0.1)
    with pytest.raises(ValueError, match=rf"`Ftrl` does not support complex variables. "
                                         rf"Received: variable table:0 of dtype {dtype.name}."):
        optimizer.apply_gradients([(tf.ones([2, 2], dtype), variable)])
