"""Trains DeepFM (tf_ftrl.examples.deepfm: regularized 1M-row embedding tables, as DeepCTR
builds them) with tf_ftrl's Adagrad before and after `tf_ftrl.sparse_regularizers(model)`, in the
Keras front end of this process, and prints what tests/test_sparse_regularizers.py checks as one
JSON line:

    python -m tests.support.sparse_regularizer_worker SEED             # Keras 3
    TF_USE_LEGACY_KERAS=1 python -m tests.support.sparse_regularizer_worker SEED   # tf_keras
    # DeepCTR's own DeepFM (tf_keras): the tables it builds, before and after the one line
    TF_USE_LEGACY_KERAS=1 python -m tests.support.sparse_regularizer_worker deepctr

Two logical CPU devices are configured, for the MirroredStrategy part.
"""

import os
import sys
import warnings

import numpy as np

from tests.support.workers import print_result

VOCABULARY = 1_000_000
FIELDS = 3
L2 = 0.05  # large enough that its gradient shows in a step
LEARNING_RATE = 0.1
INITIAL_ACCUMULATOR = 0.1
EPSILON = 1e-7
BATCH = 32


def _keras():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras
        return tf_keras, "tf_keras"
    import keras
    return keras, "keras3"


def _tables(model):
    return [layer for layer in model.layers if layer.name.startswith(("sparse_emb", "linear"))]


def main(seed):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import tf_ftrl
    from tf_ftrl.examples import deepfm
    keras, front_end = _keras()
    adagrad = tf_ftrl.legacy.Adagrad if front_end == "tf_keras" else tf_ftrl.Adagrad
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(int(rng.integers(2**31)))

    def build():
        # l2 on the deep tables; l2(0) on the linear ones (dropped by the rewrite).
        return deepfm.build(keras, FIELDS, VOCABULARY, 4, hidden_units=(8,),
                            l2_reg_embedding=L2, l2_reg_linear=0.0)

    # A batch whose ids repeat (each field draws from a few rows).
    ids = rng.integers(1, VOCABULARY, (FIELDS, 8))
    x = {f"C{i + 1}": rng.choice(ids[i], (BATCH, 1)).astype(np.int32) for i in range(FIELDS)}
    y = rng.integers(0, 2, (BATCH, 1)).astype(np.float32)
    result = {"front_end": front_end}

    # 1. As built: the regularizers make every table's gradient dense.
    model = build()
    initial = model.get_weights()
    optimizer = adagrad(LEARNING_RATE)
    model.compile(optimizer, "binary_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
    result["warnings"] = [str(w.message) for w in caught if "dense gradient" in str(w.message)]
    result["kernels_before"] = optimizer.kernels_used()

    # 2. The documented line.
    model.set_weights(initial)
    result["done"] = tf_ftrl.sparse_regularizers(model)
    result["done_again"] = tf_ftrl.sparse_regularizers(model)
    tables = [layer.embeddings for layer in _tables(model) if layer.name.startswith("sparse_emb")]
    before = [t.numpy().astype(np.float64) for t in tables]

    # The penalty the model now reports: L2 * sum of squares of each looked-up row, once.
    model(x)
    rows = [np.unique(x[f"C{i + 1}"]) for i in range(FIELDS)]
    result["penalty"] = float(sum(float(tf.reduce_sum(loss)) for loss in model.losses))
    result["penalty_reference"] = float(sum(L2 * np.sum(b[r] ** 2) for b, r in zip(before, rows)))

    # The data loss's gradient on the tables, at the weights before the step.
    with tf.GradientTape() as tape:
        data_loss = keras.losses.BinaryCrossentropy()(y, model(x, training=True))
    grads = tape.gradient(data_loss, tables)
    result["data_gradient_sparse"] = all(isinstance(g, tf.IndexedSlices) for g in grads)
    data_grads = [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads]

    optimizer = adagrad(LEARNING_RATE)
    model.compile(optimizer, "binary_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train_on_batch(x, y)
    result["warnings_after"] = [str(w.message) for w in caught
                                if "dense gradient" in str(w.message)]
    result["kernels_after"] = optimizer.kernels_used()
    after = [t.numpy().astype(np.float64) for t in tables]

    # Float64 reference: Adagrad with the data gradient plus the whole-table L2's gradient
    # (2 * L2 * w) on the looked-up rows; every other row unchanged.
    errors, untouched_changed = [], 0
    for b, a, g, r in zip(before, after, data_grads, rows):
        grad = g[r] + 2 * L2 * b[r]
        accumulator = INITIAL_ACCUMULATOR + grad ** 2
        expected = b[r] - LEARNING_RATE * grad / (np.sqrt(accumulator) + EPSILON)
        errors.append(float(np.max(np.abs(a[r] - expected) / (np.abs(expected) + 1e-3))))
        untouched = np.ones(VOCABULARY, bool)
        untouched[r] = False
        untouched_changed += int(np.sum(np.any(a[untouched] != b[untouched], axis=1)))
    result["step_relative_error"] = max(errors)
    result["untouched_rows_changed"] = untouched_changed

    # 3. The whole-table penalty on the same step: the same looked-up rows, and every other row
    # decays.
    dense = build()
    dense.set_weights(initial)
    dense.compile(adagrad(LEARNING_RATE), "binary_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense.train_on_batch(x, y)
    dense_tables = [layer.embeddings.numpy().astype(np.float64) for layer in _tables(dense)
                    if layer.name.startswith("sparse_emb")]
    result["looked_up_rows_vs_whole_table"] = max(
        float(np.max(np.abs(d[r] - a[r]))) for d, a, r in zip(dense_tables, after, rows))
    result["whole_table_rows_changed"] = sum(
        int(np.sum(np.any(d != b, axis=1))) for d, b in zip(dense_tables, before))

    # 4. Under MirroredStrategy with two replicas, each replica penalizes the rows of its own
    # half of the batch, and Keras divides each replica's losses by 2: a row that one replica
    # looks up gets half the penalty's gradient, a row both look up all of it.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
        mirrored.set_weights(initial)
        tf_ftrl.sparse_regularizers(mirrored)
        mirrored_optimizer = adagrad(LEARNING_RATE)
        mirrored.compile(mirrored_optimizer, "binary_crossentropy")
    # fit splits the batch over the replicas in order (Keras 3's train_on_batch would give each
    # replica the whole batch).
    mirrored.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    mirrored_tables = [layer.embeddings.numpy().astype(np.float64) for layer in _tables(mirrored)
                       if layer.name.startswith("sparse_emb")]
    errors = []
    for i, (b, a, g, r) in enumerate(zip(before, mirrored_tables, data_grads, rows)):
        column = x[f"C{i + 1}"].ravel()
        share = (np.isin(r, column[:BATCH // 2]).astype(np.float64)
                 + np.isin(r, column[BATCH // 2:])) / 2

        grad = g[r] + share[:, None] * 2 * L2 * b[r]
        accumulator = INITIAL_ACCUMULATOR + grad ** 2
        expected = b[r] - LEARNING_RATE * grad / (np.sqrt(accumulator) + EPSILON)
        errors.append(float(np.max(np.abs(a[r] - expected) / (np.abs(expected) + 1e-3))))
    result["mirrored_replicas"] = strategy.num_replicas_in_sync
    result["mirrored_step_relative_error"] = max(errors)
    result["mirrored_rows_with_half_share"] = int(sum(
        np.sum(np.isin(r, x[f"C{i + 1}"].ravel()[:BATCH // 2])
               != np.isin(r, x[f"C{i + 1}"].ravel()[BATCH // 2:])) for i, r in enumerate(rows)))
    history = mirrored.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    result["mirrored_loss"] = [float(v) for v in history.history["loss"]]
    result["mirrored_kernels"] = mirrored_optimizer.kernels_used()
    print_result(result)


def deepctr():
    import tensorflow as tf
    from deepctr.feature_column import SparseFeat
    from deepctr.models import DeepFM

    import tf_ftrl
    columns = [SparseFeat(f"C{i + 1}", vocabulary_size=VOCABULARY, embedding_dim=4, dtype="int32")
               for i in range(FIELDS)]
    model = DeepFM(columns, columns, dnn_hidden_units=(8,))  # l2_reg_embedding=1e-5
    rng = np.random.default_rng(0)
    x = {f"C{i + 1}": rng.integers(0, VOCABULARY, (BATCH, 1)).astype(np.int32)
         for i in range(FIELDS)}
    y = rng.integers(0, 2, (BATCH, 1)).astype(np.float32)
    result = {}
    optimizer = tf_ftrl.legacy.Adagrad(0.05)
    model.compile(optimizer, "binary_crossentropy")
    for phase in ("before", "after"):
        if phase == "after":
            # On the model that has trained, without compiling again.
            result["done"] = tf_ftrl.sparse_regularizers(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=BATCH, verbose=0)
        result[f"warnings_{phase}"] = len([w for w in caught
                                           if "dense gradient" in str(w.message)])
        result[f"kernels_{phase}"] = optimizer.kernels_used()
    result["embedding_layers"] = sorted(
        layer.name for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, tf.keras.layers.Embedding))
    print_result(result)


if __name__ == "__main__":
    if sys.argv[1] == "deepctr":
        deepctr()
    else:
        main(int(sys.argv[1]))
