"""`tf_ftrl.legacy.Adagrad`: tf_keras's legacy Adagrad optimizer on the fused kernels."""

import math
import numbers

import tensorflow as tf
import tf_keras

from tf_ftrl import ops
from tf_ftrl._docstrings import filled
from tf_ftrl._specs import ADAGRAD, ROWWISE_ADAGRAD
from tf_ftrl.legacy._fused_optimizer_v2 import FusedOptimizerV2


@tf_keras.saving.register_keras_serializable(package="tf_ftrl")
@filled
class Adagrad(FusedOptimizerV2):
    """Optimizer that implements Adagrad with one fused kernel per update (Keras 2).

    A drop-in replacement for `tf_keras.optimizers.legacy.Adagrad` (an `OptimizerV2`): the same
    arguments, defaults, errors, slot variable (`accumulator`: checkpoints written by one restore
    into the other) and update, `accum += g^2; w -= lr * g / (sqrt(accum) + epsilon)` (the math
    of `ResourceApplyAdagradV2`). Dense gradients go to `tf_ftrl.ops.apply_adagrad`,
    `tf.IndexedSlices` to `tf_ftrl.ops.sparse_apply_adagrad`, which updates only the touched
    rows and sums duplicate indices in the kernel.

    At learning rate 0 the accumulator grows and the variable stays. complex64 and complex128
    variables, which the fused kernels do not cover, go to TensorFlow's own ops, as in tf_keras.
    {{learning_rate_checks}}

    Args:
        {{legacy_learning_rate_arg}}
        {{initial_accumulator_value_arg}}
        epsilon: A small float added to `sqrt(accum)` for numerical stability. As in tf_keras,
            `None` or `0` mean `tf_keras.backend.epsilon()` (1e-7). Defaults to `1e-7`.
        name: The name prefix of the optimizer's variables and ops. Defaults to `"Adagrad"`.
        {{huge_pages_arg}}
        {{rowwise_arg}}
        {{state_dtype_arg}}
        {{legacy_keyword_args}}
    """

    _spec = ADAGRAD
    _rowwise_spec = ROWWISE_ADAGRAD

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 name="Adagrad", **kwargs):
        # tf_keras's own words, which differ from its Ftrl's (and it does not check epsilon).
        if initial_accumulator_value < 0.0:
            raise ValueError(
                f"initial_accumulator_value must be non-negative: {initial_accumulator_value}")
        # Which tf_keras lets through: NaN weights, or an error only at the first step.
        for argument, value in (("initial_accumulator_value", initial_accumulator_value),
                                ("epsilon", epsilon)):
            if isinstance(value, numbers.Real) and not math.isfinite(value):
                raise ValueError(f"{argument} must be finite: {value}")
        super().__init__(name, learning_rate, initial_accumulator_value, **kwargs)
        self.epsilon = epsilon or tf_keras.backend.epsilon()

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        apply_state[(var_device, var_dtype)]["epsilon"] = tf.convert_to_tensor(
            self.epsilon, var_dtype)

    def _fused_apply_dense(self, grad, var, apply_state):
        accum = self.get_slot(var, "accumulator")
        hyper = self._op_values(var, apply_state)
        if not ops.has_fused_kernels(var.dtype):
            # TensorFlow's own op, as tf_keras's Adagrad uses.
            return tf.raw_ops.ResourceApplyAdagradV2(
                var=var.handle, accum=accum.handle, grad=grad, use_locking=self._use_locking,
                **hyper)
        return self._op(var, False)(var, accum, grad, use_locking=self._use_locking, **hyper)

    def _fused_apply_sparse(self, grad, var, indices, apply_state):
        accum = self.get_slot(var, "accumulator")
        hyper = self._op_values(var, apply_state)
        if not ops.has_fused_kernels(var.dtype):
            # Duplicates are summed already (see _resource_apply_sparse_duplicate_indices).
            return tf.raw_ops.ResourceSparseApplyAdagradV2(
                var=var.handle, accum=accum.handle, grad=grad, indices=indices,
                use_locking=self._use_locking, **hyper)
        return self._op(var, True)(var, accum, grad, indices, use_locking=self._use_locking,
                                   **hyper)

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config
