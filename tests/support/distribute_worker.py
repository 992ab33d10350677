"""Trains a small Embedding + Dense model with tf_ftrl's optimizers under tf.distribute, in a
process of its own, and prints what the distribute tests check as one JSON line.

Logical CPU devices and TF_CONFIG must be set before TensorFlow initialises its devices, so
tests/test_optimizers_distribute.py runs this script in fresh processes:

    # 2 logical CPUs, MirroredStrategy
    python -m tests.support.distribute_worker mirrored
    # one worker of a MultiWorkerMirroredStrategy cluster described by TF_CONFIG
    python -m tests.support.distribute_worker multi_worker
"""

import json
import os
import sys

from tests.support.models import embedding_regression_model
from tests.support.workers import print_result

OPTIMIZERS = ("ftrl", "adagrad")

VOCABULARY = 20
EMBEDDING_DIM = 4
IDS_PER_EXAMPLE = 3
GLOBAL_BATCH = 8
STEPS = 4


def main(mode):
    if mode == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        result = run_mirrored()
    elif mode == "multi_worker":
        import tensorflow as tf

        # The strategy must exist before any other op runs in this process.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        result = run_multi_worker(strategy)
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected 'mirrored' or 'multi_worker'")
    print_result(result)


def dataset_arrays():
    """STEPS global batches of ids (small vocabulary: duplicate ids within and across replicas)
    and regression targets."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = STEPS * GLOBAL_BATCH
    ids = rng.integers(0, VOCABULARY, size=(n, IDS_PER_EXAMPLE)).astype("int32")
    targets = rng.normal(size=(n, 1)).astype("float32")
    return ids, targets


def initial_weights():
    import numpy as np

    rng = np.random.default_rng(11)
    return [
        rng.uniform(-0.1, 0.1, size=(VOCABULARY, EMBEDDING_DIM)).astype("float32"),
        rng.uniform(-0.3, 0.3, size=(IDS_PER_EXAMPLE * EMBEDDING_DIM, 1)).astype("float32"),
        np.full((1,), 0.05, "float32"),
    ]


def make_model():
    model = embedding_regression_model(VOCABULARY, EMBEDDING_DIM, IDS_PER_EXAMPLE)
    model.set_weights(initial_weights())
    return model


# Gradient processing that Keras 3 itself densifies sparse gradients for (or fails on).
PROCESSING = {
    "clipnorm": dict(clipnorm=0.05),
    "clipvalue": dict(clipvalue=0.01),
    "global_clipnorm": dict(global_clipnorm=0.05),
    "loss_scale_factor": dict(loss_scale_factor=64.0),
}


def make_optimizer(name, **processing):
    """A tf_ftrl optimizer that also records, at trace time, whether each gradient its
    update_step receives is sparse (to check that Embedding gradients stay IndexedSlices)."""
    import tensorflow as tf

    import tf_ftrl

    base = {"ftrl": tf_ftrl.Ftrl, "adagrad": tf_ftrl.Adagrad}[name]
    kwargs = {
        "ftrl": dict(learning_rate=0.2, l1_regularization_strength=0.001,
                     l2_regularization_strength=0.01),
        "adagrad": dict(learning_rate=0.2),
    }[name]

    class Recording(base):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.gradient_types = {}

        def update_step(self, gradient, variable, learning_rate):
            kind = "sparse" if isinstance(gradient, tf.IndexedSlices) else "dense"
            self.gradient_types[self._get_variable_index(variable)] = kind
            return super().update_step(gradient, variable, learning_rate)

    return Recording(**kwargs, **processing)


def per_replica_arrays(variable):
    """The values of every local copy of a (Keras or tf) variable, as lists."""
    import keras

    tf_var = variable.value if isinstance(variable, keras.Variable) else variable
    copies = getattr(tf_var, "values", (tf_var,))
    return [copy.numpy().tolist() for copy in copies]


def state(model, optimizer):
    """Model weights, optimizer variables and all their per-replica copies."""
    return {
        "weights": [w.tolist() for w in model.get_weights()],
        "optimizer_variables": [v.numpy().tolist() for v in optimizer.variables],
        "weight_replicas": [per_replica_arrays(v) for v in model.weights],
        "optimizer_replicas": [per_replica_arrays(v) for v in optimizer.variables],
        "iterations": int(optimizer.iterations.numpy()),
        "gradient_kinds": [optimizer.gradient_types.get(i)
                           for i in range(len(model.trainable_variables))],
    }


def train_fit(strategy, optimizer_name):
    import tensorflow as tf

    ids, targets = dataset_arrays()
    with strategy.scope():
        model = make_model()
        optimizer = make_optimizer(optimizer_name)
        model.compile(optimizer=optimizer, loss="mse")
    dataset = tf.data.Dataset.from_tensor_slices((ids, targets)).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return state(model, optimizer)


def train_custom_loop(strategy, optimizer_name, **processing):
    """strategy.run inside a tf.function; replica r of n gets slice r of each global batch."""
    import tensorflow as tf

    ids, targets = dataset_arrays()
    with strategy.scope():
        model = make_model()
        optimizer = make_optimizer(optimizer_name, **processing)
        optimizer.build(model.trainable_variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            per_example = tf.reduce_mean(tf.square(predictions - y), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(x, y):
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    replicas = strategy.num_replicas_in_sync
    local_batch = GLOBAL_BATCH // replicas
    iterations_after_step = []
    for step in range(STEPS):
        def replica_slice(context, step=step):
            start = step * GLOBAL_BATCH + context.replica_id_in_sync_group * local_batch
            return (tf.constant(ids[start:start + local_batch]),
                    tf.constant(targets[start:start + local_batch]))

        x, y = strategy.experimental_distribute_values_from_function(replica_slice)
        train_step(x, y)
        iterations_after_step.append(per_replica_arrays(optimizer.iterations))
    result = state(model, optimizer)
    result["iterations_after_step"] = iterations_after_step
    return result


def run_mirrored():
    import tensorflow as tf

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = {"num_replicas": mirrored.num_replicas_in_sync}
    for name in OPTIMIZERS:
        result[name] = {
            "fit": {"mirrored": train_fit(mirrored, name), "single": train_fit(single, name)},
            "custom": {"mirrored": train_custom_loop(mirrored, name),
                       "single": train_custom_loop(single, name)},
        }
    result["processing"] = {
        variant: {"mirrored": train_custom_loop(mirrored, "ftrl", **kwargs),
                  "single": train_custom_loop(single, "ftrl", **kwargs)}
        for variant, kwargs in PROCESSING.items()}
    return result


def run_multi_worker(strategy):
    import tensorflow as tf

    task_index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    result = {"num_replicas": strategy.num_replicas_in_sync, "task_index": task_index}
    for name in OPTIMIZERS:
        result[name] = {"multi_worker": train_custom_loop(strategy, name)}
        if task_index == 0:
            result[name]["single"] = train_custom_loop(
                tf.distribute.OneDeviceStrategy("/cpu:0"), name)
    return result


if __name__ == "__main__":
    main(sys.argv[1])
