"""What tf_ftrl's Keras optimizers share: keeping sparse gradients sparse through Keras's
gradient processing, routing each update to a fused op (or to plain TF ops under XLA), and the
slot accessors of the older optimizer API."""

import threading
import warnings

import keras
import numpy as np
import tensorflow as tf

# Keras's stateless machinery has no public entry points for a TensorFlow-backend optimizer:
# the TF backend refuses stateless_apply, so ours runs the backend-independent implementation and
# needs to know when it is inside its StatelessScope.
from keras.src import backend
from keras.src.backend.common.stateless_scope import in_stateless_scope
from keras.src.optimizers.base_optimizer import BaseOptimizer

from tf_ftrl import ops
from tf_ftrl._arguments import (check_arguments, check_learning_rate, checked_learning_rate,
                                describe_learning_rate)
from tf_ftrl._slot_conversion import cast_message, convert_slot, converted_message
from tf_ftrl._slot_conversion import converting
from tf_ftrl._optimizer_common import (SpecDispatch, checked_rowwise, checked_state_dtype,
                                       checked_stochastic_rounding,
                                       in_xla_context, rowwise_config,
                                       rows_update_in_state_dtype, sparse_index_check,
                                       stochastic_places)
from tf_ftrl._update_log import UpdateLog
from tf_ftrl import huge_pages as _huge_pages
from tf_ftrl.huge_pages import advise_in_step


def constructor_arguments(arguments, but=()):
    """A subclass constructor's `locals()` as keyword arguments for `FusedOptimizer.__init__`:
    every argument (and what `**kwargs` holds) but `self` and the names in `but`, which the
    subclass keeps itself."""
    keywords = {name: value for name, value in arguments.items()
                if name not in ("self", "__class__", "kwargs") and name not in but}
    keywords.update(arguments.get("kwargs", {}))
    return keywords


def tf_variable(variable):
    """The tf.Variable behind a Keras variable (this replica's under tf.distribute)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _in_mirrored_replica():
    """Whether this runs in a replica of a strategy that keeps a copy of every variable on each
    replica (MirroredStrategy, MultiWorkerMirroredStrategy): there a variable's `handle` is the
    replica's own copy."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return False
    return isinstance(tf.distribute.get_strategy(),
                      (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def _read_local(variable):
    """The value of this replica's copy of `variable`."""
    return tf.raw_ops.ReadVariableOp(resource=variable.handle, dtype=variable.dtype)


def _xla_lowers(spec, var, state_dtype, multi=False):
    """Whether `spec`'s fused op (with `multi`, its multi-tensor op) on `var` runs inside XLA, as
    a custom call: the lowering is there for its dtypes, and the update is compiled for the CPU
    (XLA's host platform; on a GPU the op has no XLA kernel)."""
    if not ops.has_xla_lowering(spec, var.dtype, state_dtype, multi):
        return False
    device_type = tf.DeviceSpec.from_string(var.device or "").device_type
    if device_type is None:
        # Unplaced: TensorFlow puts it on a GPU when there is one.
        return not tf.config.list_logical_devices("GPU")
    return device_type == "CPU"


_xla_warned = set()
_xla_warned_lock = threading.Lock()


def _warn_once_about_xla(optimizer_name):
    with _xla_warned_lock:
        if optimizer_name in _xla_warned:
            return
        _xla_warned.add(optimizer_name)
    warnings.warn(
        f"tf_ftrl.{optimizer_name} is running inside XLA (`jit_compile=True`, or Keras's "
        f"default `jit_compile=\"auto\"` on a GPU), where its fused kernels cannot run: the "
        f"update runs as plain TensorFlow ops instead, sparse updates too, with the same math "
        f"but not the fused kernels' speed. Pass `jit_compile=False` to `model.compile` (or "
        f"leave `tf.function` uncompiled) to use the fused kernels.", stacklevel=3)


def _duplicate_runs(indices):
    """Groups equal indices with static shapes only (tf.unique's output has a data-dependent
    shape, which XLA cannot always compile): for each position, the number of its index's run and
    whether it is the run's first (lowest) position."""
    n = tf.shape(indices)[0]
    order = tf.argsort(indices, stable=True)
    sorted_indices = tf.gather(indices, order)
    starts = tf.logical_or(tf.range(n) == 0,
                           tf.not_equal(sorted_indices, tf.roll(sorted_indices, 1, axis=0)))
    run_of_sorted = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    positions = tf.expand_dims(order, 1)
    run = tf.scatter_nd(positions, run_of_sorted, [n])
    first = tf.scatter_nd(positions, tf.cast(starts, tf.int32), [n]) > 0
    return run, first, n


def _run_sums(gradient):
    run, first, n = _duplicate_runs(gradient.indices)
    sums = tf.math.unsorted_segment_sum(gradient.values, run, n)
    return tf.gather(sums, run), first


def summed_per_position(gradient):
    """Values where each position holds the sum of the rows of every position with its index:
    the densified gradient's row, once per position (duplicates' updates then agree)."""
    return _run_sums(gradient)[0]


def deduplicate(gradient):
    """The same indices with each index's rows summed into its first position and zeros at the
    others: the densified gradient's values, shapes unchanged (a sparse op still sums the zeros
    in; norms and clipping now see the densified gradient)."""
    summed, first = _run_sums(gradient)
    first = tf.reshape(first, tf.concat([[-1], tf.ones([tf.rank(summed) - 1], tf.int32)], 0))
    values = tf.where(first, summed, tf.zeros_like(summed))
    return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)


def _values(gradient):
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _with_values(gradient, values):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
    return values


def _squared_norm(gradient):
    values = _values(gradient)
    return tf.reduce_sum(tf.square(tf.cast(values, tf.float32)))


def _clip_by_norm(gradient, clip_norm, norm):
    # values * clip / max(norm, clip), as Keras clips a dense gradient.
    values = _values(gradient)
    scale = tf.cast(clip_norm, values.dtype) / tf.cast(tf.maximum(norm, clip_norm), values.dtype)
    return _with_values(gradient, values * scale)


class _UnscalableIndexedSlices(tf.IndexedSlices):
    """A sparse gradient that Keras's `apply` can unscale (`g / loss_scale_factor`), which a
    plain `tf.IndexedSlices` does not support: the result is a plain `tf.IndexedSlices`."""

    def __truediv__(self, scale):
        return tf.IndexedSlices(self.values / scale, self.indices, self.dense_shape)


class _Named:
    """A variable's name and shape, as the update log takes them."""

    def __init__(self, name, shape):
        self.name = name
        self.shape = tf.TensorShape(shape)


class FusedOptimizer(SpecDispatch, keras.optimizers.Optimizer):
    """Base of tf_ftrl's Keras 3 optimizers.

    Subclasses set `_spec` (their `_specs.OptimizerSpec`), pass their constructor's arguments
    on with `super().__init__(**constructor_arguments(locals()))`, make their slots in `build`
    (`self._accumulators, ... = self._add_slots(var_list)`, the attributes `_slot_attributes`
    names) and implement `_rows_update(...)` (the same math in plain TensorFlow ops);
    `_op_keywords` adds what the ops take besides `_spec`'s scalar inputs.
    """

    def __init__(self, *, learning_rate, huge_pages="auto", rowwise=False, state_dtype=None,
                 stochastic_rounding=True, **kwargs):
        # `_spec`'s numeric arguments are checked after Keras's own, as Keras's optimizers do.
        values = {argument.name: kwargs.pop(argument.name) for argument in self._spec.arguments}
        check_learning_rate(learning_rate)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.huge_pages = _huge_pages.checked_option(huge_pages)
        self.rowwise = checked_rowwise(rowwise)
        self.state_dtype = checked_state_dtype(state_dtype)
        self.stochastic_rounding = checked_stochastic_rounding(stochastic_rounding)
        self._update_log = UpdateLog()
        check_arguments(self._spec, values)
        for name, value in values.items():
            setattr(self, name, value)

    def get_config(self):
        config = super().get_config()
        config["huge_pages"] = self.huge_pages
        config["rowwise"] = rowwise_config(self.rowwise)
        config["state_dtype"] = self.state_dtype
        config["stochastic_rounding"] = self.stochastic_rounding
        config.update({argument.name: getattr(self, argument.name)
                       for argument in self._spec.arguments})
        return config

    def __str__(self):
        # tf_keras (tf.keras under TF_USE_LEGACY_KERAS=1) rejects a Keras 3 optimizer in
        # compile() with "Could not interpret optimizer identifier: {str(optimizer)}" and offers
        # no hook before that; the object's str() is where that message can say what to use.
        name = type(self).__name__
        return (f"<tf_ftrl.{name}: a Keras 3 optimizer; for a tf_keras (Keras 2) model, use "
                f"tf_ftrl.legacy.{name}>")

    def _op_values(self, lr):
        """{op input: value} for the fused ops' scalar inputs (`_spec.op_hyperparameters`)."""
        return self._spec.op_values(lr, lambda argument: getattr(self, argument.name))

    def _op_keywords(self, lr):
        """The fused ops' keyword arguments but stochastic_rounding (a subclass adds its flag)."""
        return self._op_values(lr)

    def _slots(self, variable):
        """variable's slot variables, in `_spec`'s order."""
        index = self._get_variable_index(variable)
        return [getattr(self, name)[index] for name in self._slot_attributes]

    def _fused_update(self, var, slots, grad, indices, lr, rounding):
        """The fused op's update of var and its slots by grad (the rows `indices`, if given)."""
        tensors = (var, *slots, grad) + (() if indices is None else (indices,))
        self._op(var, indices is not None)(*tensors, **self._op_keywords(lr),
                                           stochastic_rounding=rounding)

    def _add_slots(self, var_list, initializers_of=None):
        """One list of slot variables per slot of `_spec`, each starting at its initial value
        argument (or zeros), named as Keras's own optimizer names them (its checkpoints and ours
        interchange by those names): Keras 3.10 and later name every slot after its variable
        (`add_optimizer_variables`); before, its Ftrl and Adagrad named each accumulator plainly
        "accumulator" and only Ftrl's linear slot after its variable. `initializers_of(var,
        initializers)`, if given, gives var's slots' initializers in place of those (Ftrl's
        `warm_start`: a checkpoint's deferred restore still overwrites them)."""
        self._making_slots = True
        try:
            return self._add_slots_of(var_list, initializers_of)
        finally:
            self._making_slots = False

    # Whether the variables being made are slots (`_track_variable` gives them a converting
    # restore).
    _making_slots = False

    def _add_slots_of(self, var_list, initializers_of):
        names = self._spec.slot_names
        initializers = [keras.initializers.Constant(getattr(self, slot.initial_value))
                        if slot.initial_value else "zeros" for slot in self._spec.slots]
        if self.rowwise or self.state_dtype:
            return self._add_own_slots(var_list, initializers, initializers_of)
        if hasattr(self, "add_optimizer_variables") and initializers_of is None:
            return self.add_optimizer_variables(var_list, list(names), initializer=initializers)
        slots = tuple([] for _ in names)
        for var in var_list:
            if getattr(self, "_overwrite_variable_with_gradient", lambda v: False)(var):
                for slot_list in slots:
                    slot_list.append(None)
                continue
            var_initializers = (initializers if initializers_of is None
                                else initializers_of(var, initializers))
            for slot_list, name, initializer in zip(slots, names, var_initializers):
                if name == "accumulator" and not hasattr(self, "add_optimizer_variables"):
                    slot_list.append(self.add_variable(shape=var.shape, initializer=initializer,
                                                       dtype=var.dtype, name=name))
                else:
                    slot_list.append(self.add_variable_from_reference(var, name=name,
                                                                      initializer=initializer))
        return slots

    def _add_own_slots(self, var_list, initializers, initializers_of=None):
        """The slots with `rowwise` or `state_dtype`: named as `_add_slots` names them (Keras
        3.10's way), with one value per row for the row-wise variant's per-row slots of variables
        of rank >= 2, in the dtype of `_state_dtype_for`; `initializers_of` as there."""
        overwritten = getattr(self, "_overwrite_variable_with_gradient", lambda v: False)
        self._check_state_dtype_creatable([var for var in var_list if not overwritten(var)])
        slots = tuple([] for _ in self._spec.slots)
        for var in var_list:
            if overwritten(var):
                for slot_list in slots:
                    slot_list.append(None)
                continue
            spec = self._spec_for(var)
            prefix = (var.path.replace("/", "_") if hasattr(var, "path")
                      else str(var.name).replace("/", "_").replace(":", "_"))
            var_initializers = (initializers if initializers_of is None
                                else initializers_of(var, initializers))
            for slot_list, slot, initializer in zip(slots, spec.slots, var_initializers):
                shape = (var.shape[0],) if slot.per_row else var.shape
                slot_list.append(self.add_variable(shape=shape, initializer=initializer,
                                                   dtype=self._state_dtype_for(var.dtype),
                                                   name=f"{prefix}_{slot.name}"))
        return slots

    def apply(self, grads, trainable_variables=None):
        """Applies gradients; `tf.IndexedSlices` gradients stay sparse.

        Keras 3 densifies sparse gradients when it clips them and fails when it unscales them
        (`loss_scale_factor`). Here both happen on the sparse gradients, exactly as they would
        on their densified form: clipping sees each index's rows summed. Every index of the
        sparse gradients is checked before the step writes anything (on the CPU, outside XLA):
        a bad one fails the step with nothing changed. Nothing on the optimizer changes during
        a step: under a distribution strategy every replica runs this on the same object at
        once.
        """
        if self.loss_scale_factor is not None:
            grads = [_UnscalableIndexedSlices(g.values, g.indices, g.dense_shape)
                     if isinstance(g, tf.IndexedSlices) else g for g in grads]
        grads = list(grads)
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
            if not self.built and grads:
                # Built here, as Keras builds it, so that the slots are not made under the
                # step's control dependency below.
                with backend.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
                self.built = True
        variables = (self._trainable_variables if trainable_variables is None
                     else trainable_variables)
        check = None
        if self.built and not in_stateless_scope() and len(variables) == len(grads):
            check = sparse_index_check(
                grads, [None if v is None else tf_variable(v) for v in variables],
                [getattr(v, "path", None) or getattr(v, "name", "") for v in variables])
        if check is None:
            return super().apply(grads, trainable_variables)
        # Every write of the step (weight decay, updates, constraints, the step count) after
        # every index has been checked.
        with tf.control_dependencies([check]):
            return super().apply(grads, trainable_variables)

    def _clip_gradients(self, grads):
        if not any(isinstance(g, tf.IndexedSlices) for g in grads):
            return super()._clip_gradients(grads)
        if not (self.clipnorm or self.clipvalue or self.global_clipnorm):
            return grads

        def each(fn):
            return [None if g is None else fn(g) for g in grads]

        grads = each(lambda g: deduplicate(g) if isinstance(g, tf.IndexedSlices) else g)
        if self.clipnorm and self.clipnorm > 0:
            return each(lambda g: _clip_by_norm(g, self.clipnorm, tf.sqrt(_squared_norm(g))))
        if self.global_clipnorm and self.global_clipnorm > 0:
            norm = tf.sqrt(tf.add_n([_squared_norm(g) for g in grads if g is not None]))
            return each(lambda g: _clip_by_norm(g, self.global_clipnorm, norm))
        if self.clipvalue and self.clipvalue > 0:
            v = self.clipvalue
            return each(lambda g: _with_values(g, tf.clip_by_value(_values(g), -v, v)))
        return grads

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        return super()._backend_update_step(grads, trainable_variables,
                                            self._checked_learning_rate(learning_rate))

    def _checked_learning_rate(self, learning_rate):
        # A schedule, a callable or an assigned learning-rate variable can give any value; the
        # error then says which, and at which step, before any update runs.
        return checked_learning_rate(
            learning_rate, self.__class__.__name__, describe_learning_rate(self._learning_rate),
            self.iterations)

    # ------------------------------------------- gradient accumulation and EMA under a strategy
    #
    # Keras runs the update of an accumulation step and the EMA overwrite inside a `cond`, and
    # under MirroredStrategy (or MultiWorkerMirroredStrategy) their updates go through
    # `merge_call`, which TensorFlow refuses inside a `cond` in a replica's function: Keras's own
    # optimizers then fail in `model.fit`. Here, in a replica of such a strategy, the gradients
    # are summed over the replicas first (outside the `cond`), and then each replica updates
    # its own copy of every variable the same way (the fused ops, the accumulators and the
    # weights through each replica's handle), which keeps the copies equal without a
    # `merge_call`. The result is a single device's: the accumulated gradient is the replicas'
    # sum, clipped after summing.

    def _backend_apply_gradients(self, grads, trainable_variables):
        if not (self.gradient_accumulation_steps and _in_mirrored_replica()):
            return super()._backend_apply_gradients(grads, trainable_variables)
        variables = [tf_variable(v) for v in trainable_variables]
        grads = [g for g, _ in self._all_reduce_sum_gradients(list(zip(grads, variables)))]
        steps = self.gradient_accumulation_steps
        accumulators = [tf_variable(self._accumulated_gradients[self._get_variable_index(v)])
                        for v in trainable_variables]

        def update():
            summed = [(tf.convert_to_tensor(g) + _read_local(a)) / steps
                      for g, a in zip(grads, accumulators)]
            summed = self._clip_gradients(summed)
            self._apply_weight_decay_locally(variables)
            self._update_locally(summed, variables, self._checked_learning_rate(
                self.learning_rate))
            for a in accumulators:
                tf.raw_ops.AssignVariableOp(resource=a.handle, value=tf.zeros(a.shape, a.dtype))

        def accumulate():
            for g, a in zip(grads, accumulators):
                if isinstance(g, tf.IndexedSlices):
                    # Only the touched rows, each index's rows summed first: the bits of
                    # adding the densified gradient.
                    g = deduplicate(g)
                    tf.raw_ops.ResourceScatterAdd(resource=a.handle, indices=g.indices,
                                                  updates=tf.cast(g.values, a.dtype))
                else:
                    tf.raw_ops.AssignAddVariableOp(resource=a.handle, value=tf.cast(g, a.dtype))

        tf.cond((self._iterations + 1) % steps == 0, update, accumulate)
        if self.use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                tf.cond((self.iterations + 1) % self.ema_overwrite_frequency == 0,
                        lambda: self._overwrite_model_variables_with_average_value(
                            self._trainable_variables), lambda: None)

    def _overwrite_model_variables_with_average_value(self, trainable_variables):
        if not _in_mirrored_replica():
            return super()._overwrite_model_variables_with_average_value(trainable_variables)
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            var = tf_variable(var)
            tf.raw_ops.AssignVariableOp(resource=var.handle,
                                        value=_read_local(tf_variable(average)))

    def _apply_weight_decay_locally(self, variables):
        if self.weight_decay is None:
            return
        for var in variables:
            if self._use_weight_decay(var):
                # (Keras's order of the products, for its bits.)
                decay = (_read_local(var) * tf.cast(self.weight_decay, var.dtype)
                         * tf.cast(self.learning_rate, var.dtype))
                tf.raw_ops.AssignSubVariableOp(resource=var.handle, value=decay)

    def _update_locally(self, grads, variables, learning_rate):
        """`_distributed_tf_update_step` on this replica's copies, in its replica context."""
        self._route_updates(list(zip(grads, variables)), learning_rate,
                            lambda variable, fn, args: fn(variable, *args))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """Returns `(trainable_variables, optimizer_variables)` updated, assigning nothing.

        Keras's TensorFlow backend refuses this call (it is incompatible with tf.distribute);
        here it works outside a distribution strategy, with the update as plain TensorFlow ops
        on the given values (sparse gradients update only their rows). `weight_decay` is not
        supported in this mode.
        """
        return BaseOptimizer.stateless_apply(self, optimizer_variables, grads,
                                             trainable_variables)

    # Whether dense gradients of element-wise variables go to the multi-tensor ops (per dtype and
    # device: one op call on a GPU, one per intra-op thread on the CPU, see _optimizer_common);
    # off, each variable has its own op call, with the same results bit for bit (the benchmarks
    # compare the two). A subclass that overrides update_step gets every variable there: the
    # multi-tensor path is off for it.
    _multi_tensor = True

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # One update on the first variable's devices, which unwraps the others of a multi-tensor
        # group (and the gradients) to each replica's copy too, as it unwraps a single
        # variable's arguments.
        self._route_updates(
            grads_and_vars, learning_rate,
            lambda variable, fn, args: distribution.extended.update(variable, fn, args=args,
                                                                    group=False))

    def _route_updates(self, grads_and_vars, learning_rate, on_copies):
        """Each multi-tensor group to `_multi_update_step`, each other pair to `update_step`,
        through `on_copies(variable, fn, args)`, which runs `fn(variable, *args)` on the copies
        of `variable` (and of the Python arguments) that the caller updates."""
        groups, others = self._multi_tensor_groups(grads_and_vars, self._multi_tensor_eligible)
        for grads, variables in groups:
            on_copies(variables[0], self._multi_update_step,
                      (variables[1:], grads, learning_rate))
        for grad, var in others:
            if grad is not None:
                on_copies(var, lambda v, g, lr: self.update_step(g, v, lr),
                          (grad, learning_rate))

    def _multi_tensor_eligible(self, gradient, variable):
        return (self._multi_tensor and type(self).update_step is FusedOptimizer.update_step
                and gradient is not None and not isinstance(gradient, tf.IndexedSlices) and not in_stateless_scope()
                and not self._is_rowwise(variable) and ops.has_fused_kernels(variable.dtype)
                and (not in_xla_context() or _xla_lowers(
                    self._spec, tf_variable(variable), self._state_dtype_for(variable.dtype),
                    multi=True)))

    def _multi_update_step(self, first_variable, other_variables, grads, learning_rate):
        """The update of many variables with dense gradients, in one multi-tensor op call (this
        replica's copies under tf.distribute)."""
        variables = [first_variable] + list(other_variables)
        var_list = [tf_variable(v) for v in variables]
        slots = [[tf_variable(s) for s in self._slots(v)] for v in variables]
        dtype = var_list[0].dtype
        lr = tf.cast(learning_rate, dtype)
        state_dtype = slots[0][0].dtype
        rounding = None
        if self.stochastic_rounding and state_dtype != dtype:
            rounding = tf.stack([
                self._rounding(self._rounding_name(v), dtype, state_dtype,
                               tf_variable(self.iterations)) for v in variables])
        update = self._spec.multi_function + (" (XLA custom call)" if in_xla_context() else "")
        for variable, var, grad in zip(variables, var_list, grads):
            self._update_log.record(
                self.__class__.__name__, _Named(self._variable_path(variable), var.shape),
                update, *self._spec.functions)
        ops.wrapper(self._spec.multi_function)(
            var_list, *[list(column) for column in zip(*slots)],
            [tf.cast(g, dtype) for g in grads], **self._op_keywords(lr),
            stochastic_rounding=rounding)
        advised = _huge_pages.chosen(var_list + [s for ss in slots for s in ss], self.huge_pages)
        if advised:
            advise_in_step(advised)

    def update_step(self, gradient, variable, learning_rate):
        if in_stateless_scope():
            return self._stateless_update(gradient, variable, learning_rate)
        var = tf_variable(variable)
        slots = [tf_variable(s) for s in self._slots(variable)]
        lr = tf.cast(learning_rate, var.dtype)
        # Plain TensorFlow ops where the fused kernels cannot run: for dtypes they are not
        # compiled for, and inside XLA unless the ops lower to custom calls there
        # (ops.has_xla_lowering: float32 variables on the CPU).
        xla = in_xla_context()
        fused = ops.has_fused_kernels(var.dtype) and (
            not xla or _xla_lowers(self._spec_for(variable), var, slots[0].dtype))
        if xla and not fused:
            _warn_once_about_xla(self.__class__.__name__)
        self._record_update(variable, var, gradient, fused, xla)
        # [seed, step] where the state rounds stochastically (the plain ops round with the
        # fused kernels' bits too).
        rounding = self._rounding(self._rounding_name(variable), var.dtype, slots[0].dtype,
                                  tf_variable(self.iterations))
        if isinstance(gradient, tf.IndexedSlices):
            values = tf.cast(gradient.values, var.dtype)
            if fused:
                self._fused_update(var, slots, values, gradient.indices, lr, rounding)
            else:
                self._plain_sparse_update(var, slots, tf.IndexedSlices(
                    values, gradient.indices, gradient.dense_shape), lr, rounding)
        else:
            grad = tf.cast(gradient, var.dtype)
            if fused:
                self._fused_update(var, slots, grad, None, lr, rounding)
            else:
                self._plain_dense_update(var, slots, grad, lr, rounding)
        advised = _huge_pages.chosen_for(var, slots, self.huge_pages) if fused else []
        if advised:
            # After the update (ops on one variable run in program order).
            advise_in_step(advised)

    def _record_update(self, variable, var, gradient, fused, xla):
        dense_op, sparse_op = self._spec_for(var).functions
        sparse = isinstance(gradient, tf.IndexedSlices)
        if fused:
            update = sparse_op if sparse else dense_op
            if xla:
                update += " (XLA custom call)"
        else:
            why = "inside XLA" if xla else f"no fused kernel for {var.dtype.name}"
            update = f"tensorflow ops ({why}, {'sparse' if sparse else 'dense'})"
        self._update_log.record(
            self.__class__.__name__, _Named(self._variable_path(variable), var.shape), update,
            *((None, None) if sparse else (dense_op, sparse_op)))

    def _rounding_name(self, variable):
        """What seeds the stochastic rounding of variable's state (_rounding): the variable's
        index among the optimizer's variables and its shape, which a model loaded from a
        `.keras` file keeps. Not its path, which such a model may give otherwise
        ("embedding/embeddings" where a Sequential model's was
        "sequential/embedding/embeddings"), nor the optimizer's name, numbered in order of
        creation: training would go on with other random bits than the model that was saved."""
        return f"{self._get_variable_index(variable)}:{list(variable.shape)}"

    def _rowwise_name(self, variable):
        # The model variable's path ("sequential/embedding/embeddings"): update_step gets the
        # tf.Variable behind it.
        path = getattr(variable, "path", None)
        if path is not None:
            return path
        try:
            return self._variable_path(variable)
        except (KeyError, ValueError):
            return super()._rowwise_name(variable)

    def _variable_path(self, variable):
        """A Keras variable's path ("dense/kernel"); a tf.Variable's name."""
        model_variable = self._trainable_variables[self._get_variable_index(variable)]
        return getattr(model_variable, "path", None) or model_variable.name

    def _rows_update_of_state(self, var, slots, grad, lr, places=None):
        """`_rows_update` on slots of any state dtype: rounded into narrower state to nearest,
        or stochastically with `places` (`StochasticPlaces`: the fused kernels' bits).

        Inside XLA, which drops the assertion of `checked_learning_rate` (a compiled step cannot
        stop with an error), a learning rate that is negative or not finite gives back the
        values it was given: that step changes nothing, where it would write wrong weights or
        NaN. (The fused ops' custom calls check the rate themselves and stop the step.)"""
        if all(slot.dtype == var.dtype for slot in slots):
            new = self._rows_update(var, slots, grad, lr)
        else:
            new = rows_update_in_state_dtype(self._rows_update, var, slots, grad, lr, places)
        if not in_xla_context():
            return new
        rate = tf.math.real(lr) if lr.dtype.is_complex else lr
        valid = tf.logical_and(tf.math.is_finite(rate), rate >= 0)
        return tuple(tf.where(valid, value, old) for value, old in zip(new, [var] + list(slots)))

    def _plain_dense_update(self, var, slots, grad, lr, rounding=None):
        places = stochastic_places(rounding, var.shape)
        new = self._rows_update_of_state(var.read_value(), [s.read_value() for s in slots], grad,
                                         lr, places)
        for variable, value in zip([var] + slots, new):
            variable.assign(value)

    def _plain_sparse_update(self, var, slots, gradient, lr, rounding=None):
        # Every position computes its row's update from the row's summed gradient, so positions
        # of one index scatter identical values (their random bits too: those of the row).
        indices = gradient.indices
        places = stochastic_places(rounding, var.shape, indices)
        rows = [tf.gather(v, indices) for v in [var] + slots]
        new = self._rows_update_of_state(rows[0], rows[1:], summed_per_position(gradient), lr,
                                         places)
        for variable, value in zip([var] + slots, new):
            variable.scatter_update(tf.IndexedSlices(value, indices, gradient.dense_shape))

    def _stateless_update(self, gradient, variable, learning_rate):
        # Reading a Keras variable in a StatelessScope gives its value in the scope, and
        # assigning records the new value there. The TF backend hands update_step the
        # tf.Variable behind the model's Keras variable, so look the Keras variable up.
        model_variable = self._trainable_variables[self._get_variable_index(variable)]
        targets = [model_variable] + list(self._slots(variable))
        values = [keras.ops.convert_to_tensor(v) for v in targets]
        lr = tf.cast(learning_rate, values[0].dtype)
        rounding = self._rounding(self._rounding_name(variable), values[0].dtype,
                                  values[1].dtype, keras.ops.convert_to_tensor(self.iterations))
        if isinstance(gradient, tf.IndexedSlices):
            places = stochastic_places(rounding, values[0].shape, gradient.indices)
            gradient = tf.IndexedSlices(tf.cast(gradient.values, values[0].dtype),
                                        gradient.indices, gradient.dense_shape)
            rows = tf.expand_dims(gradient.indices, 1)
            new_rows = self._rows_update_of_state(
                tf.gather(values[0], gradient.indices),
                [tf.gather(v, gradient.indices) for v in values[1:]],
                summed_per_position(gradient), lr, places)
            new = [tf.tensor_scatter_nd_update(v, rows, r) for v, r in zip(values, new_rows)]
        else:
            places = stochastic_places(rounding, values[0].shape)
            new = self._rows_update_of_state(values[0], values[1:],
                                             tf.cast(gradient, values[0].dtype), lr, places)
        for target, value in zip(targets, new):
            target.assign(value)

    def _track_variable(self, variable):
        # Before Keras tracks it: a checkpoint's deferred restore runs as it is tracked. Every
        # slot (a scalar variable's too, whose state may have been saved in another dtype) and
        # every other variable of rank >= 1; not the optimizer's own scalars (the step count,
        # the learning rate), which no setting changes.
        if len(variable.shape) >= 1 or self._making_slots:
            converting(variable, self.__class__.__name__)
        return super()._track_variable(variable)

    def load_own_variables(self, store):
        """Loads the optimizer's variables from a Keras file (`.keras`, `model.load_weights`).

        Slots saved with the other `rowwise` setting are converted: an element-wise accumulator
        into a row-wise one by the mean of each row, a row-wise one into an element-wise one by
        repeating each row's value. Slots saved in another dtype (another `state_dtype`) are
        cast to the slots' dtype. A warning says what was converted. Every value is checked
        before any variable is set.
        """
        if len(store.keys()) != len(self.variables):
            return super().load_own_variables(store)
        self._assign_converted([store[str(i)] for i in range(len(self.variables))],
                               stacklevel=3)

    def set_weights(self, weights):
        """Sets the optimizer's variables (`variables`' order, as `get_weights` returns them),
        converting slots saved with the other `rowwise` setting or in another dtype as
        `load_own_variables` does, with a warning. Every weight is checked before any variable is
        set: a weight that fits no variable changes nothing."""
        if not self.built:
            raise ValueError(
                f"set_weights() on tf_ftrl.{self.__class__.__name__} before it is built: call "
                f"`optimizer.build(model.trainable_variables)` first, which makes its variables.")
        weights = list(weights)
        if len(weights) != len(self.variables):
            paths = ", ".join(v.path for v in self.variables)
            raise ValueError(
                f"set_weights() on tf_ftrl.{self.__class__.__name__} got {len(weights)} weights "
                f"for its {len(self.variables)} variables ({paths}).")
        self._assign_converted(weights, stacklevel=3)

    def _assign_converted(self, values, stacklevel):
        """Assigns values[i] to self.variables[i], each converted to its variable's shape and
        dtype (convert_slot, a cast), all of them converted before the first is assigned."""
        converted, cast, new = {True: [], False: []}, [], []
        for variable, saved in zip(self.variables, values):
            value = saved
            if tuple(np.shape(value)) != tuple(variable.shape):
                value = convert_slot(np.asarray(value), tuple(variable.shape), variable.path)
                # Into a per-row accumulator (rank 1), or out of one.
                converted[len(variable.shape) == 1].append(
                    f"{variable.path} {tuple(np.shape(saved))} -> {tuple(variable.shape)}")
            saved_dtype = tf.as_dtype(np.asarray(value).dtype)
            if saved_dtype != tf.as_dtype(variable.dtype):
                cast.append(f"{variable.path} {saved_dtype.name} -> {variable.dtype}")
                value = tf.cast(np.asarray(value), variable.dtype)
            new.append(value)
        for variable, value in zip(self.variables, new):
            variable.assign(value)
        for rowwise, entries in converted.items():
            if entries:
                warnings.warn(converted_message(self.__class__.__name__, rowwise, entries),
                              UserWarning, stacklevel=stacklevel)
        if cast:
            warnings.warn(cast_message(self.__class__.__name__, cast), UserWarning,
                          stacklevel=stacklevel)

    # Older (optimizer_v2) API.

    def __dir__(self):
        # TensorFlow's checkpointing takes any object whose dir() lists `get_slot_names` for an
        # optimizer_v2, whose slots it must save as slot variables; Keras 3 already saves them
        # as ordinary dependencies, and saving them twice fails. TensorFlow looks with dir() (not
        # hasattr) on purpose, so the method stays callable and out of its sight.
        return [name for name in super().__dir__() if name != "get_slot_names"]

    def get_slot_names(self):
        """The names of the slot variables kept for each model variable."""
        return list(self._spec.slot_names)

    def get_slot(self, var, slot_name):
        """The slot variable `slot_name` (one of `get_slot_names()`) of model variable `var`."""
        names = self._spec.slot_names
        if slot_name not in names:
            raise ValueError(
                f"Unknown slot name: {slot_name}. {self.__class__.__name__} has slots "
                f"{list(names)}.")
        return self._slots(var)[names.index(slot_name)]
