"""What both front ends' optimizers share about choosing an update: the description (`_specs`) of
each variable's update, its fused op, the dtype of its state and how that state rounds, and the
record of which ran."""

import zlib

import tensorflow as tf

from tf_ftrl import ops
from tf_ftrl._update_log import KERNELS_USED_DOC

# The dtypes `state_dtype` takes: the state of float32 variables in 16 bits.
STATE_DTYPES = ("bfloat16", "float16")


def in_xla_context():
    """Whether the ops being built will be compiled by XLA."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def checked_state_dtype(state_dtype):
    """`state_dtype` as a dtype name ("bfloat16", "float16"), or None (the variable's dtype)."""
    if state_dtype is None:
        return None
    try:
        name = tf.as_dtype(state_dtype).name
    except TypeError:
        name = None
    if name not in STATE_DTYPES:
        raise ValueError(f"`state_dtype` must be None, \"bfloat16\" or \"float16\". Received: "
                         f"state_dtype={state_dtype!r}")
    return name


class SpecDispatch:
    """Mixed into both front ends' optimizers, which set `_spec`, `_rowwise_spec`, `rowwise`,
    `state_dtype`, `stochastic_rounding` and `_update_log` (an `_update_log.UpdateLog`)."""

    _spec = None
    _rowwise_spec = None  # the row-wise variant's description
    state_dtype = None
    stochastic_rounding = True

    def _is_rowwise(self, variable):
        """Whether `variable`'s state is row-wise: with `rowwise`, for rank 2 and more."""
        return self.rowwise and len(variable.shape) >= 2

    def _spec_for(self, variable):
        return self._rowwise_spec if self._is_rowwise(variable) else self._spec

    def _state_dtype_for(self, dtype):
        """The dtype of the state of a variable of `dtype`: `state_dtype` for float32
        variables, else the variable's own."""
        dtype = tf.as_dtype(dtype).base_dtype
        if self.state_dtype is not None and dtype == tf.float32:
            return tf.as_dtype(self.state_dtype)
        return dtype

    def _rounding(self, name, var_dtype, state_dtype, step):
        """The fused ops' `stochastic_rounding` for a variable named `name`: [seed, step], the
        seed a checksum of the name (so that tables do not share random bits, and replicas of
        one variable do), or None where its state rounds to nearest."""
        if not self.stochastic_rounding or tf.as_dtype(state_dtype) == tf.as_dtype(var_dtype):
            return None
        seed = zlib.crc32(str(name).encode())
        return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])

    def _multi_tensor_groups(self, grads_and_vars, eligible):
        """The pairs of `grads_and_vars` that `eligible(grad, var)` takes, grouped for the
        multi-tensor ops by the variable's dtype, its state's dtype and its device, as
        `[(grads, variables)]`; and the other pairs, as they came."""
        groups = {}
        others = []
        for grad, var in grads_and_vars:
            # Under tf.distribute each replica's gradient (all of one kind) is asked for.
            component = (grad.values[0] if isinstance(grad, tf.distribute.DistributedValues)
                         else grad)
            if not eligible(component, var):
                others.append((grad, var))
                continue
            dtype = tf.as_dtype(var.dtype).base_dtype
            key = (dtype, self._state_dtype_for(dtype), var.device)
            grads, variables = groups.setdefault(key, ([], []))
            grads.append(grad)
            variables.append(var)
        return list(groups.values()), others

    def _op(self, variable, sparse):
        """The fused op wrapper of `variable`'s update (`tf_ftrl.ops`)."""
        return ops.wrapper(self._spec_for(variable).functions[sparse])

    def kernels_used(self):
        return self._update_log.used()

    kernels_used.__doc__ = KERNELS_USED_DOC


def rows_update_in_state_dtype(rows_update, var, slots, grad, lr):
    """`rows_update` (the plain TensorFlow ops' update) on slots of a narrower dtype than var: the
    math in var's dtype, the new slots rounded to nearest into theirs."""
    dtypes = [slot.dtype for slot in slots]
    new = rows_update(var, [tf.cast(slot, var.dtype) for slot in slots], grad, lr)
    return (new[0],) + tuple(tf.cast(value, dtype) for value, dtype in zip(new[1:], dtypes))
