"""What tf_keras's own optimizers do with a sparse gradient, next to tf_ftrl.legacy's, as
docs/porting.md states it; printed as one JSON line for tests/test_porting.py:

    TF_USE_LEGACY_KERAS=1 python -m tests.support.porting_worker SEED

One id four times with gradient 1 (a repeated id), on a 3-row table whose rows start at 0.5; then
random sparse gradients with repeated ids, tf_keras's legacy Adagrad against ours.
"""

import sys

import numpy as np

from tests.support.workers import print_result


def _accumulator_and_weights(optimizer, variable):
    import tensorflow as tf
    gradient = tf.IndexedSlices(tf.ones([4, 1]), tf.constant([1, 1, 1, 1]), tf.constant([3, 1]))
    optimizer.apply_gradients([(gradient, variable)])
    slots = [v for v in (optimizer.variables() if callable(optimizer.variables)
                         else optimizer.variables) if v.shape == (3, 1)]
    return slots[0].numpy().ravel().tolist(), variable.numpy().ravel().tolist()


def main(seed):
    import tensorflow as tf
    import tf_keras

    import tf_ftrl
    result = {}
    classes = {
        "default Adagrad": tf_keras.optimizers.Adagrad,
        "default Ftrl": tf_keras.optimizers.Ftrl,
        "legacy Adagrad": tf_keras.optimizers.legacy.Adagrad,
        "legacy Ftrl": tf_keras.optimizers.legacy.Ftrl,
        "tf_ftrl Adagrad": tf_ftrl.legacy.Adagrad,
        "tf_ftrl Ftrl": tf_ftrl.legacy.Ftrl,
    }
    for name, cls in classes.items():
        variable = tf.Variable(tf.fill([3, 1], 0.5))
        accumulator, weights = _accumulator_and_weights(
            cls(learning_rate=0.1, initial_accumulator_value=0.0 if "Adagrad" in name else 0.1),
            variable)
        result[name] = {"accumulator": accumulator, "weights": weights}

    # Adagrad's epsilon: where it sits shows while the accumulator is small against it.
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(20, 3)).astype(np.float32)
    epsilon = 0.5
    finals = {}
    for name in ("default Adagrad", "legacy Adagrad", "tf_ftrl Adagrad"):
        variable = tf.Variable(start)
        optimizer = classes[name](learning_rate=0.1, initial_accumulator_value=0.01,
                                  epsilon=epsilon)
        step_rng = np.random.default_rng(seed + 1)
        for _ in range(3):
            indices = step_rng.integers(0, 20, 12)
            values = step_rng.normal(size=(12, 3)).astype(np.float32)
            optimizer.apply_gradients([(tf.IndexedSlices(
                tf.constant(values), tf.constant(indices), tf.constant([20, 3])), variable)])
        finals[name] = variable.numpy()
    ours = finals["tf_ftrl Adagrad"]
    result["legacy_adagrad_vs_ours"] = float(np.max(np.abs(finals["legacy Adagrad"] - ours)))
    result["default_adagrad_vs_ours"] = float(np.max(np.abs(finals["default Adagrad"] - ours)))
    print_result(result)


if __name__ == "__main__":
    main(int(sys.argv[1]))
