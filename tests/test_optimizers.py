"""tf_ftrl.Ftrl and tf_ftrl.Adagrad as Keras 3 optimizers: golden values from a float64
reference, equivalence with keras.optimizers, sparse gradients, and the Keras machinery."""

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import reference


def run_steps(optimizer, init, grads, dtype="float32"):
    variable = keras.Variable(init.astype(dtype), dtype=dtype)
    for g in grads:
        optimizer.apply([tf.constant(g.astype(dtype))], [variable])
    return variable.numpy().astype(np.float64)


def keras_learning_rate(value):
    """Keras keeps the learning rate in a float32 variable and builds constant initial values in
    float32, whatever the model's dtype."""
    return float(np.float32(value))


def reference_ftrl_steps(init, grads, lr, l1=0.0, l2=0.0, l2_shrinkage=0.0, lr_power=-0.5,
                         beta=0.0, initial_accumulator_value=0.1):
    lr = keras_learning_rate(lr)
    var = init.astype(np.float64)
    accum = np.full_like(var, keras_learning_rate(initial_accumulator_value))
    linear = np.zeros_like(var)
    for g in grads:
        var, accum, linear = reference.ftrl(var, accum, linear, g, lr, l1,
                                            l2 + beta / (2 * lr), l2_shrinkage, lr_power)
    return var


# ------------------------------------------------------------------------------ constructor


@pytest.mark.parametrize("ours, theirs", [(tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                                          (tf_ftrl.Adagrad, keras.optimizers.Adagrad)])
def test_constructor_has_every_keras_argument_with_the_same_default(ours, theirs):
    our_params = inspect.signature(ours.__init__).parameters
    for name, param in inspect.signature(theirs.__init__).parameters.items():
        assert name in our_params, name
        if name == "name":
            # Older Keras releases default to "ftrl"/"adagrad", newer ones to None (then the same
            # name, made unique): compare the names the defaults give.
            assert re.sub(r"_\d+$", "", ours().name) == re.sub(r"_\d+$", "", theirs().name)
            continue
        assert our_params[name].default == param.default, name


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(learning_rate_power=0.1), "`learning_rate_power` needs to be negative or zero"),
    (dict(initial_accumulator_value=-1.0), "`initial_accumulator_value` needs to be positive"),
    (dict(l1_regularization_strength=-1.0), "`l1_regularization_strength` needs to be positive"),
    (dict(l2_regularization_strength=-1.0), "`l2_regularization_strength` needs to be positive"),
    (dict(l2_shrinkage_regularization_strength=-1.0),
     "`l2_shrinkage_regularization_strength` needs to be positive"),
    (dict(clipnorm=1.0, clipvalue=1.0), "Only one of `clipnorm`, `clipvalue`"),
])
def test_ftrl_rejects_what_keras_rejects(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        keras.optimizers.Ftrl(**kwargs)
    with pytest.raises(ValueError, match=pattern):
        tf_ftrl.Ftrl(**kwargs)


@pytest.mark.parametrize("name, argument", [
    ("Ftrl", "initial_accumulator_value"), ("Ftrl", "learning_rate_power"),
    ("Ftrl", "l1_regularization_strength"), ("Ftrl", "l2_regularization_strength"),
    ("Ftrl", "l2_shrinkage_regularization_strength"), ("Ftrl", "beta"),
    ("Adagrad", "initial_accumulator_value"), ("Adagrad", "epsilon")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")],
                         ids=["nan", "inf", "-inf"])
def test_nan_and_infinite_arguments_are_rejected(name, argument, value):
    # Keras lets NaN through (its bounds are comparisons); the ops would reject most at the first
    # step, and nothing an initial accumulator value, whose weights then become NaN.
    if value != value:
        getattr(keras.optimizers, name)(**{argument: value})
    with pytest.raises(ValueError, match=re.escape(
            f"`{argument}` needs to be finite. Received: {argument}={value}.")):
        getattr(tf_ftrl, name)(**{argument: value})


@pytest.mark.parametrize("name, argument", [
    ("Ftrl", "l1_regularization_strength"), ("Ftrl", "l2_regularization_strength"),
    ("Ftrl", "l2_shrinkage_regularization_strength"), ("Adagrad", "epsilon")])
def test_nan_arguments_given_as_tensors_are_rejected(name, argument):
    # A constant tensor is checked as its value; the op would reject it only at the first step.
    with pytest.raises(ValueError, match=re.escape(
            f"`{argument}` needs to be finite. Received: {argument}=nan.")):
        getattr(tf_ftrl, name)(**{argument: tf.constant(float("nan"))})
    assert getattr(tf_ftrl, name)(**{argument: tf.constant(0.5)}) is not None


def test_adagrad_rejects_negative_values():
    with pytest.raises(ValueError, match="`initial_accumulator_value` needs to be positive"):
        tf_ftrl.Adagrad(initial_accumulator_value=-0.1)
    with pytest.raises(ValueError, match="`epsilon` needs to be positive or zero"):
        tf_ftrl.Adagrad(epsilon=-1.0)


# ---------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("hyper", [
    dict(lr=0.1),
    dict(lr=0.05, l1=0.01, l2=0.02),
    dict(lr=0.05, l1=0.001, l2=0.01, l2_shrinkage=0.1),
    dict(lr=0.1, beta=0.5, l2=0.01),
    dict(lr=0.1, lr_power=0.0, l1=0.001),
    dict(lr=0.1, lr_power=-0.2, l2=0.01),
    dict(lr=0.2, initial_accumulator_value=0.5, l1=0.003),
], ids=str)
def test_ftrl_golden_values_over_several_steps(rng, dtype, rtol, hyper):
    init = rng.normal(size=(4, 5))
    grads = [rng.normal(size=(4, 5)) for _ in range(6)]
    optimizer = tf_ftrl.Ftrl(
        learning_rate=hyper["lr"],
        learning_rate_power=hyper.get("lr_power", -0.5),
        initial_accumulator_value=hyper.get("initial_accumulator_value", 0.1),
        l1_regularization_strength=hyper.get("l1", 0.0),
        l2_regularization_strength=hyper.get("l2", 0.0),
        l2_shrinkage_regularization_strength=hyper.get("l2_shrinkage", 0.0),
        beta=hyper.get("beta", 0.0))
    actual = run_steps(optimizer, init, grads, dtype)
    expected = reference_ftrl_steps(init, grads, **hyper)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_adagrad_golden_values_over_several_steps(rng, dtype, rtol):
    init = rng.normal(size=(7,))
    grads = [rng.normal(size=(7,)) for _ in range(6)]
    actual = run_steps(tf_ftrl.Adagrad(learning_rate=0.1, initial_accumulator_value=0.2,
                                       epsilon=1e-3), init, grads, dtype)
    var, accum = init.copy(), np.full(7, keras_learning_rate(0.2))
    for g in grads:
        var, accum = reference.adagrad(var, accum, g, lr=keras_learning_rate(0.1), epsilon=1e-3)
    np.testing.assert_allclose(actual, var, rtol=rtol, atol=rtol)


def test_ftrl_with_power_minus_half_and_no_regularisation_equals_adagrad(rng):
    grads = [rng.normal(size=(10,)) for _ in range(8)]
    zeros = np.zeros(10)
    ftrl = run_steps(tf_ftrl.Ftrl(learning_rate=0.3), zeros, grads, "float64")
    adagrad = run_steps(tf_ftrl.Adagrad(learning_rate=0.3, epsilon=0.0), zeros, grads, "float64")
    np.testing.assert_allclose(ftrl, adagrad, rtol=1e-12, atol=1e-14)


def test_ftrl_with_power_zero_equals_sgd(rng):
    grads = [rng.normal(size=(10,)) for _ in range(8)]
    zeros = np.zeros(10)
    ftrl = run_steps(tf_ftrl.Ftrl(learning_rate=0.3, learning_rate_power=0.0), zeros, grads,
                     "float64")
    sgd = run_steps(keras.optimizers.SGD(learning_rate=0.3), zeros, grads, "float64")
    np.testing.assert_allclose(ftrl, sgd, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- the same as keras.optimizers


FTRL_KWARGS = dict(learning_rate=0.05, l1_regularization_strength=0.001,
                   l2_regularization_strength=0.01, l2_shrinkage_regularization_strength=0.01,
                   beta=0.1)


@pytest.mark.parametrize("extra", [
    {}, dict(clipnorm=0.5), dict(clipvalue=0.2), dict(global_clipnorm=0.7),
    dict(weight_decay=0.01), dict(loss_scale_factor=128.0), dict(gradient_accumulation_steps=2),
    dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
], ids=str)
def test_ftrl_matches_keras_ftrl_on_dense_gradients(rng, extra):
    init = rng.normal(size=(6, 4))
    grads = [rng.normal(size=(6, 4)) * 2 for _ in range(12)]
    ours = run_steps(tf_ftrl.Ftrl(**FTRL_KWARGS, **extra), init, grads)
    theirs = run_steps(keras.optimizers.Ftrl(**FTRL_KWARGS, **extra), init, grads)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adagrad_matches_keras_adagrad_up_to_the_epsilon_placement(rng):
    init = rng.normal(size=(6, 4))
    grads = [rng.normal(size=(6, 4)) for _ in range(12)]
    ours = run_steps(tf_ftrl.Adagrad(learning_rate=0.1, epsilon=1e-10), init, grads)
    theirs = run_steps(keras.optimizers.Adagrad(learning_rate=0.1, epsilon=1e-10), init, grads)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_learning_rate_schedule_and_callable(rng):
    init = rng.normal(size=(5,))
    grads = [rng.normal(size=(5,)) for _ in range(5)]
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    ours = run_steps(tf_ftrl.Ftrl(learning_rate=schedule), init, grads)
    theirs = run_steps(keras.optimizers.Ftrl(learning_rate=schedule), init, grads)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    ours = run_steps(tf_ftrl.Adagrad(learning_rate=lambda: 0.05), init, grads)
    expected = run_steps(tf_ftrl.Adagrad(learning_rate=0.05), init, grads)
    np.testing.assert_array_equal(ours, expected)


# ------------------------------------------------------------------------ sparse gradients


def sparse_gradient(rng, rows, row_shape, extra, num_rows):
    """A gradient touching every row in `rows`, plus `extra` duplicates of some of them."""
    indices = np.concatenate([rows, rng.choice(rows, size=extra)])
    rng.shuffle(indices)
    values = rng.normal(size=(len(indices),) + row_shape).astype(np.float32)
    return tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                            tf.constant((num_rows,) + row_shape))


@pytest.mark.parametrize("make", [
    lambda: tf_ftrl.Ftrl(**FTRL_KWARGS),
    lambda: tf_ftrl.Ftrl(learning_rate=0.05, learning_rate_power=-0.3,
                         l1_regularization_strength=0.01),
    lambda: tf_ftrl.Ftrl(learning_rate=0.05, multiply_linear_by_lr=True),
    lambda: tf_ftrl.Adagrad(learning_rate=0.1),
    lambda: tf_ftrl.Ftrl(**FTRL_KWARGS, clipnorm=0.5),
    lambda: tf_ftrl.Ftrl(**FTRL_KWARGS, clipvalue=0.3),
    lambda: tf_ftrl.Ftrl(**FTRL_KWARGS, global_clipnorm=0.6),
    lambda: tf_ftrl.Adagrad(learning_rate=0.1, loss_scale_factor=64.0),
], ids=["ftrl", "ftrl_pow", "ftrl_mult_lr", "adagrad", "clipnorm", "clipvalue",
        "global_clipnorm", "loss_scale_factor"])
def test_sparse_gradient_equals_its_dense_form_and_leaves_other_rows_alone(rng, make):
    # The same rows every step: a dense FTRL step also rewrites rows whose gradient is zero
    # (it recomputes var from the slots), so sparse and dense agree on rows touched each time.
    init = rng.normal(size=(40, 3)).astype(np.float32)
    touched = np.sort(rng.choice(40, size=15, replace=False))
    sparse_var, dense_var = keras.Variable(init), keras.Variable(init)
    sparse_opt, dense_opt = make(), make()
    for _ in range(4):
        grad = sparse_gradient(rng, touched, (3,), extra=10, num_rows=40)
        sparse_opt.apply([grad], [sparse_var])
        dense_opt.apply([tf.convert_to_tensor(grad)], [dense_var])
    np.testing.assert_allclose(sparse_var.numpy()[touched], dense_var.numpy()[touched],
                               rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(40), touched)
    np.testing.assert_array_equal(sparse_var.numpy()[untouched], init[untouched])
    initial_slots = make()
    initial_slots.build([keras.Variable(init)])
    for slot, initial in zip(sparse_opt.variables[2:], initial_slots.variables[2:]):
        np.testing.assert_array_equal(slot.numpy()[untouched], initial.numpy()[untouched])


def test_sparse_adagrad_equals_dense_over_steps_touching_different_rows(rng):
    # Adagrad leaves a row with zero gradient unchanged, so here any rows may be touched.
    init = rng.normal(size=(30, 2)).astype(np.float32)
    sparse_var, dense_var = keras.Variable(init), keras.Variable(init)
    sparse_opt, dense_opt = tf_ftrl.Adagrad(learning_rate=0.1), tf_ftrl.Adagrad(learning_rate=0.1)
    for _ in range(5):
        rows = rng.choice(30, size=8, replace=False)
        grad = sparse_gradient(rng, rows, (2,), extra=5, num_rows=30)
        sparse_opt.apply([grad], [sparse_var])
        dense_opt.apply([tf.convert_to_tensor(grad)], [dense_var])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-6, atol=1e-7)


def test_embedding_model_fit_leaves_rows_never_looked_up_bit_identical():
    rows, dim = 1_000_000, 16
    inputs = keras.Input(shape=(3,), dtype="int32")
    embedded = keras.layers.Embedding(rows, dim)(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(embedded))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1), loss="mse")
    table = model.layers[1].embeddings
    before = table.numpy()
    ids = np.random.default_rng(1).integers(0, rows, size=(64, 3)).astype(np.int32)
    model.fit(ids, np.ones((64, 1)), batch_size=16, epochs=1, verbose=0)
    after = table.numpy()
    used = np.unique(ids)
    untouched = np.ones(rows, bool)
    untouched[used] = False
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert not np.array_equal(after[used], before[used])


def test_loss_scale_factor_with_sparse_gradients_works_where_keras_fails(rng):
    grad = sparse_gradient(rng, np.array([1, 4, 7]), (2,), extra=3, num_rows=10)
    with pytest.raises(Exception):
        keras.optimizers.Ftrl(loss_scale_factor=8.0).apply(
            [grad], [keras.Variable(np.zeros((10, 2), np.float32))])
    variable = keras.Variable(np.zeros((10, 2), np.float32))
    tf_ftrl.Ftrl(loss_scale_factor=8.0).apply([grad], [variable])
    assert np.isfinite(variable.numpy()).all()


def test_gradient_accumulation_with_sparse_gradients(rng):
    init = rng.normal(size=(10, 2)).astype(np.float32)
    ours, dense = keras.Variable(init), keras.Variable(init)
    opt, dense_opt = (tf_ftrl.Ftrl(learning_rate=0.1, gradient_accumulation_steps=2)
                      for _ in range(2))
    for _ in range(4):
        grad = sparse_gradient(rng, np.array([0, 3, 5]), (2,), extra=2, num_rows=10)
        opt.apply([grad], [ours])
        dense_opt.apply([tf.convert_to_tensor(grad)], [dense])
    np.testing.assert_allclose(ours.numpy(), dense.numpy(), rtol=1e-6, atol=1e-7)
    assert int(opt.iterations.numpy()) == 2


# --------------------------------------------------------------------------- Keras machinery


@pytest.mark.parametrize("optimizer", [
    tf_ftrl.Ftrl(learning_rate=0.02, learning_rate_power=-0.3, l1_regularization_strength=0.1,
                 beta=0.2, multiply_linear_by_lr=True, clipnorm=1.0),
    tf_ftrl.Adagrad(learning_rate=0.3, initial_accumulator_value=0.2, epsilon=1e-5,
                    weight_decay=0.01, huge_pages=True),
], ids=["ftrl", "adagrad"])
def test_config_round_trip_and_serialization(optimizer):
    config = optimizer.get_config()
    assert config["huge_pages"] == (True if isinstance(optimizer, tf_ftrl.Adagrad) else "auto")
    clone = type(optimizer).from_config(config)
    assert clone.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer)
    assert restored.get_config() == config


def test_slot_variables_named_and_ordered_as_keras(rng):
    variables = [keras.Variable(rng.normal(size=(3, 2)).astype(np.float32), name="kernel"),
                 keras.Variable(np.zeros(2, np.float32), name="bias")]
    for ours, theirs in ((tf_ftrl.Ftrl(), keras.optimizers.Ftrl()),
                         (tf_ftrl.Adagrad(), keras.optimizers.Adagrad())):
        ours.build(variables)
        theirs.build(variables)
        # Paths differ only in the optimizer's uniquified name ("ftrl_1/..." vs "ftrl_2/...").
        assert [v.path.split("/", 1)[1] for v in ours.variables] == \
            [v.path.split("/", 1)[1] for v in theirs.variables]
        assert [v.shape for v in ours.variables] == [v.shape for v in theirs.variables]


def test_get_slot_and_get_slot_names(rng):
    variable = keras.Variable(rng.normal(size=(4,)).astype(np.float32))
    optimizer = tf_ftrl.Ftrl(initial_accumulator_value=0.3)
    optimizer.apply([tf.ones([4])], [variable])
    assert optimizer.get_slot_names() == ["accumulator", "linear"]
    np.testing.assert_allclose(optimizer.get_slot(variable, "accumulator").numpy(), 1.3)
    assert optimizer.get_slot(variable, "linear").shape == (4,)
    with pytest.raises(ValueError, match="Unknown slot name: momentum"):
        optimizer.get_slot(variable, "momentum")
    assert tf_ftrl.Adagrad().get_slot_names() == ["accumulator"]


def test_set_weights_and_own_variables_restore_state(rng):
    init = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(3)]
    source_var, target_var = keras.Variable(init), keras.Variable(init)
    source, target = tf_ftrl.Ftrl(learning_rate=0.1), tf_ftrl.Ftrl(learning_rate=0.1)
    for g in grads:
        source.apply([g], [source_var])
    target.build([target_var])
    store = {}
    source.save_own_variables(store)
    target.load_own_variables(store)
    for a, b in zip(source.variables, target.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = tf_ftrl.Ftrl(learning_rate=0.1)
    other.build([keras.Variable(init)])
    other.set_weights([v.numpy() for v in source.variables])
    for a, b in zip(source.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_set_weights_converts_the_other_layout_and_dtype(rng, name):
    """Element-wise float32 state set into a row-wise bfloat16 optimizer, and that back into an
    element-wise float32 one: accumulators by the row's mean and by repeating it, every slot
    cast, with the warnings `load_own_variables` gives."""
    cls = getattr(tf_ftrl, name)
    init = rng.normal(size=(6, 4)).astype(np.float32)
    source = cls(learning_rate=0.1)
    source_var = keras.Variable(init)
    for _ in range(3):
        source.apply([rng.normal(size=(6, 4)).astype(np.float32)], [source_var])
    saved = [v.numpy() for v in source.variables]

    rowwise = cls(learning_rate=0.1, rowwise=True, state_dtype="bfloat16")
    rowwise.build([keras.Variable(init)])
    with pytest.warns(UserWarning) as caught:
        rowwise.set_weights(saved)
    messages = " ".join(str(w.message) for w in caught)
    assert "element-wise accumulators became row-wise ones" in messages
    assert "converted to the optimizer's `state_dtype`" in messages
    per_row = [v for v in rowwise.variables if tuple(v.shape) == (6,)]
    assert len(per_row) == 1 and per_row[0].dtype == "bfloat16"
    for variable, value in zip(rowwise.variables, saved):
        expected = value
        if tuple(variable.shape) != value.shape:
            expected = value.astype(np.float64).mean(axis=1).astype(np.float32)
        expected = tf.cast(expected, variable.dtype).numpy()
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=variable.path)

    element_wise = cls(learning_rate=0.1)
    element_wise.build([keras.Variable(init)])
    rowwise_state = [v.numpy() for v in rowwise.variables]
    with pytest.warns(UserWarning, match="row-wise accumulators became element-wise ones"):
        element_wise.set_weights(rowwise_state)
    for variable, value in zip(element_wise.variables, rowwise_state):
        expected = tf.cast(value, variable.dtype).numpy()
        if tuple(variable.shape) != value.shape:
            expected = np.repeat(expected[:, None], 4, axis=1)
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=variable.path)


def test_set_weights_that_do_not_fit_change_nothing(rng):
    variable = keras.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    optimizer.apply([rng.normal(size=(6, 4)).astype(np.float32)], [variable])
    before = [v.numpy() for v in optimizer.variables]
    # Every weight but the last fits: the step count and the first slots must not be set.
    weights = [v + 1 for v in before]
    weights[-1] = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"has shape \(5, 4\), which cannot be converted"):
        optimizer.set_weights(weights)
    with pytest.raises(ValueError, match=f"got 2 weights for its {len(before)} variables"):
        optimizer.set_weights(weights[:2])
    for variable_after, value in zip(optimizer.variables, before):
        np.testing.assert_array_equal(variable_after.numpy(), value, err_msg=variable_after.path)
    with pytest.raises(ValueError, match="before it is built"):
        tf_ftrl.Adagrad().set_weights([])


def test_weight_decay_respects_exclusions(rng):
    decayed = keras.Variable(rng.normal(size=(3,)).astype(np.float32), name="decayed")
    excluded = keras.Variable(rng.normal(size=(3,)).astype(np.float32), name="excluded")
    for ours, theirs in ((tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                         (tf_ftrl.Adagrad, keras.optimizers.Adagrad)):
        results = []
        for cls in (ours, theirs):
            a, b = keras.Variable(decayed.numpy()), keras.Variable(excluded.numpy())
            optimizer = cls(learning_rate=0.1, weight_decay=0.5, epsilon=1e-12) \
                if cls in (tf_ftrl.Adagrad, keras.optimizers.Adagrad) else \
                cls(learning_rate=0.1, weight_decay=0.5)
            optimizer.exclude_from_weight_decay(var_list=[b])
            optimizer.apply([tf.fill([3], 0.5), tf.fill([3], 0.5)], [a, b])
            results.append((a.numpy(), b.numpy()))
        np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


def test_use_ema_and_finalize_variable_values(rng):
    init = rng.normal(size=(4,)).astype(np.float32)
    grads = [rng.normal(size=(4,)).astype(np.float32) for _ in range(5)]
    finals = []
    for cls in (tf_ftrl.Ftrl, keras.optimizers.Ftrl):
        variable = keras.Variable(init)
        optimizer = cls(learning_rate=0.1, use_ema=True, ema_momentum=0.5)
        for g in grads:
            optimizer.apply([g], [variable])
        optimizer.finalize_variable_values([variable])
        finals.append(variable.numpy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- model.fit, XLA, dtypes


def wide_model(rows=1000, dim=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(5,), dtype="int32")
    embedded = keras.layers.Embedding(rows, dim)(inputs)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(embedded))
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def fit_data(rows=1000, n=256):
    data_rng = np.random.default_rng(3)
    x = data_rng.integers(0, rows, size=(n, 5)).astype(np.int32)
    y = (x.sum(axis=1, keepdims=True) % 2).astype(np.float32)
    return x, y


@pytest.mark.parametrize("make", [lambda: tf_ftrl.Ftrl(learning_rate=0.1),
                                  lambda: tf_ftrl.Adagrad(learning_rate=0.1)],
                         ids=["ftrl", "adagrad"])
def test_jit_compiled_fit_matches_the_fused_kernels(make):
    x, y = fit_data()
    weights = []
    for jit in (False, True):
        model = wide_model()
        model.compile(optimizer=make(), loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_jit_compile_auto_trains(rng):
    # "auto" turns XLA on only where a GPU is visible; either way training must work.
    x, y = fit_data()
    model = wide_model()
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1), loss="mse", jit_compile="auto")
    before = model.get_weights()
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("make", [lambda: tf_ftrl.Ftrl(**FTRL_KWARGS),
                                  lambda: tf_ftrl.Ftrl(**FTRL_KWARGS, clipnorm=0.5),
                                  lambda: tf_ftrl.Adagrad(learning_rate=0.1, clipvalue=0.2)],
                         ids=["ftrl", "ftrl_clipnorm", "adagrad_clipvalue"])
def test_xla_compiled_custom_step_matches_the_fused_kernels(rng, make):
    init = rng.normal(size=(30, 4)).astype(np.float32)
    grad = sparse_gradient(rng, np.array([1, 5, 7, 20]), (4,), extra=4, num_rows=30)
    results = []
    for jit in (False, True):
        variable = keras.Variable(init)
        optimizer = make()
        optimizer.build([variable])

        @tf.function(jit_compile=jit)
        def step():
            optimizer.apply([grad], [variable])

        step()
        step()
        results.append([variable.numpy()] + [v.numpy() for v in optimizer.variables[2:]])
    assert not np.array_equal(results[1][0], init)
    for fused, compiled in zip(*results):
        np.testing.assert_allclose(compiled, fused, rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(30), [1, 5, 7, 20])
    np.testing.assert_array_equal(results[1][0][untouched], init[untouched])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training(policy):
    x, y = fit_data()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = wide_model()
        model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1), loss="mse")
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_float64_variables(rng):
    init = rng.normal(size=(6,))
    grads = [rng.normal(size=(6,)) for _ in range(3)]
    actual = run_steps(tf_ftrl.Adagrad(learning_rate=0.1, epsilon=0.0), init, grads, "float64")
    var, accum = init.copy(), np.full(6, keras_learning_rate(0.1))
    for g in grads:
        var, accum = reference.adagrad(var, accum, g, lr=keras_learning_rate(0.1), epsilon=0.0)
    np.testing.assert_allclose(actual, var, rtol=1e-13)


@pytest.mark.parametrize("make", [lambda: tf_ftrl.Ftrl(**FTRL_KWARGS),
                                  lambda: tf_ftrl.Adagrad(learning_rate=0.1)],
                         ids=["ftrl", "adagrad"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_stateless_apply_returns_what_apply_assigns(rng, make, sparse):
    init = rng.normal(size=(12, 3)).astype(np.float32)
    grad = sparse_gradient(rng, np.array([2, 5, 9]), (3,), extra=3, num_rows=12)
    if not sparse:
        grad = tf.convert_to_tensor(grad)
    stateful_var, stateless_var = keras.Variable(init), keras.Variable(init)
    stateful, stateless = make(), make()
    stateful.apply([grad], [stateful_var])
    stateless.build([stateless_var])
    before = [v.numpy() for v in stateless.variables]
    new_vars, new_opt_vars = stateless.stateless_apply(
        [v.value for v in stateless.variables], [grad], [stateless_var.value])
    np.testing.assert_allclose(np.asarray(new_vars[0]), stateful_var.numpy(), rtol=1e-6,
                               atol=1e-7)
    for new, expected in zip(new_opt_vars, stateful.variables):
        np.testing.assert_allclose(np.asarray(new), expected.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(stateless_var.numpy(), init)
    for variable, value in zip(stateless.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)
