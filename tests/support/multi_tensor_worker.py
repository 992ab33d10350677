"""Trains a small wide & deep model with the multi-tensor dense apply on and off in the Keras
front end of this process and prints what tests/test_multi_tensor.py checks as one JSON line:

    python -m tests.support.multi_tensor_worker SEED                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python -m tests.support.multi_tensor_worker SEED    # tf_keras

For Ftrl and Adagrad (element-wise float32 state, and bfloat16 state rounded stochastically;
row-wise too): `model.fit` for a few steps on one device and under MirroredStrategy with two
replicas, with `_multi_tensor` True and False; whether every weight and slot is the same bit for
bit, which kernels ran, and how many variables each multi-tensor op call took (each group is cut
into up to 3 calls here, as on a CPU with 3 intra-op threads). And a subclass that overrides the
per-variable update (update_step, or tf_keras's _resource_apply_dense): which variables reach
it, and which kernels ran.
"""

import os
import sys

import numpy as np

from tests.support.workers import print_result

ROWS, DIM, FIELDS, BATCH = 50, 4, 3, 16


def _front_end():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras

        import tf_ftrl.legacy
        return tf_keras, tf_ftrl.legacy
    import keras

    import tf_ftrl
    return keras, tf_ftrl


def main(seed):
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)
    keras, front = _front_end()
    from tf_ftrl import _optimizer_common, ops

    # Each multi-tensor group cut into up to 3 op calls of at least 2 variables, as on a CPU
    # with 3 intra-op threads and more variables; every call's variables are recorded.
    _optimizer_common.MIN_VARIABLES_PER_CALL = 2
    _optimizer_common.intra_op_threads = lambda: 3
    calls = []
    for function in ("multi_apply_ftrl", "multi_apply_adagrad"):
        def recording(var, *args, __op=ops._WRAPPERS[function], **kwargs):
            calls.append(len(var))
            return __op(var, *args, **kwargs)
        ops._WRAPPERS[function] = recording
    rng = np.random.default_rng(seed)
    x = rng.integers(0, ROWS, (BATCH * 4, FIELDS)).astype(np.int32)
    y = rng.integers(0, 2, (BATCH * 4, 1)).astype(np.float32)

    def model():
        # Named: stochastic rounding's seeds come from the variables' names, which must not
        # differ between the runs compared.
        inputs = keras.Input((FIELDS,), dtype="int32")
        embedded = keras.layers.Flatten()(keras.layers.Embedding(ROWS, DIM, name="table")(inputs))
        hidden = keras.layers.Dense(8, activation="relu", name="hidden_1")(embedded)
        hidden = keras.layers.Dense(8, activation="relu", name="hidden_2")(hidden)
        return keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))

    def train(name, options, multi, strategy):
        with strategy.scope():
            keras.utils.set_random_seed(seed % 1000)
            m = model()
            optimizer = getattr(front, name)(learning_rate=0.1, **options)
            optimizer._multi_tensor = multi
            m.compile(optimizer, "binary_crossentropy", **(
                {} if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else {"jit_compile": False}))
        before = [np.asarray(w) for w in m.get_weights()]
        m.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        variables = (optimizer.variables() if callable(optimizer.variables)
                     else optimizer.variables)
        state = [np.asarray(w) for w in m.get_weights()] + [
            np.asarray(tf.cast(v, tf.float32)) for v in variables if len(v.shape) >= 1]
        trained = all(not np.array_equal(a, b) for a, b in zip(m.get_weights(), before))
        return state, trained, sorted(set(optimizer.kernels_used().values()))

    result = {}
    strategies = {"one device": tf.distribute.get_strategy(),
                  "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    for name in ("Ftrl", "Adagrad"):
        for label, options in (("float32", {}),
                               ("bfloat16", {"state_dtype": "bfloat16"}),
                               ("rowwise", {"rowwise": True})):
            for where, strategy in strategies.items():
                del calls[:]
                on, trained, kernels_on = train(name, options, True, strategy)
                calls_on = list(calls)
                off, _, kernels_off = train(name, options, False, strategy)
                result[f"{name} {label} {where}"] = {
                    "same": len(on) == len(off) and all(
                        a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                        for a, b in zip(on, off)),
                    "trained": trained, "multi_calls": calls_on,
                    "kernels_on": kernels_on, "kernels_off": kernels_off}
    result["override"] = _override(keras, front, model, x, y)
    print_result(result)


def _override(keras, front, model, x, y):
    """Trains with an Ftrl subclass that records the variables its per-variable update gets."""
    import tensorflow as tf

    seen = set()
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        class Recording(front.Ftrl):
            def _resource_apply_dense(self, grad, var, apply_state=None):
                seen.add(var.name)
                return super()._resource_apply_dense(grad, var, apply_state)
    else:
        class Recording(front.Ftrl):
            def update_step(self, gradient, variable, learning_rate):
                if not isinstance(gradient, tf.IndexedSlices):
                    seen.add(variable.name)
                return super().update_step(gradient, variable, learning_rate)
    m = model()
    optimizer = Recording(learning_rate=0.1)
    m.compile(optimizer, "binary_crossentropy", **(
        {} if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else {"jit_compile": False}))
    m.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return {"seen": len(seen), "dense_variables": len(m.trainable_variables) - 1,
            "kernels": sorted(set(optimizer.kernels_used().values()))}


if __name__ == "__main__":
    main(int(sys.argv[1]))
