"""Float64 NumPy references of the updates, and random inputs for the op tests.

The reference math itself is TensorFlow-free, in tests/support/numpy_reference.py (the GPU tests
run where there is no TensorFlow); this module adds the TensorFlow side.
"""

import numpy as np
import tensorflow as tf

from tests.support import numpy_reference
from tests.support.numpy_reference import adagrad, densify, ftrl, ftrl_threshold  # noqa: F401

def buffer_address(tensor):
    """The address of a CPU tensor's buffer, without copying it (DLPack)."""
    if not hasattr(tensor, "__dlpack__"):  # TensorFlow before 2.17 has only the capsule API
        tensor = _DLPackCapsule(tensor)
    return np.from_dlpack(tensor).__array_interface__["data"][0]


class _DLPackCapsule:
    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **kwargs):
        return tf.experimental.dlpack.to_dlpack(self.tensor)

    def __dlpack_device__(self):
        return (1, 0)  # DLPack's kDLCPU, device 0


DTYPES = [tf.float32, tf.float64, tf.float16, tf.bfloat16]
INDEX_DTYPES = [tf.int32, tf.int64]

# (rtol, atol) of an op's result against the float64 reference, by dtype.
TOLERANCE = {tf.as_dtype(name): tolerance
             for name, tolerance in numpy_reference.TOLERANCE.items()}


def to_numpy64(x):
    return np.asarray(tf.cast(x, tf.float64).numpy() if tf.is_tensor(x) or
                      isinstance(x, tf.Variable) else x, np.float64)


def rounded(values, dtype):
    """values rounded to dtype, as (tf.Tensor of dtype, the same values as float64)."""
    tensor = tf.cast(tf.constant(values, tf.float64), dtype)
    return tensor, to_numpy64(tensor)


class Inputs:
    """Random var, slots and grad of one shape and dtype, kept both as TF values and float64."""

    def __init__(self, rng, shape, dtype, grad_shape=None, slots=("accum", "linear")):
        self.dtype = dtype
        self.start = {}
        self.variables = {}
        for name in ("var",) + tuple(slots):
            tensor, values = rounded(numpy_reference.random_start(rng, name, shape), dtype)
            self.variables[name] = tf.Variable(tensor)
            self.start[name] = values
        self.grad, self.grad64 = rounded(rng.normal(size=grad_shape or shape), dtype)

    def current(self, name):
        return to_numpy64(self.variables[name])

    def assert_unchanged(self):
        for name, values in self.start.items():
            np.testing.assert_array_equal(self.current(name), values, err_msg=name)
