"""`tf_ftrl.legacy.Ftrl`: tf_keras's legacy FTRL optimizer on the fused kernels."""

import tensorflow as tf
import tf_keras

from tf_ftrl import ops
from tf_ftrl._arguments import check_arguments, ftrl_l2, reject_complex
from tf_ftrl._specs import FTRL
from tf_ftrl.legacy._fused_optimizer_v2 import FusedOptimizerV2


@tf_keras.saving.register_keras_serializable(package="tf_ftrl")
class Ftrl(FusedOptimizerV2):
    """Optimizer that implements FTRL-Proximal with one fused kernel per update (Keras 2).

    A drop-in replacement for `tf_keras.optimizers.legacy.Ftrl` (an `OptimizerV2`): the same
    arguments, defaults, errors, slot variables (`accumulator`, `linear`: checkpoints written by
    one restore into the other) and update. Dense gradients go to `tf_ftrl.ops.apply_ftrl`,
    `tf.IndexedSlices` (e.g. from `Embedding` layers) to `tf_ftrl.ops.sparse_apply_ftrl`, which
    updates only the touched rows and sums duplicate indices in the kernel (tf_keras's own Ftrl
    sums them with `tf.unique` and a segment sum first; the results agree).

    Update for each element, with n the accumulator, z the linear slot and p = -lr_power:
    `n' = n + g^2`, `z += g + 2 * l2_shrinkage * w - (n'^p - n^p) / lr * w`,
    `w = (sign(z) * l1 - z) / (n'^p / lr + 2 * l2')` if `|z| > l1` else 0,
    where `l2' = l2 + beta / (2 * lr)`.

    A step at learning rate 0 (where warm-up schedules start) changes nothing: FTRL divides by
    the learning rate (tf_keras's own Ftrl fails there). Complex variables are rejected by name.

    Args:
      learning_rate: A float, a `Tensor`, a callable returning one, or a
        `tf_keras.optimizers.schedules.LearningRateSchedule`. Defaults to `0.001`.
      learning_rate_power: A float <= 0. Controls how the learning rate decreases during
        training; 0 means a fixed learning rate. Defaults to `-0.5`.
      initial_accumulator_value: The starting value of the accumulators, >= 0. Defaults to
        `0.1`.
      l1_regularization_strength: A float >= 0. Defaults to `0.0`.
      l2_regularization_strength: A float >= 0 (the stabilising L2 of the paper). Defaults to
        `0.0`.
      name: The name prefix of the optimizer's variables and ops. Defaults to `"Ftrl"`.
      l2_shrinkage_regularization_strength: A float >= 0, an L2 penalty on the weights' size
        added to the gradient; with sparse gradients it applies to the touched rows only.
        Defaults to `0.0`.
      beta: A float, the beta of the paper, folded into L2 as `beta / (2 * lr)`. Defaults to
        `0.0`.
      huge_pages: If True, the first step asks Linux to back each variable and its slots with
        transparent huge pages (`tf_ftrl.ops.advise_huge_pages`; CPU variables, parameter
        servers' included): sparse updates of large tables then need fewer page walks. Defaults
        to `False`.
      **kwargs: `clipnorm`, `clipvalue`, `global_clipnorm`, `decay` (inverse-time decay of the
        learning rate per iteration) and the deprecated `lr` (an alias of `learning_rate`, which
        tf_keras's own Ftrl accepts but ignores), as for every `OptimizerV2`.
    """

    _spec = FTRL

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

    def _create_slots(self, var_list):
        reject_complex("Ftrl", var_list)
        super()._create_slots(var_list)

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        coefficients = apply_state[(var_device, var_dtype)]
        for argument in FTRL.arguments:
            if argument.op_input:
                coefficients[argument.op_input] = (
                    tf.identity(self._get_hyper(argument.name, var_dtype))
                    if argument.name in self._hyper
                    else tf.cast(getattr(self, "_" + argument.name), var_dtype))
        # beta enters only through L2, as in tf_keras's Ftrl and the kernels' math.
        coefficients["l2"] = ftrl_l2(coefficients["l2"], self._get_hyper("beta", var_dtype),
                                     coefficients["lr_t"])

    def _fused_apply_dense(self, grad, var, apply_state):
        return ops.apply_ftrl(var, self.get_slot(var, "accumulator"),
                              self.get_slot(var, "linear"), grad,
                              **self._op_values(var, apply_state),
                              use_locking=self._use_locking)

    def _fused_apply_sparse(self, grad, var, indices, apply_state):
        return ops.sparse_apply_ftrl(var, self.get_slot(var, "accumulator"),
                                     self.get_slot(var, "linear"), grad, indices,
                                     **self._op_values(var, apply_state),
                                     use_locking=self._use_locking)

    def get_config(self):
        config = super().get_config()
        config.update({argument.name: self._serialize_hyperparameter(argument.name)
                       if argument.name in self._hyper else getattr(self, "_" + argument.name)
                       for argument in FTRL.arguments})
        return config
