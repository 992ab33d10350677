"""Trains with `state_dtype` in the Keras front end of this process and prints what
tests/test_state_dtype_optimizers.py checks as one JSON line:

    python -m tests.support.state_dtype_worker SEED                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python -m tests.support.state_dtype_worker SEED    # tf_keras

For Ftrl and Adagrad, element-wise and row-wise:
- `nearest`: one step with bfloat16 state rounded to nearest against the same step with float32
  state (var bit for bit; the state that step's rounded once);
- `stochastic`: two runs of two steps with the same seed (the same bits), the slots' dtypes;
- `config`: get_config / from_config;
- `checkpoint`: a tf.train.Checkpoint round trip of bfloat16 state, and (Keras 3) float32 state
  restored into a bfloat16 optimizer and back, converted, with the warnings;
- `file`: a model saved after one epoch (.keras or .h5) and loaded, and float32 state loaded
  into a bfloat16 optimizer (converted, with the warning);
- `mirrored`: model.fit under MirroredStrategy with two replicas: the replicas' state bits.
"""

import os
import sys
import warnings

import numpy as np

from tests.support.workers import print_result, scratch_directory

ROWS, DIM = 40, 4
FTRL = dict(learning_rate=0.1, l1_regularization_strength=0.01, l2_regularization_strength=0.02,
            initial_accumulator_value=0.125)
ADAGRAD = dict(learning_rate=0.1, epsilon=1e-3, initial_accumulator_value=0.125)


def _front_end():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras

        import tf_ftrl.legacy
        return tf_keras, tf_ftrl.legacy, "tf_keras"
    import keras

    import tf_ftrl
    return keras, tf_ftrl, "keras3"


def _bits(array):
    array = np.asarray(array)
    return array.view(np.uint16 if array.dtype.itemsize == 2 else np.uint32).tolist()


def _gradients(rng, steps):
    out = []
    for _ in range(steps):
        indices = rng.integers(0, ROWS // 2, 12)
        indices[:4] = indices[0]
        out.append({"table_values": rng.normal(size=(12, DIM)).astype(np.float32),
                    "table_indices": indices, "kernel": rng.normal(size=(6, 3)).astype(np.float32),
                    "bias": rng.normal(size=3).astype(np.float32),
                    "scale": np.float32(rng.normal())})
    return out


def _apply(tf, optimizer, variables, grads):
    table, kernel, bias, scale = variables
    optimizer.apply_gradients([
        (tf.IndexedSlices(tf.constant(grads["table_values"]), tf.constant(grads["table_indices"]),
                          tf.constant([ROWS, DIM])), table),
        (tf.constant(grads["kernel"]), kernel), (tf.constant(grads["bias"]), bias),
        (tf.constant(grads["scale"]), scale)])


def _variables(tf, start):
    # A scalar among them: its state converts between dtypes too.
    return [tf.Variable(start[k]) for k in ("table", "kernel", "bias", "scale")]


def _slots(optimizer, variables, names):
    return [optimizer.get_slot(v, n).numpy() for v in variables for n in names]


def _model(keras, rows=200):
    return keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(rows, 8),
                             keras.layers.Flatten(), keras.layers.Dense(1)])


def _data(rng, n=256, rows=200):
    return (rng.integers(0, rows, (n, 3)).astype(np.int32),
            rng.normal(size=(n, 1)).astype(np.float32))


def _optimizer_variables(optimizer):
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    return [v for v in variables if len(v.shape) > 0]


def main(seed):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    keras, front, front_end = _front_end()
    rng = np.random.default_rng(seed)
    start = {"table": rng.normal(size=(ROWS, DIM)).astype(np.float32),
             "kernel": rng.normal(size=(6, 3)).astype(np.float32),
             "bias": rng.normal(size=3).astype(np.float32),
             "scale": np.float32(rng.normal())}
    grads = _gradients(rng, 2)
    result = {"front_end": front_end}
    for name, arguments in (("Ftrl", FTRL), ("Adagrad", ADAGRAD)):
        names = ["accumulator", "linear"] if name == "Ftrl" else ["accumulator"]
        cls = getattr(front, name)
        for rowwise in (False, True):
            key = f"{name}{'_rowwise' if rowwise else ''}"
            out = result[key] = {}

            def make(state_dtype="bfloat16", stochastic=True, **extra):
                return cls(rowwise=rowwise, state_dtype=state_dtype,
                           stochastic_rounding=stochastic, **arguments, **extra)

            # One step to nearest against float32 state.
            low, low_vars = make(stochastic=False), _variables(tf, start)
            wide, wide_vars = make(state_dtype=None), _variables(tf, start)
            _apply(tf, low, low_vars, grads[0])
            _apply(tf, wide, wide_vars, grads[0])
            out["nearest_var_equal"] = all(np.array_equal(a.numpy(), b.numpy())
                                           for a, b in zip(low_vars, wide_vars))
            out["nearest_state_rounded_once"] = all(
                _bits(a) == _bits(tf.cast(b, tf.bfloat16).numpy())
                for a, b in zip(_slots(low, low_vars, names), _slots(wide, wide_vars, names)))
            out["slot_dtypes"] = sorted({str(s.dtype) for s in _slots(low, low_vars, names)})
            # Stochastic rounding, twice.
            runs = []
            for _ in range(2):
                optimizer, variables = make(), _variables(tf, start)
                for g in grads:
                    _apply(tf, optimizer, variables, g)
                runs.append([_bits(s) for s in _slots(optimizer, variables, names)] +
                            [_bits(v.numpy()) for v in variables])
            out["stochastic_deterministic"] = runs[0] == runs[1]
            config = optimizer.get_config()
            again = cls.from_config(config)
            out["config"] = [config.get("state_dtype"), config.get("stochastic_rounding"),
                             again.state_dtype, again.stochastic_rounding]
            out["checkpoint"] = _checkpoint(tf, front_end, make, start, grads, names)
            out["file"] = _file(keras, front_end, make, rng)
            out["mirrored"] = _mirrored(tf, keras, make, rng, names)
    print_result(result)


def _checkpoint(tf, front_end, make, start, grads, names):
    """A tf.train.Checkpoint of bfloat16 state restored into bfloat16 (bits equal), float32 state
    into bfloat16 (cast, said) and bfloat16 into float32 (exact), with the optimizer built
    before the restore and not (tf_keras makes the slots as it restores them)."""
    directory = scratch_directory()
    out = {}

    def saved(state_dtype):
        optimizer, variables = make(state_dtype=state_dtype), _variables(tf, start)
        _apply(tf, optimizer, variables, grads[0])
        path = tf.train.Checkpoint(optimizer=optimizer, variables=variables).save(
            os.path.join(directory, f"ckpt_{state_dtype}"))
        return path, _slots(optimizer, variables, names)

    def restored(path, state_dtype, build_first):
        optimizer, variables = make(state_dtype=state_dtype), _variables(tf, start)
        if build_first:
            # tf_keras's optimizers have no public build: _create_all_weights is what
            # apply_gradients calls first.
            (getattr(optimizer, "build", None) or optimizer._create_all_weights)(variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = tf.train.Checkpoint(optimizer=optimizer, variables=variables).restore(path)
            if front_end == "keras3":
                optimizer.build(variables)
            else:
                _apply(tf, optimizer, variables, {k: v * 0 for k, v in grads[1].items()})
            status.assert_existing_objects_matched()
        said = any("converted" in str(w.message) for w in caught)
        return _slots(optimizer, variables, names), said

    bf16_path, bf16_slots = saved("bfloat16")
    slots, _ = restored(bf16_path, "bfloat16", True)
    out["round_trip_equal"] = all(_bits(a) == _bits(b) for a, b in zip(slots, bf16_slots))
    f32_path, f32_slots = saved(None)
    for build_first in (True, False):
        slots, said = restored(f32_path, "bfloat16", build_first)
        out[f"from_float32_built_{build_first}"] = [
            all(_bits(a) == _bits(tf.cast(b, tf.bfloat16).numpy())
                for a, b in zip(slots, f32_slots)), said]
    slots, said = restored(bf16_path, None, True)
    out["to_float32"] = [all(np.array_equal(a, b.astype(np.float32))
                             for a, b in zip(slots, bf16_slots)),
                         [str(s.dtype) for s in slots]]
    return out


def _file(keras, front_end, make, rng):
    x, y = _data(rng)
    suffix = "model.keras" if front_end == "keras3" else "model.h5"
    out = {}
    for state_dtype in ("bfloat16", None):
        model = _model(keras)
        model.compile(make(state_dtype=state_dtype), "mse")
        model.fit(x, y, batch_size=64, verbose=0)
        path = os.path.join(scratch_directory(), suffix)
        model.save(path)
        if state_dtype:
            loaded = keras.models.load_model(path)
            out["loaded_state_dtype"] = loaded.optimizer.state_dtype
            out["equal"] = all(_bits(a.numpy()) == _bits(b.numpy()) for a, b in zip(
                _optimizer_variables(model.optimizer), _optimizer_variables(loaded.optimizer)))
            out["dtypes"] = sorted({getattr(v.dtype, "name", str(v.dtype)) for v in
                                    _optimizer_variables(loaded.optimizer)})
        else:
            # float32 state into a bfloat16 optimizer: load_weights (Keras 3), set_weights
            # (tf_keras).
            target = _model(keras)
            target.compile(make(), "mse")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if front_end == "keras3":
                    target.optimizer.build(target.trainable_variables)
                    target.load_weights(path)
                else:
                    target.optimizer._create_all_weights(target.trainable_variables)
                    target.optimizer.set_weights(model.optimizer.get_weights())
            wide = [v.numpy() for v in _optimizer_variables(model.optimizer)]
            narrow = [v.numpy() for v in _optimizer_variables(target.optimizer)]
            import tensorflow as tf
            out["from_float32"] = [
                len(wide) == len(narrow) and all(
                    _bits(b) == _bits(tf.cast(a, tf.bfloat16).numpy())
                    for a, b in zip(wide, narrow)),
                any("converted" in str(w.message) for w in caught)]
    return out


def _mirrored(tf, keras, make, rng, names):
    x, y = _data(rng, n=128)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _model(keras)
        model.compile(make(), "mse")
    model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
    table = model.layers[0].embeddings if hasattr(model.layers[0], "embeddings") else None
    slot = model.optimizer.get_slot(table, names[0])
    distributed = slot.value if hasattr(slot, "path") else slot  # a Keras 3 variable's own
    replicas = [_bits(v.numpy()) for v in getattr(distributed, "values", [distributed])]
    return {"replicas": len(replicas), "equal": all(r == replicas[0] for r in replicas),
            "dtype": str(slot.dtype.name if hasattr(slot.dtype, "name") else slot.dtype)}


if __name__ == "__main__":
    main(int(sys.argv[1]))
