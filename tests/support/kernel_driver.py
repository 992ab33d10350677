"""Shared by the kernel-driver tests (CPU, tests/test_kernel_driver.py; GPU, tests/gpu/): loads
the TensorFlow-free driver module and holds the inputs and checks. Imports no TensorFlow."""

import functools
import importlib.util
import sysconfig

import numpy as np

from tests.support import ROOT, numpy_reference
from tests.support.numpy_reference import TOLERANCE, assert_close, to_float64, to_storage

DRIVER_DIR = ROOT / "build" / "kernel_driver"
DRIVER_MODULE = "tf_ftrl_kernel_driver"

FTRL_HYPER = dict(lr=0.05, l1=0.02, l2=0.03)
ADAGRAD_HYPER = dict(lr=0.05, epsilon=1e-7)
# Gradients that are subnormal but for the last element (0.5), as storage arrays: float32 values,
# and bfloat16 bit patterns (bfloat16 has float32's exponent, so its own subnormals).
SUBNORMAL_GRADS = {"float32": np.array([1e-39, -3e-42, 1e-45, 0.5], np.float32),
                   "bfloat16": np.array([0x0001, 0x8040, 0x007F, 0x3F00], np.uint16)}


@functools.cache
def load_driver():
    """The module built by tools/build_kernel_driver.sh."""
    path = DRIVER_DIR / (DRIVER_MODULE + sysconfig.get_config_var("EXT_SUFFIX"))
    if not path.is_file():
        raise ImportError(f"{path} does not exist: build it with "
                          "`bash tools/build_kernel_driver.sh` (add --cuda for the GPU kernels)")
    spec = importlib.util.spec_from_file_location(DRIVER_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounded_hyper(hyper, dtype):
    """Hyperparameters as the kernels use them: rounded to the element type."""
    return {name: float(to_float64(to_storage(value, dtype), dtype)) if
            isinstance(value, float) else value for name, value in hyper.items()}


class State:
    """Random var and slots of one shape and dtype, as storage arrays, and a gradient."""

    def __init__(self, rng, shape, dtype, slots, grad_shape=None):
        self.dtype = dtype
        self.arrays = {name: to_storage(numpy_reference.random_start(rng, name, shape), dtype)
                       for name in ("var",) + tuple(slots)}
        self.start = {name: a.copy() for name, a in self.arrays.items()}
        self.grad = to_storage(rng.normal(size=grad_shape or shape), dtype)

    def float64(self, name, start=False):
        return to_float64((self.start if start else self.arrays)[name], self.dtype)

    def assert_unchanged(self):
        for name, values in self.start.items():
            np.testing.assert_array_equal(self.arrays[name], values, err_msg=name)


def random_indices(rng, num_rows, num_indices, index_dtype):
    """Indices with duplicates (drawn with replacement from fewer rows than indices)."""
    return rng.integers(0, num_rows, size=num_indices).astype(index_dtype)


def ftrl_reference(state, grad64, hyper):
    """The float64 FTRL step from state's start values."""
    return numpy_reference.ftrl(state.float64("var", True), state.float64("accum", True),
                                state.float64("linear", True), grad64,
                                **rounded_hyper(hyper, state.dtype))


def adagrad_reference(state, grad64, hyper):
    return numpy_reference.adagrad(state.float64("var", True), state.float64("accum", True),
                                   grad64, **rounded_hyper(hyper, state.dtype))


def check_ftrl(state, expected, hyper, rows=slice(None)):
    """state's arrays against the float64 FTRL result `expected` on `rows`. var is not checked
    where |linear| is so close to the l1 threshold that rounding may flip the clip."""
    var, accum, linear = (x[rows] for x in expected)
    dtype = state.dtype
    threshold = numpy_reference.ftrl_threshold(
        rounded_hyper(hyper, dtype)["lr"], rounded_hyper(hyper, dtype)["l1"],
        hyper.get("multiply_linear_by_lr", False))
    away = np.abs(np.abs(linear) - threshold) > 20 * TOLERANCE[dtype][0] * (1 + np.abs(linear))
    assert_close(state.float64("accum")[rows], accum, dtype, what="accum")
    assert_close(state.float64("linear")[rows], linear, dtype, scale=4, what="linear",
                 magnitude=float(np.abs(linear).max(initial=0.0)))
    assert_close(state.float64("var")[rows], var, dtype, scale=4, mask=away, what="var")


def check_adagrad(state, expected, rows=slice(None)):
    var, accum = (x[rows] for x in expected)
    assert_close(state.float64("accum")[rows], accum, state.dtype, what="accum")
    assert_close(state.float64("var")[rows], var, state.dtype, scale=4, what="var")


def rowwise_state(rng, shape, dtype, slots, grad_shape=None):
    """A State whose accumulator holds one value per row (row-wise optimizers)."""
    state = State(rng, shape, dtype, slots, grad_shape)
    accum = to_storage(numpy_reference.random_start(rng, "accum", (shape[0],)), dtype)
    state.arrays["accum"], state.start["accum"] = accum, accum.copy()
    return state


def narrow_state(rng, shape, state_dtype, slots, grad_shape=None, rowwise=False):
    """A float32 State whose slots are stored in state_dtype, bfloat16 or float16 (bfloat16 as
    its bit patterns); with rowwise, the accumulator holds one value per row."""
    s = (rowwise_state if rowwise else State)(rng, shape, "float32", slots, grad_shape)
    for name in slots:
        narrow = to_storage(to_float64(s.start[name], "float32"), state_dtype)
        s.arrays[name], s.start[name] = narrow, narrow.copy()
    return s
