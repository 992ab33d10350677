"""FTRL's warm start in a process of its own, for tests/test_warm_start.py: under MirroredStrategy
(2 logical CPUs, which must be set before TensorFlow initialises its devices) and with tf_keras
(TF_USE_LEGACY_KERAS=1 before TensorFlow starts). Prints what the tests check as one JSON line.

    python -m tests.support.warm_start_worker mirrored                        # Keras 3
    TF_USE_LEGACY_KERAS=1 python -m tests.support.warm_start_worker legacy   # tf_keras
"""

import sys

import numpy as np

from tests.support.workers import print_result

ROWS, COLUMNS = 32, 4
VOCABULARY, EMBEDDING_DIM, IDS_PER_EXAMPLE, BATCH = 40, 4, 3, 16

# name: tf_ftrl.legacy.Ftrl arguments (tests/test_warm_start.py computes the reference).
LEGACY_CASES = {
    "plain": dict(learning_rate=0.1),
    "l1_l2_beta": dict(learning_rate=0.05, l1_regularization_strength=0.01,
                       l2_regularization_strength=0.02, beta=0.3),
    "by_lr": dict(learning_rate=0.05, multiply_linear_by_lr=True),
}


def _pretrained(seed, shape):
    values = np.random.default_rng(seed).normal(scale=0.3, size=shape).astype(np.float32)
    values.flat[::7] = 0.0
    return values


def _ids(seed, vocabulary_used):
    return np.random.default_rng(seed).integers(0, vocabulary_used, size=(BATCH, IDS_PER_EXAMPLE),
                                                dtype=np.int32)


def _all_ids():
    return (np.arange(BATCH * IDS_PER_EXAMPLE) % VOCABULARY).reshape(BATCH, IDS_PER_EXAMPLE)


def _embedding_model(keras, table):
    """Embedding (pretrained) -> Dense with a zero kernel: the first step's gradient of every
    touched row is exactly 0."""
    model = keras.Sequential([
        keras.Input((IDS_PER_EXAMPLE,), dtype="int32"),
        keras.layers.Embedding(VOCABULARY, EMBEDDING_DIM),
        keras.layers.Flatten(),
        keras.layers.Dense(1, kernel_initializer="zeros"),
    ])
    model.layers[0].embeddings.assign(table)
    return model


def _mirrored_fit(keras, make_optimizer, linear_of):
    """Warm-started fit under MirroredStrategy; then the table reloaded, warm_start_linear() in
    the strategy's scope and a step touching every row."""
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    table = _pretrained(5, (VOCABULARY, EMBEDDING_DIM))
    ids = _ids(6, VOCABULARY // 2)
    targets = np.random.default_rng(7).normal(size=(BATCH, 1)).astype(np.float32)
    with strategy.scope():
        model = _embedding_model(keras, table)
        optimizer = make_optimizer()
        model.compile(optimizer=optimizer, loss="mse")
    model.fit(ids, targets, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    after = model.layers[0].embeddings.numpy()
    linears = [v.numpy() for v in linear_of(optimizer, model.layers[0].embeddings).values]

    with strategy.scope():
        model.layers[0].embeddings.assign(table)
        model.layers[-1].kernel.assign(np.zeros(model.layers[-1].kernel.shape, np.float32))
        optimizer.warm_start_linear(*([model.trainable_variables]
                                      if "legacy" in type(optimizer).__module__ else []))
    model.fit(_all_ids(), targets, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "table": table.tolist(),
        "after": after.tolist(),
        "touched": np.unique(ids).tolist(),
        "replica_linears_equal": all(np.array_equal(linears[0], x) for x in linears[1:]),
        "rebuilt_after": model.layers[0].embeddings.numpy().tolist(),
    }


def run_mirrored():
    import keras

    import tf_ftrl

    return {"mirrored": _mirrored_fit(
        keras, lambda: tf_ftrl.Ftrl(learning_rate=0.05, warm_start=True),
        lambda optimizer, var: optimizer.get_slot(var, "linear").value)}


def _legacy_cases(tf, Ftrl):
    results = {}
    for name, args in LEGACY_CASES.items():
        weights = _pretrained(1, (ROWS, COLUMNS))
        var = tf.Variable(weights)
        optimizer = Ftrl(warm_start=True, **args)
        # A zero-gradient step creates the slots and leaves linear exactly as it started.
        optimizer.apply_gradients([(tf.zeros_like(var), var)])
        dense_after = var.numpy()
        rows = np.arange(0, ROWS, 2).astype(np.int32)
        optimizer.apply_gradients([(tf.IndexedSlices(
            tf.zeros([len(rows), COLUMNS]), tf.constant(rows), tf.constant([ROWS, COLUMNS])),
            var)])
        results[name] = {
            "weights": weights.tolist(),
            "accum": optimizer.get_slot(var, "accumulator").numpy().tolist(),
            "linear": optimizer.get_slot(var, "linear").numpy().tolist(),
            "dense_after": dense_after.tolist(),
            "sparse_after": var.numpy().tolist(),
        }
    return results


def _legacy_fit(tf_keras, Ftrl, warm_start):
    table = _pretrained(5, (VOCABULARY, EMBEDDING_DIM))
    ids = _ids(6, VOCABULARY // 2)
    model = _embedding_model(tf_keras, table)
    model.compile(optimizer=Ftrl(learning_rate=0.05, warm_start=warm_start), loss="mse")
    model.fit(ids, np.ones((BATCH, 1), np.float32), batch_size=BATCH, epochs=1, verbose=0)
    after = model.layers[0].embeddings.numpy()
    touched = np.unique(ids)
    untouched = np.setdiff1d(np.arange(VOCABULARY), touched)
    close = np.all(np.abs(after[touched] - table[touched])
                   <= np.spacing(np.abs(table[touched])) * 1.01)
    return bool(close), bool(np.array_equal(after[untouched], table[untouched])), after[touched]


def run_legacy():
    import tensorflow as tf
    import tf_keras

    from tf_ftrl.legacy import Ftrl

    result = {"cases": _legacy_cases(tf, Ftrl)}

    config = Ftrl(warm_start=True).get_config()
    result["config"] = [config.get("warm_start"), Ftrl.from_config(config).warm_start,
                        "warm_start" in Ftrl().get_config()]

    # warm_start_linear on a trained optimizer, after new weights are loaded.
    var = tf.Variable(_pretrained(2, (ROWS, COLUMNS)))
    optimizer = Ftrl(learning_rate=0.1)
    rng = np.random.default_rng(3)
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant(rng.normal(size=(ROWS, COLUMNS)), tf.float32),
                                    var)])
    loaded = _pretrained(4, (ROWS, COLUMNS))
    var.assign(loaded)
    optimizer.warm_start_linear([var])
    optimizer.apply_gradients([(tf.zeros_like(var), var)])
    result["warm_start_linear_kept"] = bool(np.all(
        np.abs(var.numpy() - loaded) <= np.spacing(np.abs(loaded)) * 1.01))

    kept, untouched_kept, _ = _legacy_fit(tf_keras, Ftrl, True)
    result["fit_touched_rows_kept"], result["fit_untouched_rows_kept"] = kept, untouched_kept
    _, _, wiped = _legacy_fit(tf_keras, Ftrl, False)
    result["default_wipes"] = bool(np.all(wiped == 0))

    result["mirrored"] = _mirrored_fit(
        tf_keras, lambda: Ftrl(learning_rate=0.05, warm_start=True),
        lambda optimizer, var: optimizer.get_slot(var, "linear"))
    return result


def main(mode):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if mode == "mirrored":
        print_result(run_mirrored())
    elif mode == "legacy":
        print_result(run_legacy())
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected 'mirrored' or 'legacy'")


if __name__ == "__main__":
    main(*sys.argv[1:])
