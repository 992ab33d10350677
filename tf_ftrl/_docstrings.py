"""The paragraphs that the optimizers' docstrings share (both front ends), written once.

A docstring names one by a line that holds only `{{name}}`, as Keras's optimizers name
`{{base_optimizer_keyword_args}}`; `filled` puts the paragraph there, indented as that line.
"""

import re
import textwrap

PARAGRAPHS = {
    # --- Keras 3 (tf_ftrl.Ftrl, tf_ftrl.Adagrad) ---
    "sparse_gradients": """\
Sparse gradients (`tf.IndexedSlices`, e.g. from `Embedding` layers) stay sparse: only the
touched rows of the variable and its slots change, duplicate indices are summed first, nothing
is densified. Under XLA (`jit_compile=True`), the same math runs as plain TensorFlow ops.""",
    "differences": """\
Where it differs from the stock optimizer:
- Repeated ids. The rows of an id that occurs several times in a batch are summed before
  the update, which is then the update of the densified gradient: one id four times with
  gradient 1 adds (4 * 1)^2 = 16 to its accumulator, where Keras's own sparse path adds
  4 * 1^2 = 4.
- Regularizers. An `embeddings_regularizer` (or any loss term on the whole table) makes the
  table's gradient dense, so every row is updated every step, as with the stock optimizer.
- XLA. Under `jit_compile=True` (and Keras's default `"auto"` on a GPU) the fused kernels
  cannot run: the same math runs as plain TensorFlow ops, with a warning once per process.
  Compile with `jit_compile=False` for the fused kernels.""",
    "learning_rate_arg": """\
learning_rate: A float, a `keras.optimizers.schedules.LearningRateSchedule` instance,
    or a callable that takes no arguments and returns the value to use. Defaults to
    `0.001`.""",
    "keras_keyword_args": """\
weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name: as for
    every Keras optimizer (see `keras.optimizers.Optimizer`). Clipping and
    `loss_scale_factor` keep sparse gradients sparse and treat them as their densified
    form (norms and clipping see duplicate indices summed).""",
    # --- Keras 2 (tf_ftrl.legacy.Ftrl, tf_ftrl.legacy.Adagrad) ---
    "legacy_learning_rate_arg": """\
learning_rate: A float, a `Tensor`, a callable returning one, or a
    `tf_keras.optimizers.schedules.LearningRateSchedule`. Defaults to `0.001`.""",
    "legacy_keyword_args": """\
**kwargs: `clipnorm`, `clipvalue`, `global_clipnorm`, `decay` (inverse-time decay of the
    learning rate per iteration) and the deprecated `lr` (an alias of `learning_rate`), as
    for every `OptimizerV2`.""",
    # --- both front ends ---
    "learning_rate_checks": """\
A constant learning rate must be finite and >= 0 (a `ValueError` otherwise); a schedule or
callable that gives a negative or non-finite one fails at that step, naming it and the step.""",
    "ftrl_update": """\
Update for each element, with n the accumulator, z the linear slot and p = -lr_power:
`n' = n + g^2`, `z += g + 2 * l2_shrinkage * w - (n'^p - n^p) / lr * w`,
`w = (sign(z) * l1 - z) / (n'^p / lr + 2 * l2')` if `|z| > l1` else 0,
where `l2' = l2 + beta / (2 * lr)`.""",
    "learning_rate_power_arg": """\
learning_rate_power: A float <= 0. Controls how the learning rate decreases during
    training; 0 means a fixed learning rate. Defaults to `-0.5` (a faster sqrt path).""",
    "initial_accumulator_value_arg": """\
initial_accumulator_value: The starting value of the accumulators, >= 0. Defaults to
    `0.1`.""",
    "ftrl_args": """\
l1_regularization_strength: A float >= 0. Defaults to `0.0`.
l2_regularization_strength: A float >= 0 (the stabilising L2 of the paper). Defaults to
    `0.0`.
l2_shrinkage_regularization_strength: A float >= 0, an L2 penalty on the weights' size
    added to the gradient; with sparse gradients it applies to the touched rows only.
    Defaults to `0.0`.
beta: A float, the beta of the paper, folded into L2 as `beta / (2 * lr)`. Defaults to
    `0.0`.""",
    "multiply_linear_by_lr_arg": """\
multiply_linear_by_lr: If True, the `linear` slot stores `lr` times its usual value (the
    kernel's variant, better behaved when the learning rate changes). The slots are then
    not interchangeable with the stock optimizer's. Defaults to `False`.""",
    "huge_pages_arg": """\
huge_pages: `"auto"` (the default), True or False. The first step of each process
    (a resumed training's too) asks Linux to back variables and their slots with
    transparent huge pages (`tf_ftrl.huge_pages.advise_huge_pages`): with True all of
    them, with `"auto"` those of 16 MiB or more (`tf_ftrl.huge_pages.AUTO_MIN_BYTES`) and
    all their slots (a row-wise accumulator is read at the same rows as its table), with
    False none. Sparse updates of large embedding tables then need far fewer page walks
    (20-25% faster on 2M x 64 tables here). CPU variables only (a parameter server's too);
    values never change.""",
    "rowwise_arg": """\
rowwise: If True, variables of rank 2 and more (embedding tables, kernels) keep one
    accumulator value per row instead of one per element: the row's accumulator grows
    by the mean of the row's squared gradient (duplicate ids summed first), and every
    element of the row steps with it (`tf_ftrl.ops.apply_rowwise_*`). The accumulator
    then has shape `[rows]`. Rank-1 variables keep element-wise state. A list of regular
    expressions instead (e.g. `["embedding"]`) makes row-wise only the variables of rank 2
    and more whose path (Keras 3; tf_keras: name) one of them finds (`re.search`): the
    embedding tables, not the dense kernels. Defaults to `False`.""",
    "warm_start": """\
Warm start. FTRL computes the weights from its `linear` slot z, so a variable's own values
(pretrained, loaded, set) are lost on the first update of each row, which recomputes it from
`z = 0` (a zero gradient sets it to 0). With `warm_start=True`, each variable's z starts
where the closed form gives back its values: `z = -(w * sigma + sign(w) * l1)`,
`sigma = n^p / lr + 2 * l2'` (z = 0 where w = 0; with `multiply_linear_by_lr`, lr * z),
with the accumulator n and the learning rate of the next step (a schedule at 0 there: its
first positive value within 1,000 steps; never 0: a `ValueError`). A step with a zero
gradient (and no `l2_shrinkage`) then leaves the weights unchanged: most float32 elements
exactly, the others within 1 ulp (plus |z|'s ulp / sigma where l1 > 0); with a 16-bit
`state_dtype`, within z's rounding, |w| + l1 / sigma times 2^-8 (bfloat16) or 2^-11
(float16). The weights are consistent with the warm-start learning rate: a later step at
another rate recomputes a touched row with that rate (without `multiply_linear_by_lr`
and with l1 = l2 = beta = 0, w becomes w * lr_new / lr_old), as for any FTRL state.
`warm_start_linear()` does the same for variables already built (after loading weights),
with their current accumulators. A checkpoint restore overwrites the linear slot.""",
    "warm_start_arg": """\
warm_start: If True, the `linear` slot starts from the variables' values when the slots
    are created (see "Warm start" above), so that pretrained weights survive their first
    update. Defaults to `False`.""",
    "state_dtype_arg": """\
state_dtype: None (the default: the state has each variable's dtype), `"bfloat16"` or
    `"float16"`: the slots of float32 variables are stored in that dtype, halving the
    state's memory (with `rowwise=True`, FTRL keeps about 2.06 bytes of state per
    parameter at 64 per row instead of 8). The math stays float32, with one rounding per
    store. A saved float32 state restores into it (rounded) and back.
stochastic_rounding: With `state_dtype`, round each stored value up or down at random,
    with the probability of its distance (deterministic: the bits depend on the variable's
    name, the step and the element's position, the same on CPU and GPU). An accumulator
    rounded to nearest stops growing once its updates fall below half its step, which
    bfloat16's 8 bits reach within a few hundred updates of a row. Defaults to `True`.
    (The plain TensorFlow path, inside XLA where the fused ops are not lowered and in
    `stateless_apply`, rounds with the same bits.)""",
}

_PLACEHOLDER = re.compile(r"^( *)\{\{(\w+)\}\}$", re.MULTILINE)


def fill(docstring):
    """`docstring` with each `{{name}}` line replaced by `PARAGRAPHS[name]` at its indent."""
    return _PLACEHOLDER.sub(
        lambda match: textwrap.indent(PARAGRAPHS[match.group(2)], match.group(1)), docstring)


def filled(cls):
    """Class decorator: fills in the class's docstring (absent under `python -OO`)."""
    if cls.__doc__:
        cls.__doc__ = fill(cls.__doc__)
    return cls
