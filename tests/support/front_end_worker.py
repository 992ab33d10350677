"""Saves and loads models with tf_ftrl's optimizers in processes of their own and prints what
tests/test_front_ends.py checks as one JSON line. Each mode runs in a fresh process, so that a
load sees only what its own imports registered:

    # tf_keras (TF_USE_LEGACY_KERAS=1): tf_ftrl.Ftrl/Adagrad (Keras 3) given to compile
    python -m tests.support.front_end_worker wrong_class
    # save with tf_ftrl.legacy / tf_ftrl (Keras 3) optimizers, to DIR
    python -m tests.support.front_end_worker save_legacy DIR   # TF_USE_LEGACY_KERAS=1
    python -m tests.support.front_end_worker save_keras DIR
    # load from DIR: `import tf_ftrl` alone (tf_keras), or with tf_ftrl.custom_objects
    python -m tests.support.front_end_worker load_legacy DIR   # TF_USE_LEGACY_KERAS=1
    python -m tests.support.front_end_worker load_legacy_custom_objects DIR  # import tf_keras
    python -m tests.support.front_end_worker load_keras_custom_objects DIR
"""

import os
import sys

from tests.support.workers import print_result

OPTIMIZERS = ("Ftrl", "Adagrad")
# format: (file name, tf_keras save_format)
# (tf_keras's own .keras files name the module to import, and load without registration.)
LEGACY_FORMATS = {"h5": ("model.h5", "h5"), "saved_model": ("saved_model", "tf")}


def _data():
    import numpy as np

    rng = np.random.default_rng(5)
    return (rng.integers(0, 10, size=(32, 2)).astype("int32"),
            rng.normal(size=(32, 1)).astype("float32"))


def _train(keras, optimizer):
    """A small Embedding + Dense model of that Keras, fitted for one epoch with optimizer."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,), dtype="int32"), keras.layers.Embedding(10, 3),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(*_data(), batch_size=8, epochs=1, verbose=0)
    return model


def _described(optimizer, weights):
    return {"class": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
            "learning_rate": float(optimizer.get_config()["learning_rate"]),
            "weights": sorted([w.tolist() for w in weights], key=repr)}


def _legacy_state(model):
    """The tf_keras optimizer's class, learning rate and weights (iterations and slots, made if
    the optimizer has not made them yet)."""
    optimizer = model.optimizer
    optimizer._create_all_weights(model.trainable_variables)
    return _described(optimizer, optimizer.get_weights())


def _keras_state(model):
    import numpy as np

    return _described(model.optimizer, [np.asarray(v) for v in model.optimizer.variables])


def wrong_class():
    import tensorflow as tf

    import tf_ftrl

    result = {}
    for name in OPTIMIZERS:
        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
        try:
            model.compile(optimizer=getattr(tf_ftrl, name)(), loss="mse")
            result[name] = None
        except (TypeError, ValueError) as e:
            result[name] = [type(e).__name__, str(e)]
    return result


def save_legacy(directory):
    import tf_keras

    import tf_ftrl

    result = {}
    for name in OPTIMIZERS:
        model = _train(tf_keras, getattr(tf_ftrl.legacy, name)(learning_rate=0.3))
        for filename, save_format in LEGACY_FORMATS.values():
            model.save(os.path.join(directory, f"{name}_{filename}"), save_format=save_format)
        result[name] = _legacy_state(model)
    return result


def load_legacy(directory, custom_objects=False):
    """custom_objects=False: `import tf_ftrl` alone under TF_USE_LEGACY_KERAS=1, then tf.keras's
    load_model. True: `import tf_ftrl` first, tf_keras imported after it (so tf_ftrl registered
    nothing), load_model given tf_ftrl.custom_objects; and without them, for comparison."""
    import tf_ftrl

    if custom_objects:
        import tf_keras as keras
    else:
        import tensorflow as tf

        keras = tf.keras
    result = {"tf_keras_in_use": keras.__name__}
    paths = {f"{name}/{fmt}": os.path.join(directory, f"{name}_{filename}")
             for name in OPTIMIZERS for fmt, (filename, _) in LEGACY_FORMATS.items()}
    if custom_objects:
        # Before tf_ftrl.custom_objects is read: reading it imports tf_ftrl.legacy.
        for key, path in paths.items():
            try:
                keras.models.load_model(path)
                result[f"{key}/without"] = None
            except ValueError as e:
                result[f"{key}/without"] = str(e)
    for key, path in paths.items():
        kwargs = {"custom_objects": {"unrelated": object, **tf_ftrl.custom_objects}} \
            if custom_objects else {}
        result[key] = _legacy_state(keras.models.load_model(path, **kwargs))
    return result


def save_keras(directory):
    import keras

    import tf_ftrl

    result = {}
    for name in OPTIMIZERS:
        model = _train(keras, getattr(tf_ftrl, name)(learning_rate=0.3))
        model.save(os.path.join(directory, f"{name}.keras"))
        result[name] = _keras_state(model)
    return result


def load_keras_custom_objects(directory):
    import keras

    import tf_ftrl

    result = {}
    for name in OPTIMIZERS:
        model = keras.saving.load_model(
            os.path.join(directory, f"{name}.keras"),
            custom_objects={"unrelated": object, **tf_ftrl.custom_objects})
        result[name] = _keras_state(model)
    return result


def main(mode, *args):
    runs = {"wrong_class": wrong_class, "save_legacy": save_legacy, "load_legacy": load_legacy,
            "load_legacy_custom_objects": lambda d: load_legacy(d, custom_objects=True),
            "save_keras": save_keras, "load_keras_custom_objects": load_keras_custom_objects}
    if mode not in runs:
        raise SystemExit(f"unknown mode {mode!r}; expected one of {sorted(runs)}")
    print_result(runs[mode](*args))


if __name__ == "__main__":
    main(*sys.argv[1:])
