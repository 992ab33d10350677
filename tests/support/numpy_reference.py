"""Float64 NumPy references of the updates, and the element types as NumPy storage.

TensorFlow-free: used by the op tests (through tests/support/reference.py) and by the
kernel-driver and GPU tests, which run where TensorFlow is absent.
"""

import numpy as np

DTYPE_NAMES = ["float32", "float64", "float16", "bfloat16"]
INDEX_DTYPE_NAMES = ["int32", "int64"]

# (rtol, atol) of a result against the float64 reference, by dtype: a few units in the last
# place of the stored type.
TOLERANCE = {
    "float64": (1e-12, 1e-12),
    "float32": (2e-6, 2e-6),
    "float16": (4e-3, 4e-3),
    "bfloat16": (3e-2, 3e-2),
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


def random_start(rng, name, shape):
    """Random float64 start values of "var", "accum" (positive) or "linear"."""
    if name == "accum":
        return rng.uniform(0.1, 2.0, size=shape)
    if name in ("var", "linear"):
        return rng.normal(size=shape)
    raise ValueError(f"no start values for {name!r}; expected 'var', 'accum' or 'linear'")


def densify(grad, indices, num_rows):
    """The dense gradient of a sparse one: rows of duplicate indices summed in order."""
    dense = np.zeros((num_rows,) + grad.shape[1:], grad.dtype)
    np.add.at(dense, np.asarray(indices, np.int64), grad)
    return dense


def to_storage(values, dtype):
    """values (any floats) rounded to nearest even in `dtype`, as the NumPy array the kernels
    take: float32/float64/float16 arrays, and for bfloat16 a uint16 array of its bit patterns."""
    values = np.asarray(values, np.float64)
    if dtype != "bfloat16":
        return values.astype(dtype)
    # float64 -> float32 -> bfloat16, each rounding to nearest even (the double rounding can
    # differ from direct rounding only on exact float32 ties, which random inputs never hit).
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    one, half, shift = np.uint64(1), np.uint64(0x7FFF), np.uint64(16)  # typed: NumPy 1.x
    return ((bits + half + ((bits >> shift) & one)) >> shift).astype(np.uint16)


def to_float64(array, dtype):
    """The values of a storage array (see to_storage) as float64."""
    array = np.asarray(array)
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    return array.astype(np.float64)


def assert_close(actual, expected, dtype, mask=None, scale=1.0, what="", magnitude=1.0):
    """actual == expected within TOLERANCE of dtype (a name, or anything with a .name) times
    scale, on the elements selected by mask. `magnitude` (a number, or an array of actual's
    shape for one per element) scales the absolute tolerance, for results that cancel terms of
    that size (rounding errors follow the terms, not the result)."""
    rtol, atol = TOLERANCE[getattr(dtype, "name", dtype)]
    actual, expected = np.asarray(actual), np.asarray(expected)
    magnitude = np.maximum(1.0, magnitude)
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
        if magnitude.ndim:
            magnitude = magnitude[mask]
    if not magnitude.ndim:
        np.testing.assert_allclose(actual, expected, rtol=rtol * scale,
                                   atol=atol * scale * float(magnitude), err_msg=what)
        return
    # One absolute tolerance per element (NumPy's assert_allclose takes a number only).
    allowed = atol * scale * magnitude + rtol * scale * np.abs(expected)
    bad = ~((np.abs(actual - expected) <= allowed) | (np.isnan(actual) & np.isnan(expected)))
    if bad.any():
        where = np.flatnonzero(bad)
        shown = ", ".join(f"[{i}]: {actual.flat[i]!r} vs {expected.flat[i]!r} (allowed "
                          f"{allowed.flat[i]:.3g})" for i in where[:5])
        raise AssertionError(f"{what}: {where.size} of {actual.size} elements differ beyond "
                             f"rtol={rtol * scale:g} and atol={atol * scale:g} times their "
                             f"magnitude: {shown}")


def _row_mean_square(grad, rows):
    return np.mean(np.asarray(grad, np.float64).reshape(rows, -1) ** 2, axis=1)


def _per_row(values, var):
    """Per-row values shaped to broadcast over var's rows."""
    return np.asarray(values, np.float64).reshape((var.shape[0],) + (1,) * (var.ndim - 1))


def rowwise_ftrl(var, accum, linear, grad, lr, l1, l2, l2_shrinkage=0.0, lr_power=-0.5,
                 multiply_linear_by_lr=False):
    """One row-wise FTRL step in float64 (accum has one value per row of var): the row's
    accumulator grows by the mean of its squared gradient, the rest is the element-wise math
    with that accumulator. Returns (var, accum, linear)."""
    var, accum, linear, grad = (np.asarray(x, np.float64) for x in (var, accum, linear, grad))
    new_accum = accum + _row_mean_square(grad, var.shape[0])
    power = -lr_power
    old, new = _per_row(accum, var) ** power, _per_row(new_accum, var) ** power
    grad_shrunk = grad + 2.0 * l2_shrinkage * var
    if multiply_linear_by_lr:
        linear = linear + grad_shrunk * lr - (new - old) * var
        threshold, denominator = l1 * lr, new + 2.0 * l2 * lr
    else:
        linear = linear + grad_shrunk - (new - old) / lr * var
        threshold, denominator = l1, new / lr + 2.0 * l2
    var = np.where(np.abs(linear) > threshold,
                   (np.sign(linear) * threshold - linear) / denominator, 0.0)
    return var, new_accum, linear


def rowwise_adagrad(var, accum, grad, lr, epsilon=1e-7, update_slots=True):
    """One row-wise Adagrad step in float64 (FBGEMM's exact row-wise Adagrad); returns
    (var, accum)."""
    var, accum, grad = (np.asarray(x, np.float64) for x in (var, accum, grad))
    if update_slots:
        accum = accum + _row_mean_square(grad, var.shape[0])
    return var - grad * lr / (np.sqrt(_per_row(accum, var)) + epsilon), accum
