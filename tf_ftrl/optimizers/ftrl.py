"""`tf_ftrl.Ftrl`: Keras 3's FTRL optimizer on the fused kernels."""

import keras
import tensorflow as tf

from tf_ftrl import ops
from tf_ftrl._arguments import ftrl_l2, reject_complex
from tf_ftrl._specs import FTRL
from tf_ftrl.optimizers import _row_math
from tf_ftrl.optimizers._fused_optimizer import FusedOptimizer


@keras.saving.register_keras_serializable(package="tf_ftrl")
class Ftrl(FusedOptimizer):
    """Optimizer that implements FTRL-Proximal with one fused kernel per update.

    A drop-in replacement for `keras.optimizers.Ftrl`: the same arguments, defaults, errors,
    slot variables (`accumulator`, `linear`, in the same order, so optimizer state saved by one
    restores into the other) and the same update, computed by one fused op per variable. Sparse
    gradients (`tf.IndexedSlices`, e.g. from `Embedding` layers) stay sparse: only the touched
    rows of the variable and its slots change, duplicate indices are summed first, nothing is
    densified. Under XLA (`jit_compile=True`), the same math runs as plain TensorFlow ops.

    Update for each element, with n the accumulator, z the linear slot and p = -lr_power:
    `n' = n + g^2`, `z += g + 2 * l2_shrinkage * w - (n'^p - n^p) / lr * w`,
    `w = (sign(z) * l1 - z) / (n'^p / lr + 2 * l2')` if `|z| > l1` else 0,
    where `l2' = l2 + beta / (2 * lr)`.

    Where it differs from the stock optimizer:
    - Repeated ids. The rows of an id that occurs several times in a batch are summed before
      the update, which is then the update of the densified gradient: one id four times with
      gradient 1 adds (4 * 1)^2 = 16 to its accumulator, where Keras's own sparse path adds
      4 * 1^2 = 4.
    - Regularizers. An `embeddings_regularizer` (or any loss term on the whole table) makes the
      table's gradient dense, so every row is updated every step, as with the stock optimizer.
    - XLA. Under `jit_compile=True` (and Keras's default `"auto"` on a GPU) the fused kernels
      cannot run: the same math runs as plain TensorFlow ops, with a warning once per process.
      Compile with `jit_compile=False` for the fused kernels.
    - A learning rate of 0 (where warm-up schedules start) skips the step: the variable and
      both slots keep their values (the formula divides by the learning rate; stock Keras
      writes NaN).
    A constant learning rate must be finite and >= 0 (a `ValueError` otherwise); a schedule or
    callable that gives a negative or non-finite one fails at that step, naming it and the step.

    Args:
        learning_rate: A float, a `keras.optimizers.schedules.LearningRateSchedule` instance,
            or a callable that takes no arguments and returns the value to use. Defaults to
            `0.001`.
        learning_rate_power: A float <= 0. Controls how the learning rate decreases during
            training; 0 means a fixed learning rate. Defaults to `-0.5` (a faster sqrt path).
        initial_accumulator_value: The starting value of the accumulators, >= 0. Defaults to
            `0.1`.
        l1_regularization_strength: A float >= 0. Defaults to `0.0`.
        l2_regularization_strength: A float >= 0 (the stabilising L2 of the paper). Defaults to
            `0.0`.
        l2_shrinkage_regularization_strength: A float >= 0, an L2 penalty on the weights' size
            added to the gradient; with sparse gradients it applies to the touched rows only.
            Defaults to `0.0`.
        beta: A float, the beta of the paper, folded into L2 as `beta / (2 * lr)`. Defaults to
            `0.0`.
        multiply_linear_by_lr: If True, the `linear` slot stores `lr` times its usual value (the
            kernel's variant, better behaved when the learning rate changes). The slots are then
            not interchangeable with `keras.optimizers.Ftrl`'s. Defaults to `False`.
        huge_pages: If True, the first step asks Linux to back each variable and its slots with
            transparent huge pages (`tf_ftrl.ops.advise_huge_pages`): sparse updates of large
            embedding tables then need far fewer page walks (20-25% faster on 2M x 64 tables
            here). CPU variables only; values do not change. Defaults to `False`.
        weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name: as for
            every Keras optimizer (see `keras.optimizers.Optimizer`). Clipping and
            `loss_scale_factor` keep sparse gradients sparse and treat them as their densified
            form (norms and clipping see duplicate indices summed).
    """

    _spec = FTRL

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
        huge_pages=False,
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

    def _fused_update(self, var, slots, grad, indices, lr):
        accum, linear = slots
        hyper = self._hyperparameters(lr)
        if indices is None:
            ops.apply_ftrl(var, accum, linear, grad,
                           multiply_linear_by_lr=self.multiply_linear_by_lr, **hyper)
        else:
            ops.sparse_apply_ftrl(var, accum, linear, grad, indices,
                                  multiply_linear_by_lr=self.multiply_linear_by_lr, **hyper)

    def _rows_update(self, var, slots, grad, lr):
        accum, linear = slots
        new = _row_math.ftrl(var, accum, linear, grad,
                             multiply_linear_by_lr=self.multiply_linear_by_lr,
                             **self._hyperparameters(lr))
        # A step at lr 0 changes nothing, as in the fused ops.
        return tuple(tf.where(lr > 0, n, old) for n, old in zip(new, (var, accum, linear)))

    def get_config(self):
        config = super().get_config()
        config["multiply_linear_by_lr"] = self.multiply_linear_by_lr
        return config
