"""tf_ftrl.ops.advise_huge_pages: transparent huge pages for a variable's buffer, values
unchanged, updates unchanged."""

import os

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl

MIB = 1 << 20


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "never"


def kernel_at_least(major, minor):
    release = os.uname().release.split("-", 1)[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


def anon_huge_bytes():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    return 0


def test_buffer_moves_to_huge_pages_and_keeps_its_values():
    rows, dim = 1_000_000, 16  # 64 MB
    var = tf.Variable(tf.random.stateless_uniform((rows, dim), seed=(1, 2)))
    before = var.numpy()
    huge_before = anon_huge_bytes()
    advised, collapsed = tf_ftrl.ops.load_library().fused_advise_huge_pages(var=var.handle)
    advised, collapsed = int(advised), bool(collapsed)
    np.testing.assert_array_equal(var.numpy(), before)
    if thp_mode() == "never":
        assert advised == 0 and not collapsed
        return
    # The 2 MiB-aligned part of a 64 MB buffer: all of it but at most one page at either end.
    assert rows * dim * 4 - 4 * MIB <= advised <= rows * dim * 4
    assert advised % (2 * MIB) == 0
    if kernel_at_least(6, 1):
        assert collapsed
        assert anon_huge_bytes() - huge_before >= 0.9 * advised


def test_updates_of_an_advised_table_are_unchanged():
    rows, dim, n = 300_000, 16, 5_000
    rng = np.random.default_rng(7)
    init = rng.uniform(-1, 1, (rows, dim)).astype(np.float32)
    grad = tf.constant(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
    ids = tf.constant(rng.integers(0, rows, n))
    states = []
    for advise in (False, True):
        state = [tf.Variable(init), tf.Variable(tf.fill((rows, dim), 0.1)),
                 tf.Variable(tf.zeros((rows, dim)))]
        if advise:
            advised = tf_ftrl.ops.advise_huge_pages(state)
            assert (advised == 0) == (thp_mode() == "never"), advised
        for _ in range(3):
            tf_ftrl.ops.sparse_apply_ftrl(*state, grad, ids, lr=0.1, l1=0.01, l2=0.01)
            tf_ftrl.ops.apply_adagrad(state[0], state[1], tf.ones((rows, dim)) * 0.01, lr=0.1)
        states.append([v.numpy() for v in state])
    for plain, advised in zip(*states):
        np.testing.assert_array_equal(plain, advised)


def test_lists_distributed_variables_and_small_buffers():
    assert tf_ftrl.ops.advise_huge_pages(tf.Variable([1.0, 2.0])) == 0
    assert tf_ftrl.ops.advise_huge_pages([]) == 0
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = tf.Variable(tf.zeros((4 * MIB,)))  # 16 MB
    table = tf.Variable(tf.zeros((4 * MIB,)))
    one = tf_ftrl.ops.advise_huge_pages(table)
    if thp_mode() == "never":
        pytest.skip("this kernel has no transparent huge pages: nothing more to check")
    assert one >= 12 * MIB
    assert tf_ftrl.ops.advise_huge_pages(mirrored) >= 12 * MIB
    assert tf_ftrl.ops.advise_huge_pages([table, (table,)]) == 2 * one


def test_keras_model_tables_and_optimizer_slots():
    # The README's recipe: Keras 3 variables and the optimizer's slots, then training as usual.
    import keras

    inputs = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(500_000, 8)(inputs)  # 16 MB
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    table = model.trainable_variables[0]
    before = [v.numpy() for v in [table] + optimizer.variables]
    advised = tf_ftrl.ops.advise_huge_pages(model.trainable_variables + optimizer.variables)
    if thp_mode() != "never":
        # The table and its two slots, less at most 4 MiB of unaligned edges each.
        assert advised >= 3 * (500_000 * 8 * 4 - 4 * MIB)
    for value, variable in zip(before, [table] + optimizer.variables):
        np.testing.assert_array_equal(variable.numpy(), value)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.arange(64 * 4).reshape(64, 4) % 500_000, np.ones((64, 1)), batch_size=16,
              verbose=0)
    assert np.isfinite(table.numpy()).all()
    assert not np.array_equal(table.numpy(), before[0])
