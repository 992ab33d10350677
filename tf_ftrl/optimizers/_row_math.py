"""The updates in plain TensorFlow ops, for where the fused kernels cannot run: inside XLA
(`jit_compile=True`), which compiles only ops that have XLA kernels. Same formulas and order of
evaluation as kernels/ftrl_math.h, kernels/adagrad_math.h and (for the row-wise variants, on rows
of var with one accumulator value per row) kernels/rowwise_math.h; half types compute in
float32.
"""

import tensorflow as tf


def _compute_dtype(dtype):
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _accum_power(accum, lr_power):
    # As the kernels: lr_power -0.5 is a square root, not pow (which rounds differently).
    if lr_power == -0.5:
        return tf.sqrt(accum)
    return tf.pow(accum, tf.cast(-lr_power, accum.dtype))


def _ftrl_linear_and_var(var, linear, grad, new_power, old_power, lr, l1, l2, l2_shrinkage,
                         multiply_linear_by_lr):
    """New (var, linear) from the accumulator's old and new power (an element's, or a row's
    broadcast over it), in the kernels' order of evaluation."""
    grad_shrunk = grad + 2 * l2_shrinkage * var
    if multiply_linear_by_lr:
        linear = linear + (grad_shrunk * lr - (new_power - old_power) * var)
    else:
        linear = linear + (grad_shrunk - (new_power - old_power) / lr * var)
    return ftrl_closed_form(linear, *ftrl_threshold_and_denominator(
        new_power, lr, l1, l2, multiply_linear_by_lr)), linear


def ftrl_threshold_and_denominator(power, lr, l1, l2, multiply_linear_by_lr):
    """The threshold and the denominator of FTRL's closed form (`ftrl_closed_form`), from the
    accumulator's power n^-lr_power: l1 and n^p / lr + 2 * l2, or with multiply_linear_by_lr
    (linear holds lr times its usual value) both times lr."""
    if multiply_linear_by_lr:
        return l1 * lr, power + 2 * l2 * lr
    return l1, power / lr + 2 * l2


def ftrl_closed_form(linear, threshold, denominator):
    """The weights FTRL computes from its linear slot: (sign(linear) * threshold - linear) /
    denominator where |linear| > threshold, else 0."""
    unclipped = (tf.where(linear > 0, threshold, -threshold) - linear) / denominator
    return tf.where(tf.abs(linear) > threshold, unclipped, tf.zeros_like(unclipped))


def ftrl(var, accum, linear, grad, lr, l1, l2, l2_shrinkage, lr_power, multiply_linear_by_lr):
    """New (var, accum, linear) after one FTRL-Proximal step. lr_power is a Python number, the
    others tensors or numbers."""
    dtype = var.dtype
    compute = _compute_dtype(dtype)
    var, accum, linear, grad, lr, l1, l2, l2_shrinkage = (
        tf.cast(x, compute) for x in (var, accum, linear, grad, lr, l1, l2, l2_shrinkage))
    new_accum = accum + grad * grad
    var, linear = _ftrl_linear_and_var(
        var, linear, grad, _accum_power(new_accum, lr_power), _accum_power(accum, lr_power), lr,
        l1, l2, l2_shrinkage, multiply_linear_by_lr)
    return tuple(tf.cast(x, dtype) for x in (var, new_accum, linear))


def adagrad(var, accum, grad, lr, epsilon):
    """New (var, accum) after one Adagrad step: var -= lr * g / (sqrt(accum + g^2) + epsilon)."""
    dtype = var.dtype
    compute = _compute_dtype(dtype)
    var, accum, grad, lr, epsilon = (tf.cast(x, compute) for x in (var, accum, grad, lr,
                                                                    epsilon))
    accum = accum + grad * grad
    var = var - grad * lr / (tf.sqrt(accum) + epsilon)
    return tf.cast(var, dtype), tf.cast(accum, dtype)


def _row_mean_square(grad):
    """The mean of each row's squared gradient (a row: everything after the first axis)."""
    return tf.reduce_mean(tf.reshape(grad * grad, [tf.shape(grad)[0], -1]), axis=1)


def _per_row(values, like):
    """Per-row values shaped to broadcast over the rows of `like`."""
    return tf.reshape(values, tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def rowwise_ftrl(var, accum, linear, grad, lr, l1, l2, l2_shrinkage, lr_power,
                 multiply_linear_by_lr):
    """New (var, accum, linear) after one row-wise FTRL step: accum has one value per row of
    var, and grows by the mean of the row's squared gradient."""
    dtype = var.dtype
    compute = _compute_dtype(dtype)
    var, accum, linear, grad, lr, l1, l2, l2_shrinkage = (
        tf.cast(x, compute) for x in (var, accum, linear, grad, lr, l1, l2, l2_shrinkage))
    new_accum = accum + _row_mean_square(grad)
    var, linear = _ftrl_linear_and_var(
        var, linear, grad, _per_row(_accum_power(new_accum, lr_power), var),
        _per_row(_accum_power(accum, lr_power), var), lr, l1, l2, l2_shrinkage,
        multiply_linear_by_lr)
    return tuple(tf.cast(x, dtype) for x in (var, new_accum, linear))


def rowwise_adagrad(var, accum, grad, lr, epsilon):
    """New (var, accum) after one row-wise Adagrad step: accum[r] += mean(g_r^2), then
    var -= lr * g / (sqrt(accum[r]) + epsilon)."""
    dtype = var.dtype
    compute = _compute_dtype(dtype)
    var, accum, grad, lr, epsilon = (tf.cast(x, compute) for x in (var, accum, grad, lr,
                                                                    epsilon))
    accum = accum + _row_mean_square(grad)
    var = var - grad * lr / (_per_row(tf.sqrt(accum), var) + epsilon)
    return tf.cast(var, dtype), tf.cast(accum, dtype)
