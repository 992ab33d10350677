"""`tf_ftrl.Ftrl`: Keras 3's FTRL optimizer on the fused kernels."""

import contextlib

import keras
import tensorflow as tf

from tf_ftrl import _warm_start
from tf_ftrl._arguments import ftrl_l2, reject_complex
from tf_ftrl._docstrings import filled
from tf_ftrl._specs import FTRL, ROWWISE_FTRL
from tf_ftrl.optimizers import _row_math
from tf_ftrl.optimizers._fused_optimizer import (FusedOptimizer, constructor_arguments,
                                                 tf_variable)


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

    {{warm_start}}

    Args:
        {{learning_rate_arg}}
        {{learning_rate_power_arg}}
        {{initial_accumulator_value_arg}}
        {{ftrl_args}}
        {{multiply_linear_by_lr_arg}}
        {{huge_pages_arg}}
        {{rowwise_arg}}
        {{state_dtype_arg}}
        {{warm_start_arg}}
        {{keras_keyword_args}}
    """

    _spec = FTRL
    # The slot lists `build` makes, in the spec's order.
    _slot_attributes = ("_accumulators", "_linears")
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
        warm_start=False,
        **kwargs,
    ):
        super().__init__(**constructor_arguments(
            locals(), but=("multiply_linear_by_lr", "warm_start")))
        self.multiply_linear_by_lr = multiply_linear_by_lr
        self.warm_start = bool(warm_start)

    def build(self, var_list):
        if self.built:
            return
        reject_complex("Ftrl", var_list)
        # `warm_start`'s linear slots start from the variables' values, read eagerly. Made inside
        # a step being traced (Keras builds the optimizer at the first step where no strategy
        # built it before), their initializers capture those values, which a step compiled with
        # XLA (jit_compile=True) cannot lift out of the function: they are made outside it, as
        # a build before the first step makes them.
        outside = (self.warm_start and tf.inside_function()
                   and not tf.distribute.has_strategy())
        with tf.init_scope() if outside else contextlib.nullcontext():
            super().build(var_list)
            self._accumulators, self._linears = self._add_slots(
                var_list, self._warm_start_initializers if self.warm_start else None)

    def _warm_start_initializers(self, var, initializers):
        """var's slot initializers with `warm_start`: the linear slot from var's values. The
        accumulator starts at a constant, which the initializer's value at shape () holds."""
        accumulator, _ = initializers
        state_dtype = self._state_dtype_for(var.dtype)

        def linear(shape, dtype=None):
            with tf.init_scope():
                return self._warm_linear(var, accumulator((), dtype=state_dtype), dtype)

        return [accumulator, linear]

    def warm_start_linear(self, var_list=None):
        """Sets the `linear` slot of each variable of `var_list` (default: every variable the
        optimizer was built with) so that FTRL's closed form gives back the variable's current
        values, with its current accumulator and the current learning rate.

        For variables already built, e.g. after loading pretrained weights into a model that has
        trained before (`warm_start=True` does this when the slots are created). Runs eagerly.
        """
        if not self.built:
            raise ValueError("`warm_start_linear()` sets the slots of a built optimizer: build it "
                             "first (`optimizer.build(model.trainable_variables)`).")
        _warm_start.require_eager()
        for var in self._trainable_variables if var_list is None else var_list:
            index = self._get_variable_index(var)
            linear = self._linears[index]
            if linear is not None:
                accum = tf.convert_to_tensor(tf_variable(self._accumulators[index]))
                linear.assign(self._warm_linear(var, accum, linear.dtype))

    def _warm_linear(self, var, accum, dtype):
        """The linear slot (in dtype) that gives back var's current values (`_warm_start`),
        computed eagerly (slots made inside a `tf.function` are initialized outside it)."""
        with tf.init_scope():
            var_value = tf.convert_to_tensor(tf_variable(var))
            lr = tf.cast(self._warm_start_learning_rate(), var_value.dtype)
            return _warm_start.linear_for(
                var_value, tf.convert_to_tensor(accum), self._hyperparameters(lr),
                self.multiply_linear_by_lr, dtype, getattr(var, "path", None) or var.name)

    def _warm_start_learning_rate(self):
        schedule = isinstance(self._learning_rate,
                              keras.optimizers.schedules.LearningRateSchedule)
        step = int(self.iterations.numpy())
        return _warm_start.learning_rate(
            lambda at: self._learning_rate(at) if schedule else self._get_current_learning_rate(),
            step, schedule)

    def _hyperparameters(self, lr):
        hyper = self._op_values(lr)
        hyper["l2"] = ftrl_l2(hyper["l2"], self.beta, lr)
        return hyper

    def _op_keywords(self, lr):
        return dict(self._hyperparameters(lr), multiply_linear_by_lr=self.multiply_linear_by_lr)

    def _rows_update(self, var, slots, grad, lr):
        accum, linear = slots
        # A per-row accumulator has a lower rank than its rows.
        rowwise = len(accum.shape) < len(var.shape)
        update = _row_math.rowwise_ftrl if rowwise else _row_math.ftrl
        new = update(var, accum, linear, grad,
                             multiply_linear_by_lr=self.multiply_linear_by_lr,
                             **self._hyperparameters(lr))
        # A step at lr 0 changes nothing, as in the fused ops.
        return tuple(tf.where(lr > 0, n, old) for n, old in zip(new, (var, accum, linear)))

    def get_config(self):
        config = super().get_config()
        config["multiply_linear_by_lr"] = self.multiply_linear_by_lr
        config["warm_start"] = self.warm_start
        return config
