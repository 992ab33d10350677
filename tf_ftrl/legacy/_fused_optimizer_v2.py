"""The part of the tf_keras (optimizer_v2) optimizers common to Ftrl and Adagrad."""

import contextlib
import re
import warnings

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras.src.optimizers.legacy import optimizer_v2 as _optimizer_v2

from tf_ftrl import ops
from tf_ftrl._arguments import (check_learning_rate, checked_learning_rate,
                                describe_learning_rate)
from tf_ftrl._slot_conversion import cast_message, convert_slot, converted_message, converting
from tf_ftrl._optimizer_common import (SpecDispatch, checked_rowwise, checked_state_dtype,
                                       checked_stochastic_rounding,
                                       in_xla_context, rowwise_config, sparse_index_check)
from tf_ftrl._update_log import UpdateLog
from tf_ftrl import huge_pages as _huge_pages
from tf_ftrl.huge_pages import advise_in_step


def _var_key(variable):
    """The key of OptimizerV2's slot dictionaries for `variable`."""
    return _optimizer_v2._var_key(variable)


class FusedOptimizerV2(SpecDispatch, tf_keras.optimizers.legacy.Optimizer):
    """An `OptimizerV2` with the slots of its `_spec` (a `_specs.OptimizerSpec`: an `accumulator`
    first) whose sparse updates go straight to a fused kernel that sums duplicate indices itself.

    OptimizerV2 deduplicates sparse gradients in Python (`tf.unique` + `unsorted_segment_sum`)
    before `_resource_apply_sparse` unless a subclass overrides
    `_resource_apply_sparse_duplicate_indices`, the documented hook for optimizers that handle
    duplicates themselves. The fused kernels sum duplicates (in order of position, in chunks of
    32 for hotter indices) before one update per unique row, which gives the result the
    deduplicating path would (bit for bit up to 32 duplicates of an index), without the extra
    ops.
    """

    # We keep the base apply_gradients, which takes `experimental_aggregate_gradients`.
    _HAS_AGGREGATE_GRAD = True

    def __init__(self, name, learning_rate, initial_accumulator_value, huge_pages="auto",
                 rowwise=False, state_dtype=None, stochastic_rounding=True, **kwargs):
        super().__init__(name, **kwargs)
        self.huge_pages = _huge_pages.checked_option(huge_pages)
        self.rowwise = checked_rowwise(rowwise)
        self.state_dtype = checked_state_dtype(state_dtype)
        self.stochastic_rounding = checked_stochastic_rounding(stochastic_rounding)
        # `lr` is OptimizerV2's deprecated alias (validated and warned about there); tf_keras's
        # Adagrad honours it, its Ftrl silently ignores it: both of ours honour it.
        learning_rate = kwargs.get("lr", learning_rate)
        check_learning_rate(learning_rate)
        self._set_hyper("learning_rate", learning_rate)
        self._set_hyper("decay", self._initial_decay)
        self._initial_accumulator_value = initial_accumulator_value
        self._update_log = UpdateLog()
        # Each variable with slots, by OptimizerV2's key of its slots (for SavedModels).
        self._slot_owners = {}

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        coefficients = apply_state[(var_device, var_dtype)]
        coefficients["lr_t"] = checked_learning_rate(
            coefficients["lr_t"], self._name,
            describe_learning_rate(self._hyper["learning_rate"]), self.iterations)

    def _create_slots(self, var_list):
        # In tf_keras's order (each variable's slots in turn), which get_weights and set_weights
        # rely on. A slot starts at its initial value argument (kept as `_<name>`, as tf_keras
        # keeps it), or at zeros (add_slot's default); a per-row slot of the row-wise variant
        # has one value per row.
        self._check_state_dtype_creatable(var_list)
        for var in var_list:
            spec = self._spec_for(var)
            if spec is not self._spec and not ops.has_fused_kernels(var.dtype):
                raise ValueError(
                    f"`rowwise=True` takes float16, bfloat16, float32 and float64 variables. "
                    f"Received: variable {var.name} of dtype {var.dtype.base_dtype.name}.")
            dtype = self._state_dtype_for(var.dtype)
            for slot in spec.slots:
                shape = [var.shape[0]] if slot.per_row else None
                if slot.initial_value:
                    self.add_slot(var, slot.name, tf.compat.v1.constant_initializer(
                        getattr(self, "_" + slot.initial_value), dtype=dtype), shape=shape)
                else:
                    self.add_slot(var, slot.name, shape=shape)

    def add_slot(self, var, slot_name, initializer="zeros", shape=None):
        """Adds a slot variable of `var`, in the state dtype (`state_dtype` for float32
        variables)."""
        self._slot_owners.setdefault(_var_key(var), var)
        with _slots_of_dtype(var, self._state_dtype_for(var.dtype)):
            return super().add_slot(var, slot_name, initializer, shape=shape)

    # tf.train.Checkpoint restores of state saved with another `rowwise` or `state_dtype` setting.
    # A restore that finds a slot missing would make it from the saved value, in the saved shape
    # and dtype: every slot of the variable is made as _create_slots makes it instead, and each
    # slot (a class with `converting`'s restore) converts what it is given.

    def _create_or_restore_slot_variable(self, slot_variable_position, slot_name, variable,
                                         slot_variable_shape=None):
        if (tf.executing_eagerly() and slot_name in self._spec.slot_names
                and slot_name not in self._slots.get(_var_key(variable), {})):
            self._create_slots([variable])
        return super()._create_or_restore_slot_variable(
            slot_variable_position, slot_name, variable, slot_variable_shape)

    def _restore_slot_variable(self, slot_name, variable, slot_variable):
        # Called by add_slot for every slot it makes, before any restore deferred to it (a
        # scalar variable's slots too: their state may have been saved in another dtype).
        converting(slot_variable, f"legacy.{self.__class__.__name__}")
        super()._restore_slot_variable(slot_name, variable, slot_variable)

    # SavedModels. TensorFlow saves an optimizer_v2's slots as slot variables (checkpoint keys
    # `<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>`), and loading a SavedModel remakes each one
    # with tf_keras's RestoredOptimizer.add_slot: in its variable's shape and dtype. A row-wise
    # accumulator (one value per row) or a slot in a narrower state dtype then fails the load of
    # the whole SavedModel, for serving too ("Received incompatible tensor with shape (50,) when
    # attempting to restore variable with shape (50, 4)", "expected dtype float does not equal
    # original dtype bfloat16"). So where any slot differs from its variable in shape or dtype,
    # a SavedModel holds the slots as ordinary variables of the optimizer instead, remade from
    # their saved shape and dtype. TensorFlow lists an object's children (_trackable_children,
    # with the save type) before it gathers slot variables (from objects whose dir() lists
    # get_slot_names), for the SavedModel's graph and again, from the same cached children, for
    # its checkpoint: so the save type of the last listing decides, and checkpoints, which list
    # children as "checkpoint", keep slot variables.

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        self._slots_as_children = (save_type == "savedmodel"
                                   and self._has_slots_a_saved_model_cannot_remake())
        if self._slots_as_children:
            children = dict(children)
            children.update(self._slots_by_name())
        return children

    def __dir__(self):
        names = super().__dir__()
        if getattr(self, "_slots_as_children", False):
            return [name for name in names if name != "get_slot_names"]
        return names

    def _has_slots_a_saved_model_cannot_remake(self):
        return any(slot.shape != var.shape or slot.dtype.base_dtype != var.dtype.base_dtype
                   for var_key, var in self._slot_owners.items()
                   for slot in self._slots.get(var_key, {}).values())

    def _slots_by_name(self):
        """Every slot variable under a name of its own: its slot name and its variable's."""
        named = {}
        for var_key, var in self._slot_owners.items():
            for slot_name, slot in self._slots.get(var_key, {}).items():
                name = f"{slot_name}:{_replica_free_name(var)}"
                while name in named:
                    name += "_"
                named[name] = slot
        return named

    # Whether dense gradients of element-wise variables go to the multi-tensor ops (per dtype and
    # device: one op call on a GPU, one per intra-op thread on the CPU, see _optimizer_common);
    # off, each variable has its own op call, with the same results bit for bit (the benchmarks
    # compare the two). A subclass that overrides _resource_apply_dense gets every dense variable
    # there: the multi-tensor path is off for it.
    _multi_tensor = True

    def _flag_keywords(self):
        """The fused ops' flag, as the subclass passes it ({} for the op's default)."""
        return {}

    def apply_gradients(self, grads_and_vars, name=None, experimental_aggregate_gradients=True):
        """tf_keras's `apply_gradients`, after every index of the sparse gradients has been checked
        (on the CPU, outside XLA): a bad one fails the step with nothing changed."""
        grads_and_vars = list(grads_and_vars)
        check = sparse_index_check([g for g, _ in grads_and_vars],
                                   [v for _, v in grads_and_vars],
                                   [_replica_free_name(v) for _, v in grads_and_vars])
        if check is None:
            return super().apply_gradients(grads_and_vars, name,
                                           experimental_aggregate_gradients)
        with tf.control_dependencies([check]):
            return super().apply_gradients(grads_and_vars, name,
                                           experimental_aggregate_gradients)

    def _distributed_apply(self, distribution, grads_and_vars, apply_state, name):
        groups, others = self._multi_tensor_groups(grads_and_vars, self._multi_tensor_eligible)
        if not groups:
            return super()._distributed_apply(distribution, grads_and_vars, apply_state, name)
        update_ops = []
        with tf.name_scope(name or self._name):
            for grads, variables in groups:
                with distribution.extended.colocate_vars_with(variables[0]):
                    # One update on the first variable's devices, which unwraps the others (and
                    # the gradients) to each replica's copy too.
                    update = distribution.extended.update(
                        variables[0], self._multi_apply_dense,
                        args=(variables[1:], grads, apply_state), group=False)
                if tf.distribute.in_cross_replica_context():
                    update_ops.extend(update)
                else:
                    update_ops.append(update)
        # The other variables' updates, then the step count, after these.
        with tf.control_dependencies([op for op in update_ops if op is not None]):
            return super()._distributed_apply(distribution, others, apply_state, name)

    def _multi_tensor_eligible(self, grad, var):
        # (Inside XLA only where the multi-tensor op lowers to a custom call.)
        in_xla = in_xla_context()
        return (self._multi_tensor
                and type(self)._resource_apply_dense is FusedOptimizerV2._resource_apply_dense
                and (not in_xla or ops.has_xla_lowering(
                    self._spec, var.dtype, self._state_dtype_for(var.dtype), multi=True))
                and not isinstance(grad, tf.IndexedSlices)
                and not isinstance(var, tf.Tensor) and var.constraint is None
                and not self._is_rowwise(var) and ops.has_fused_kernels(var.dtype))

    def _multi_apply_dense(self, first_var, other_vars, grads, apply_state):
        """The update of many variables with dense gradients, in one multi-tensor op call (this
        replica's copies under tf.distribute)."""
        variables = [first_var] + list(other_vars)
        in_xla = in_xla_context()
        update = self._spec.multi_function + (" (XLA custom call)" if in_xla else "")
        for var in variables:
            self._update_log.record(self.__class__.__name__, var, update, *self._spec.functions)
        slots = [[self.get_slot(var, slot) for var in variables] for slot in
                 self._spec.slot_names]
        dtype = first_var.dtype.base_dtype
        rounding = None
        if self.stochastic_rounding and slots[0][0].dtype.base_dtype != dtype:
            rounding = tf.stack([
                self._rounding(_replica_free_name(var), dtype, slots[0][0].dtype,
                               self.iterations) for var in variables])
        update = ops.wrapper(self._spec.multi_function)(
            variables, *slots, list(grads), **self._op_values(first_var, apply_state),
            **self._flag_keywords(), use_locking=self._use_locking,
            stochastic_rounding=rounding)
        advised = _huge_pages.chosen(variables + [s for column in slots for s in column],
                                     self.huge_pages)
        if not advised:
            return update
        advice = advise_in_step(advised, update)
        return advice if advice is not None else update

    def _resource_apply_sparse_duplicate_indices(self, grad, handle, indices, **kwargs):
        if not ops.has_fused_kernels(handle.dtype):
            # TensorFlow's ops for other dtypes apply duplicates one by one: sum them first, as
            # the base class does.
            return super()._resource_apply_sparse_duplicate_indices(grad, handle, indices,
                                                                    **kwargs)
        return self._resource_apply_sparse(grad, handle, indices, **kwargs)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        self._record_update(var, sparse=False)
        return self._advising_huge_pages(var, self._fused_apply_dense(grad, var, apply_state))

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        self._record_update(var, sparse=True)
        return self._advising_huge_pages(
            var, self._fused_apply_sparse(grad, var, indices, apply_state))

    def _record_update(self, var, sparse):
        dense_op, sparse_op = self._spec_for(var).functions
        if ops.has_fused_kernels(var.dtype):
            update = sparse_op if sparse else dense_op
            if in_xla_context():
                update += " (XLA custom call)"  # (the ops fail where they are not lowered)
        else:
            update = (f"tensorflow ops (no fused kernel for {var.dtype.base_dtype.name}, "
                      f"{'sparse' if sparse else 'dense'})")
        self._update_log.record(self.__class__.__name__, var, update,
                                *((None, None) if sparse else (dense_op, sparse_op)))

    def _advising_huge_pages(self, var, update):
        """`update`, followed by the huge-page advice for var and its slots if `huge_pages`
        chooses them (`advise_in_step`: each buffer once per process)."""
        slots = [self.get_slot(var, name) for name in self.get_slot_names()]
        advised = _huge_pages.chosen_for(var, slots, self.huge_pages)
        if not advised:
            return update
        advice = advise_in_step(advised, update)
        return advice if advice is not None else update

    def _rowwise_name(self, variable):
        # The same for every replica's copy, and for every shard of a table that
        # ParameterServerStrategy partitions ("embeddings/part_1").
        return re.sub(r"/part_\d+$", "", _replica_free_name(variable))

    def _op(self, variable, sparse):
        """The fused op of `variable`'s update, with its `stochastic_rounding` bound."""
        op = super()._op(variable, sparse)
        state_dtype = self.get_slot(variable, self._spec.slot_names[0]).dtype
        rounding = self._rounding(_replica_free_name(variable), variable.dtype, state_dtype,
                                  self.iterations)
        return lambda *args, **kwargs: op(*args, stochastic_rounding=rounding, **kwargs)

    def _op_values(self, var, apply_state):
        """{op input: value} for the fused ops' scalar inputs, from the coefficients that
        `_prepare_local` computed for var's device and dtype (keyed by op input, lr as `lr_t`)."""
        var_device, var_dtype = var.device, var.dtype.base_dtype
        coefficients = (apply_state or {}).get(
            (var_device, var_dtype)) or self._fallback_apply_state(var_device, var_dtype)
        return self._spec.op_values(coefficients["lr_t"],
                                    lambda argument: coefficients[argument.op_input])

    def set_weights(self, weights):
        """Sets the optimizer's state (what `.h5` and SavedModel loading call). Slots saved with
        the other `rowwise` setting are converted: an element-wise accumulator into a row-wise
        one by the mean of each row, a row-wise one into an element-wise one by repeating each
        row's value. Slots saved in another dtype (another `state_dtype`) are cast to the slots'
        dtype. A warning says what was converted."""
        return super().set_weights(self._converted_weights(weights, stacklevel=3))

    def _converted_weights(self, weights, stacklevel):
        """`weights` for self.weights, converted (set_weights) where their number matches."""
        params = self.weights
        if len(params) == len(weights):
            converted, cast = {True: [], False: []}, []
            weights = list(weights)
            for i, (param, value) in enumerate(zip(params, weights)):
                if tuple(np.shape(value)) != tuple(param.shape):
                    weights[i] = convert_slot(value, tuple(param.shape), param.name)
                    # Into a per-row accumulator (rank 1), or out of one.
                    converted[len(param.shape) == 1].append(
                        f"{param.name} {tuple(np.shape(value))} -> {tuple(param.shape)}")
                if np.asarray(weights[i]).dtype == np.dtype("V2"):
                    # HDF5 has no bfloat16: .h5 files keep it as raw 2-byte values.
                    weights[i] = np.asarray(weights[i]).view(tf.bfloat16.as_numpy_dtype)
                saved_dtype = tf.as_dtype(np.asarray(weights[i]).dtype)
                if saved_dtype != param.dtype.base_dtype:
                    cast.append(f"{param.name} {saved_dtype.name} -> {param.dtype.base_dtype.name}")
                    weights[i] = tf.cast(np.asarray(weights[i]), param.dtype.base_dtype).numpy()
            name = f"legacy.{self.__class__.__name__}"
            for rowwise, entries in converted.items():
                if entries:
                    warnings.warn(converted_message(name, rowwise, entries), UserWarning,
                                  stacklevel=stacklevel)
            if cast:
                warnings.warn(cast_message(name, cast), UserWarning, stacklevel=stacklevel)
        return weights

    # `.keras` files (tf_keras's saving_lib: model.save("x.keras"), load_model, save_weights and
    # load_weights of ".weights.h5"). tf_keras saves the state of the objects it takes for its own
    # (layers, its new optimizers, metrics, losses) and skips optimizer_v2's: a `.keras` file of a
    # model with tf_keras's legacy optimizers holds no optimizer state, and its load_model starts
    # them anew (FTRL's weights then restart from linear = 0 at their next update). Ours are
    # visited too (_keep_state_in_keras_files) and save their weights (get_weights: iterations,
    # then the slots) under their index, as tf_keras's new optimizers do. A load before the slots
    # exist (load_model compiles a new optimizer and tf_keras builds none of optimizer_v2's)
    # keeps the state until the slots are made for the first update, then sets it as set_weights
    # would: converted where it was saved with another `rowwise` or `state_dtype`.

    # Beside the values, a key that says they are ours: tf_keras's new optimizers keep theirs in
    # another order (each slot for every variable in turn, and the learning rate).
    _KERAS_FILE_KEY = "tf_ftrl.legacy"

    def save_own_variables(self, store):
        store[self._KERAS_FILE_KEY] = np.int64(1)
        # Loaded from a file and not yet set (the slots are made at the first update): what was
        # loaded, with the step count as it is now, not get_weights' step count alone.
        loaded = getattr(self, "_loaded_weights", None)
        weights = (self.get_weights() if loaded is None
                   else [np.asarray(self.iterations.numpy())] + list(loaded[0][1:]))
        for i, value in enumerate(weights):
            store[str(i)] = value

    def load_own_variables(self, store):
        keys = set(store.keys())
        if not keys:
            return
        if self._KERAS_FILE_KEY not in keys:
            warnings.warn(
                f"{self.__class__.__name__}: the optimizer state in the Keras file was not "
                "loaded: another optimizer wrote it (python -m tf_ftrl.convert_checkpoint moves "
                "tf_keras's optimizer state from a TensorFlow checkpoint).",
                UserWarning, stacklevel=2)
            return
        weights = [np.asarray(store[str(i)]) for i in range(len(keys) - 1)]
        if not weights:
            return
        if len(self.weights) > 1:  # the slots exist
            self._set_loaded_weights(weights)
            return
        # The step count at once (what `optimizer.iterations` reads before the first step).
        self._loaded_weights = (weights, self.iterations.numpy())
        self.iterations.assign(weights[0])

    def _create_all_weights(self, var_list):
        super()._create_all_weights(var_list)
        loaded = getattr(self, "_loaded_weights", None)
        if loaded is not None:
            self._loaded_weights = None
            weights, iterations_before = loaded
            if not self._set_loaded_weights(weights):
                _assign_each_copy(self.iterations, iterations_before)

    def _set_loaded_weights(self, weights):
        """Sets the loaded weights (as set_weights would); False, with a warning and nothing
        set, where their number is not the optimizer's."""
        if len(weights) != len(self.weights):
            warnings.warn(
                f"{self.__class__.__name__}: the optimizer state in the Keras file was not "
                f"loaded: it holds {len(weights)} values (the step count, then the slots), the "
                f"optimizer has {len(self.weights)} for the variables it updates.",
                UserWarning, stacklevel=3)
            return False
        weights = self._converted_weights(weights, stacklevel=4)
        for param, value in zip(self.weights, weights):
            _assign_each_copy(param, value)
        return True

    def get_config(self):
        config = super().get_config()
        config.update({
            "learning_rate": self._serialize_hyperparameter("learning_rate"),
            "decay": self._initial_decay,
            "initial_accumulator_value": self._initial_accumulator_value,
        })
        # Only when set, so that the default config stays tf_keras's own.
        if self.huge_pages != "auto":
            config["huge_pages"] = self.huge_pages
        if self.rowwise:
            config["rowwise"] = rowwise_config(self.rowwise)
        if self.state_dtype:
            config["state_dtype"] = self.state_dtype
            config["stochastic_rounding"] = self.stochastic_rounding
        return config


def _assign_each_copy(variable, value):
    """Assigns value to each copy of a distributed variable on its own (to variable itself
    otherwise): slots are first made inside a step, where a MirroredVariable's own assign needs
    the cross-replica context."""
    for copy in getattr(variable, "values", (variable,)):
        copy.assign(value)


def _keep_state_in_keras_files():
    """Makes tf_keras's `.keras` saving visit our optimizers (it visits the objects its
    `_is_keras_trackable` names: its layers, new optimizers, metrics and losses), so that
    save_own_variables and load_own_variables above run. Other objects are judged as before.
    (A tf_keras without that function keeps its own behaviour: no optimizer state in `.keras`
    files; tests/test_front_ends.py fails there.)"""
    try:
        from tf_keras.src.mixed_precision import loss_scale_optimizer
        from tf_keras.src.saving import saving_lib

        judge = saving_lib._is_keras_trackable
        wrapper = loss_scale_optimizer.LossScaleOptimizer
    except (ImportError, AttributeError):
        return
    if getattr(judge, "_tf_ftrl", False):
        return

    def is_keras_trackable(obj):
        # Ours, or the LossScaleOptimizer that tf_keras's mixed precision wraps around it (whose
        # inner optimizer is then visited; its loss scale is not saved, and starts anew).
        return (isinstance(obj, FusedOptimizerV2)
                or (isinstance(obj, wrapper)
                    and isinstance(obj.inner_optimizer, FusedOptimizerV2))
                or judge(obj))

    is_keras_trackable._tf_ftrl = True
    saving_lib._is_keras_trackable = is_keras_trackable


_keep_state_in_keras_files()


def _replica_free_name(variable):
    """The variable's name without ":0" and the "/replica_1" that MirroredStrategy gives each
    replica's copy: the same for every copy."""
    return re.sub(r"/replica_\d+", "", variable.name.split(":")[0])


@contextlib.contextmanager
def _slots_of_dtype(var, dtype):
    """`add_slot` makes slots of `var.true_dtype` where var has one (a mixed-precision variable's
    own dtype), else of var's dtype: for slots of another dtype, var says that one while they are
    made."""
    if dtype == var.dtype.base_dtype or hasattr(type(var), "true_dtype"):
        yield
        return
    var.true_dtype = dtype
    try:
        yield
    finally:
        del var.true_dtype
