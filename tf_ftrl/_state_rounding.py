"""Stochastic rounding of 16-bit optimizer state in plain TensorFlow ops, with the fused kernels'
bits (`kernels/numeric.h`: RoundingKey, StochasticBits, FloatToBFloat16Stochastic,
FloatToHalfStochastic): the plain-ops updates (inside XLA where the fused ops are not lowered,
as on a GPU under Keras's default `jit_compile`, and `stateless_apply`) round a float32 value
stored at element `position` of state array `array` with the same random bits, from the same
`[seed, step]`, as the kernels do. Integer arithmetic only (uint32 and uint64, which wrap in
TensorFlow and XLA as in C++), so XLA compiles it on any device.
"""

import tensorflow as tf

_MASK32 = 0xFFFFFFFF


def _u32(value):
    return tf.constant(value, tf.uint32)


def _u64(value):
    return tf.constant(value, tf.uint64)


def _shr(x, bits):
    return tf.bitwise.right_shift(x, tf.cast(bits, x.dtype))


def _shl(x, bits):
    return tf.bitwise.left_shift(x, tf.cast(bits, x.dtype))


def _mix64(z):
    """SplitMix64's finalizer (numeric.h Mix64)."""
    xor = tf.bitwise.bitwise_xor
    z = xor(z, _shr(z, 30)) * _u64(0xBF58476D1CE4E5B9)
    z = xor(z, _shr(z, 27)) * _u64(0x94D049BB133111EB)
    return xor(z, _shr(z, 31))


def rounding_key(seed_and_step):
    """The uint64 key of one update's rounding from the ops' `stochastic_rounding` input
    `[seed, step]` (numeric.h RoundingKey)."""
    seed_and_step = tf.bitcast(tf.cast(seed_and_step, tf.int64), tf.uint64)
    return _mix64(_mix64(seed_and_step[0]) + seed_and_step[1])


def stochastic_bits(key, array, positions):
    """The 32 random bits (uint32, the shape of `positions`) that round the elements at
    `positions` (int64: an element's index in its array, a per-row array's row) of state array
    `array` (1 for the first state array after var, ...) under `key` (numeric.h StochasticBits)."""
    xor = tf.bitwise.bitwise_xor
    p = tf.bitcast(tf.cast(positions, tf.int64), tf.uint64)
    high = tf.cast(_shr(p, 32), tf.uint32)
    low = tf.cast(tf.bitwise.bitwise_and(p, _u64(_MASK32)), tf.uint32)
    key_low = tf.cast(tf.bitwise.bitwise_and(key, _u64(_MASK32)), tf.uint32)
    key_high = tf.cast(_shr(key, 32), tf.uint32)
    keyed = xor(xor(key_low, high * _u32(0x85EBCA77)),
                key_high + _u32(array) * _u32(0xC2B2AE3D))
    h = xor(keyed, low * _u32(0x9E3779B1))
    h = xor(h, _shr(h, 16)) * _u32(0x85EBCA6B)
    h = xor(h, _shr(h, 13)) * _u32(0xC2B2AE35)
    return xor(h, _shr(h, 16))


def _to_bfloat16(x, bits):
    u = tf.bitcast(x, tf.uint32)
    finite = tf.bitwise.bitwise_and(u, _u32(0x7FFFFFFF)) < _u32(0x7F800000)
    # The 16 bits dropped are the fraction of the way to the next value of larger magnitude.
    rounded = tf.bitcast(tf.cast(_shr(u + _shr(bits, 16), 16), tf.uint16), tf.bfloat16)
    return tf.where(finite, rounded, tf.cast(x, tf.bfloat16))


def _to_float16(x, bits):
    u = tf.bitcast(x, tf.uint32)
    sign = tf.cast(tf.bitwise.bitwise_and(_shr(u, 16), _u32(0x8000)), tf.uint64)
    magnitude = tf.bitwise.bitwise_and(u, _u32(0x7FFFFFFF))
    # A normal half: 13 bits dropped.
    normal = tf.cast(_shr(magnitude - _u32(112 << 23) + _shr(bits, 19), 13), tf.uint64)
    # A half subnormal (units of 2^-24): the significand shifted right by `shift` (14..63 here),
    # rounded up with probability (the dropped bits) / 2^shift.
    exponent = tf.cast(_shr(magnitude, 23), tf.int32)
    shift = tf.clip_by_value(126 - exponent, 14, 63)
    significand = tf.cast(tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(magnitude, _u32(0x7FFFFF)),
                                                _u32(0x800000)), tf.uint64)
    wide_bits = tf.cast(bits, tf.uint64)
    addend = tf.where(shift <= 32, _shr(wide_bits, tf.maximum(32 - shift, 0)),
                      _shl(wide_bits, tf.maximum(shift - 32, 0)))
    subnormal = _shr(significand + addend, shift)
    value = tf.where(
        magnitude >= _u32(0x47800000), _u64(0x7C00),  # >= 65536: beyond every finite half
        tf.where(magnitude >= _u32(0x38800000), normal,
                 tf.where((exponent == 0) | (126 - exponent >= 64), _u64(0), subnormal)))
    rounded = tf.bitcast(tf.cast(tf.bitwise.bitwise_or(sign, value), tf.uint16), tf.float16)
    finite = magnitude < _u32(0x7F800000)
    return tf.where(finite, rounded, tf.cast(x, tf.float16))


def round_stochastically(values, dtype, key, array, positions):
    """float32 `values` stored as `dtype` (bfloat16 or float16), each rounded to one of its two
    neighbours with the kernels' bits for `array` and `positions` (int64, the shape of
    `values`); values that are exact, infinite or NaN store as to nearest."""
    bits = stochastic_bits(key, array, positions)
    values = tf.cast(values, tf.float32)
    if tf.as_dtype(dtype) == tf.bfloat16:
        return _to_bfloat16(values, bits)
    if tf.as_dtype(dtype) == tf.float16:
        return _to_float16(values, bits)
    raise ValueError(f"stochastic rounding stores bfloat16 or float16, not {dtype}")
