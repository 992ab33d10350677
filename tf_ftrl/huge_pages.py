"""Transparent huge pages for the buffers of large variables (Linux `madvise`).

Sparse updates of large embedding tables are bound by page walks when the tables sit in 4 KiB
pages, as TensorFlow's allocations do unless the process started with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`. `advise_huge_pages` asks Linux to back them with 2 MiB
pages; the optimizers call `advise_in_step` from within their steps (each buffer is advised once
per process) for the variables their `huge_pages` option chooses (by default "auto": those of
at least 16 MiB, and the slots of those). Values never change.
"""

import tensorflow as tf

from tf_ftrl import ops
from tf_ftrl._optimizer_common import in_xla_context

# With the optimizers' default `huge_pages="auto"`, variables (and slots) of at least this many
# bytes are advised: past the reach of the TLBs with 4 KiB pages (a few MiB), a sparse update's
# rows each cost a page walk. Measured (docs/benchmarks.md, "Transparent huge pages"): no gain at
# 4 MiB per array, sparse FTRL 1.13x faster at 16 MiB, 1.23x at 64 MiB.
AUTO_MIN_BYTES = 16 << 20


def checked_option(huge_pages):
    """The optimizers' `huge_pages` argument: True, False or "auto"."""
    if huge_pages is True or huge_pages is False or huge_pages == "auto":
        return huge_pages
    raise ValueError(
        f'`huge_pages` must be True, False or "auto". Received: huge_pages={huge_pages!r}')


def chosen(variables, huge_pages):
    """The variables the optimizers advise for their `huge_pages` option: all with True, none
    with False, and with "auto" those whose buffer holds at least AUTO_MIN_BYTES."""
    if huge_pages == "auto":
        return [v for v in variables
                if v.shape.num_elements() is not None
                and v.shape.num_elements() * tf.as_dtype(v.dtype).size >= AUTO_MIN_BYTES]
    return list(variables) if huge_pages else []


def chosen_for(var, slots, huge_pages):
    """`chosen` for one variable and its optimizer slots: with "auto", all of them where var is
    chosen, since a sparse update reads its slots at the rows it reads var (a row-wise
    accumulator, 4 bytes a row, is below AUTO_MIN_BYTES up to 4M rows, and its 4 KiB pages then
    cost a page walk per row: advised with its table, the row-wise sparse updates of 2M x 64 were
    about 3% faster, docs/benchmarks.md "Transparent huge pages")."""
    if huge_pages == "auto" and chosen([var], huge_pages):
        return [var] + list(slots)
    return chosen([var] + list(slots), huge_pages)


def advise_huge_pages(variables, collapse=True):
    """Asks Linux to back the buffers of `variables` (a tf.Variable, a distributed variable or a
    list of them) with transparent huge pages, and, if `collapse`, to move what they already hold
    into huge pages now (Linux 6.1+; otherwise the kernel's khugepaged does it over time).

    Call this once on the tables and their optimizer slots after they are built, e.g.
    `optimizer.build(model.trainable_variables)` then
    `advise_huge_pages(model.trainable_variables + optimizer.variables)`, before `model.fit`
    (which otherwise creates the slots inside its first traced step: they have no buffer to
    advise until that step runs), or pass `huge_pages=True` to the optimizers, which advise from
    within their steps. Values do not change.
    A variable whose buffer TensorFlow later replaces (its own dense ops copy a variable in
    copy-on-read mode) loses the advice; memory that TensorFlow frees and reuses keeps it.
    Variables on other devices than the CPU, and buffers holding no whole 2 MiB page, are left
    alone.

    Returns the number of bytes advised (0 where the kernel has no transparent huge pages).
    Runs eagerly.
    """
    if isinstance(variables, (list, tuple)):
        return sum(advise_huge_pages(v, collapse=collapse) for v in variables)
    if hasattr(variables, "values") and not isinstance(variables, tf.Variable):
        return sum(advise_huge_pages(v, collapse=collapse) for v in variables.values)
    advised = _advised_bytes(variables, collapse)
    return 0 if advised is None else int(advised)


def advise_in_step(variables, after=None):
    """For the optimizers' `huge_pages` option: advises the CPU variables among `variables` from
    within a training step, after `after` (the step's update of them, which may move a buffer
    that a reader still held; None eagerly). It runs in every step, and the op advises each
    buffer once per process (`once`), so the first step of any process advises them: a fresh
    model's, and a model's loaded to train on (it used to run while the step count was 0 only,
    and resumed training never got the advice), and a buffer that TensorFlow replaced is advised
    at the next step. Not at build time: a tf.function that creates the slots gives them their
    buffers only when it runs.

    Inside XLA, where the op has no kernel, the advice runs eagerly while the step is traced,
    for the variables that hold a value by then (Keras's `fit` builds the optimizer before it
    traces the step; XLA keeps updating the buffers in place). Returns the advice's op (None
    eagerly or inside XLA)."""
    if in_xla_context():
        with tf.init_scope():
            for variable in variables:
                if _holds_value(variable):
                    _advised_bytes(variable, once=True)
        return None
    with tf.control_dependencies([after] if after is not None else []):
        advised = [_advised_bytes(v, once=True) for v in variables]
        advice = tf.add_n([a for a in advised if a is not None] or [tf.constant(0, tf.int64)])
    return None if tf.executing_eagerly() else advice.op


def _holds_value(variable):
    """Eagerly: whether `variable` has been initialized."""
    try:
        return bool(variable.is_initialized())
    except (AttributeError, tf.errors.OpError):
        return False


def _advised_bytes(variable, collapse=True, once=False):
    """The bytes FusedAdviseHugePages advises for one variable (a tensor inside tf.function), or
    None for a variable that is not on the CPU (the op has only a CPU kernel)."""
    handle = getattr(variable, "handle", variable)  # this replica's under tf.distribute
    if tf.DeviceSpec.from_string(handle.device or "").device_type not in (None, "CPU"):
        return None
    return ops.load_library().fused_advise_huge_pages(var=handle, collapse=collapse,
                                                    once=once).advised_bytes
