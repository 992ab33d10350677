"""The fused FTRL and Adagrad ops on `tf.Variable`s.

This module is the one place that loads the op library (`_tf_ftrl_ops.so`, beside this file):
`import tf_ftrl` loads it (a library that cannot load raises at first use instead), only from
the installed package's own directory. The XLA lowering of the ops (`_tf_ftrl_xla_ops.so`: under
`jit_compile=True` each op becomes an XLA custom call of the same CPU kernels) loads with it
where it is there and TensorFlow takes it; one log line (logger "tf_ftrl") says which path
XLA-compiled updates take.

Every op updates its variables in place, in one pass over var, slots and grad, and validates all
of its inputs before it writes anything: a bad shape, dtype, hyperparameter or index raises
`tf.errors.InvalidArgumentError` and leaves the variables unchanged. Sparse ops sum duplicate
indices before the update, so their result equals the dense op applied to the densified gradient
on the rows named by `indices` (bit for bit in float32 and float64; float16 and bfloat16 rows are
summed in float32), and every other row is left bit-identical.
"""

import collections
import inspect
import logging
import os
import re
import threading

import tensorflow as tf

from tf_ftrl import _specs

_LIBRARY_FILE = "_tf_ftrl_ops.so"
_BUILD_MARKER = re.compile(rb"tf_ftrl:built_against_tensorflow=([0-9A-Za-z.+_-]+);")
_REBUILD_HINT = (
    "Rebuild it against the installed TensorFlow: in the tf_ftrl source tree run "
    "`pip install --no-build-isolation .` (or `make build` for a development install)."
)

_XLA_LIBRARY_FILE = "_tf_ftrl_xla_ops.so"
# XLA's typed FFI, which kernels/xla_custom_calls.cc is written with: setup.py does not build
# the lowering against a TensorFlow whose headers lack it.
_XLA_FFI_HEADER = os.path.join("xla", "ffi", "api", "ffi.h")
# The ops the XLA lowering takes, for float32 variables with state of _XLA_STATE_DTYPES
# (kernels/xla_ops.cc).
_XLA_LOWERED_OPS = frozenset(
    [f"FusedResource{kind}{name}" for kind in ("Apply", "SparseApply")
     for name in ("Ftrl", "Adagrad", "RowwiseFtrl", "RowwiseAdagrad")]
    + [f"FusedResourceMultiApply{name}" for name in ("Ftrl", "Adagrad")])
_XLA_STATE_DTYPES = (tf.float32, tf.bfloat16, tf.float16)

_library = None
_xla_lowering = False  # whether the XLA lowering is loaded (set with _library)
_library_lock = threading.Lock()
_logger = logging.getLogger("tf_ftrl")


def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _built_tensorflow_version(path):
    """The TensorFlow version recorded in the library file at build time, or None."""
    with open(path, "rb") as f:
        match = _BUILD_MARKER.search(f.read())
    return match.group(1).decode() if match else None


@tf.autograph.experimental.do_not_convert
def load_library():
    """Loads the op library once and returns its module of raw ops.

    Raises ImportError naming the TensorFlow versions involved and how to rebuild when the library
    is missing or was compiled against another TensorFlow.
    """
    global _library
    with _library_lock:
        if _library is not None:
            return _library
        path = os.path.join(_package_dir(), _LIBRARY_FILE)
        if not os.path.isfile(path):
            raise ImportError(
                f"tf_ftrl's op library is missing: {path} does not exist. {_REBUILD_HINT}"
            )
        built = _built_tensorflow_version(path)
        if built != tf.__version__:
            raise ImportError(
                f"tf_ftrl's op library {path} was built against TensorFlow "
                f"{built or '(unknown version)'}, but TensorFlow {tf.__version__} is installed. "
                f"{_REBUILD_HINT}"
            )
        try:
            library = tf.load_op_library(path)
        except (tf.errors.NotFoundError, OSError) as e:
            raise ImportError(
                f"tf_ftrl's op library {path} (built against TensorFlow {built}) failed to load "
                f"in TensorFlow {tf.__version__}: {e}. {_REBUILD_HINT}"
            ) from e
        global _xla_lowering
        _xla_lowering = _load_xla_lowering()
        _library = library
        return _library


def _load_xla_lowering():
    """Loads the XLA lowering (after the op library, whose ops it lowers) and logs which path
    XLA-compiled updates take; returns whether it loaded. Without it they run as plain
    TensorFlow ops (`tf_ftrl.optimizers`); a failure to load is logged, never raised."""
    path = os.path.join(_package_dir(), _XLA_LIBRARY_FILE)
    if os.environ.get("TF_FTRL_XLA_CUSTOM_CALL", "1") == "0":
        why = "TF_FTRL_XLA_CUSTOM_CALL=0"
    elif not os.path.isfile(path) and not _has_xla_ffi_header():
        why = (f"TensorFlow {tf.__version__} ships no {_XLA_FFI_HEADER} (XLA's typed FFI), "
               "which the lowering is built with; TensorFlow 2.20 and newer do")
    elif not os.path.isfile(path):
        why = f"{path} does not exist"
    elif _built_tensorflow_version(path) != tf.__version__:
        why = (f"{path} was built against TensorFlow "
               f"{_built_tensorflow_version(path) or '(unknown version)'}, not {tf.__version__}")
    else:
        try:
            tf.load_op_library(path)
        except (tf.errors.NotFoundError, OSError) as e:
            why = f"{path} failed to load: {e}"
        else:
            _logger.info("tf_ftrl: under XLA (jit_compile=True) the float32 updates run the "
                         "fused CPU kernels as XLA custom calls")
            return True
    _logger.info("tf_ftrl: under XLA (jit_compile=True) the updates run as plain TensorFlow ops "
                 "(%s)", why)
    return False


def _has_xla_ffi_header():
    """Whether TensorFlow's headers include XLA's typed FFI, without which setup.py does not
    build the lowering (TensorFlow 2.16-2.19 ship only its C API)."""
    return os.path.isfile(os.path.join(tf.sysconfig.get_include(), _XLA_FFI_HEADER))


def has_xla_lowering(spec, dtype, state_dtype, multi=False):
    """Whether `spec`'s fused ops (an `_specs.OptimizerSpec`; with `multi`, its multi-tensor op)
    run inside XLA for a variable of `dtype` with state of `state_dtype`: as custom calls on
    XLA's CPU (host) platform."""
    load_library()
    return (_xla_lowering and (spec.multi_op if multi else spec.dense_op) in _XLA_LOWERED_OPS
            and tf.as_dtype(dtype).base_dtype == tf.float32
            and tf.as_dtype(state_dtype).base_dtype in _XLA_STATE_DTYPES)


# The dtypes the fused kernels are compiled for. The optimizers update variables of other dtypes
# the stock optimizers train (complex Adagrad) with plain TensorFlow ops.
FUSED_DTYPES = (tf.float32, tf.float64, tf.float16, tf.bfloat16)


def has_fused_kernels(dtype):
    """Whether the fused ops take variables of `dtype`."""
    return tf.as_dtype(dtype).base_dtype in FUSED_DTYPES


def _handle(variable):
    """The resource handle of a tf.Variable (this replica's copy under tf.distribute)."""
    if isinstance(variable, tf.Variable) or hasattr(variable, "handle"):
        return variable.handle
    return variable


def _dtype_of(variable):
    return tf.as_dtype(variable.dtype).base_dtype


def _grad(grad, dtype):
    """grad as a tensor of the variable's dtype; a tensor of another dtype is an error."""
    if isinstance(grad, tf.IndexedSlices):
        raise TypeError("Pass a tf.IndexedSlices to the sparse ops as grad.values and "
                        "grad.indices.")
    if tf.is_tensor(grad) and grad.dtype != dtype:
        raise tf.errors.InvalidArgumentError(
            None, None,
            f"grad has dtype {grad.dtype.name} but the variable has dtype {dtype.name}",
        )
    return tf.convert_to_tensor(grad, dtype=dtype)


def _scalar(value, dtype):
    """A hyperparameter as a tensor of the variable's dtype (tensors of other dtypes are cast)."""
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        return tf.cast(value, dtype)
    return tf.convert_to_tensor(value, dtype=dtype)


def _indices(indices):
    if tf.is_tensor(indices):
        return indices
    # Not dtype_hint=tf.int32: it wraps values beyond int32 (2**40 becomes 0) instead of
    # falling back to int64. Python ints give int32 when they all fit, else int64; NumPy arrays
    # keep their dtype; an empty list (float32 by default) becomes int32.
    indices = tf.convert_to_tensor(indices)
    if indices.dtype.is_floating and indices.shape.num_elements() == 0:
        indices = tf.zeros(indices.shape, tf.int32)
    return indices


def _rounding(seed_and_step):
    """The ops' stochastic_rounding input: [] (round to nearest), or [[seed, step]] as int64."""
    if seed_and_step is None:
        return []
    pair = tf.cast(seed_and_step, tf.int64) if tf.is_tensor(seed_and_step) else (
        tf.convert_to_tensor(seed_and_step, dtype=tf.int64))
    return [pair]


def _signature(spec, tensors):
    """The op wrappers' signature: `(*tensors, *hyperparameters, flag, use_locking=False,
    stochastic_rounding=None, name=None)`, the hyperparameters with their defaults in `spec`."""

    def parameter(name, default=None, required=False):
        empty = inspect.Parameter.empty
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=empty if required else default)

    return inspect.Signature(
        [parameter(name, required=True) for name in tensors]
        + [parameter(name, spec.op_argument(name).op_default,
                     required=spec.op_argument(name).op_default is None)
           for name in spec.op_hyperparameters]
        + [parameter(spec.flag, spec.flag_default), parameter("use_locking", False),
           parameter("stochastic_rounding", None), parameter("name", None)])


# Every op wrapper by its name: those below, and those an optimizer's own module makes
# (`op_wrappers`). The optimizers find their ops here (`wrapper`).
_WRAPPERS = {}


def wrapper(name):
    """The op wrapper named `name` ("sparse_apply_ftrl"), wherever it was made."""
    return _WRAPPERS[name]


def op_wrappers(spec, dense_doc, sparse_doc):
    """The dense and the sparse op wrapper of `spec` (an `_specs.OptimizerSpec` whose ops the
    library registers), named `spec.functions`, with those docstrings (`{hyperparameters}` in
    one is filled in with the scalar inputs and their bounds)."""
    return _op_wrapper(spec, False, dense_doc), _op_wrapper(spec, True, sparse_doc)


def _op_wrapper(spec, sparse, doc):
    """The Python function of `spec`'s dense or sparse op (`apply_ftrl`, `sparse_apply_ftrl`),
    its signature derived from `spec`:
    `(var, *slots, grad[, indices], *hyperparameters, flag, use_locking=False,
    stochastic_rounding=None, name=None)`."""
    variables = ["var"] + [slot.op_input for slot in spec.slots]
    tensors = variables + ["grad"] + (["indices"] if sparse else [])

    signature = _signature(spec, tensors)
    op_function = _specs.snake_case(spec.sparse_op if sparse else spec.dense_op)

    def wrapper(*args, **kwargs):
        given = signature.bind(*args, **kwargs)
        given.apply_defaults()
        given = given.arguments
        dtype = _dtype_of(given["var"])
        inputs = {name: _handle(given[name]) for name in variables}
        inputs["grad"] = _grad(given["grad"], dtype)
        if sparse:
            inputs["indices"] = _indices(given["indices"])
        inputs.update((name, _scalar(given[name], dtype)) for name in spec.op_hyperparameters)
        inputs["stochastic_rounding"] = _rounding(given["stochastic_rounding"])
        return getattr(load_library(), op_function)(
            **inputs, use_locking=given["use_locking"], name=given["name"],
            **{spec.flag: given[spec.flag]})

    wrapper.__name__ = wrapper.__qualname__ = spec.functions[sparse]
    wrapper.__doc__ = doc.format(hyperparameters=_hyperparameters_doc(spec))
    wrapper.__signature__ = signature
    return _register(wrapper)


def _multi_op_wrapper(spec, doc):
    """The Python function of `spec`'s multi-tensor dense op (`multi_apply_ftrl`):
    `(var, *slots, grad, *hyperparameters, flag, use_locking=False, stochastic_rounding=None,
    name=None)`, where var, each slot and grad are lists of one length."""
    lists = ["var"] + [slot.op_input for slot in spec.slots] + ["grad"]

    signature = _signature(spec, lists)
    op_function = _specs.snake_case(spec.multi_op)

    def wrapper(*args, **kwargs):
        given = signature.bind(*args, **kwargs)
        given.apply_defaults()
        given = given.arguments
        count = len(given["var"])
        if count == 0:
            raise ValueError(f"{spec.multi_function} takes at least one variable, got none")
        for name in lists[1:]:
            if len(given[name]) != count:
                raise ValueError(f"{spec.multi_function} takes lists of one length: var has "
                                 f"{count} variables but {name} has {len(given[name])}")
        dtypes = {_dtype_of(v) for v in given["var"]}
        if len(dtypes) != 1:
            raise tf.errors.InvalidArgumentError(
                None, None, f"{spec.multi_function} updates variables of one dtype, got "
                f"{sorted(d.name for d in dtypes)}")
        dtype = dtypes.pop()
        inputs = {name: [_handle(v) for v in given[name]] for name in lists[:-1]}
        inputs["grad"] = [_grad(g, dtype) for g in given["grad"]]
        inputs.update((name, _scalar(given[name], dtype)) for name in spec.op_hyperparameters)
        rounding = given["stochastic_rounding"]
        if rounding is None:
            inputs["stochastic_rounding"] = []
        else:
            inputs["stochastic_rounding"] = [tf.reshape(
                tf.cast(rounding, tf.int64) if tf.is_tensor(rounding)
                else tf.convert_to_tensor(rounding, dtype=tf.int64), [count, 2])]
        return getattr(load_library(), op_function)(
            **inputs, use_locking=given["use_locking"], name=given["name"],
            **{spec.flag: given[spec.flag]})

    wrapper.__name__ = wrapper.__qualname__ = spec.multi_function
    wrapper.__doc__ = doc
    wrapper.__signature__ = signature
    return _register(wrapper)


def _register(function):
    if function.__name__ in _WRAPPERS:
        raise ValueError(f"an op wrapper named {function.__name__!r} exists already")
    _WRAPPERS[function.__name__] = function
    return function


def _hyperparameters_doc(spec):
    """The Args entry of the ops' scalar inputs and their bounds, e.g. for Adagrad's
    "lr, epsilon: finite scalars;\n        lr, epsilon >= 0." (at indent 6)."""
    by_bound = collections.defaultdict(list)
    for name in spec.op_hyperparameters:
        by_bound[spec.op_argument(name).bound.symbol].append(name)
    bounds = ", ".join(f"{', '.join(names)} {symbol}" for symbol, names in by_bound.items())
    return f"{', '.join(spec.op_hyperparameters)}: finite scalars;\n        {bounds}."


apply_ftrl, sparse_apply_ftrl = op_wrappers(_specs.FTRL, """\
Fused FTRL-Proximal update of `var`, `accum` and `linear` in place.

    The math of `tf.raw_ops.ResourceApplyFtrlV2`: with p = lr_power,
    `g' = grad + 2 * l2_shrinkage * var`, `new_accum = accum + grad**2`,
    `linear += g' - (new_accum**-p - accum**-p) / lr * var`,
    `var = (l1 * sign(linear) - linear) / (new_accum**-p / lr + 2 * l2)` where
    `|linear| > l1`, else 0. With `multiply_linear_by_lr`, linear holds `lr` times that value.

    Args:
      var, accum, linear: `tf.Variable`s of one shape; var of dtype float32, float64, float16
        or bfloat16 (half types compute in float32). The state (`accum`, `linear`) has var's
        dtype, or for a float32 var bfloat16 or float16 (low-precision state: float32 math,
        one rounding per store).
      grad: the gradient, same shape and dtype as `var`.
      {hyperparameters}
        lr_power -0.5 takes a faster sqrt path. The formula divides by lr: a step at lr = 0
        (where warm-up schedules start) changes nothing, and TensorFlow's op rejects it.
      multiply_linear_by_lr: keep `linear` multiplied by the learning rate.
      use_locking: hold the variables' locks exclusively for the update.
      stochastic_rounding: None (low-precision state rounds to nearest), or `[seed, step]`
        (int64): it rounds stochastically, each element up or down with probability by its
        distance, from bits that depend only on seed, step, the array and the element's
        position (the same on CPU and GPU). Only for state narrower than var.
    """, """\
Fused FTRL-Proximal update of the rows `indices` of `var`, `accum` and `linear`.

    `grad[i]` is the gradient of row `indices[i]`; `var` has rank >= 1 and `grad` has shape
    `[len(indices)] + var.shape[1:]`. Duplicate indices are summed before the update. Any index
    outside `[0, var.shape[0])` raises InvalidArgumentError with its position, value and the
    bound, and nothing is written. Other arguments as in `apply_ftrl`.
    """)

apply_adagrad, sparse_apply_adagrad = op_wrappers(_specs.ADAGRAD, """\
Fused Adagrad update in place: `accum += grad**2` (when `update_slots`), then
    `var -= lr * grad / (sqrt(accum) + epsilon)`, as `tf.raw_ops.ResourceApplyAdagradV2`.

    Args as in `apply_ftrl`, and
      {hyperparameters}
        At lr 0 only the accumulator changes.
    """, """\
Fused Adagrad update of the rows `indices` of `var` and `accum`; duplicate indices are
    summed first. Arguments as in `sparse_apply_ftrl` and `apply_adagrad`.
    """)

apply_rowwise_ftrl, sparse_apply_rowwise_ftrl = op_wrappers(_specs.ROWWISE_FTRL, """\
Fused row-wise FTRL-Proximal update in place: one accumulator value per row of `var`.

    A row is everything after the first dimension (D elements). With g the row's gradient,
    `accum[r] += mean(g**2)` (p = lr_power, n and n' its old and new value), then for each
    element `linear += g + 2 * l2_shrinkage * var - (n'**-p - n**-p) / lr * var` and
    `var = (l1 * sign(linear) - linear) / (n'**-p / lr + 2 * l2)` where `|linear| > l1`,
    else 0. With D = 1 it is `apply_ftrl`.

    Args:
      var, linear: `tf.Variable`s of one shape (rank >= 1); dtypes as in `apply_ftrl`.
      accum: a `tf.Variable` of shape `[var.shape[0]]` and linear's dtype.
      grad: the gradient, same shape and dtype as `var`.
      {hyperparameters}
        A step at lr = 0 changes nothing.
      multiply_linear_by_lr, use_locking, stochastic_rounding: as in `apply_ftrl`.
    """, """\
Fused row-wise FTRL-Proximal update of the rows `indices`; duplicate indices are summed
    into one row gradient first. Arguments as in `sparse_apply_ftrl` and `apply_rowwise_ftrl`.
    """)

apply_rowwise_adagrad, sparse_apply_rowwise_adagrad = op_wrappers(_specs.ROWWISE_ADAGRAD, """\
Fused row-wise Adagrad update in place (FBGEMM's exact row-wise Adagrad): with g a row's
    gradient, `accum[r] += mean(g**2)` (when `update_slots`), then
    `var[r] -= lr * g / (sqrt(accum[r]) + epsilon)`. `accum` has shape `[var.shape[0]]`; other
    arguments as in `apply_adagrad`. With D = 1 it is `apply_adagrad`.

    Args:
      {hyperparameters}
    """, """\
Fused row-wise Adagrad update of the rows `indices`; duplicate indices are summed into one
    row gradient first. Arguments as in `sparse_apply_adagrad` and `apply_rowwise_adagrad`.
    """)


multi_apply_ftrl = _multi_op_wrapper(_specs.FTRL, """\
`apply_ftrl` on many variables in one op call (multi-tensor apply).

    `var`, `accum`, `linear` and `grad` are lists of one length N: variable i gets the update
    `apply_ftrl(var[i], accum[i], linear[i], grad[i], ...)` would give it, bit for bit, with the
    hyperparameters shared. The work is cut by elements over all of them (many small variables
    make one parallel pass), and every input is checked before any variable is written. The
    variables share one dtype, and so do their state variables. `stochastic_rounding` is None or
    N pairs `[seed, step]` (an [N, 2] int64 tensor), one per variable.
    """)

multi_apply_adagrad = _multi_op_wrapper(_specs.ADAGRAD, """\
`apply_adagrad` on many variables in one op call (multi-tensor apply).

    `var`, `accum` and `grad` are lists of one length N; arguments otherwise as in
    `multi_apply_ftrl` and `apply_adagrad`.
    """)


def __getattr__(name):
    # tf_ftrl 0.1.0 documented the huge-page advice here; it lives in tf_ftrl.huge_pages.
    if name == "advise_huge_pages":
        from tf_ftrl.huge_pages import advise_huge_pages

        return advise_huge_pages
    raise AttributeError(f"module 'tf_ftrl.ops' has no attribute {name!r}")
