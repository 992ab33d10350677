"""Optimizer state saved with one `rowwise` or `state_dtype` setting, loaded into an optimizer with
the other: the accumulator's shape tells the one, the slots' dtype the other, and the values are
converted instead of failing on the shape or dtype."""

import sys
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.checkpoint import tensor_callable
from tensorflow.python.training.saving import saveable_object


def convert_slot(value, shape, name):
    """`value` (a saved slot) in `shape`: an element-wise accumulator (shape [rows, ...]) becomes
    a row-wise one ([rows]) by the mean of each row; a row-wise one becomes element-wise by
    repeating each row's value. Any other mismatch is an error naming the slot and both shapes."""
    value = np.asarray(value)
    if value.ndim >= 2 and len(shape) == 1 and value.shape[0] == shape[0]:
        return value.reshape(value.shape[0], -1).astype(np.float64).mean(axis=1).astype(
            value.dtype)
    if value.ndim == 1 and len(shape) >= 2 and value.shape[0] == shape[0]:
        return np.broadcast_to(value.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
    raise ValueError(
        f"The saved optimizer variable {name} has shape {tuple(value.shape)}, which cannot be "
        f"converted to its shape here, {tuple(shape)}: only an accumulator saved with the other "
        f"`rowwise` setting (one value per row against one per element) is converted.")


def converted_message(optimizer, rowwise, converted):
    how = ("element-wise accumulators became row-wise ones (the mean of each row)" if rowwise
           else "row-wise accumulators became element-wise ones (each row's value repeated)")
    return (f"tf_ftrl.{optimizer}: the saved state was written with rowwise={not rowwise}; "
            f"{how}: {'; '.join(converted)}.")


def cast_message(optimizer, cast):
    """What a restore of slots saved in another dtype did (`cast`: "path float32 -> bfloat16")."""
    return (f"tf_ftrl.{optimizer}: optimizer state saved in another dtype was converted to the "
            f"optimizer's `state_dtype` (narrower: rounded to nearest; wider: exact): "
            f"{'; '.join(cast)}.")


def converted_tensor(value, shape):
    """`convert_slot` for a restored tensor (in TensorFlow ops), or None when `value` already has
    `shape` or is not an accumulator of the other `rowwise` setting."""
    saved = value.shape
    if saved.rank is None or tuple(saved) == tuple(shape):
        return None
    if saved.rank >= 2 and len(shape) == 1 and saved[0] == shape[0]:
        rows = tf.reshape(tf.cast(value, tf.float64), [saved[0], -1])
        return tf.cast(tf.reduce_mean(rows, axis=1), value.dtype)
    if saved.rank == 1 and len(shape) >= 2 and saved[0] == shape[0]:
        return tf.broadcast_to(tf.reshape(value, [-1] + [1] * (len(shape) - 1)), shape)
    return None


def _name_of(variable):
    """A Keras variable's path, or a tf.Variable's name without ":0"."""
    return getattr(variable, "path", None) or variable.name.split(":")[0]


class _ConvertingRestore:
    """Mixed into the optimizer's variables: a `tf.train.Checkpoint` restore of an accumulator
    saved with the other `rowwise` setting converts it (`_slot_conversion`), and one of a slot
    saved in another dtype casts it, and says so, instead of failing on its shape or dtype."""

    def _restore_from_tensors(self, restored_tensors):
        key = next(iter(restored_tensors))
        value = restored_tensors[key]
        if value.dtype != self.dtype:
            warnings.warn(cast_message(self._tf_ftrl_optimizer, [
                f"{_name_of(self)} {value.dtype.name} -> {tf.as_dtype(self.dtype).name}"]),
                UserWarning)
            value = tf.cast(value, self.dtype)
            restored_tensors = dict(restored_tensors, **{key: value})
        converted = converted_tensor(value, tuple(self.shape))
        if converted is not None:
            warnings.warn(converted_message(
                self._tf_ftrl_optimizer, not self._tf_ftrl_saved_rowwise(value),
                [f"{_name_of(self)} {tuple(value.shape)} -> {tuple(self.shape)}"]), UserWarning)
            restored_tensors = dict(restored_tensors, **{key: converted})
        return super()._restore_from_tensors(restored_tensors)

    def _serialize_to_tensors(self):
        # A checkpoint restore reads each tensor in the dtype that serializing the restored
        # object gives: while this variable is being restored from a value saved in another
        # dtype (another `state_dtype`), it gives that dtype, and _restore_from_tensors casts.
        tensors = super()._serialize_to_tensors()
        saved = _dtype_being_restored(self)
        if saved is not None and saved != tf.as_dtype(self.dtype):
            tensors = {key: _in_dtype(value, saved) for key, value in tensors.items()}
        return tensors

    def _tf_ftrl_saved_rowwise(self, value):
        return value.shape.rank == 1


def _in_dtype(value, dtype):
    """A tensor to checkpoint (or a `tensor_callable.Callable` giving one, or None for an
    uninitialized variable) in `dtype`."""
    if isinstance(value, tensor_callable.Callable):
        def read():
            tensor = value.tensor
            return None if tensor is None else tf.cast(tensor, dtype)

        return tensor_callable.Callable(read, dtype=dtype, device=value.device)
    return tf.cast(value, dtype)


def _dtype_being_restored(variable):
    """The dtype of the saved value that a `tf.train.Checkpoint` restore is about to read into
    `variable`, or None outside such a restore. TensorFlow's restore (its CheckpointPosition,
    which holds the checkpoint's dtypes) asks the variable for its tensors to learn what to read;
    that call is found on the stack, within a few frames."""
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return None
        if frame.f_code.co_name in ("_create_serialize_to_tensor_saveable",
                                    "_create_saveables_by_attribute_name"):
            position = frame.f_locals.get("self")
            dtype_map = getattr(getattr(position, "_checkpoint", None), "dtype_map", None)
            try:
                if not dtype_map or position.trackable is not variable:
                    return None
                return dtype_map.get(position.object_proto.attributes[0].checkpoint_key)
            except (AttributeError, IndexError, KeyError):
                return None
        frame = frame.f_back
    return None


class _ConvertingSaveables:
    """Mixed into a distributed variable (tf_keras's slots under tf.distribute), which saves
    through SaveableObjects rather than `_serialize_to_tensors`: the same conversions as
    `_ConvertingRestore`, in the restore of its SaveableObject."""

    def _gather_saveables_for_checkpoint(self):
        factories = super()._gather_saveables_for_checkpoint()
        variable = self

        def factory(make):
            def converting_saveable(name):
                saveable = make(name=name)
                saved = _dtype_being_restored(variable)
                return _ConvertingSaveable(saveable, variable, saved)
            return converting_saveable

        return {key: factory(make) for key, make in factories.items()}


class _ConvertingSaveable(saveable_object.SaveableObject):
    """A distributed variable's SaveableObject whose restore converts (as `_ConvertingRestore`):
    read in the saved dtype, cast and reshaped to the variable's, and restored."""

    def __init__(self, saveable, variable, saved_dtype):
        self._saveable, self._variable = saveable, variable
        specs = saveable.specs
        if saved_dtype is not None and saved_dtype != variable.dtype.base_dtype:
            # What a restore reads: the value as it was saved (the tensor is only for saving).
            specs = [saveable_object.SaveSpec(spec._tensor, spec.slice_spec, spec.name,
                                              dtype=saved_dtype, device=spec.device)
                     for spec in specs]
        super().__init__(saveable.op, specs, saveable.name)

    def restore(self, restored_tensors, restored_shapes):
        value, = restored_tensors
        variable = self._variable
        if value.dtype != variable.dtype.base_dtype:
            warnings.warn(cast_message(variable._tf_ftrl_optimizer, [
                f"{_name_of(variable)} {value.dtype.name} -> {variable.dtype.base_dtype.name}"]),
                UserWarning)
            value = tf.cast(value, variable.dtype.base_dtype)
        converted = converted_tensor(value, tuple(variable.shape))
        if converted is not None:
            warnings.warn(converted_message(
                variable._tf_ftrl_optimizer, value.shape.rank != 1,
                [f"{_name_of(variable)} {tuple(value.shape)} -> {tuple(variable.shape)}"]),
                UserWarning)
            value = converted
        return self._saveable.restore([value], None)


_CONVERTING_CLASSES = {}


def converting(variable, optimizer_name):
    """`variable` (a Keras variable, or a tf.Variable of tf_keras's optimizers) with a restore
    that converts mixed into its class: `_ConvertingRestore` where the class serializes itself,
    `_ConvertingSaveables` where it saves through SaveableObjects (distributed variables)."""
    base = type(variable)
    if base not in _CONVERTING_CLASSES:
        own = base._serialize_to_tensors is not _TRACKABLE_SERIALIZE
        mixin = _ConvertingRestore if own else _ConvertingSaveables
        _CONVERTING_CLASSES[base] = type(base.__name__, (mixin, base), {})
    variable.__class__ = _CONVERTING_CLASSES[base]
    variable._tf_ftrl_optimizer = optimizer_name
    return variable


_TRACKABLE_SERIALIZE = tf.__internal__.tracking.Trackable._serialize_to_tensors
