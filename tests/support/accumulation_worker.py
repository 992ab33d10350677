"""Gradient accumulation and EMA overwrites under MirroredStrategy (2 logical CPUs): tf_ftrl's
Keras 3 optimizers with each replica's own gradient, against the same optimizer and against
`keras.optimizers` on one device given the replicas' summed gradient (Keras's own optimizers
fail under the strategy with these options). Prints every final state as one JSON line for
tests/test_accumulation_distribute.py.

Logical devices must be set before TensorFlow starts, hence a process of its own:

    python -m tests.support.accumulation_worker [multiworker]

With `multiworker`: MultiWorkerMirroredStrategy with one worker (one replica, collective ops),
tf_ftrl's optimizers only, against one device without a strategy.
"""

import sys

from tests.support.processing_worker import _as_tensors
from tests.support.workers import print_result

ROWS, ROW_SIZE = 6, 4
REPLICA_INDICES = ([0, 1, 1], [1, 4])
STEPS = 6

OPTIONS = {
    "none": {},
    "accumulate": {"gradient_accumulation_steps": 2},
    "accumulate_clip_decay": {"gradient_accumulation_steps": 3, "global_clipnorm": 2.0,
                              "weight_decay": 0.05},
    "ema": {"use_ema": True, "ema_momentum": 0.5, "ema_overwrite_frequency": 2},
    "accumulate_ema": {"gradient_accumulation_steps": 2, "use_ema": True, "ema_momentum": 0.5,
                       "ema_overwrite_frequency": 3},
}
HYPERPARAMETERS = {
    "ftrl": {"learning_rate": 0.5, "l1_regularization_strength": 0.01,
             "l2_regularization_strength": 0.01},
    # epsilon 0: Keras 3 adds epsilon inside the square root, the kernels outside.
    "adagrad": {"learning_rate": 0.5, "epsilon": 0.0},
}


def initial_value():
    import numpy as np

    return np.random.default_rng(3).uniform(-0.5, 0.5, (ROWS, ROW_SIZE)).astype("float32")


def replica_values(step, replica):
    import numpy as np

    rng = np.random.default_rng(100 * step + replica)
    return rng.normal(size=(len(REPLICA_INDICES[replica]), ROW_SIZE)).astype("float32")


def gradient(step, replicas, kind):
    """The sum of `replicas`' gradients at `step`: sparse (their rows concatenated) or dense."""
    import numpy as np
    import tensorflow as tf

    indices = tf.constant(sum((REPLICA_INDICES[r] for r in replicas), []))
    values = tf.constant(np.concatenate([replica_values(step, r) for r in replicas]))
    if kind == "sparse":
        return tf.IndexedSlices(values, indices, tf.constant([ROWS, ROW_SIZE]))
    return tf.math.unsorted_segment_sum(values, indices, ROWS)


def train(strategy, make_optimizer, kind):
    """STEPS applies on one variable, each replica with its own gradient (on one device: the
    sum of both); the final copies of the variable and the optimizer's variables of its shape."""
    import tensorflow as tf

    with strategy.scope():
        variable = tf.Variable(initial_value())
        optimizer = make_optimizer()
        optimizer.build([variable])
    replicas = strategy.num_replicas_in_sync

    def step_parts(step, replicas):
        # This step's gradient, picked in the graph: one trace serves every step, as in fit.
        return tf.switch_case(step, [lambda s=s: _as_tensors(gradient(s, replicas, kind))
                                     for s in range(STEPS)])

    def replica_step(step):
        if replicas == 1:
            parts = step_parts(step, [0, 1])
        else:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            parts = tf.switch_case(replica, [lambda r=r: step_parts(step, [r]) for r in range(2)])
        grad = tf.IndexedSlices(*parts) if kind == "sparse" else parts
        optimizer.apply_gradients([(grad, variable)])

    run = tf.function(lambda step: strategy.run(replica_step, args=(step,)))
    for step in range(STEPS):
        run(tf.constant(step))
    copies = [copy.numpy().tolist() for copy in strategy.experimental_local_results(variable)]
    others = [v.numpy().tolist() for v in optimizer.variables if tuple(v.shape) == (ROWS, ROW_SIZE)]
    return {"variable": copies[0], "replicas": copies, "optimizer_variables": others,
            "iterations": int(optimizer.iterations.numpy()),
            "kernels": sorted(set(getattr(optimizer, "kernels_used", dict)().values()))}


def main(argv):
    import tensorflow as tf

    if argv[1:] == ["multiworker"]:
        return multiworker()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import tf_ftrl

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.get_strategy()
    ours = {"ftrl": tf_ftrl.Ftrl, "adagrad": tf_ftrl.Adagrad}
    stock = {"ftrl": keras.optimizers.Ftrl, "adagrad": keras.optimizers.Adagrad}
    result = {"num_replicas": mirrored.num_replicas_in_sync}
    for name in ("ftrl", "adagrad"):
        for option, kwargs in OPTIONS.items():
            hyper = dict(HYPERPARAMETERS[name], **kwargs)
            stock_run = train(one, lambda: stock[name](**hyper), "dense")
            for kind in ("sparse", "dense"):
                result[f"{name}/{option}/{kind}"] = {
                    "mirrored": train(mirrored, lambda: ours[name](**hyper), kind),
                    "one_device": train(one, lambda: ours[name](**hyper), kind),
                    "stock": stock_run}
            result[f"{name}/{option}/rowwise"] = {
                "mirrored": train(mirrored, lambda: ours[name](rowwise=True, **hyper), "sparse"),
                "one_device": train(one, lambda: ours[name](rowwise=True, **hyper), "sparse")}
    print_result(result)


def multiworker():
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import tf_ftrl

    one = tf.distribute.get_strategy()
    ours = {"ftrl": tf_ftrl.Ftrl, "adagrad": tf_ftrl.Adagrad}
    result = {"num_replicas": strategy.num_replicas_in_sync}
    for name in ("ftrl", "adagrad"):
        for option in ("accumulate_clip_decay", "accumulate_ema"):
            hyper = dict(HYPERPARAMETERS[name], **OPTIONS[option])
            for kind, extra in (("sparse", {}), ("rowwise", {"rowwise": True})):
                result[f"{name}/{option}/{kind}"] = {
                    "strategy": train(strategy, lambda: ours[name](**extra, **hyper), "sparse"),
                    "one_device": train(one, lambda: ours[name](**extra, **hyper), "sparse")}
    print_result(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
