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
    # tf_keras: row-wise bfloat16 state through a .keras file under MirroredStrategy
    python -m tests.support.front_end_worker legacy_keras_file_resume DIR  # TF_USE_LEGACY_KERAS=1
"""

import os
import sys

from tests.support.workers import print_result

OPTIMIZERS = ("Ftrl", "Adagrad")
# format: (file name, tf_keras save_format). tf_keras's .keras files name the module to import,
# and load without registration too.
LEGACY_FORMATS = {"h5": ("model.h5", "h5"), "keras": ("model.keras", None),
                  "saved_model": ("saved_model", "tf")}


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


def _bits(values):
    import numpy as np

    return np.asarray(values).tobytes().hex()


def _fit_one_epoch(model, x, y):
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


def legacy_keras_file_resume(directory):
    """tf_keras `.keras` files keep tf_ftrl.legacy's state (row-wise, bfloat16) under a
    MirroredStrategy of two logical CPUs: a model trained one epoch, saved and loaded, then
    trained one more epoch, against the model that went on without the file (weights and state,
    bit for bit); the step count right after loading; the file loaded into an element-wise
    float32 optimizer (load_weights before its slots exist: converted when they are made); and
    into a model with other variables (the state is not loaded, with a warning)."""
    import warnings

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras

    import tf_ftrl

    rng = np.random.default_rng(11)
    x = rng.integers(0, 50, size=(96, 3)).astype("int32")
    y = rng.normal(size=(96, 1)).astype("float32")

    def model(extra_layer=False):
        layers = [tf_keras.Input((3,), dtype="int32"), tf_keras.layers.Embedding(50, 8),
                  tf_keras.layers.Flatten()]
        if extra_layer:
            layers.append(tf_keras.layers.Dense(4))
        return tf_keras.Sequential(layers + [tf_keras.layers.Dense(1)])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {}
    for name in OPTIMIZERS:
        cls = getattr(tf_ftrl.legacy, name)
        out = result[name] = {}
        with strategy.scope():
            trained = model()
            trained.compile(cls(learning_rate=0.3, rowwise=True, state_dtype="bfloat16"), "mse")
        _fit_one_epoch(trained, x, y)
        path = os.path.join(directory, f"{name}.keras")
        trained.save(path)
        saved_state = trained.optimizer.get_weights()
        with strategy.scope():
            loaded = tf_keras.models.load_model(path)
        # Saved again before its first step (its slots not made yet, the state waiting for
        # them), then loaded.
        resaved_path = os.path.join(directory, f"{name}_resaved.keras")
        loaded.save(resaved_path)
        with strategy.scope():
            reloaded = tf_keras.models.load_model(resaved_path)
        out["iterations"] = [int(loaded.optimizer.iterations.numpy()),
                             int(trained.optimizer.iterations.numpy())]
        for m in (trained, loaded, reloaded):
            _fit_one_epoch(m, x, y)
        for key, m in (("", loaded), ("resaved_", reloaded)):
            out[key + "weights_equal"] = ([_bits(w) for w in m.get_weights()]
                                          == [_bits(w) for w in trained.get_weights()])
            out[key + "state_equal"] = ([_bits(w) for w in m.optimizer.get_weights()]
                                        == [_bits(w) for w in trained.optimizer.get_weights()])

        # Into element-wise float32 state, before the slots exist.
        target = model()
        target.compile(cls(learning_rate=0.3), "mse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            target.load_weights(path)
            target.optimizer._create_all_weights(target.trainable_variables)
        converted = []
        for i, (saved, now) in enumerate(zip(saved_state, target.optimizer.get_weights())):
            saved = np.asarray(saved).astype(now.dtype)
            if saved.shape != now.shape:  # a row-wise accumulator: each row's value repeated
                saved = np.broadcast_to(saved.reshape((-1,) + (1,) * (now.ndim - 1)), now.shape)
            # (The step count first; then the slots, now float32.)
            converted.append((i == 0 or now.dtype == np.float32) and np.array_equal(saved, now))
        out["converted_exactly"] = converted
        out["conversion_warnings"] = [str(w.message) for w in caught
                                      if "rowwise=True" in str(w.message)
                                      or "another dtype" in str(w.message)]

        # Into a model with other variables: nothing loaded, and a warning says so.
        other = model(extra_layer=True)
        other.compile(cls(learning_rate=0.3), "mse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            other.load_weights(path, skip_mismatch=True)
            _fit_one_epoch(other, x, y)
        out["other_model"] = {
            "iterations": int(other.optimizer.iterations.numpy()),
            "warnings": [str(w.message) for w in caught if "was not loaded" in str(w.message)]}

        # A file of tf_keras's own (new) optimizer: its state is in another layout, not loaded;
        # ours in its optimizer: not loaded either (it logs), and nothing fails.
        stock = model()
        stock.compile(getattr(tf_keras.optimizers, name)(learning_rate=0.3), "mse")
        _fit_one_epoch(stock, x, y)
        stock_path = os.path.join(directory, f"stock_{name}.keras")
        stock.save(stock_path)
        ours = model()
        ours.compile(cls(learning_rate=0.3), "mse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours.load_weights(stock_path)
            _fit_one_epoch(ours, x, y)
        stock_again = model()
        stock_again.compile(getattr(tf_keras.optimizers, name)(learning_rate=0.3), "mse")
        stock_again.load_weights(path)
        _fit_one_epoch(stock_again, x, y)
        out["stock_file"] = {
            "iterations": int(ours.optimizer.iterations.numpy()),
            "warnings": [str(w.message) for w in caught if "was not loaded" in str(w.message)],
            "stock_iterations": int(stock_again.optimizer.iterations.numpy())}

        # Mixed precision: tf_keras wraps ours in its LossScaleOptimizer.
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            mixed = model()
            mixed.compile(cls(learning_rate=0.3, rowwise=True, state_dtype="bfloat16"), "mse")
            _fit_one_epoch(mixed, x, y)
            mixed_path = os.path.join(directory, f"mixed_{name}.keras")
            mixed.save(mixed_path)
            mixed_loaded = tf_keras.models.load_model(mixed_path)
            out["mixed"] = {"wrapper": type(mixed_loaded.optimizer).__name__,
                            "iterations": int(mixed_loaded.optimizer.iterations.numpy())}
            for m in (mixed, mixed_loaded):
                _fit_one_epoch(m, x, y)
            out["mixed"]["state_equal"] = (
                [_bits(w) for w in mixed_loaded.optimizer.inner_optimizer.get_weights()]
                == [_bits(w) for w in mixed.optimizer.inner_optimizer.get_weights()])
        finally:
            tf_keras.mixed_precision.set_global_policy("float32")
    return result


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
        # Before tf_ftrl.custom_objects is read: reading it imports tf_ftrl.legacy. The .keras
        # files last: loading one imports it too.
        for key, path in sorted(paths.items(), key=lambda item: item[0].endswith("/keras")):
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
            "save_keras": save_keras, "load_keras_custom_objects": load_keras_custom_objects,
            "legacy_keras_file_resume": legacy_keras_file_resume}
    if mode not in runs:
        raise SystemExit(f"unknown mode {mode!r}; expected one of {sorted(runs)}")
    print_result(runs[mode](*args))


if __name__ == "__main__":
    main(*sys.argv[1:])
