"""`tf_ftrl.legacy.Ftrl`: tf_keras's legacy FTRL optimizer on the fused kernels."""

import tensorflow as tf
import tf_keras

from tf_ftrl import _warm_start, ops
from tf_ftrl._arguments import check_arguments, ftrl_l2, reject_complex
from tf_ftrl._docstrings import filled
from tf_ftrl._specs import FTRL, ROWWISE_FTRL
from tf_ftrl.legacy._fused_optimizer_v2 import FusedOptimizerV2


@tf_keras.saving.register_keras_serializable(package="tf_ftrl")
@filled
class Ftrl(FusedOptimizerV2):
    """Optimizer that implements FTRL-Proximal with one fused kernel per update (Keras 2).

    A drop-in replacement for `tf_keras.optimizers.legacy.Ftrl` (an `OptimizerV2`): the same
    arguments, defaults, errors, slot variables (`accumulator`, `linear`: checkpoints written by
    one restore into the other) and update. Dense gradients go to `tf_ftrl.ops.apply_ftrl`,
    `tf.IndexedSlices` (e.g. from `Embedding` layers) to `tf_ftrl.ops.sparse_apply_ftrl`, which
    updates only the touched rows and sums duplicate indices in the kernel (tf_keras's own Ftrl
    sums them with `tf.unique` and a segment sum first; the results agree). It also takes
    `multiply_linear_by_lr`, as `tf_ftrl.Ftrl` and TensorFlow's `ResourceApplyFtrlV2` do.

    {{ftrl_update}}

    A step at learning rate 0 (where warm-up schedules start) changes nothing: FTRL divides by
    the learning rate (tf_keras's own Ftrl fails there). Complex variables are rejected by name.
    {{learning_rate_checks}}

    {{warm_start}}

    Args:
        {{legacy_learning_rate_arg}}
        {{learning_rate_power_arg}}
        {{initial_accumulator_value_arg}}
        {{ftrl_args}}
        {{multiply_linear_by_lr_arg}}
        name: The name prefix of the optimizer's variables and ops. Defaults to `"Ftrl"`.
        {{huge_pages_arg}}
        {{rowwise_arg}}
        {{state_dtype_arg}}
        {{warm_start_arg}}
        {{legacy_keyword_args}}
            tf_keras's own Ftrl accepts `lr` but ignores it.
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
        name="Ftrl",
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        multiply_linear_by_lr=False,
        warm_start=False,
        **kwargs,
    ):
        super().__init__(name, learning_rate, initial_accumulator_value, **kwargs)
        check_arguments(FTRL, dict(
            initial_accumulator_value=initial_accumulator_value,
            learning_rate_power=learning_rate_power,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
            beta=beta))
        # As tf_keras's Ftrl keeps them (its checkpoints hold the hyperparameters' variables): the
        # others as attributes `_<name>`.
        self._set_hyper("learning_rate_power", learning_rate_power)
        self._set_hyper("l1_regularization_strength", l1_regularization_strength)
        self._set_hyper("l2_regularization_strength", l2_regularization_strength)
        self._set_hyper("beta", beta)
        self._l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength
        self._multiply_linear_by_lr = bool(multiply_linear_by_lr)
        self.warm_start = bool(warm_start)

    def _create_slots(self, var_list):
        reject_complex("Ftrl", var_list)
        super()._create_slots(var_list)

    def add_slot(self, var, slot_name, initializer="zeros", shape=None):
        # With warm_start, the linear slot that _create_slots makes (after the accumulator)
        # starts from var's values; one a checkpoint restore makes keeps its initializer.
        if self.warm_start and slot_name == "linear" and isinstance(initializer, str):
            def initializer(shape, dtype=None, **_):
                return self._warm_linear(var, self.get_slot(var, "accumulator"), dtype)
        return super().add_slot(var, slot_name, initializer, shape=shape)

    def warm_start_linear(self, var_list=None):
        """Sets the `linear` slot of each variable of `var_list` (the model's variables, e.g.
        `model.trainable_variables`) so that FTRL's closed form gives back the variable's current
        values, with its current accumulator and the current learning rate.

        For variables already built, e.g. after loading pretrained weights into a model that has
        trained before (`warm_start=True` does this when the slots are created). Runs eagerly.
        """
        if var_list is None:
            raise ValueError("`warm_start_linear()` needs the variables whose slots to set (an "
                             "OptimizerV2 keeps no list of them): pass "
                             "var_list=model.trainable_variables.")
        _warm_start.require_eager()
        for var in var_list:
            linear = self.get_slot(var, "linear")
            linear.assign(self._warm_linear(var, self.get_slot(var, "accumulator"),
                                            linear.dtype))

    def _warm_linear(self, var, accum, dtype):
        """The linear slot (in dtype) that gives back var's current values (`_warm_start`)."""
        var_dtype = var.dtype.base_dtype
        lr = tf.cast(self._warm_start_learning_rate(var_dtype), var_dtype)
        hyperparameters = dict(self._ftrl_coefficients(var_dtype, lr), lr=lr)
        return _warm_start.linear_for(tf.convert_to_tensor(var), tf.convert_to_tensor(accum),
                                      hyperparameters, self._multiply_linear_by_lr, dtype,
                                      var.name)

    def _warm_start_learning_rate(self, var_dtype):
        learning_rate = self._get_hyper("learning_rate", var_dtype)
        schedule = isinstance(learning_rate,
                              tf_keras.optimizers.schedules.LearningRateSchedule)

        def rate_at(step):
            # _decayed_lr's, at a given step.
            if not schedule and step == int(self.iterations.numpy()):
                return self._decayed_lr(var_dtype)
            step = tf.cast(step, var_dtype)
            rate = tf.cast(learning_rate(step), var_dtype)
            if self._initial_decay > 0.0:
                rate = rate / (1.0 + tf.cast(self._initial_decay, var_dtype) * step)
            return rate

        return _warm_start.learning_rate(rate_at, int(self.iterations.numpy()), schedule)

    def _ftrl_coefficients(self, var_dtype, lr):
        """{op input: value} for the fused op's scalar inputs but lr, at learning rate lr."""
        coefficients = {}
        for argument in FTRL.arguments:
            if argument.op_input:
                coefficients[argument.op_input] = (
                    tf.identity(self._get_hyper(argument.name, var_dtype))
                    if argument.name in self._hyper
                    else tf.cast(getattr(self, "_" + argument.name), var_dtype))
        # beta enters only through L2, as in tf_keras's Ftrl and the kernels' math.
        coefficients["l2"] = ftrl_l2(coefficients["l2"], self._get_hyper("beta", var_dtype), lr)
        return coefficients

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        coefficients = apply_state[(var_device, var_dtype)]
        coefficients.update(self._ftrl_coefficients(var_dtype, coefficients["lr_t"]))

    def _flag_keywords(self):
        return {"multiply_linear_by_lr": self._multiply_linear_by_lr}

    def _fused_apply_dense(self, grad, var, apply_state):
        return self._op(var, False)(var, self.get_slot(var, "accumulator"),
                                    self.get_slot(var, "linear"), grad,
                                    **self._op_values(var, apply_state),
                                    multiply_linear_by_lr=self._multiply_linear_by_lr,
                                    use_locking=self._use_locking)

    def _fused_apply_sparse(self, grad, var, indices, apply_state):
        return self._op(var, True)(var, self.get_slot(var, "accumulator"),
                                   self.get_slot(var, "linear"), grad, indices,
                                   **self._op_values(var, apply_state),
                                   multiply_linear_by_lr=self._multiply_linear_by_lr,
                                   use_locking=self._use_locking)

    def get_config(self):
        config = super().get_config()
        config.update({argument.name: self._serialize_hyperparameter(argument.name)
                       if argument.name in self._hyper else getattr(self, "_" + argument.name)
                       for argument in FTRL.arguments})
        # Only when set, so that the default config stays tf_keras's own.
        if self._multiply_linear_by_lr:
            config["multiply_linear_by_lr"] = True
        if self.warm_start:
            config["warm_start"] = True
        return config
