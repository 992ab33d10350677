"""Float64 NumPy references of the updates, and random inputs for the op tests."""

import numpy as np
import tensorflow as tf

DTYPES = [tf.float32, tf.float64, tf.float16, tf.bfloat16]
INDEX_DTYPES = [tf.int32, tf.int64]

# (rtol, atol) of an op's result against the float64 reference, by dtype: a few units in the
# last place of the stored type.
TOLERANCE = {
    tf.float64: (1e-12, 1e-12),
    tf.float32: (2e-6, 2e-6),
    tf.float16: (4e-3, 4e-3),
    tf.bfloat16: (3e-2, 3e-2),
}


def ftrl(var, accum, linear, grad, lr, l1, l2, l2_shrinkage=0.0, lr_power=-0.5,
         multiply_linear_by_lr=False):
    """One FTRL-Proximal step (ResourceApplyFtrlV2) in float64; returns (var, accum, linear)."""
    var, accum, linear, grad = (np.asarray(x, np.float64) for x in (var, accum, linear, grad))
    grad_shrunk = grad + 2.0 * l2_shrinkage * var
    new_accum = accum + grad * grad
    power = -lr_power
    sigma = new_accum ** power - accum ** power
    if multiply_linear_by_lr:
        linear = linear + grad_shrunk * lr - sigma * var
        threshold = l1 * lr
        denominator = new_accum ** power + 2.0 * l2 * lr
    else:
        linear = linear + grad_shrunk - sigma / lr * var
        threshold = l1
        denominator = new_accum ** power / lr + 2.0 * l2
    var = np.where(np.abs(linear) > threshold,
                   (np.sign(linear) * threshold - linear) / denominator, 0.0)
    return var, new_accum, linear


def ftrl_threshold(lr, l1, multiply_linear_by_lr=False):
    return l1 * lr if multiply_linear_by_lr else l1


def adagrad(var, accum, grad, lr, epsilon=1e-7, update_slots=True):
    """One Adagrad step (ResourceApplyAdagradV2) in float64; returns (var, accum)."""
    var, accum, grad = (np.asarray(x, np.float64) for x in (var, accum, grad))
    if update_slots:
        accum = accum + grad * grad
    return var - grad * lr / (np.sqrt(accum) + epsilon), accum


def densify(grad, indices, num_rows):
    """The dense gradient of a sparse one: rows of duplicate indices summed in order."""
    dense = np.zeros((num_rows,) + grad.shape[1:], grad.dtype)
    np.add.at(dense, np.asarray(indices, np.int64), grad)
    return dense


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
        generators = {
            "var": lambda s: rng.normal(size=s),
            "accum": lambda s: rng.uniform(0.1, 2.0, size=s),
            "linear": lambda s: rng.normal(size=s),
        }
        for name in ("var",) + tuple(slots):
            tensor, values = rounded(generators[name](shape), dtype)
            self.variables[name] = tf.Variable(tensor)
            self.start[name] = values
        self.grad, self.grad64 = rounded(rng.normal(size=grad_shape or shape), dtype)

    def current(self, name):
        return to_numpy64(self.variables[name])

    def assert_unchanged(self):
        for name, values in self.start.items():
            np.testing.assert_array_equal(self.current(name), values, err_msg=name)
