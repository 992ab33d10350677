"""SavedModels of tf_keras models trained with tf_ftrl.legacy optimizers, for
tests/test_legacy_saved_model.py, which reads the JSON line each mode prints:

    TF_USE_LEGACY_KERAS=1 python -m tests.support.legacy_saved_model_worker save OUT_DIR
    TF_USE_LEGACY_KERAS=1 python -m tests.support.legacy_saved_model_worker save_ps OUT_DIR
    python -m tests.support.legacy_saved_model_worker save_keras3 OUT_DIR
    python -m tests.support.legacy_saved_model_worker serve DIR [DIR ...]

- `save`: for each case (CASES: row-wise and low-precision state, element-wise float32 state
  for comparison, one under MirroredStrategy with two replicas), trains a model, saves it with
  tf.saved_model.save and with model.save (tf_keras's SavedModel format) under OUT_DIR/CASE, and
  reports its predictions, its optimizer's slots, what the SavedModel's checkpoint holds, a
  tf.train.Checkpoint written after the SavedModels and restored into a fresh optimizer, and
  the model loaded back with tf_keras.models.load_model and trained on;
- `save_ps`: a model with row-wise bfloat16 state trained under ParameterServerStrategy (an
  in-process cluster of one worker and two parameter servers, its table sharded over them)
  and saved with tf.saved_model.save (OUT_DIR/PS_CASE);
- `save_keras3`: the same for a Keras 3 model with tf_ftrl.Ftrl(rowwise=True,
  state_dtype="bfloat16") (OUT_DIR/KERAS3_CASE), whose slots a SavedModel holds as Keras 3
  saves any optimizer's variables, restored from the SavedModel's checkpoint into a fresh model;
- `serve`: loads each DIR/saved_model with tf.saved_model.load, without tf_ftrl, and reports its
  predictions.
"""

import os
import sys

import numpy as np

from tests.support.workers import print_result

ROWS, DIM = 40, 4
# name: (optimizer, its arguments, under MirroredStrategy)
CASES = {
    "ftrl_rowwise_bfloat16": ("Ftrl", dict(rowwise=True, state_dtype="bfloat16"), False),
    "adagrad_rowwise": ("Adagrad", dict(rowwise=True), False),
    "ftrl_float16": ("Ftrl", dict(state_dtype="float16"), False),
    "ftrl_rowwise_bfloat16_mirrored": ("Ftrl", dict(rowwise=True, state_dtype="bfloat16"), True),
    "adagrad_float32": ("Adagrad", {}, False),
}


def _data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, ROWS, size=(256, 3)).astype(np.int32)
    return ids, (ids[:, 0] % 2).astype(np.float32)


def _model(tf_keras):
    return tf_keras.Sequential([
        tf_keras.Input((3,), dtype="int32"), tf_keras.layers.Embedding(ROWS, DIM),
        tf_keras.layers.Flatten(), tf_keras.layers.Dense(1, activation="sigmoid")])


def _slots(optimizer):
    return {v.name: v.numpy() for v in optimizer.variables() if v.shape.rank != 0}


def _compiled(tf, tf_keras, legacy, name, arguments, mirrored):
    scope = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope() if mirrored
             else tf.name_scope(""))
    with scope:
        model = _model(tf_keras)
        model.compile(optimizer=getattr(legacy, name)(learning_rate=0.5, **arguments),
                      loss="binary_crossentropy")
    return model


def save(out_dir):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras

    import tf_ftrl.legacy as legacy
    ids, clicks = _data()
    result = {}
    for case, (name, arguments, mirrored) in CASES.items():
        model = _compiled(tf, tf_keras, legacy, name, arguments, mirrored)
        model.fit(ids, clicks, batch_size=64, epochs=2, verbose=0)
        optimizer = model.optimizer
        directory = os.path.join(out_dir, case)
        tf.saved_model.save(model, os.path.join(directory, "saved_model"))
        model.save(os.path.join(directory, "keras_saved_model"), save_format="tf")
        slots = _slots(optimizer)
        reader = tf.train.load_checkpoint(os.path.join(directory, "saved_model", "variables",
                                                       "variables"))
        saved = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
                 if "OPTIMIZER" in key or key.startswith("optimizer/")}
        out = {
            "slot_shapes": {k: list(v.shape) for k, v in slots.items()},
            "slot_dtypes": {k: v.dtype.name for k, v in slots.items()},
            "predictions": model.predict(ids, verbose=0).ravel().tolist(),
            "slot_variable_keys": sorted(k for k in saved if ".OPTIMIZER_SLOT" in k),
            # Each slot's value among the SavedModel's checkpoint tensors, bit for bit.
            "slots_in_saved_model": all(
                any(s.dtype == t.dtype and s.shape == t.shape and np.array_equal(s, t)
                    for t in saved.values())
                for s in slots.values()),
        }
        # A checkpoint after the SavedModels keeps slot variables, and restores.
        prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(
            os.path.join(directory, "ckpt", "ckpt"))
        out["checkpoint_slot_keys"] = sorted(
            k for k in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
            if ".OPTIMIZER_SLOT" in k)
        fresh = _compiled(tf, tf_keras, legacy, name, arguments, mirrored)
        tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).restore(prefix)
        fresh.optimizer._create_all_weights(fresh.trainable_variables)
        restored = list(_slots(fresh.optimizer).values())
        out["checkpoint_restores_slots"] = len(restored) == len(slots) and all(
            a.dtype == b.dtype and np.array_equal(a, b)
            for a, b in zip(restored, slots.values()))
        # tf_keras's own loader (which compiles a new optimizer from the training config).
        loaded = tf_keras.models.load_model(os.path.join(directory, "keras_saved_model"))
        out["loaded_predictions"] = loaded.predict(ids, verbose=0).ravel().tolist()
        out["loaded_optimizer"] = type(loaded.optimizer).__module__
        loaded.fit(ids, clicks, batch_size=64, epochs=1, verbose=0)
        out["loaded_trains"] = not np.allclose(loaded.predict(ids, verbose=0).ravel(),
                                               out["loaded_predictions"])
        result[case] = out
    print_result(result)


PS_CASE = "ps_ftrl_rowwise_bfloat16"


def save_ps(out_dir):
    import tensorflow as tf
    import tf_keras

    import tf_ftrl.legacy as legacy
    from tf_ftrl.examples import parameter_server
    resolver = parameter_server.start_in_process_cluster(1, 2)
    partitioner = tf.distribute.experimental.partitioners.FixedShardsPartitioner(2)
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)
    ids, clicks = _data()
    with strategy.scope():
        model = _model(tf_keras)
        model.compile(optimizer=legacy.Ftrl(0.5, rowwise=True, state_dtype="bfloat16"),
                      loss="binary_crossentropy")

    def dataset_fn(_):
        return tf.data.Dataset.from_tensor_slices((ids, clicks)).repeat().batch(64)

    model.fit(tf_keras.utils.experimental.DatasetCreator(dataset_fn), epochs=1,
              steps_per_epoch=8, verbose=0)
    tf.saved_model.save(model, os.path.join(out_dir, PS_CASE, "saved_model"))
    slots = [v for v in model.optimizer.variables() if v.shape.rank != 0]
    print_result({PS_CASE: {
        "table_shards": len(model.layers[0].embeddings.variables),
        "slot_shapes": sorted(list(v.shape) for v in slots),
        "slot_dtypes": sorted({v.dtype.name for v in slots}),
        "predictions": model.predict(ids, verbose=0).ravel().tolist(),
    }})


KERAS3_CASE = "keras3_ftrl_rowwise_bfloat16"


def save_keras3(out_dir):
    import keras
    import tensorflow as tf

    import tf_ftrl
    ids, clicks = _data()

    def compiled():
        model = _model(keras)
        model.compile(optimizer=tf_ftrl.Ftrl(0.5, rowwise=True, state_dtype="bfloat16"),
                      loss="binary_crossentropy")
        return model

    model = compiled()
    model.fit(ids, clicks, batch_size=64, epochs=2, verbose=0)
    directory = os.path.join(out_dir, KERAS3_CASE)
    tf.saved_model.save(model, os.path.join(directory, "saved_model"))
    slots = [v.numpy() for v in model.optimizer.variables if len(v.shape) >= 1]
    fresh = compiled()
    fresh.optimizer.build(fresh.trainable_variables)
    tf.train.Checkpoint(root=fresh).read(os.path.join(
        directory, "saved_model", "variables", "variables")).assert_existing_objects_matched()
    restored = [v.numpy() for v in fresh.optimizer.variables if len(v.shape) >= 1]
    print_result({KERAS3_CASE: {
        "predictions": model.predict(ids, verbose=0).ravel().tolist(),
        "slot_shapes": [list(v.shape) for v in slots],
        "slot_dtypes": sorted({v.dtype.name for v in slots}),
        "saved_model_restores_slots": len(restored) == len(slots) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(restored, slots)),
    }})


def serve(*directories):
    import tensorflow as tf
    ids, _ = _data()
    predictions = {}
    for directory in directories:
        loaded = tf.saved_model.load(os.path.join(directory, "saved_model"))
        (output,) = loaded.signatures["serving_default"](tf.constant(ids)).values()
        predictions[os.path.basename(directory)] = output.numpy().ravel().tolist()
    print_result({"predictions": predictions, "tf_ftrl_imported": "tf_ftrl" in sys.modules})


if __name__ == "__main__":
    {"save": save, "save_ps": save_ps, "save_keras3": save_keras3,
     "serve": serve}[sys.argv[1]](*sys.argv[2:])
