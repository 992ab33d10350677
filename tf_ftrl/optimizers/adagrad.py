"""`tf_ftrl.Adagrad`: Keras 3's Adagrad optimizer on the fused kernels."""

import keras
import tensorflow as tf

from tf_ftrl._docstrings import filled
from tf_ftrl._specs import ADAGRAD, ROWWISE_ADAGRAD
from tf_ftrl.optimizers import _row_math
from tf_ftrl.optimizers._fused_optimizer import FusedOptimizer, constructor_arguments


@keras.saving.register_keras_serializable(package="tf_ftrl")
@filled
class Adagrad(FusedOptimizer):
    """Optimizer that implements Adagrad with one fused kernel per update.

    A drop-in replacement for `keras.optimizers.Adagrad` with the same arguments, defaults and
    slot variable (`accumulator`, so optimizer state saved by one restores into the other).
    {{sparse_gradients}}

    The update is TensorFlow's kernel formula (and that of the Keras 2 optimizer):
    `accum += g^2; var -= lr * g / (sqrt(accum) + epsilon)`. Keras 3's `Adagrad` puts epsilon
    inside the square root (`sqrt(accum + epsilon)`), so the two differ slightly while the
    accumulator is small compared with epsilon (with the default epsilon of 1e-7 and
    initial_accumulator_value of 0.1, by less than 2e-7 relative).

    {{differences}}
    - A learning rate of 0 (where warm-up schedules start) grows the accumulator and keeps the
      weights, as in Keras.
    - complex64 and complex128 variables, which the fused kernels do not cover, are updated
      with plain TensorFlow ops (the same math).
    {{learning_rate_checks}}

    Args:
        {{learning_rate_arg}}
        {{initial_accumulator_value_arg}}
        epsilon: A small float >= 0 added to the denominator for numerical stability. Defaults
            to `1e-7`.
        {{huge_pages_arg}}
        {{rowwise_arg}}
        {{state_dtype_arg}}
        {{keras_keyword_args}}
    """

    _spec = ADAGRAD
    # The slot lists `build` makes, in the spec's order.
    _slot_attributes = ("_accumulators",)
    _rowwise_spec = ROWWISE_ADAGRAD

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        huge_pages="auto",
        rowwise=False,
        state_dtype=None,
        stochastic_rounding=True,
        **kwargs,
    ):
        super().__init__(**constructor_arguments(locals()))

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        (self._accumulators,) = self._add_slots(var_list)

    def _rows_update(self, var, slots, grad, lr):
        (accum,) = slots
        # A per-row accumulator has a lower rank than its rows.
        rowwise = len(accum.shape) < len(var.shape)
        update = _row_math.rowwise_adagrad if rowwise else _row_math.adagrad
        return update(var, accum, grad, lr, tf.cast(self.epsilon, var.dtype))
