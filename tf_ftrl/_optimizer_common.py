"""What both front ends' optimizers share about choosing an update: the description (`_specs`) of
each variable's update, its fused op, and the record of which ran."""

from tf_ftrl import ops
from tf_ftrl._update_log import KERNELS_USED_DOC


class SpecDispatch:
    """Mixed into both front ends' optimizers, which set `_spec`, `_rowwise_spec`, `rowwise` and
    `_update_log` (an `_update_log.UpdateLog`)."""

    _spec = None
    _rowwise_spec = None  # the row-wise variant's description

    def _is_rowwise(self, variable):
        """Whether `variable`'s state is row-wise: with `rowwise`, for rank 2 and more."""
        return self.rowwise and len(variable.shape) >= 2

    def _spec_for(self, variable):
        return self._rowwise_spec if self._is_rowwise(variable) else self._spec

    def _op(self, variable, sparse):
        """The fused op wrapper of `variable`'s update (`tf_ftrl.ops`)."""
        return getattr(ops, self._spec_for(variable).functions[sparse])

    def kernels_used(self):
        return self._update_log.used()

    kernels_used.__doc__ = KERNELS_USED_DOC
