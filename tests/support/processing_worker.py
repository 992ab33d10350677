"""Applies the same per-replica gradients with tf_ftrl's optimizers and with the stock ones under
MirroredStrategy (2 logical CPUs), for every gradient-processing option, and prints every final
state as one JSON line for tests/test_gradient_processing_distribute.py.

Logical devices must be set before TensorFlow starts, hence a process of its own:

    python -m tests.support.processing_worker

Each replica gets a gradient of its own (replica 0 touches rows 0, 1, 1; replica 1 rows 1, 4),
large enough that every clipping option changes it. tf_ftrl's Keras 3 optimizers get it sparse
(`tf.IndexedSlices`) or dense; the stock `keras.optimizers` get its densified form. The tf_keras
front end (`tf_ftrl.legacy`) and `tf_keras.optimizers.legacy` get the same gradients, sparse or
dense.
"""

import sys

from tests.support.workers import print_result

ROWS, ROW_SIZE = 6, 3
REPLICA_INDICES = ([0, 1, 1], [1, 4])
TOUCHED_ROWS = sorted(set(REPLICA_INDICES[0] + REPLICA_INDICES[1]))
STEPS = 2

# Each option changes these gradients (values ~ N(0, 20^2)).
PROCESSING = {
    "none": {},
    "clipnorm": {"clipnorm": 1.0},
    "clipvalue": {"clipvalue": 0.5},
    "global_clipnorm": {"global_clipnorm": 1.0},
    "loss_scale_factor": {"loss_scale_factor": 64.0},
}
# tf_keras's OptimizerV2 has no loss_scale_factor.
LEGACY_PROCESSING = ("none", "clipnorm", "clipvalue", "global_clipnorm")
HYPERPARAMETERS = {
    "ftrl": {"learning_rate": 0.5, "l1_regularization_strength": 0.01,
             "l2_regularization_strength": 0.01},
    # epsilon 0: Keras 3 adds epsilon inside the square root, the kernels outside.
    "adagrad": {"learning_rate": 0.5, "epsilon": 0.0},
}
LEGACY_HYPERPARAMETERS = {
    "ftrl": HYPERPARAMETERS["ftrl"],
    "adagrad": {"learning_rate": 0.5},
}


def initial_value():
    import numpy as np

    return np.random.default_rng(3).uniform(-0.5, 0.5, (ROWS, ROW_SIZE)).astype("float32")


def replica_values(step, replica):
    import numpy as np

    rng = np.random.default_rng(100 * step + replica)
    return (20 * rng.normal(size=(len(REPLICA_INDICES[replica]), ROW_SIZE))).astype("float32")


def replica_gradient(step, replica, kind):
    """This replica's gradient at `step`: sparse, or its densified form."""
    import tensorflow as tf

    indices = tf.constant(REPLICA_INDICES[replica])
    values = tf.constant(replica_values(step, replica))
    if kind == "sparse":
        return tf.IndexedSlices(values, indices, tf.constant([ROWS, ROW_SIZE]))
    return tf.math.unsorted_segment_sum(values, indices, ROWS)


def train(strategy, make_optimizer, kind):
    """STEPS steps of strategy.run(apply) on one variable; its final value and slots."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        variable = tf.Variable(initial_value())
        optimizer = make_optimizer()
        if isinstance(optimizer, keras.optimizers.Optimizer):
            optimizer.build([variable])

    def replica_step(step):
        # Replica r's gradient at `step`, picked in the graph: one trace serves every step.
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        gradient = tf.switch_case(replica, [
            lambda r=r: tf.switch_case(step, [
                lambda s=s: _as_tensors(replica_gradient(s, r, kind)) for s in range(STEPS)])
            for r in range(2)])
        if kind == "sparse":
            gradient = tf.IndexedSlices(*gradient)
        optimizer.apply_gradients([(gradient, variable)])

    run = tf.function(lambda step: strategy.run(replica_step, args=(step,)))
    for step in range(STEPS):
        run(tf.constant(step))
    copies = [copy.numpy().tolist() for copy in variable.values]
    if isinstance(optimizer, keras.optimizers.Optimizer):
        slots = [v for v in optimizer.variables if v.shape == variable.shape]
        slot_values = [v.numpy().tolist() for v in slots]
    else:
        slot_values = [optimizer.get_slot(variable, name).numpy().tolist()
                       for name in optimizer.get_slot_names()]
    return {"variable": copies[0], "replicas": copies, "slots": slot_values}


def _as_tensors(gradient):
    # tf.switch_case branches must return tensors of one structure.
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        return (gradient.values, gradient.indices, gradient.dense_shape)
    return gradient


def main():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import tf_keras

    import tf_ftrl
    import tf_ftrl.legacy

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ours = {"ftrl": tf_ftrl.Ftrl, "adagrad": tf_ftrl.Adagrad}
    stock = {"ftrl": keras.optimizers.Ftrl, "adagrad": keras.optimizers.Adagrad}
    legacy_ours = {"ftrl": tf_ftrl.legacy.Ftrl, "adagrad": tf_ftrl.legacy.Adagrad}
    legacy_stock = {"ftrl": tf_keras.optimizers.legacy.Ftrl,
                    "adagrad": tf_keras.optimizers.legacy.Adagrad}
    result = {"num_replicas": strategy.num_replicas_in_sync}
    for name in ("ftrl", "adagrad"):
        for option, kwargs in PROCESSING.items():
            hyper = dict(HYPERPARAMETERS[name], **kwargs)
            stock_run = train(strategy, lambda: stock[name](**hyper), "dense")
            for kind in ("sparse", "dense"):
                result[f"keras/{name}/{option}/{kind}"] = {
                    "ours": train(strategy, lambda: ours[name](**hyper), kind),
                    "stock": stock_run}
        for option in LEGACY_PROCESSING:
            hyper = dict(LEGACY_HYPERPARAMETERS[name], **PROCESSING[option])
            for kind in ("sparse", "dense"):
                result[f"legacy/{name}/{option}/{kind}"] = {
                    "ours": train(strategy, lambda: legacy_ours[name](**hyper), kind),
                    "stock": train(strategy, lambda: legacy_stock[name](**hyper), kind)}
    print_result(result)


if __name__ == "__main__":
    sys.exit(main())
