"""Optimizer state saved with one `rowwise` or `state_dtype` setting, loaded into an optimizer with
the other: the accumulator's shape tells the one, the slots' dtype the other, and the values are
converted instead of failing on the shape or dtype."""

import numpy as np


def convert_slot(value, shape, name):
    """`value` (a saved slot) in `shape`: an element-wise accumulator (shape [rows, ...]) becomes
    a row-wise one ([rows]) by the mean of each row; a row-wise one becomes element-wise by
    repeating each row's value. Any other mismatch is an error naming the slot and both shapes."""
    value = np.asarray(value)
    if value.ndim >= 2 and len(shape) == 1 and value.shape[0] == shape[0]:
        return value.reshape(value.shape[0], -1).astype(np.float64).mean(axis=1).astype(
            value.dtype)
    if value.ndim == 1 and len(shape) >= 2 and value.shape[0] == shape[0]:
        return np.broadcast_to(value.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
    raise ValueError(
        f"The saved optimizer variable {name} has shape {tuple(value.shape)}, which cannot be "
        f"converted to its shape here, {tuple(shape)}: only an accumulator saved with the other "
        f"`rowwise` setting (one value per row against one per element) is converted.")


def converted_message(optimizer, rowwise, converted):
    how = ("element-wise accumulators became row-wise ones (the mean of each row)" if rowwise
           else "row-wise accumulators became element-wise ones (each row's value repeated)")
    return (f"tf_ftrl.{optimizer}: the saved state was written with rowwise={not rowwise}; "
            f"{how}: {'; '.join(converted)}.")


def cast_message(optimizer, cast):
    """What a restore of slots saved in another dtype did (`cast`: "path float32 -> bfloat16")."""
    return (f"tf_ftrl.{optimizer}: optimizer state saved in another dtype was converted to the "
            f"optimizer's `state_dtype` (narrower: rounded to nearest; wider: exact): "
            f"{'; '.join(cast)}.")


def converted_tensor(value, shape):
    """`convert_slot` for a restored tensor (in TensorFlow ops), or None when `value` already has
    `shape` or is not an accumulator of the other `rowwise` setting."""
    import tensorflow as tf

    saved = value.shape
    if saved.rank is None or tuple(saved) == tuple(shape):
        return None
    if saved.rank >= 2 and len(shape) == 1 and saved[0] == shape[0]:
        rows = tf.reshape(tf.cast(value, tf.float64), [saved[0], -1])
        return tf.cast(tf.reduce_mean(rows, axis=1), value.dtype)
    if saved.rank == 1 and len(shape) >= 2 and saved[0] == shape[0]:
        return tf.broadcast_to(tf.reshape(value, [-1] + [1] * (len(shape) - 1)), shape)
    return None
