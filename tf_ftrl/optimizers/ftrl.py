"""`tf_ftrl.Ftrl`: Keras 3's FTRL optimizer on the fused kernels."""

import keras
import tensorflow as tf

from tf_ftrl._arguments import ftrl_l2, reject_complex
from tf_ftrl._docstrings import filled
from tf_ftrl._specs import FTRL, ROWWISE_FTRL
from tf_ftrl.optimizers import _row_math
from tf_ftrl.optimizers._fused_optimizer import FusedOptimizer


@keras.saving.register_keras_serializable(package="tf_ftrl")
@filled
class Ftrl(FusedOptimizer):
    """Optimizer that implements FTRL-Proximal with one fused kernel per update.

    A drop-in replacement for `keras.optimizers.Ftrl`: the same arguments, defaults, errors,
    slot variables (`accumulator`, `linear`, in the same order, so optimizer state saved by one
    restores into the other) and the same update, computed by one fused op per variable.
    {{sparse_gradients}}

    {{ftrl_update}}

    {{differences}}
    - A learning rate of 0 (where warm-up schedules start) skips the step: the variable and
      both slots keep their values (the formula divides by the learning rate; stock Keras
      writes NaN).
    {{learning_rate_checks}}

    Args:
        {{learning_rate_arg}}
        {{learning_rate_power_arg}}
        {{initial_accumulator_value_arg}}
        {{ftrl_args}}
        {{multiply_linear_by_lr_arg}}
        {{huge_pages_arg}}
        {{rowwise_arg}}
        {{state_dtype_arg}}
        {{keras_keyword_args}}
    """

    _spec = FTRL
    _rowwise_spec = ROWWISE_FTRL

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        multiply_linear_by_lr=False,
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
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            huge_pages=huge_pages,
            rowwise=rowwise,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            **kwargs,
        )
        self._set_arguments(
            learning_rate_power=learning_rate_power,
            initial_accumulator_value=initial_accumulator_value,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
            beta=beta,
        )
        self.multiply_linear_by_lr = multiply_linear_by_lr

    def build(self, var_list):
        if self.built:
            return
        reject_complex("Ftrl", var_list)
        super().build(var_list)
        self._accumulators, self._linears = self._add_slots(var_list)

    def _slots(self, variable):
        index = self._get_variable_index(variable)
        return [self._accumulators[index], self._linears[index]]

    def _hyperparameters(self, lr):
        hyper = self._op_values(lr)
        hyper["l2"] = ftrl_l2(hyper["l2"], self.beta, lr)
        return hyper

    def _fused_update(self, var, slots, grad, indices, lr, rounding):
        accum, linear = slots
        tensors = (var, accum, linear, grad) + (() if indices is None else (indices,))
        self._op(var, indices is not None)(*tensors, **self._hyperparameters(lr),
                                           multiply_linear_by_lr=self.multiply_linear_by_lr,
                                           stochastic_rounding=rounding)

    def _rows_update(self, var, slots, grad, lr):
        accum, linear = slots
        update = _row_math.rowwise_ftrl if self._is_rowwise(var) else _row_math.ftrl
        new = update(var, accum, linear, grad,
                             multiply_linear_by_lr=self.multiply_linear_by_lr,
                             **self._hyperparameters(lr))
        # A step at lr 0 changes nothing, as in the fused ops.
        return tuple(tf.where(lr > 0, n, old) for n, old in zip(new, (var, accum, linear)))

    def get_config(self):
        config = super().get_config()
        config["multiply_linear_by_lr"] = self.multiply_linear_by_lr
        return config
