"""FTRL's warm start, for both front ends: the `linear` slot under which FTRL's closed form gives
back the weights a variable holds (pretrained, loaded, set), so that the first update of a row
does not recompute it from `linear = 0`.

The kernels (kernels/ftrl_math.h) compute the weights from the linear slot z, with n the
accumulator, p = -lr_power and l2' = l2 + beta / (2 * lr):

    w = (sign(z) * l1 - z) / sigma  if |z| > l1, else 0,      sigma = n^p / lr + 2 * l2'

and with multiply_linear_by_lr, where the slot holds lr * z, the same with l1 and sigma times lr:

    w = (sign(z) * l1 * lr - z) / (n^p + 2 * l2' * lr)         (2 * l2' * lr = 2 * l2 * lr + beta)

The inverse: z = -(w * sigma + sign(w) * l1) (each term times lr with multiply_linear_by_lr), and
z = 0 for w = 0. Every weight has one: |z| = |w| * sigma + l1 > l1 for w != 0.
"""

import math

import numpy as np
import tensorflow as tf

from tf_ftrl.optimizers import _row_math

# How far ahead a learning rate schedule that gives 0 at the current step (a warm-up from 0) is
# searched for the learning rate of FTRL's first moving step.
LOOKAHEAD_STEPS = 1000

# Stored values tried around the nearest one, in steps of one unit in the last place: the nearest
# stored z need not give the nearest w back, since the closed form rounds too.
_NEIGHBOURS = (1, -1, 2, -2)


def learning_rate(rate_at, step, is_schedule):
    """The learning rate to warm-start with: `rate_at(step)` (the rate of the next step), or,
    where that is 0 and the rate comes from a schedule, its first positive value within
    LOOKAHEAD_STEPS steps (the step where FTRL first moves: steps at 0 change nothing)."""
    rate = rate_at(step)
    if _positive(rate):
        return rate
    if is_schedule:
        for later in range(step + 1, step + 1 + LOOKAHEAD_STEPS):
            rate = rate_at(later)
            if _positive(rate):
                return rate
    ahead = f" and for the next {LOOKAHEAD_STEPS} steps of its schedule" if is_schedule else ""
    raise ValueError(
        f"`warm_start` needs a positive learning rate to compute the `linear` slot from the "
        f"weights (FTRL's closed form divides by it). Received: learning_rate="
        f"{float(np.asarray(rate_at(step)))} at optimizer step {step}{ahead}. Create the slots "
        f"(build the optimizer) or call `warm_start_linear()` when the learning rate is positive.")


def _positive(rate):
    value = float(np.asarray(rate))
    return math.isfinite(value) and value > 0


def require_eager():
    """`warm_start_linear()` assigns values computed eagerly: inside a `tf.function` it would
    assign the values of the trace on every call."""
    if not tf.executing_eagerly():
        raise RuntimeError("`warm_start_linear()` computes the linear slot eagerly: call it "
                           "outside `tf.function`.")


def linear_for(var, accum, hyperparameters, multiply_linear_by_lr, linear_dtype, name):
    """The linear slot, in `linear_dtype`, under which FTRL's closed form gives back `var` (a
    tensor read eagerly: within `tf.init_scope()`) with accumulator `accum` (var's shape, one value per row, or a scalar) and the fused
    ops' scalar inputs `hyperparameters` ({lr, l1, l2 (beta folded in), lr_power, ...}, as an
    update passes them).

    The inverse is computed in float64 from the closed form's threshold and denominator as the
    kernels compute them (in var's dtype, float32 for half types); of the stored values nearest
    to it, the one whose closed form comes closest to var is kept (most often var exactly).
    """
    dtype = tf.as_dtype(var.dtype)
    compute = _row_math._compute_dtype(dtype)
    lr, l1, l2 = (tf.cast(tf.cast(hyperparameters[key], dtype), compute)
                  for key in ("lr", "l1", "l2"))
    lr_power = float(np.asarray(hyperparameters["lr_power"]))
    weights = tf.cast(var, compute)
    power = _row_math._accum_power(tf.cast(accum, compute), lr_power)
    if power.shape.rank == 1 and weights.shape.rank >= 2:
        power = _row_math._per_row(power, weights)
    threshold, denominator = _row_math.ftrl_threshold_and_denominator(
        power, lr, l1, l2, multiply_linear_by_lr)
    _check_denominator(denominator, weights, name)

    w = tf.cast(weights, tf.float64)
    exact = -(w * tf.cast(denominator, tf.float64) + tf.sign(w) * tf.cast(threshold, tf.float64))
    exact = tf.where(w == 0, tf.zeros_like(exact), exact)
    linear_dtype = tf.as_dtype(linear_dtype)
    candidates = [tf.cast(exact, linear_dtype)]
    if linear_dtype in (tf.float32, tf.float64):
        for steps in _NEIGHBOURS:
            towards = tf.fill(tf.shape(candidates[0]),
                              tf.constant(linear_dtype.max * np.sign(steps), linear_dtype))
            value = candidates[0]
            for _ in range(abs(steps)):
                value = tf.math.nextafter(value, towards)
            candidates.append(tf.where(w == 0, candidates[0], value))
    linear = _closest(candidates, w, threshold, denominator, compute)
    _check_finite(linear, weights, linear_dtype, name)
    return linear


def _closest(candidates, w, threshold, denominator, compute):
    """The candidate whose closed form is nearest to w (the first of equals)."""
    errors = tf.stack([
        tf.abs(tf.cast(_row_math.ftrl_closed_form(tf.cast(c, compute), threshold, denominator),
                       tf.float64) - w) for c in candidates])
    errors = tf.where(tf.math.is_nan(errors), tf.constant(np.inf, tf.float64), errors)
    best = tf.argmin(errors, axis=0)
    linear = candidates[0]
    for index in range(len(candidates) - 1, 0, -1):
        linear = tf.where(best == index, candidates[index], linear)
    return linear


def _check_denominator(denominator, weights, name):
    zero = tf.logical_and(tf.broadcast_to(denominator <= 0, tf.shape(weights)), weights != 0)
    if bool(tf.reduce_any(zero)):
        raise ValueError(
            f"`warm_start` cannot represent the nonzero weights of {name}: FTRL's closed form "
            f"divides them by n^-learning_rate_power / learning_rate + 2 * "
            f"l2_regularization_strength + beta / learning_rate, which is 0 there (an "
            f"accumulator of 0, with no L2 or beta). Use initial_accumulator_value > 0.")


def _check_finite(linear, weights, linear_dtype, name):
    overflow = tf.logical_and(tf.math.is_finite(weights),
                              tf.logical_not(tf.math.is_finite(linear)))
    if bool(tf.reduce_any(overflow)):
        largest = float(tf.reduce_max(tf.abs(tf.boolean_mask(weights, overflow))))
        raise ValueError(
            f"`warm_start`: the `linear` slot of {name} would overflow {linear_dtype.name} "
            f"(it holds about |w| * (n^-learning_rate_power / learning_rate + 2 * l2), for |w| up "
            f"to {largest}). Use a larger learning rate, or state_dtype=None or \"bfloat16\".")
