"""Property-based fuzzing of the ops with hypothesis: FTRL and Adagrad, dense and sparse,
element-wise and row-wise (one accumulator value per row of var), and the multi-tensor ops
(`multi_apply_*`: each variable must get the one-variable op's bits, and a bad input, of any
one variable, the one-variable op's error with nothing written).

Random shapes (0 and 1 elements, odd sizes, now and then one big enough for the thread pool), dtypes
(a float32 var's state also in bfloat16 or float16, rounded to nearest or stochastically), index
dtypes, hyperparameters (boundaries, invalid values, NaN and infinities, values that overflow the
dtype), indices (in range, duplicated, out of range, int extremes), row-wise accumulators of the
wrong shape, and gradients with NaN and infinities. Every example must either

- succeed, with the touched elements equal to the float64 NumPy reference (rounded to the dtype)
  within a bound derived from the magnitudes involved, NaN and infinities exactly where the
  reference has them (and, in float32/float64, exactly where TensorFlow's built-in dense op has
  them; for a sparse example, on the densified gradient), and every other row bit-identical; or
- raise InvalidArgumentError naming a problem the example really has, with var and slots
  bit-identical.

The ops run in a worker subprocess, so an example that crashes the process fails its test (with
the example) instead of ending the run; the worker is restarted for the next one.

    HYPOTHESIS_PROFILE=long FUZZ_EXAMPLES=18000 python -m pytest -s tests/test_fuzz_ops.py

runs a long fuzz (tools/fuzz_ops.sh). Run as `python -m tests.test_fuzz_ops`, this file is the
worker.
"""

import collections
import math
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.support import ROOT, numpy_reference
from tests.support.numpy_reference import DTYPE_NAMES, INDEX_DTYPE_NAMES

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The default, for CI: 1000 examples per op, about 3.5 min of test time for the file (its eleven
# tests; 2-core Intel Xeon VM), about half of it hypothesis drawing the examples.
# HYPOTHESIS_PROFILE=long selects the long run; FUZZ_EXAMPLES overrides either's count. Applied
# to these tests only, so other hypothesis tests keep their settings (and hypothesis's "ci").
settings.register_profile("fuzz_ops", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 1000)),
                          **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 20000)),
                          **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz_ops"))

OPS = ["ftrl", "sparse_ftrl", "adagrad", "sparse_adagrad",
       "rowwise_ftrl", "sparse_rowwise_ftrl", "rowwise_adagrad", "sparse_rowwise_adagrad"]
HYPERPARAMETERS = {"ftrl": ["lr", "l1", "l2", "l2_shrinkage", "lr_power"],
                   "adagrad": ["lr", "epsilon"]}
WORKER_START_SECONDS = 180
EXAMPLE_SECONDS = 120

# ========================================================================= the worker (child)


def _worker_main():
    """Serves examples on the pipes until stdin closes: length-prefixed pickles both ways."""
    # Only this process's messages may reach the parent's pipe: anything else printed to fd 1
    # (TensorFlow, a stray print) goes to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    import tensorflow as tf  # noqa: F401 - imported before replying "ready"
    import tf_ftrl

    tf_ftrl.ops.load_library()
    _send(replies, "ready")
    while True:
        request = _receive(requests)
        if request is None:
            return
        if request.get("crash"):  # for the test of the worker itself
            os.abort()
        run = _run_multi_example if request["op"].startswith("multi") else _run_example
        _send(replies, run(request))


def _send(stream, message):
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def _snapshot(variables):
    return {name: (v.numpy().tobytes(), _as_float64(v)) for name, v in variables.items()}


def _as_float64(value):
    import tensorflow as tf

    return tf.cast(value, tf.float64).numpy()


def _outcome(call):
    """{"error": None} once call() returns, or its InvalidArgumentError's message; any other
    exception as "unexpected" too, a failure the parent reports."""
    import tensorflow as tf

    try:
        call()
        return {"error": None}
    except tf.errors.InvalidArgumentError as e:
        return {"error": e.message}
    except Exception as e:  # noqa: BLE001 - reported by the parent
        return {"error": None, "unexpected": f"{type(e).__name__}: {e}"}


def _run_example(example):
    """Runs one example; returns what happened, with the variables before and after."""
    import tensorflow as tf
    import tf_ftrl

    dtype = tf.as_dtype(example["dtype"])
    state_dtype = tf.as_dtype(example.get("state_dtype", example["dtype"]))
    kind = "ftrl" if "ftrl" in example["op"] else "adagrad"
    sparse = example["op"].startswith("sparse")
    rowwise = "rowwise" in example["op"]

    def make_variables():
        return {name: tf.Variable(tf.cast(example["state"][name],
                                          dtype if name == "var" else state_dtype))
                for name in ["var"] + (["accum", "linear"] if kind == "ftrl" else ["accum"])}

    variables = make_variables()
    before = _snapshot(variables)
    grad = tf.cast(example["grad"], dtype)
    indices = tf.constant(example["indices"], example["index_dtype"]) if sparse else None
    hyper = example["hyper"]
    # The hyperparameters as the op sees them: rounded to the dtype.
    rounded = {name: float(_as_float64(tf.constant(value, dtype)))
               for name, value in hyper.items()}
    result = {"before": before, "rounded_hyper": rounded, "grad": _as_float64(grad)}
    flags = ({"multiply_linear_by_lr": example["multiply_linear_by_lr"]} if kind == "ftrl" else
             {"update_slots": example["update_slots"]})
    op = getattr(tf_ftrl.ops, ("sparse_apply_" if sparse else "apply_") +
                 ("rowwise_" if rowwise else "") + kind)
    args = [variables[name] for name in variables] + [grad] + ([indices] if sparse else [])
    result.update(_outcome(lambda: op(*args, use_locking=example["use_locking"], **hyper,
                                      **flags,
                                      stochastic_rounding=example.get("stochastic_rounding"))))
    result["after"] = _snapshot(variables)
    # TensorFlow's own ops: element-wise, with the state in var's dtype.
    if result["error"] is None and "unexpected" not in result and example["dtype"] in (
            "float32", "float64") and not rowwise and state_dtype == dtype and (
            not _ftrl_at_zero_learning_rate(example, rounded)):
        result["builtin"] = _run_builtin(example, make_variables(), grad, indices, flags)
    return result


def _run_multi_example(example):
    """Runs one multi-tensor example: the multi op on all the variables, then the one-variable
    op on a fresh copy of each; returns what happened, with every variable before and after."""
    import tensorflow as tf
    import tf_ftrl

    dtype = tf.as_dtype(example["dtype"])
    kind = example["op"].split("_", 1)[1]
    names = ["var"] + (["accum", "linear"] if kind == "ftrl" else ["accum"])
    count = len(example["states"])
    state_dtypes = [tf.as_dtype(example.get("state_dtype", example["dtype"]))] * count
    if "mixed" in example:  # one variable's state in another dtype
        state_dtypes[example["mixed"]] = tf.as_dtype(example["mixed_dtype"])

    def make_variables(i):
        return {name: tf.Variable(tf.cast(example["states"][i][name],
                                          dtype if name == "var" else state_dtypes[i]))
                for name in names}

    variables = [make_variables(i) for i in range(count)]
    lists = {name: [v[name] for v in variables] for name in names}
    if "twice" in example:  # one list names a variable twice
        name, k = example["twice"]
        lists[name][k] = lists[name][k + 1]
    grads = [tf.cast(g, dtype) for g in example["grads"]]
    hyper = example["hyper"]
    flags = ({"multiply_linear_by_lr": example["multiply_linear_by_lr"]} if kind == "ftrl" else
             {"update_slots": example["update_slots"]})
    rounding = example.get("stochastic_rounding")
    result = {"before": [_snapshot(v) for v in variables]}
    result.update(_outcome(lambda: getattr(tf_ftrl.ops, f"multi_apply_{kind}")(
        *[lists[name] for name in names], grads, use_locking=example["use_locking"], **hyper,
        **flags, stochastic_rounding=rounding)))
    result["after"] = [_snapshot(v) for v in variables]
    result["singles"] = []
    for i in range(count):
        fresh = make_variables(i)
        single = _outcome(lambda: getattr(tf_ftrl.ops, f"apply_{kind}")(
            *[fresh[name] for name in names], grads[i], use_locking=example["use_locking"],
            **hyper, **flags, stochastic_rounding=None if rounding is None else rounding[i]))
        if "unexpected" in single:
            result["unexpected"] = f"apply_{kind} on variable {i}: {single['unexpected']}"
        result["singles"].append((single["error"], None if single["error"] else _snapshot(fresh)))
    return result


def _ftrl_at_zero_learning_rate(example, rounded):
    # A step that changes nothing (TensorFlow's op rejects it).
    return "ftrl" in example["op"] and rounded["lr"] == 0


def _run_builtin(example, variables, grad, indices, flags):
    """TensorFlow's own dense op, as float64; for a sparse example, applied to the densified
    gradient (compared on the touched rows only). Not its sparse ops: ResourceSparseApplyFtrlV2
    computes var = (clip(linear, -l1, l1) - linear) / y without the select of the dense op, so it
    gives NaN (0 / 0) where the dense op, the reference and ours give 0 (|linear| <= l1 with
    accum = grad = l2 = 0), and it rejects rows of 0 elements."""
    import tensorflow as tf

    dtype = tf.as_dtype(example["dtype"])
    hyper = {name: tf.constant(value, dtype) for name, value in example["hyper"].items()}
    handles = {name: v.handle for name, v in variables.items()}
    if indices is not None:
        grad = tf.math.unsorted_segment_sum(grad, indices, variables["var"].shape[0])
    if "ftrl" in example["op"]:
        tf.raw_ops.ResourceApplyFtrlV2(**handles, grad=grad, **hyper, **flags)
    else:
        tf.raw_ops.ResourceApplyAdagradV2(**handles, grad=grad, **hyper, **flags)
    return {name: _as_float64(v) for name, v in variables.items()}


# ========================================================================= the parent (pytest)


class WorkerDied(AssertionError):
    pass


class Worker:
    """One long-lived worker process, restarted after it dies."""

    def __init__(self):
        self.process = None
        self.stderr = None

    def _start(self):
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.test_fuzz_ops"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if self._read(WORKER_START_SECONDS) != "ready":
            raise WorkerDied("the worker did not start:\n" + self._stderr_tail())

    def _stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def _read(self, timeout):
        stream = self.process.stdout
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            self.stop()
            raise WorkerDied(f"the worker did not answer within {timeout} s (hung?)")
        return _receive(stream)

    def run(self, example):
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            _send(self.process.stdin, example)
            reply = self._read(EXAMPLE_SECONDS)
        except BrokenPipeError:
            reply = None
        if reply is None:
            code = self.process.wait()
            how = (f"killed by signal {-code}" if code < 0 else f"exited with status {code}")
            tail = self._stderr_tail()
            self.process = None
            raise WorkerDied(f"the worker process {how} on this example:\n{describe(example)}\n"
                             f"stderr:\n{tail}")
        return reply

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()
    total = sum(COUNTS.values())
    print(f"\nfuzz: {total} examples run: " +
          ", ".join(f"{key}={n}" for key, n in sorted(COUNTS.items())))


COUNTS = collections.Counter()


def describe(example):
    lines = [f"{k}={example[k]!r}" for k in ("op", "dtype", "state_dtype", "stochastic_rounding",
                                             "index_dtype", "hyper", "multiply_linear_by_lr",
                                             "update_slots", "use_locking") if k in example]
    state = example.get("state", {})
    lines += [f"{name}: shape {np.shape(v)} {np.asarray(v).ravel()[:8].tolist()}..."
              for name, v in state.items()]
    if "grad" in example:
        lines.append(f"grad: shape {np.shape(example['grad'])} "
                     f"{np.asarray(example['grad']).ravel()[:16].tolist()}")
    if "indices" in example:
        indices = list(example["indices"])
        lines.append(f"indices: {indices[:40]}{' ...' if len(indices) > 40 else ''}")
    return "\n".join(lines)


class Example(dict):
    """An example's inputs; printed short when hypothesis reports it."""

    def _repr_pretty_(self, printer, cycle):
        printer.text(describe(self))


# ----------------------------------------------------------------------------- the strategies

# Valid hyperparameters: the boundaries (0 where allowed, lr_power 0) and ordinary values.


def normal_floats(low, high):
    """Floats that stay normal (or 0) in float32 and bfloat16: TensorFlow runs with denormals
    flushed to zero, so whether a subnormal lr_power acts as 0 depends on the instruction (pow
    in libm sees it; the reference's cast flushes it)."""
    return st.floats(low, high, width=32, allow_subnormal=False)


VALID = {
    "lr": st.sampled_from([2**-10, 1e-3, 0.05, 0.5, 1.0, 3.0]) | normal_floats(2**-10, 10),
    "l1": st.sampled_from([0.0, -0.0, 0.01, 0.5, 1000.0]) | normal_floats(0, 5),
    "l2": st.sampled_from([0.0, 0.03, 1.0]) | normal_floats(0, 5),
    "l2_shrinkage": st.sampled_from([0.0, 0.05, 1.0]),
    "lr_power": st.sampled_from([-0.5, 0.0, -0.3, -1.0, -2.0]) | normal_floats(-2, 0),
    "epsilon": st.sampled_from([0.0, 1e-7, 1e-3, 1.0]),
}
# Values that are invalid, or invalid only in some dtypes once rounded (1e5 is inf in float16,
# 1e40 is inf below float64, 1e-9 is 0 in float16, -1e-30 is -0 in float16).
_NOT_NON_NEGATIVE = [-0.1, -1e-30, math.nan, math.inf, -math.inf, 1e5, 1e40]
INVALID = {
    "lr": st.sampled_from([0.0, -0.0, -0.1, math.nan, math.inf, -math.inf, 1e5, 1e-9, 1e40]),
    "l1": st.sampled_from(_NOT_NON_NEGATIVE),
    "l2": st.sampled_from(_NOT_NON_NEGATIVE),
    "l2_shrinkage": st.sampled_from(_NOT_NON_NEGATIVE),
    "lr_power": st.sampled_from([0.5, 1e-30, math.nan, math.inf, -math.inf]),
    "epsilon": st.sampled_from(_NOT_NON_NEGATIVE),
}
SIZES = [0, 1, 2, 3, 5, 7, 8, 9, 16, 17, 33]
GRAD_SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0]
INT_LIMITS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def random_values(rng, shape, non_negative=False):
    """Zeros, and magnitudes from 1e-3 to 10: no overflow or underflow in any dtype's
    arithmetic, so NaN and infinities come only from the specials put in on purpose."""
    magnitude = 10.0 ** rng.uniform(-3, 1, size=shape)
    values = np.where(rng.random(shape) < 0.1, 0.0, magnitude)
    if not non_negative:
        values = values * rng.choice([-1.0, 1.0], size=shape)
    return values


def stored_in(values, dtype):
    """values rounded to dtype, as float64: exactly representable in it."""
    return numpy_reference.to_float64(numpy_reference.to_storage(values, dtype), dtype)


def draw_state_dtype(draw, example, pairs=None):
    """The state dtype of `example`: its var's, or for a float32 var now and then bfloat16 or
    float16 (the optimizers' state_dtype), rounded to nearest or stochastically (a [seed, step]
    pair, or `pairs` of them for a multi-tensor call); noted in the example when 16-bit."""
    dtype = example["dtype"]
    if dtype != "float32":
        return dtype
    state_dtype = draw(st.sampled_from(["float32", "bfloat16", "float16"]))
    if state_dtype != dtype:
        example["state_dtype"] = state_dtype
        if draw(st.booleans()):
            drawn = [[draw(st.integers(-(2**63), 2**63 - 1)), draw(st.integers(0, 2**40))]
                     for _ in range(pairs or 1)]
            example["stochastic_rounding"] = drawn if pairs else drawn[0]
    return state_dtype


def rare(draw, one_in):
    """True about once in `one_in` draws. (hypothesis draws an integer range's ends far more
    often than its middle, and shrinks towards 0: False.)"""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@st.composite
def examples(draw, op):
    kind = "ftrl" if "ftrl" in op else "adagrad"
    sparse = op.startswith("sparse")
    rowwise = "rowwise" in op
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    example = Example(op=op, dtype=dtype, use_locking=draw(st.booleans()))
    state_dtype = draw_state_dtype(draw, example)
    if kind == "ftrl":
        example["multiply_linear_by_lr"] = draw(st.booleans())
    else:
        example["update_slots"] = draw(st.booleans())
    example["hyper"] = {
        name: draw(INVALID[name] if rare(draw, 20) else VALID[name])
        for name in HYPERPARAMETERS[kind]}

    big = rare(draw, 30)  # large enough for the thread pool
    if sparse:
        rows = 3000 if big else draw(st.sampled_from([0, 1, 2, 3, 5, 8, 17, 40]))
        row_shape = [17] if big else draw(st.lists(st.sampled_from(SIZES[:8]), max_size=2))
        index_dtype = draw(st.sampled_from(INDEX_DTYPE_NAMES))
        n = 2500 if big else draw(st.integers(0, 12))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        indices = rng.integers(0, max(rows, 1), size=n).tolist() if rows else [0] * n
        if n and rare(draw, 5):  # some index out of range
            low, high = INT_LIMITS[index_dtype]
            bad = draw(st.sampled_from([rows, rows + 1, -1, high, low, 2**31 - 1, -(2**31)]) |
                       st.integers(low, high).filter(lambda i: not 0 <= i < rows))
            indices[draw(st.integers(0, n - 1))] = bad
        var_shape = [rows] + row_shape
        grad_shape = [n] + row_shape
        if rare(draw, 30):  # grad rows that do not match the indices
            grad_shape[0] = n + 1
        example["index_dtype"] = index_dtype
        example["indices"] = indices
    else:
        if big:
            var_shape = [40_000]
        else:
            # Row-wise updates take var of rank >= 1: a scalar one now and then.
            at_least = 1 if rowwise and not rare(draw, 20) else 0
            var_shape = draw(st.lists(st.sampled_from(SIZES), min_size=at_least, max_size=3))
        grad_shape = list(var_shape)
        if var_shape and rare(draw, 30):  # a grad of another shape
            grad_shape[-1] += 1
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)

    accum_shape = var_shape
    if rowwise:
        # One value per row; now and then the element-wise shape, or a row too many.
        accum_shape = var_shape[:1]
        if var_shape and rare(draw, 30):
            accum_shape = draw(st.sampled_from([var_shape, [var_shape[0] + 1], []]))
    state = {"var": stored_in(random_values(rng, var_shape), dtype),
             "accum": stored_in(random_values(rng, accum_shape, non_negative=True), state_dtype)}
    if kind == "ftrl":
        state["linear"] = stored_in(random_values(rng, var_shape), state_dtype)
    grad = stored_in(random_values(rng, grad_shape), dtype)
    if grad.size:
        for position, value in draw(st.lists(st.tuples(st.integers(0, grad.size - 1),
                                                       st.sampled_from(GRAD_SPECIALS)),
                                             max_size=3)):
            grad.flat[position] = value
    example["state"] = state
    example["grad"] = grad
    return example


MULTI_OPS = ["multi_ftrl", "multi_adagrad"]


@st.composite
def multi_examples(draw, op):
    """A multi-tensor call on 1 to 6 variables of random shapes sharing the hyperparameters, with
    at most one problem: an invalid hyperparameter, one variable's gradient of another shape,
    one list naming a variable twice, or one variable's state in another dtype."""
    kind = op.split("_", 1)[1]
    dtype = draw(st.sampled_from(DTYPE_NAMES))
    example = Example(op=op, dtype=dtype, use_locking=draw(st.booleans()))
    if kind == "ftrl":
        example["multiply_linear_by_lr"] = draw(st.booleans())
    else:
        example["update_slots"] = draw(st.booleans())
    count = draw(st.integers(1, 6))
    state_dtype = draw_state_dtype(draw, example, count)
    problems = ["hyper", "grad shape"] + (["twice", "mixed"] if count > 1 else [])
    problem = draw(st.sampled_from(problems)) if rare(draw, 4) else None
    bad_hyper = draw(st.sampled_from(HYPERPARAMETERS[kind])) if problem == "hyper" else None
    example["hyper"] = {name: draw(INVALID[name] if name == bad_hyper else VALID[name])
                        for name in HYPERPARAMETERS[kind]}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    big = rare(draw, 30)  # one variable large enough for the thread pool

    states, grads = [], []
    for i in range(count):
        shape = ([40_000] if big and i == 0 else
                 draw(st.lists(st.sampled_from(SIZES), max_size=3)))
        state = {"var": stored_in(random_values(rng, shape), dtype),
                 "accum": stored_in(random_values(rng, shape, non_negative=True), state_dtype)}
        if kind == "ftrl":
            state["linear"] = stored_in(random_values(rng, shape), state_dtype)
        states.append(state)
        grads.append(stored_in(random_values(rng, shape), dtype))
    k = draw(st.integers(0, count - 1))
    if problem == "grad shape":
        shape = list(np.shape(grads[k]))
        grads[k] = np.zeros(shape[:-1] + [shape[-1] + 1] if shape else [1])
    elif problem == "twice":
        k = min(k, count - 2)
        example["twice"] = (draw(st.sampled_from(["var", "accum"])), k)
    elif problem == "mixed":
        example["mixed"] = max(k, 1)
        example["mixed_dtype"] = "float16" if state_dtype == "bfloat16" else "bfloat16"
    if problem:
        example["problem"] = problem
    example["states"], example["grads"] = states, grads
    return example


# ------------------------------------------------------------------------------ the checks

# Unit roundoff of the arithmetic (float32 for every type but float64) and of the storage, and
# the smallest positive value of the storage type (the absolute error of a subnormal result).
COMPUTE_EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-24,
               "bfloat16": 2.0**-24}
STORAGE_EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11,
               "bfloat16": 2.0**-8}
TINY = {"float64": 5e-324, "float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
# The type the kernels compute in, and its smallest normal number.
COMPUTE_TYPE = {"float64": "float64", "float32": "float32", "float16": "float32",
                "bfloat16": "float32"}
SMALLEST_NORMAL = {"float64": 2.0**-1022, "float32": 2.0**-126}
# Slack over a first-order error bound: a few roundings per term, pow's few ulps.
SLACK = 64


def expected_errors(example, rounded):
    """Regexes of the InvalidArgumentErrors this example may raise (empty if it is valid)."""
    patterns = []
    for name, value in rounded.items():
        if math.isinf(value):
            patterns.append(rf"{name} must be finite but got -?inf")
        elif name == "lr" and not value >= 0:
            patterns.append(r"lr must be non-negative but got")
        elif name == "lr_power" and not value <= 0:
            patterns.append(r"lr_power must be non-positive but got")
        elif name not in ("lr", "lr_power") and not value >= 0:
            patterns.append(rf"{name} must be non-negative but got")
    var_shape = np.shape(example["state"]["var"])
    grad_shape = np.shape(example["grad"])
    if "rowwise" in example["op"]:
        if not var_shape:
            patterns.append(r"var must be at least 1-D for a row-wise update")
        elif np.shape(example["state"]["accum"]) != var_shape[:1]:
            patterns.append(rf"accum must hold one value per row of var, shape "
                            rf"\[{var_shape[0]}\], but has shape")
    if example["op"].startswith("sparse"):
        if grad_shape[0] != len(example["indices"]):
            patterns.append("grad must be the same size as indices in the first dimension")
        for position, index in enumerate(example["indices"]):
            if not 0 <= index < var_shape[0]:
                patterns.append(rf"indices\[{position}\] = {index} is not in "
                                rf"\[0, {var_shape[0]}\)")
                break
    elif grad_shape != var_shape:
        patterns.append("var and grad do not have the same shape")
    return patterns


def _rowwise_accumulators(example, dense_grad, abs_grad):
    """A row-wise example's accumulators (one per row) after the step, and each one's error
    bound over eps: the row's mean of squares added (rows of no elements add nothing)."""
    accum = np.asarray(example["state"]["accum"], np.float64)
    rows = accum.shape[0]
    if dense_grad.size == 0 or ("adagrad" in example["op"] and not example["update_slots"]):
        return accum, 0 * accum
    mean_square = np.mean(dense_grad.reshape(rows, -1) ** 2, axis=1)
    return accum + mean_square, accum + np.mean(abs_grad.reshape(rows, -1) ** 2, axis=1)


def reference_update(example, rounded, dense_grad, abs_grad):
    """The float64 reference of the touched elements, and each element's error bound (before
    the result is rounded to the dtype). Row-wise: the element-wise step's math with the row's
    accumulator, before and after, at every element of the row."""
    dtype = example["dtype"]
    state = example["state"]
    eps = SLACK * COMPUTE_EPS[dtype]
    rowwise = "rowwise" in example["op"]
    var_shape = np.shape(state["var"])

    def per_element(per_row):
        return np.broadcast_to(np.reshape(per_row, var_shape[:1] + (1,) * (len(var_shape) - 1)),
                               var_shape)

    with np.errstate(all="ignore"):
        if rowwise:
            new_accum, accum_scale = _rowwise_accumulators(example, dense_grad, abs_grad)
            old_e, new_e = per_element(state["accum"]), per_element(new_accum)
        if "ftrl" in example["op"]:
            h = {name: rounded[name] for name in HYPERPARAMETERS["ftrl"]}
            by_lr = example["multiply_linear_by_lr"]
            # TensorFlow runs kernels with subnormals flushed to zero (its threads set DAZ and
            # FTZ), so where l2, or the denominator's l2 term, is subnormal in the compute type,
            # the op adds 0 there, as TensorFlow's own op does. Model it: with a zero accumulator
            # the op then divides by zero (inf) where exact arithmetic gives a huge finite value.
            smallest_normal = SMALLEST_NORMAL[COMPUTE_TYPE[dtype]]
            l2_terms = [h["l2"], 2 * h["l2"]] + ([2 * h["l2"] * h["lr"]] if by_lr else [])
            if any(0 < abs(term) < smallest_normal for term in l2_terms):
                h["l2"] = 0.0
            power = -h["lr_power"]
            lr = h["lr"]
            if rowwise:
                var, accum, linear = state["var"], new_accum, state["linear"]
                if np.size(var):  # (numpy_reference takes no rows of zero elements)
                    var, accum, linear = numpy_reference.rowwise_ftrl(
                        state["var"], state["accum"], state["linear"], dense_grad,
                        multiply_linear_by_lr=by_lr, **h)
            else:
                var, accum, linear = numpy_reference.ftrl(
                    state["var"], state["accum"], state["linear"], dense_grad,
                    multiply_linear_by_lr=by_lr, **h)
                old_e, new_e = state["accum"], accum
            both_powers = new_e ** power + old_e ** power
            abs_var = np.abs(state["var"])
            shrunk = abs_grad + 2 * h["l2_shrinkage"] * abs_var
            if by_lr:
                terms = np.abs(state["linear"]) + shrunk * lr + both_powers * abs_var
                threshold = h["l1"] * lr
                denominator = new_e ** power + 2 * h["l2"] * lr
            else:
                terms = np.abs(state["linear"]) + shrunk + both_powers / lr * abs_var
                threshold = h["l1"]
                denominator = new_e ** power / lr + 2 * h["l2"]
            linear_error = eps * (1 + power) * terms
            near_clip = (np.abs(np.abs(linear) - threshold) <=
                         2 * linear_error + eps * threshold)
            var_error = np.where(
                near_clip,
                (4 * linear_error + 2 * eps * threshold) / denominator + np.abs(var),
                (linear_error + eps * (threshold + np.abs(linear))) / denominator +
                eps * np.abs(var))
            accum_error = eps * (accum_scale if rowwise else state["accum"] + abs_grad**2)
            return ({"var": var, "accum": accum, "linear": linear},
                    {"var": var_error, "accum": accum_error, "linear": linear_error})
        if rowwise:
            var, accum, accum_error = state["var"], new_accum, eps * accum_scale
            if np.size(var):
                var, accum = numpy_reference.rowwise_adagrad(
                    state["var"], state["accum"], dense_grad, update_slots=example["update_slots"],
                    lr=rounded["lr"], epsilon=rounded["epsilon"])
        else:
            var, accum = numpy_reference.adagrad(state["var"], state["accum"], dense_grad,
                                                 update_slots=example["update_slots"],
                                                 lr=rounded["lr"], epsilon=rounded["epsilon"])
            new_e = accum
            accum_error = (eps * (state["accum"] + abs_grad**2) if example["update_slots"]
                           else 0 * var)
        step = abs_grad * rounded["lr"] / (np.sqrt(new_e) + rounded["epsilon"])
        var_error = eps * (np.abs(state["var"]) + step)
        return {"var": var, "accum": accum}, {"var": var_error, "accum": accum_error}


def special_pattern(values):
    return np.stack([np.isnan(values), np.isposinf(values), np.isneginf(values)])


def check_touched(name, actual, expected, error, dtype, builtin=None, stochastic=False):
    """actual (the op's result, as stored) against the reference: NaN and infinities at the same
    elements, finite elements within error plus the dtype's rounding (stochastic: either
    neighbour, so one spacing of the dtype)."""
    actual, expected = np.ravel(actual), np.ravel(expected)
    error = np.broadcast_to(np.ravel(error), expected.shape)
    builtin = None if builtin is None else np.ravel(builtin)
    if stochastic:
        # Near the largest finite value, rounding up may give infinity where the nearest is
        # finite: those elements are not compared.
        largest = float(np.finfo(np.float16).max) if dtype == "float16" else 3.3e38
        compared = ~(np.abs(expected) > 0.99 * largest)
        actual, expected, error = actual[compared], expected[compared], error[compared]
        error = error + STORAGE_EPS[dtype] * np.abs(expected)
    with np.errstate(over="ignore"):  # values beyond the dtype's range are inf once stored
        stored = numpy_reference.to_float64(numpy_reference.to_storage(expected, dtype), dtype)
    mismatch = np.any(special_pattern(actual) != special_pattern(stored), axis=0)
    assert not mismatch.any(), (
        f"{name}: NaN/inf pattern differs from the reference at {np.argwhere(mismatch)[:5]}: "
        f"got {actual[mismatch][:5]}, reference {expected[mismatch][:5]}")
    if builtin is not None:
        differs = np.any(special_pattern(actual) != special_pattern(builtin), axis=0)
        assert not differs.any(), (
            f"{name}: NaN/inf pattern differs from TensorFlow's op at "
            f"{np.argwhere(differs)[:5]}: got {actual[differs][:5]}, TensorFlow "
            f"{builtin[differs][:5]}")
    finite = np.isfinite(stored)
    bound = (error[finite] +
             STORAGE_EPS[dtype] * np.abs(expected[finite]) + TINY[dtype])
    difference = np.abs(actual[finite] - expected[finite])
    bad = ~((actual[finite] == stored[finite]) | (difference <= bound))
    assert not bad.any(), (
        f"{name}: outside the error bound at {np.argwhere(finite)[bad][:5].tolist()}: got "
        f"{actual[finite][bad][:5]}, reference {expected[finite][bad][:5]}, bound "
        f"{bound[bad][:5]}")


def check_example(worker, example):
    reply = worker.run(example)
    assert "unexpected" not in reply, reply["unexpected"]
    rounded = reply["rounded_hyper"]
    patterns = expected_errors(example, rounded)
    note(f"hyperparameters as the op sees them: {rounded}")
    if reply["error"] is not None:
        message = reply["error"].split("}}")[-1]
        COUNTS["error: " + re.sub(r"\[.*| but got.*|:.*", "", message).strip()] += 1
        assert patterns, f"valid example rejected: {reply['error']}"
        assert any(re.search(p, reply["error"]) for p in patterns), (
            f"error {reply['error']!r} is none of the expected {patterns}")
        for name, (before, _) in reply["before"].items():
            assert reply["after"][name][0] == before, f"the error changed {name}"
        return
    narrow = f" {example['state_dtype']} state" if "state_dtype" in example else ""
    COUNTS[example["op"] + narrow + ":ok"] += 1
    assert not patterns, f"invalid example accepted; expected an error like {patterns}"
    if _ftrl_at_zero_learning_rate(example, rounded):
        for name, (before, _) in reply["before"].items():
            assert reply["after"][name][0] == before, f"a step at lr 0 changed {name}"
        return

    dtype = example["dtype"]
    state_dtype = example.get("state_dtype", dtype)
    grad = reply["grad"]
    after = {name: np.asarray(values) for name, (_, values) in reply["after"].items()}
    before = reply["before"]
    if example["op"].startswith("sparse"):
        rows = np.shape(example["state"]["var"])[0]
        indices = np.asarray(example["indices"], np.int64)
        touched = np.unique(indices)
        with np.errstate(invalid="ignore"):  # inf + -inf in a row's sum is NaN, as intended
            dense_grad = numpy_reference.densify(grad, indices, rows)
            abs_grad = numpy_reference.densify(np.abs(grad), indices, rows)
        untouched = np.setdiff1d(np.arange(rows), touched)
        for name, (bits, values) in before.items():
            row_bytes = len(bits) // rows if rows else 0
            now = reply["after"][name][0]
            for row in untouched:
                span = slice(row * row_bytes, (row + 1) * row_bytes)
                assert now[span] == bits[span], f"untouched row {row} of {name} changed"
    else:
        touched = ...
        dense_grad, abs_grad = grad, np.abs(grad)
    expected, errors = reference_update(example, rounded, dense_grad, abs_grad)
    builtin = reply.get("builtin")
    for name in expected:
        shape = after[name].shape
        check_touched(name, after[name][touched], np.asarray(expected[name])[touched],
                      np.broadcast_to(errors[name], shape)[touched],
                      dtype if name == "var" else state_dtype,
                      None if builtin is None else np.asarray(builtin[name])[touched],
                      stochastic=name != "var" and "stochastic_rounding" in example)


def _message(error):
    """An error's message without the op's name and the variables' list positions ("var[3]"),
    so that a multi-tensor op's message compares with the one-variable op's."""
    message = re.sub(r"\s*\[Op:[^\]]*\]", "", error.split("}}")[-1])
    return re.sub(r"\[\d+\]", "", message).strip()


def check_multi_example(worker, example):
    """The multi-tensor op gives each variable the one-variable op's bits, or, where some input
    is bad, raises the error the one-variable op raises for it (the list names a variable twice,
    or the state dtypes differ: its own) and writes nothing."""
    reply = worker.run(example)
    assert "unexpected" not in reply, reply["unexpected"]
    problem = example.get("problem")
    single_errors = [error for error, _ in reply["singles"] if error is not None]
    if reply["error"] is not None:
        COUNTS[f"{example['op']} error: {problem}"] += 1
        for i, (before, after) in enumerate(zip(reply["before"], reply["after"])):
            for name, (bits, _) in before.items():
                assert after[name][0] == bits, f"the error changed {name} of variable {i}"
        if problem == "twice":
            assert "must be different variables" in reply["error"], reply["error"]
        elif problem == "mixed":
            assert "share one dtype" in reply["error"], reply["error"]
        else:
            assert single_errors, f"valid example rejected: {reply['error']}"
            assert _message(reply["error"]) in {_message(e) for e in single_errors}, (
                f"{reply['error']!r} is none of the one-variable op's errors {single_errors}")
        return
    assert problem not in ("twice", "mixed"), f"a call with {problem} accepted"
    assert not single_errors, f"accepted where the one-variable op raised {single_errors}"
    COUNTS[example["op"] + ":ok"] += 1
    for i, (after, (_, single)) in enumerate(zip(reply["after"], reply["singles"])):
        for name, (bits, _) in single.items():
            assert after[name][0] == bits, (
                f"variable {i}: {name} differs from the one-variable op's bits")


# --------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("op", OPS + MULTI_OPS)
def test_fuzz(worker, op):
    multi = op in MULTI_OPS
    check = check_multi_example if multi else check_example

    @PROFILE
    @given(example=(multi_examples if multi else examples)(op))
    def run(example):
        check(worker, example)

    run()


def test_a_crashing_example_fails_its_test_and_the_worker_restarts(worker):
    with pytest.raises(WorkerDied, match=r"killed by signal 6 on this example"):
        worker.run({"crash": True, "op": "ftrl"})
    reply = worker.run({"op": "adagrad", "dtype": "float32", "use_locking": False,
                        "update_slots": True, "hyper": {"lr": 0.5, "epsilon": 0.0},
                        "state": {"var": np.ones(3), "accum": np.ones(3)},
                        "grad": np.array([1.0, math.nan, 0.0])})
    assert reply["error"] is None
    var = reply["after"]["var"][1]
    assert var[0] == pytest.approx(1 - 0.5 / math.sqrt(2)) and math.isnan(var[1]) and var[2] == 1


if __name__ == "__main__":
    _worker_main()
