"""What both front ends record about each variable's update: the kernel (or plain TensorFlow ops)
its step runs, shown by the optimizers' `kernels_used()`, and a warning, once per variable, when
a large embedding-shaped variable gets a dense gradient."""

import re
import threading
import warnings

# Variables of rank >= 2 with at least this many rows are taken for embedding tables: a dense
# gradient to one rewrites every row (and its slots) every step.
DENSE_GRADIENT_WARNING_ROWS = 100_000

_REPLICA_SUFFIX = re.compile(r"(/replica_\d+)?(:\d+)?$")


def variable_name(variable):
    """A variable's name without TensorFlow's `:0` and a MirroredVariable component's
    `/replica_N`, so that every replica's update is recorded under one name."""
    return _REPLICA_SUFFIX.sub("", variable.name)


def _dense_gradient_message(optimizer_name, name, shape, dense_op, sparse_op):
    rows = int(shape[0])
    return (
        f"tf_ftrl.{optimizer_name}: the embedding-shaped variable '{name}' "
        f"({' x '.join(str(int(d)) for d in shape)}) got a dense gradient, so each step "
        f"rewrites all {rows:,} of its rows and its slots ({dense_op}) instead of only the rows "
        f"the batch looked up ({sparse_op}). The usual cause is a regularizer on the table, "
        f"such as `embeddings_regularizer=l2(...)`, even `l2(0)`: its gradient is dense. "
        f"`tf_ftrl.sparse_regularizers(model)` turns embedding regularizers into the same "
        f"penalty on the looked-up rows, which keeps the update sparse. Other causes: a lookup "
        f"written as a matmul (one-hot inputs), or another loss term on the whole table. "
        f"`optimizer.kernels_used()` shows which update each variable runs.")


class UpdateLog:
    """The update each variable's step runs, by variable name, as its step is traced."""

    def __init__(self):
        self._lock = threading.Lock()
        self._used = {}
        self._warned = set()

    def record(self, optimizer_name, variable, update, dense_op=None, sparse_op=None):
        """Records `update` (a fused op's name in `tf_ftrl.ops`, or a description of the plain
        TensorFlow ops that ran instead) for `variable`. `dense_op` and `sparse_op` are set when
        the gradient is dense: the variable then gets the dense-gradient warning if it is
        embedding-shaped, once."""
        name = variable_name(variable)
        shape = variable.shape
        warn = (dense_op is not None and shape.rank is not None and shape.rank >= 2
                and shape[0] is not None and shape[0] >= DENSE_GRADIENT_WARNING_ROWS)
        with self._lock:
            self._used[name] = update
            if warn:
                if name in self._warned:
                    warn = False
                self._warned.add(name)
        if warn:
            warnings.warn(_dense_gradient_message(optimizer_name, name, shape, dense_op,
                                                  sparse_op), UserWarning, stacklevel=2)

    def used(self):
        with self._lock:
            return dict(self._used)


KERNELS_USED_DOC = """Which update each variable's step runs, as `{variable name: update}`.

        An update is the name of the fused op in `tf_ftrl.ops` (`"sparse_apply_adagrad"`: the
        sparse kernel, which touches only the rows the batch looked up; `"multi_apply_adagrad"`:
        the dense kernel, every element, in one op call with other dense variables of the step;
        `"apply_rowwise_adagrad"`: a row-wise variable's dense kernel), followed by
        `" (XLA custom call)"` where XLA runs it, or `"tensorflow ops (...)"` where the fused
        kernels cannot run, saying why (inside XLA, a dtype they are not compiled for). It is recorded as each
        step is traced (for `model.fit`, on its first step), so it is empty before the first step.
        """
