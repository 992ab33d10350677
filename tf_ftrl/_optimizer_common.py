"""What both front ends' optimizers share about choosing an update: the description (`_specs`) of
each variable's update, its fused op, the dtype of its state and how that state rounds, and the
record of which ran."""

import bisect
import itertools
import os
import re
import zlib

import numpy as np
import tensorflow as tf

from tf_ftrl import _state_rounding, ops
from tf_ftrl._update_log import KERNELS_USED_DOC

# The dtypes `state_dtype` takes: the state of float32 variables in 16 bits.
STATE_DTYPES = ("bfloat16", "float16")


def in_xla_context():
    """Whether the ops being built will be compiled by XLA."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def sparse_index_check(gradients, variables, names):
    """The op that checks every index of a step's sparse gradients against its variable's rows,
    or None where there is nothing to check: the step's writes are to wait for it, so that a
    step with one bad index changes nothing (each fused op checks its own indices too, but other
    updates of the step, the weight decay and the step count may have run by then).

    Left out: inside XLA (the custom calls check, and the op has no XLA kernel) and variables on
    a GPU (their indices would be copied to the host; the GPU kernels check their own)."""
    if in_xla_context():
        return None
    checked = [(g, v, name) for g, v, name in zip(gradients, variables, names)
               if isinstance(g, tf.IndexedSlices) and v is not None and v.shape.rank
               and "GPU" not in (getattr(v, "device", "") or "").upper()]
    if not checked:
        return None
    rows = [v.shape[0] if v.shape[0] is not None else tf.shape(v, out_type=tf.int64)[0]
            for _, v, _ in checked]
    rows = (tf.constant(rows, tf.int64) if all(isinstance(r, int) for r in rows)
            else tf.stack([tf.cast(r, tf.int64) for r in rows]))
    return ops.load_library().fused_check_sparse_indices(
        indices=[g.indices for g, _, _ in checked], num_rows=rows,
        names=[str(name) for _, _, name in checked])


def checked_rowwise(rowwise):
    """`rowwise` as the optimizers keep it: True, False, or a tuple of regular expressions, which
    choose the variables (of rank 2 and more) whose state is row-wise by their names."""
    if isinstance(rowwise, (bool, np.bool_)):
        return bool(rowwise)
    if (isinstance(rowwise, (list, tuple)) and rowwise
            and all(isinstance(pattern, str) and pattern for pattern in rowwise)):
        for pattern in rowwise:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"`rowwise` takes regular expressions; {pattern!r} is not one: "
                                 f"{error}.") from None
        return tuple(rowwise)
    raise ValueError(
        f"`rowwise` must be True, False or a non-empty list of regular expressions (strings) "
        f"naming the variables whose state is row-wise, e.g. [\"embedding\"]. Received: "
        f"rowwise={rowwise!r}")


def rowwise_config(rowwise):
    """`rowwise` for a config (JSON): a list where it is patterns."""
    return list(rowwise) if isinstance(rowwise, tuple) else rowwise


def checked_stochastic_rounding(stochastic_rounding):
    """`stochastic_rounding` as a bool; anything but True or False (a string such as "no", a
    number) is an error rather than its truth value."""
    if isinstance(stochastic_rounding, (bool, np.bool_)):
        return bool(stochastic_rounding)
    raise ValueError(f"`stochastic_rounding` must be True or False. Received: "
                     f"stochastic_rounding={stochastic_rounding!r}")


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


# A multi-tensor group on the CPU is applied in one op call per intra-op thread, and in no more
# calls than one per this many variables. One call validates and locks all its variables on one
# thread before its elements are split over the pool, and the next call (the next step's) waits
# for it; several calls overlap one's checks with another's elements. On a 2-core VM, 240 small
# variables took 0.33 ms per apply in one call and 0.20 ms in two (the same elements in one
# variable: 0.20 ms).
MIN_VARIABLES_PER_CALL = 16


def intra_op_threads():
    """The number of threads of TensorFlow's intra-op pool."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


def multi_tensor_calls(num_variables, device, threads=None):
    """How many op calls a multi-tensor group of `num_variables` variables on `device` (a device
    string, "" where unplaced) takes: one per intra-op thread on the CPU, but no more than one
    per MIN_VARIABLES_PER_CALL variables; one on a GPU (one launch), inside XLA, and for an
    unplaced group where TensorFlow sees a GPU."""
    if in_xla_context():
        return 1
    kind = tf.DeviceSpec.from_string(device).device_type if device else None
    if kind is not None and kind.upper() != "CPU":
        return 1
    if kind is None and tf.config.list_logical_devices("GPU"):
        return 1
    threads = intra_op_threads() if threads is None else threads
    return max(1, min(threads, num_variables // MIN_VARIABLES_PER_CALL))


def split_by_elements(sizes, parts):
    """`range(len(sizes))` cut into `min(parts, len(sizes))` runs of consecutive indices with
    about equal sums of `sizes` (each run non-empty), as `[(begin, end)]`: run k ends where the
    running sum comes closest to k / parts of the total."""
    n = len(sizes)
    parts = max(1, min(parts, n))
    prefix = list(itertools.accumulate(sizes, initial=0))
    runs = []
    begin = 0
    for part in range(1, parts):
        target = prefix[n] * part / parts
        # At least one index in this run and one for each later run.
        lowest, highest = begin + 1, n - (parts - part)
        end = min(max(bisect.bisect_left(prefix, target), lowest), highest)
        if end > lowest and target - prefix[end - 1] <= prefix[end] - target:
            end -= 1
        runs.append((begin, end))
        begin = end
    runs.append((begin, n))
    return runs


class SpecDispatch:
    """Mixed into both front ends' optimizers, which set `_spec`, `_rowwise_spec`, `rowwise`,
    `state_dtype`, `stochastic_rounding` and `_update_log` (an `_update_log.UpdateLog`)."""

    _spec = None
    _rowwise_spec = None  # the row-wise variant's description
    state_dtype = None
    stochastic_rounding = True

    def _is_rowwise(self, variable):
        """Whether `variable`'s state is row-wise: for rank 2 and more, with `rowwise=True` all
        of them, with patterns those whose name (`_rowwise_name`) one of them finds
        (`re.search`)."""
        if not self.rowwise or len(variable.shape) < 2:
            return False
        if self.rowwise is True:
            return True
        name = self._rowwise_name(variable)
        return any(re.search(pattern, name) for pattern in self.rowwise)

    def _rowwise_name(self, variable):
        """The name `rowwise`'s patterns are matched against (each front end's own)."""
        return variable.name.split(":")[0]

    def _spec_for(self, variable):
        return self._rowwise_spec if self._is_rowwise(variable) else self._spec

    def _state_dtype_for(self, dtype):
        """The dtype of the state of a variable of `dtype`: `state_dtype` for float32
        variables, else the variable's own."""
        dtype = tf.as_dtype(dtype).base_dtype
        if self.state_dtype is not None and dtype == tf.float32:
            return tf.as_dtype(self.state_dtype)
        return dtype

    def _check_state_dtype_creatable(self, var_list):
        """Raises a ValueError that names the cause before any slot of `var_list` is made where
        TensorFlow cannot make bfloat16 state: under MultiWorkerMirroredStrategy with several
        workers every new variable's initial value is broadcast from the chief by
        CollectiveBcastSend, which has no bfloat16 kernel (float16 it has), and the first slot
        failed with "Value for attr 'T' of bfloat16 is not in the list of allowed values"."""
        if not any(self._state_dtype_for(var.dtype) == tf.bfloat16 for var in var_list):
            return
        strategy = tf.distribute.get_strategy()
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        if workers > 1:
            raise ValueError(
                f"`state_dtype=\"bfloat16\"` does not work under MultiWorkerMirroredStrategy "
                f"with {workers} workers: TensorFlow broadcasts each new variable's initial value "
                f"from the chief with CollectiveBcastSend, which has no bfloat16 kernel. "
                f"`state_dtype=\"float16\"` keeps the state as small and works there, as do "
                f"ParameterServerStrategy and MirroredStrategy.")

    def _rounding(self, name, var_dtype, state_dtype, step):
        """The fused ops' `stochastic_rounding` for a variable keyed `name` (Keras 3: its index
        among the optimizer's variables and its shape; tf_keras: its replica-free name):
        [seed, step], the seed a checksum of the key (so that tables do not share random bits,
        and replicas of one variable do), or None where its state rounds to nearest."""
        if not self.stochastic_rounding or tf.as_dtype(state_dtype) == tf.as_dtype(var_dtype):
            return None
        seed = zlib.crc32(str(name).encode())
        return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])

    def _multi_tensor_groups(self, grads_and_vars, eligible):
        """The pairs of `grads_and_vars` that `eligible(grad, var)` takes, grouped for the
        multi-tensor ops by the variable's dtype, its state's dtype and its device (and each
        group cut into `multi_tensor_calls` runs of about equal numbers of elements), as
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
        calls = []
        for (_, _, device), (grads, variables) in groups.items():
            sizes = [tf.TensorShape(var.shape).num_elements() or 1 for var in variables]
            for begin, end in split_by_elements(
                    sizes, multi_tensor_calls(len(variables), device)):
                calls.append((grads[begin:end], variables[begin:end]))
        return calls, others

    def _op(self, variable, sparse):
        """The fused op wrapper of `variable`'s update (`tf_ftrl.ops`)."""
        return ops.wrapper(self._spec_for(variable).functions[sparse])

    def kernels_used(self):
        return self._update_log.used()

    kernels_used.__doc__ = KERNELS_USED_DOC


def rows_update_in_state_dtype(rows_update, var, slots, grad, lr, rounding=None):
    """`rows_update` (the plain TensorFlow ops' update) on slots of a narrower dtype than var: the
    math in var's dtype, the new slots rounded into theirs: to nearest, or, with `rounding`
    (StochasticPlaces), stochastically with the fused kernels' bits."""
    dtypes = [slot.dtype for slot in slots]
    new = rows_update(var, [tf.cast(slot, var.dtype) for slot in slots], grad, lr)
    if rounding is None:
        return (new[0],) + tuple(tf.cast(value, dtype) for value, dtype in zip(new[1:], dtypes))
    return (new[0],) + tuple(
        rounding.round(value, dtype, array, per_row=len(value.shape) < len(var.shape))
        for array, (value, dtype) in enumerate(zip(new[1:], dtypes), start=1))


def stochastic_places(seed_and_step, var_shape, indices=None):
    """StochasticPlaces of an update, or None (round to nearest) without `seed_and_step`."""
    if seed_and_step is None:
        return None
    return StochasticPlaces(seed_and_step, var_shape, indices)


class StochasticPlaces:
    """Where the plain ops' values of an update sit in their state arrays, for stochastic
    rounding with the fused kernels' bits (`_state_rounding`): `seed_and_step` as the ops take
    it, the var's shape, and `indices` for the rows of a sparse update (None: every row)."""

    def __init__(self, seed_and_step, var_shape, indices=None):
        self._key = _state_rounding.rounding_key(seed_and_step)
        self._shape = tf.TensorShape(var_shape)
        self._indices = None if indices is None else tf.cast(indices, tf.int64)

    def _rows(self):
        if self._indices is None:
            return tf.range(self._shape[0], dtype=tf.int64)
        return self._indices

    def round(self, values, dtype, array, per_row):
        """`values` of state array `array` stored as dtype; per_row: one value per row."""
        if len(self._shape) == 0:
            return _state_rounding.round_stochastically(
                values, dtype, self._key, array, tf.zeros([], tf.int64))
        rows = self._rows()
        if per_row or len(self._shape) == 1:
            positions = rows
        else:
            row_size = self._shape[1:].num_elements()
            positions = tf.reshape(
                rows[:, None] * row_size + tf.range(row_size, dtype=tf.int64)[None, :],
                tf.shape(values))
        return _state_rounding.round_stochastically(values, dtype, self._key, array, positions)
