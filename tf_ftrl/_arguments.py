"""Checks shared by the Keras 3 and the Keras 2 (legacy) optimizers, with Keras's wording: of the
constructor's arguments, and of the learning rate at each step."""

import math
import numbers

import numpy as np
import tensorflow as tf

from tf_ftrl._specs import LEARNING_RATE


def check_bound(argument, value):
    """Raises Keras's ValueError if `value` is outside the bound of `argument` (an Argument of
    `_specs`), and one in the same words if it is NaN or infinite, which Keras lets through: the
    ops reject such hyperparameters only at the first step, and nothing rejects an initial
    accumulator value of NaN, whose weights then become NaN."""
    if argument.numbers_only and not isinstance(value, numbers.Real):
        return
    number = value
    if tf.is_tensor(value) and not isinstance(value, tf.Variable):
        # A constant tensor (not a variable, which may be set before the first step): its value.
        static = tf.get_static_value(value)
        if static is not None and np.ndim(static) == 0 and np.issubdtype(
                np.asarray(static).dtype, np.floating):
            number = float(static)
    if (isinstance(number, numbers.Real) and not isinstance(number, bool)
            and not math.isfinite(number)):
        raise ValueError(f"`{argument.name}` needs to be finite. "
                         f"Received: {argument.name}={number}.")
    if argument.bound.violated_by(value):
        raise ValueError(f"`{argument.name}` needs to be {argument.bound.keras_words}. "
                         f"Received: {argument.name}={value}.")


def check_learning_rate(learning_rate):
    """Rejects a constant learning rate that is negative, NaN or infinite. (0 is valid: Adagrad
    then only grows its accumulator, and an FTRL step changes nothing. A schedule, a callable or
    a tensor is checked at each step by `checked_learning_rate`.)"""
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        if not math.isfinite(learning_rate):
            raise ValueError("`learning_rate` needs to be finite. "
                             f"Received: learning_rate={learning_rate}.")
        check_bound(LEARNING_RATE, learning_rate)


def check_arguments(spec, values):
    """Checks an optimizer's numeric constructor arguments but learning_rate (`values`, by name)
    against their bounds in `spec` (a `_specs.OptimizerSpec`), in the order Keras checks them."""
    for argument in spec.arguments:
        check_bound(argument, values[argument.name])


def reject_complex(optimizer, variables):
    """FTRL compares and clips values, which complex numbers do not order (the stock optimizers
    fail on them too, with an error about their ops)."""
    for variable in variables:
        dtype = tf.as_dtype(variable.dtype)
        if dtype.is_complex:
            raise ValueError(
                f"`{optimizer}` does not support complex variables. Received: variable "
                f"{variable.name} of dtype {dtype.name}.")


def ftrl_l2(l2, beta, lr):
    """FTRL's effective L2, `l2 + beta / (2 * lr)`; at lr = 0, where the step changes nothing,
    just l2 (the ops reject an infinite l2)."""
    if isinstance(beta, numbers.Real) and beta == 0:
        return l2
    beta = tf.cast(beta, lr.dtype)
    return l2 + tf.math.divide_no_nan(beta, 2 * lr)


def describe_learning_rate(learning_rate):
    """Where a step's learning rate comes from, for error messages."""
    if hasattr(learning_rate, "get_config") and callable(learning_rate):
        return f"the learning rate schedule {type(learning_rate).__name__}"
    if callable(learning_rate):
        return f"the learning rate callable {getattr(learning_rate, '__name__', learning_rate)}"
    return "the learning_rate variable"


def checked_learning_rate(learning_rate, optimizer, source, step):
    """learning_rate, once an assertion has passed that it is finite and >= 0; the assertion's
    message names the optimizer, where the rate came from and the step."""
    learning_rate = tf.convert_to_tensor(learning_rate)
    value = tf.math.real(learning_rate) if learning_rate.dtype.is_complex else learning_rate
    valid = tf.logical_and(tf.math.is_finite(value), value >= 0)
    check = tf.debugging.Assert(valid, [
        f"{optimizer}: {source} gave learning rate", learning_rate, "at optimizer step",
        step, "(optimizer.iterations); it must be finite and >= 0."])
    with tf.control_dependencies([check]):
        return tf.identity(learning_rate)
