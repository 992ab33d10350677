"""Trains with `rowwise=True` in the Keras front end of this process and prints what
tests/test_rowwise_optimizers.py checks as one JSON line:

    python -m tests.support.rowwise_worker SEED                            # Keras 3
    TF_USE_LEGACY_KERAS=1 python -m tests.support.rowwise_worker SEED      # tf_keras

- `steps`: two steps of apply_gradients on a table (sparse gradients with repeated ids), a
  kernel (dense) and a bias (rank 1), with the start values, gradients, results and slot shapes;
- `checkpoint`: the second step after a tf.train.Checkpoint round trip, against no round trip;
- `file`: a model saved after one epoch (.keras for Keras 3, .h5 for tf_keras) and loaded;
- `conversion`: state saved with the other `rowwise` setting, loaded and converted;
- `mirrored`: model.fit under MirroredStrategy with two replicas against one device;
- `xla` (Keras 3): the step compiled by XLA (custom calls where the lowering is loaded, else
  plain TF ops) against the fused ops.
"""

import contextlib
import os
import sys

import numpy as np

from tests.support.workers import print_result, scratch_directory

ROWS, DIM = 40, 4
FTRL = dict(learning_rate=0.1, l1_regularization_strength=0.01, l2_regularization_strength=0.02,
            l2_shrinkage_regularization_strength=0.01)
ADAGRAD = dict(learning_rate=0.1, epsilon=1e-3)


def _front_end():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras

        import tf_ftrl.legacy
        return tf_keras, tf_ftrl.legacy, "tf_keras"
    import keras

    import tf_ftrl
    return keras, tf_ftrl, "keras3"


def _gradients(rng, steps):
    out = []
    for _ in range(steps):
        indices = rng.integers(0, ROWS // 2, 12)
        indices[:4] = indices[0]
        out.append({"table_values": rng.normal(size=(12, DIM)), "table_indices": indices,
                    "kernel": rng.normal(size=(6, 3)), "bias": rng.normal(size=3)})
    return out


def _apply(tf, optimizer, variables, grads):
    table, kernel, bias = variables
    optimizer.apply_gradients([
        (tf.IndexedSlices(tf.constant(grads["table_values"], tf.float32),
                          tf.constant(grads["table_indices"]), tf.constant([ROWS, DIM])), table),
        (tf.constant(grads["kernel"], tf.float32), kernel),
        (tf.constant(grads["bias"], tf.float32), bias)])


def _variables(tf, start):
    return [tf.Variable(start[name], name=name) for name in ("table", "kernel", "bias")]


def _slots(optimizer, variable, names):
    return [optimizer.get_slot(variable, name).numpy() for name in names]


def main(seed):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    keras, front, front_end = _front_end()
    rng = np.random.default_rng(seed)
    start = {"table": rng.normal(size=(ROWS, DIM)).astype(np.float32),
             "kernel": rng.normal(size=(6, 3)).astype(np.float32),
             "bias": rng.normal(size=3).astype(np.float32)}
    grads = _gradients(rng, 2)
    result = {"front_end": front_end, "start": {k: v.tolist() for k, v in start.items()},
              "grads": [{k: v.tolist() for k, v in g.items()} for g in grads]}
    for name, arguments in (("Ftrl", FTRL), ("Adagrad", ADAGRAD)):
        slot_names = ["accumulator", "linear"] if name == "Ftrl" else ["accumulator"]
        make = lambda: getattr(front, name)(rowwise=True, **arguments)  # noqa: E731
        # Two steps.
        optimizer, variables = make(), _variables(tf, start)
        for g in grads:
            _apply(tf, optimizer, variables, g)
        result[name] = {
            "variables": [v.numpy().tolist() for v in variables],
            "slots": [[s.tolist() for s in _slots(optimizer, v, slot_names)] for v in variables],
            "kernels_used": optimizer.kernels_used(),
            "config_rowwise": optimizer.get_config().get("rowwise"),
            "from_config_rowwise": type(optimizer).from_config(optimizer.get_config()).rowwise,
        }
        # A checkpoint after the first step, restored into a fresh optimizer and variables.
        directory = scratch_directory()
        optimizer, variables = make(), _variables(tf, start)
        _apply(tf, optimizer, variables, grads[0])
        path = tf.train.Checkpoint(optimizer=optimizer, variables=variables).save(
            os.path.join(directory, "ckpt"))
        restored_optimizer, restored = make(), _variables(tf, start)
        if front_end == "keras3":
            restored_optimizer.build(restored)
        checkpoint = tf.train.Checkpoint(optimizer=restored_optimizer, variables=restored)
        checkpoint.restore(path).assert_existing_objects_matched()
        _apply(tf, restored_optimizer, restored, grads[1])
        result[name]["checkpoint_equal"] = all(
            np.array_equal(a.numpy(), np.array(b)) for a, b in
            zip(restored, result[name]["variables"]))
        result[name]["checkpoint_slots_equal"] = all(
            np.array_equal(a, np.array(b)) for v, slots in zip(restored,
                                                               result[name]["slots"])
            for a, b in zip(_slots(restored_optimizer, v, slot_names), slots))
        result[name]["file"] = _file_round_trip(keras, make, rng, front_end)
        result[name]["conversion"] = _conversion(keras, getattr(front, name), arguments, rng,
                                                 front_end)
        result[name]["checkpoint_conversion"] = _checkpoint_conversion(
            tf, keras, getattr(front, name), arguments, rng)
        result[name]["mirrored"] = _mirrored(tf, keras, make, rng)
        if front_end == "keras3":
            result[name]["xla"] = _xla(tf, make, start, grads)
    print_result(result)


def _model(keras, rows=200):
    return keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(rows, 8),
                             keras.layers.Flatten(), keras.layers.Dense(1)])


def _data(rng, n=256, rows=200):
    return (rng.integers(0, rows, (n, 3)).astype(np.int32),
            rng.normal(size=(n, 1)).astype(np.float32))


def _file_round_trip(keras, make, rng, front_end):
    x, y = _data(rng)
    model = _model(keras)
    model.compile(make(), "mse")
    model.fit(x, y, batch_size=64, verbose=0)
    path = os.path.join(scratch_directory(), "model.keras" if front_end == "keras3" else "model.h5")
    model.save(path)
    loaded = keras.models.load_model(path)
    saved = [v.numpy() for v in _optimizer_variables(model.optimizer)]
    again = [v.numpy() for v in _optimizer_variables(loaded.optimizer)]
    out = {"rowwise": loaded.optimizer.rowwise,
           "shapes": [list(v.shape) for v in again],
           "equal": len(saved) == len(again) and all(np.array_equal(a, b)
                                                    for a, b in zip(saved, again))}
    loaded.fit(x, y, batch_size=64, verbose=0)
    out["kernels_after_load"] = loaded.optimizer.kernels_used()
    return out


def _conversion(keras, cls, arguments, rng, front_end):
    """State trained with one rowwise setting, loaded into an optimizer with the other (Keras 3:
    model.load_weights of a .keras file; tf_keras: optimizer.set_weights): each accumulator's
    largest difference from the converted value, the warnings, and the kernels used after."""
    import warnings
    x, y = _data(rng)
    out = {}
    for source_rowwise in (False, True):
        source = _model(keras)
        source.compile(cls(rowwise=source_rowwise, **arguments), "mse")
        source.fit(x, y, batch_size=64, verbose=0)
        target = _model(keras)
        target.compile(cls(rowwise=not source_rowwise, **arguments), "mse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if front_end == "keras3":
                path = os.path.join(scratch_directory(), "source.keras")
                source.save(path)
                target.optimizer.build(target.trainable_variables)
                target.load_weights(path)
            else:
                target.set_weights(source.get_weights())
                target.optimizer._create_all_weights(target.trainable_variables)
                target.optimizer.set_weights(source.optimizer.get_weights())
        differences = []
        for before, after in zip(source.trainable_variables, target.trainable_variables):
            saved = source.optimizer.get_slot(before, "accumulator").numpy()
            loaded = target.optimizer.get_slot(after, "accumulator").numpy()
            if saved.shape == loaded.shape:
                expected = saved
            elif loaded.ndim == 1:
                expected = saved.reshape(saved.shape[0], -1).mean(axis=1)
            else:
                expected = np.broadcast_to(saved.reshape((-1,) + (1,) * (loaded.ndim - 1)),
                                           loaded.shape)
            differences.append(float(np.max(np.abs(loaded - expected))))
        target.fit(x, y, batch_size=64, verbose=0)
        out["from_rowwise" if source_rowwise else "from_element_wise"] = {
            "max_difference": max(differences),
            "warnings": [str(w.message) for w in caught if "rowwise=" in str(w.message)],
            "kernels": sorted(set(target.optimizer.kernels_used().values()))}
    return out


def _checkpoint_conversion(tf, keras, cls, arguments, rng):
    """A tf.train.Checkpoint of element-wise state restored into a row-wise optimizer, before it
    is built (a deferred restore in Keras 3; tf_keras makes the slots as it restores them) and
    after."""
    import warnings
    x, y = _data(rng)
    source = _model(keras)
    source.compile(cls(**arguments), "mse")
    source.fit(x, y, batch_size=64, verbose=0)
    path = tf.train.Checkpoint(model=source, optimizer=source.optimizer).save(
        os.path.join(scratch_directory(), "ckpt"))
    table = source.layers[0].embeddings
    saved = source.optimizer.get_slot(table, "accumulator").numpy()
    out = {}
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for when, built, strategy in (("deferred", False, None), ("built", True, None),
                                  ("mirrored", False, mirrored)):
        with strategy.scope() if strategy else contextlib.nullcontext():
            target = _model(keras)
            optimizer = cls(rowwise=True, **arguments)
            target.compile(optimizer, "mse")
            # tf_keras's optimizers have no public build: _create_all_weights is what
            # apply_gradients calls first.
            build = getattr(optimizer, "build", None) or optimizer._create_all_weights
            if built:
                build(target.trainable_variables)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tf.train.Checkpoint(model=target, optimizer=optimizer).restore(path)
                build(target.trainable_variables)
        slot = optimizer.get_slot(target.layers[0].embeddings, "accumulator")
        inner = slot.value if hasattr(slot, "path") else slot  # a Keras 3 variable's tf one
        copies = [np.asarray(copy) for copy in getattr(inner, "values", None) or (inner,)]
        target.fit(x, y, batch_size=64, verbose=0)
        out[when] = {
            "max_difference": max(float(np.max(np.abs(copy - saved.mean(axis=1))))
                                  for copy in copies),
            "copies": len(copies),
            "warnings": len([w for w in caught if "rowwise=False" in str(w.message)]),
            "iterations": int(optimizer.iterations.numpy())}
    return out


def _optimizer_variables(optimizer):
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    return [v for v in variables if len(v.shape) > 0]  # not the step counters


def _mirrored(tf, keras, make, rng):
    x, y = _data(rng, n=128)
    weights = None
    finals = {}
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            model = _model(keras)
            if weights is None:
                weights = model.get_weights()
            model.set_weights(weights)
            model.compile(make(), "mse")
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        finals[len(devices)] = (model.get_weights(), model.optimizer.kernels_used())
    return {"max_difference": max(float(np.max(np.abs(a - b)))
                                  for a, b in zip(finals[1][0], finals[2][0])),
            "kernels": finals[2][1]}


def _xla(tf, make, start, grads):
    results = []
    for jit in (False, True):
        optimizer, variables = make(), _variables(tf, start)
        optimizer.build(variables)

        @tf.function(jit_compile=jit)
        def step(g):
            table, kernel, bias = variables
            optimizer.apply_gradients([
                (tf.IndexedSlices(g["table_values"], g["table_indices"],
                                  tf.constant([ROWS, DIM])), table),
                (g["kernel"], kernel), (g["bias"], bias)])

        for g in grads:
            step({k: tf.constant(v, tf.float32 if k != "table_indices" else tf.int64)
                  for k, v in g.items()})
        results.append([v.numpy() for v in variables])
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*results))


if __name__ == "__main__":
    main(int(sys.argv[1]))
