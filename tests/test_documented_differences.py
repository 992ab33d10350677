"""What the README and the optimizers' docstrings say differs from the stock optimizers stays
true: repeated ids, rows no batch looks up, regularized tables, and the warning under XLA."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tf_ftrl.optimizers import _fused_optimizer


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_repeated_id_adds_the_square_of_the_sum(name):
    # The docstrings' example: one id four times with gradient 1.
    gradient = tf.IndexedSlices(tf.ones([4, 1]), tf.constant([1, 1, 1, 1]), tf.constant([3, 1]))
    accumulators = {}
    for source in (tf_ftrl, keras.optimizers):
        variable = tf.Variable(tf.zeros([3, 1]))
        optimizer = getattr(source, name)(learning_rate=0.1, initial_accumulator_value=0.0)
        optimizer.apply_gradients([(gradient, variable)])
        accumulators[source.__name__] = optimizer.get_slot(variable, "accumulator").numpy() \
            if source is tf_ftrl else optimizer.variables[2].numpy()
    np.testing.assert_array_equal(accumulators["tf_ftrl"].ravel(), [0, 16, 0])
    np.testing.assert_array_equal(accumulators["keras.optimizers"].ravel(), [0, 4, 0])


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_regularized_embedding_updates_every_row(name):
    # The regularizer's gradient covers the whole table: the update is dense.
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((2,), dtype="int32"),
        keras.layers.Embedding(20, 4, embeddings_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=getattr(tf_ftrl, name)(learning_rate=0.1), loss="mse")
    table = model.layers[0].embeddings
    before = table.numpy().copy()
    ids = np.array([[0, 1]] * 8, "int32")  # only rows 0 and 1 are looked up
    model.fit(ids, rng.normal(size=(8, 1)), batch_size=8, epochs=1, verbose=0)
    changed = np.any(table.numpy() != before, axis=1)
    assert changed.all(), f"rows left unchanged: {np.flatnonzero(~changed)}"


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_xla_warns_once_naming_the_optimizer_and_the_fix(name, monkeypatch):
    # Where the fused ops have no XLA lowering (tests/test_xla_custom_call.py has the path with
    # it, which does not warn).
    tf_ftrl.ops.load_library()  # which sets _xla_lowering
    monkeypatch.setattr(tf_ftrl.ops, "_xla_lowering", False)
    _fused_optimizer._xla_warned.discard(name)
    model = keras.Sequential([keras.Input((2,), dtype="int32"), keras.layers.Embedding(20, 4),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=getattr(tf_ftrl, name)(learning_rate=0.1), loss="mse",
                  jit_compile=True)
    ids = np.zeros((8, 2), "int32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ids, np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
    ours = [w for w in caught if "fused kernels cannot run" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert f"tf_ftrl.{name} is running inside XLA" in message
    assert "`jit_compile=False`" in message


def test_no_xla_warning_without_xla():
    _fused_optimizer._xla_warned.clear()
    model = keras.Sequential([keras.Input((2,), dtype="int32"), keras.layers.Embedding(20, 4),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1), loss="mse", jit_compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(np.zeros((8, 2), "int32"), np.ones((8, 1)), batch_size=4, verbose=0)
    assert not [w for w in caught if "fused kernels cannot run" in str(w.message)]


@pytest.mark.parametrize("name, rows_changed", [("Ftrl", "all"), ("Adagrad", "touched")])
def test_what_keras_3_does_with_a_sparse_gradient(name, rows_changed):
    # The README's account of the stock optimizers: Keras 3's Ftrl rewrites every row, its
    # Adagrad only the touched ones (ours change only the touched rows in both).
    gradient = tf.IndexedSlices(tf.ones([4, 2]), tf.constant([1, 1, 1, 3]), tf.constant([6, 2]))
    initial = np.arange(12, dtype="float32").reshape(6, 2) / 10 + 1
    for source in (keras.optimizers, tf_ftrl):
        variable = tf.Variable(initial)
        getattr(source, name)(learning_rate=0.1).apply_gradients([(gradient, variable)])
        changed = np.flatnonzero(np.any(variable.numpy() != initial, axis=1)).tolist()
        expected = [0, 1, 2, 3, 4, 5] if source is keras.optimizers and rows_changed == "all" \
            else [1, 3]
        assert changed == expected, (source.__name__, changed)


@pytest.mark.parametrize("initializer", ["random", "zeros"])
def test_ftrl_rows_no_batch_looks_up(rng, initializer):
    # The README: Keras 3's Ftrl sets a row never looked up to 0, ours keep it; from a table of
    # zeros the two agree (ids without repeats, so that only that difference could show).
    initial = (rng.normal(size=(8, 3)) if initializer == "random" else np.zeros((8, 3)))
    initial = initial.astype("float32")
    gradients = [tf.IndexedSlices(tf.constant(rng.normal(size=(3, 3)), tf.float32),
                                  tf.constant([1, 4, 6] if step % 2 else [1, 2, 4]),
                                  tf.constant([8, 3])) for step in range(3)]
    tables = {}
    for source in (keras.optimizers, tf_ftrl):
        table = tf.Variable(initial)
        optimizer = getattr(source, "Ftrl")(learning_rate=0.2, l1_regularization_strength=0.01)
        for gradient in gradients:
            optimizer.apply_gradients([(gradient, table)])
        tables[source.__name__] = table.numpy()
    never = [0, 3, 5, 7]
    np.testing.assert_array_equal(tables["keras.optimizers"][never], 0)
    np.testing.assert_array_equal(tables["tf_ftrl"][never], initial[never])
    if initializer == "zeros":
        np.testing.assert_allclose(tables["tf_ftrl"], tables["keras.optimizers"], rtol=1e-5,
                                   atol=1e-7)
