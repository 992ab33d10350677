"""tf_ftrl._state_rounding: stochastic rounding of 16-bit state in plain TensorFlow ops, bit for
bit the fused kernels' (the same random bits from the same [seed, step], array and position).

The fused Adagrad op's accumulator stores fl32(accum + g * g), rounded; with gradients whose
squares are exact in float32 the plain ops compute the same float32 value, so the stored bits
must agree exactly, eagerly and inside XLA."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tf_ftrl
from tf_ftrl import _state_rounding

STATE_DTYPES = [tf.bfloat16, tf.float16]


def _exact_square_gradients(rng, shape, scale):
    """Gradients of at most 11 significant bits (their squares are exact in float32)."""
    return (rng.integers(-2047, 2048, size=shape) * scale).astype(np.float32)


def _accumulators(rng, shape, dtype):
    """Start values across the 16-bit format's range: zeros (so that a tiny square lands among
    float16's subnormals), small, ordinary and large values (near float16's largest finite
    value, where rounding up overflows)."""
    kinds = rng.integers(0, 4, size=shape)
    values = np.where(kinds == 0, 0.0, np.where(
        kinds == 1, rng.uniform(0, 1e-4, shape),
        np.where(kinds == 2, rng.uniform(0, 10, shape), rng.uniform(6.0e4, 6.55e4, shape))))
    return tf.cast(tf.constant(values, tf.float32), dtype)


def _bits(tensor):
    return tf.bitcast(tensor, tf.uint16).numpy()


@pytest.mark.parametrize("dtype", STATE_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("scale", [2.0 ** -20, 2.0 ** -12, 2.0 ** -6, 1.0],
                         ids=["tiny", "small", "unit", "large"])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
def test_rounding_matches_the_fused_kernels(rng, dtype, scale, jit_compile):
    shape = (257, 7)  # not a multiple of any vector width
    seed_and_step = [int(rng.integers(-2**62, 2**62)), int(rng.integers(0, 2**40))]
    grad = _exact_square_gradients(rng, shape, scale)
    start = _accumulators(rng, shape, dtype)
    var = tf.Variable(tf.zeros(shape))
    accum = tf.Variable(start)
    tf_ftrl.ops.apply_adagrad(var, accum, tf.constant(grad), lr=0.1,
                              stochastic_rounding=seed_and_step)

    def plain(start, grad):
        exact = tf.cast(start, tf.float32) + grad * grad
        positions = tf.reshape(tf.range(np.prod(shape), dtype=tf.int64), shape)
        return _state_rounding.round_stochastically(
            exact, dtype, _state_rounding.rounding_key(tf.constant(seed_and_step, tf.int64)),
            1, positions)

    expected = tf.function(plain, jit_compile=jit_compile)(start, tf.constant(grad))
    assert expected.dtype == dtype
    np.testing.assert_array_equal(_bits(expected), _bits(accum.read_value()))
    # Rounding happened both ways: neither always down nor always to nearest.
    exact = tf.cast(start, tf.float32).numpy() + grad.astype(np.float32) ** 2
    nearest = _bits(tf.cast(exact, dtype))
    assert (_bits(expected) != nearest).any() or scale == 2.0 ** -20


@pytest.mark.parametrize("dtype", STATE_DTYPES, ids=lambda d: d.name)
def test_row_positions_and_later_arrays_match_the_fused_kernels(rng, dtype):
    # The row-wise accumulator's element is its row (array 1), and rows past 2^32 elements of
    # position split into high and low halves: positions near and above 2^32 in a sparse update
    # of a one-wide table, whose rows are its positions.
    rows = 5
    seed_and_step = [int(rng.integers(0, 2**62)), 7]
    key = _state_rounding.rounding_key(tf.constant(seed_and_step, tf.int64))
    values = tf.constant(rng.uniform(0.5, 2.0, 4096), tf.float32)
    for array, base in [(1, 0), (2, 2**32 - 2048), (3, 3 * 2**32 + 11)]:
        positions = tf.range(base, base + 4096, dtype=tf.int64)
        bits = _state_rounding.stochastic_bits(key, array, positions).numpy()
        # The bits are a hash: about half of each bit set, and none repeated often.
        assert 0.45 < np.unpackbits(bits.view(np.uint8)).mean() < 0.55
        assert len(np.unique(bits)) > 4000
        rounded = _state_rounding.round_stochastically(values, dtype, key, array, positions)
        up = tf.cast(rounded, tf.float32).numpy() >= values.numpy()
        assert 0.2 < up.mean() < 0.8
    # Array 1 at the rows of a row-wise accumulator, against the fused row-wise Adagrad op.
    grad = _exact_square_gradients(rng, (rows, 1), 2.0 ** -6)
    start = _accumulators(rng, (rows,), dtype)
    var = tf.Variable(tf.zeros((rows, 1)))
    accum = tf.Variable(start)
    tf_ftrl.ops.apply_rowwise_adagrad(var, accum, tf.constant(grad), lr=0.1,
                                      stochastic_rounding=seed_and_step)
    exact = tf.cast(start, tf.float32) + tf.constant(grad[:, 0] ** 2)
    expected = _state_rounding.round_stochastically(exact, dtype, key, 1,
                                                    tf.range(rows, dtype=tf.int64))
    np.testing.assert_array_equal(_bits(expected), _bits(accum.read_value()))


def test_non_finite_values_store_as_to_nearest():
    key = _state_rounding.rounding_key(tf.constant([1, 2], tf.int64))
    values = tf.constant([np.inf, -np.inf, np.nan, 1e30, -1e30, 0.0, -0.0], tf.float32)
    positions = tf.range(7, dtype=tf.int64)
    for dtype in STATE_DTYPES:
        rounded = tf.cast(_state_rounding.round_stochastically(values, dtype, key, 1, positions),
                          tf.float32).numpy()
        assert rounded[0] == np.inf and rounded[1] == -np.inf and np.isnan(rounded[2])
        assert rounded[5] == 0 and not np.signbit(rounded[5]) and np.signbit(rounded[6])
        if dtype == tf.float16:  # beyond its largest finite value: infinite, as to nearest
            assert rounded[3] == np.inf and rounded[4] == -np.inf
        else:
            np.testing.assert_allclose(rounded[3:5], [1e30, -1e30], rtol=2 ** -7)


def _slot_bits(optimizer_values, variable_shape):
    return [_bits(tf.convert_to_tensor(v)) for v in optimizer_values
            if tf.convert_to_tensor(v).dtype in (tf.bfloat16, tf.float16)]


@pytest.mark.parametrize("path", ["stateless", "xla"])
@pytest.mark.parametrize("rowwise", [False, True], ids=["elementwise", "rowwise"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "float16"])
def test_plain_updates_round_as_the_fused_ops(rng, monkeypatch, path, rowwise, sparse,
                                              state_dtype):
    # The Keras 3 optimizer's plain-ops update (stateless_apply; inside XLA where the fused ops
    # are not lowered, as on a GPU) stores stochastically rounded state with the fused ops'
    # bits: Adagrad's accumulator, whose float32 value both compute exactly here (gradients of
    # few significant bits, duplicates among the sparse ones), is the same, bit for bit, over
    # three steps; the weights agree to float32's rounding.
    from tf_ftrl import ops
    rows, width, steps = 12, 4, 3
    init = rng.normal(size=(rows, width)).astype(np.float32)

    def gradient(step):
        values = rng.integers(-127, 128, size=(6 if sparse else rows, width)) * 2.0 ** -8
        values = tf.constant(values.astype(np.float32))
        if not sparse:
            return values
        return tf.IndexedSlices(values, tf.constant([1, 5, 5, 9, 11, 1]),
                                tf.constant([rows, width]))

    grads = [gradient(step) for step in range(steps)]

    def make():
        return tf_ftrl.Adagrad(learning_rate=0.1, rowwise=rowwise, state_dtype=state_dtype)

    fused_var, plain_var = keras.Variable(init), keras.Variable(init)
    fused, plain = make(), make()
    for grad in grads:
        fused.apply([grad], [fused_var])
    assert not any("tensorflow ops" in k for k in fused.kernels_used().values())
    if path == "xla":
        monkeypatch.setattr(ops, "_xla_lowering", False)
        step = tf.function(lambda grad: plain.apply([grad], [plain_var]), jit_compile=True)
        for grad in grads:
            step(grad)
        assert all("tensorflow ops (inside XLA" in k for k in plain.kernels_used().values())
        plain_values, plain_slots = plain_var.numpy(), [v.value for v in plain.variables]
    else:
        plain.build([plain_var])
        for grad in grads:
            (new_var,), new_slots = plain.stateless_apply(
                [v.value for v in plain.variables], [grad], [plain_var.value])
            # (stateless_apply assigns nothing: carry its results into the next step.)
            plain_var.assign(new_var)
            for variable, value in zip(plain.variables, new_slots):
                variable.assign(value)
        assert int(plain.iterations.numpy()) == steps
        plain_values, plain_slots = plain_var.numpy(), [v.value for v in plain.variables]
    fused_bits = _slot_bits([v.value for v in fused.variables], init.shape)
    assert len(fused_bits) == 1 and fused_bits[0].shape == ((rows,) if rowwise else init.shape)
    plain_bits = _slot_bits(plain_slots, init.shape)
    np.testing.assert_array_equal(plain_bits[0], fused_bits[0])
    np.testing.assert_allclose(plain_values, fused_var.numpy(), rtol=1e-6, atol=1e-7)
