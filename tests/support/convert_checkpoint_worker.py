"""Checkpoints written by the stock optimizers of one Keras front end, and training resumed from
converted ones, for tests/test_convert_checkpoint.py:

    [TF_USE_LEGACY_KERAS=1] python -m tests.support.convert_checkpoint_worker write|resume \
        FRONT_END DIRECTORY SEED [SOURCES_JSON]

`write` trains the model below with each stock optimizer of FRONT_END ("keras3" or "tf_keras",
whose default and legacy optimizers both) for FIRST steps, saves a tf.train.Checkpoint, takes THEN
more steps and prints the final weights: what a converted checkpoint must resume to. `resume`
converts each source ([[name, path, from, optimizer], ...]) with tf_ftrl.convert_checkpoint
into FRONT_END's stock optimizer and tf_ftrl's, restores the written checkpoint into a fresh
model and optimizer, takes the THEN steps and prints the weights. Every run sees the same data:
each batch looks up every row of the table once (no repeated ids, every row touched in the first
step), so sparse and densified FTRL and Adagrad agree (docs/porting.md).
"""

import json
import sys

import numpy as np

from tests.support.workers import print_result

ROWS, DIM, BATCH = 8, 3, 4
FIRST, THEN = 3, 2
LR, L1, L2, INITIAL_ACCUMULATOR = 0.1, 0.001, 0.01, 0.1
# Keras's Adagrad needs an epsilon (tf_keras's turns 0 into 1e-7); TF1's has none. 1e-10 is far
# below float32 resolution against sqrt(accumulator) >= 0.3, wherever it is added.
EPSILON = 1e-10
NAMES = ("embedding/embeddings", "dense/kernel", "dense/bias")


def batches(seed):
    """FIRST + THEN (ids [BATCH, 2], labels [BATCH, 1]): each batch's ids a permutation of the
    table's rows."""
    rng = np.random.default_rng(seed)
    return [(rng.permutation(ROWS).reshape(BATCH, 2).astype(np.int32),
             rng.normal(size=(BATCH, 1)).astype(np.float32)) for _ in range(FIRST + THEN)]


def initial_values(seed):
    rng = np.random.default_rng(seed + 1)
    return {"embedding/embeddings": rng.normal(size=(ROWS, DIM)).astype(np.float32),
            "dense/kernel": rng.normal(size=(2 * DIM, 1)).astype(np.float32),
            "dense/bias": np.zeros([1], np.float32)}


def optimizer_arguments(kind, front_end):
    if kind == "ftrl":
        return dict(learning_rate=LR, initial_accumulator_value=INITIAL_ACCUMULATOR,
                    l1_regularization_strength=L1, l2_regularization_strength=L2)
    arguments = dict(learning_rate=LR, initial_accumulator_value=INITIAL_ACCUMULATOR)
    return arguments if front_end == "tf1" else dict(arguments, epsilon=EPSILON)


def _keras(front_end):
    if front_end == "tf_keras":
        import tf_keras
        return tf_keras
    import keras
    return keras


def build_model(front_end, seed=None):
    keras = _keras(front_end)
    inputs = keras.Input((2,), dtype="int32")
    x = keras.layers.Embedding(ROWS, DIM, name="embedding")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(x))
    if seed is not None:
        values = initial_values(seed)
        for variable in model.variables:
            variable.assign(values[_name(variable)])
    return model


def keras3_ftrl_model():
    """For the command line's --model: a compiled Keras 3 model with tf_ftrl's Ftrl."""
    import tf_ftrl
    model = build_model("keras3")
    model.compile(tf_ftrl.Ftrl(**optimizer_arguments("ftrl", "keras3")), "mse")
    return model


def _name(variable):
    return variable.path if hasattr(variable, "path") else variable.name.split(":")[0]


def train(model, optimizer, steps):
    import tensorflow as tf
    for ids, labels in steps:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(ids) - labels))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))


def weights(model):
    return {_name(v): np.asarray(v).tolist() for v in model.variables}


def stock_optimizers(front_end):
    keras = _keras(front_end)
    if front_end == "tf_keras":
        return {"legacy_ftrl": keras.optimizers.legacy.Ftrl,
                "legacy_adagrad": keras.optimizers.legacy.Adagrad,
                "default_ftrl": keras.optimizers.Ftrl,
                "default_adagrad": keras.optimizers.Adagrad}
    return {"ftrl": keras.optimizers.Ftrl, "adagrad": keras.optimizers.Adagrad}


def write(front_end, directory, seed):
    import tensorflow as tf
    data = batches(seed)
    result = {}
    for name, cls in stock_optimizers(front_end).items():
        kind = name.rpartition("_")[2]
        model = build_model(front_end, seed)
        optimizer = cls(**optimizer_arguments(kind, front_end))
        train(model, optimizer, data[:FIRST])
        path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(
            f"{directory}/{front_end}_{name}")
        train(model, optimizer, data[FIRST:])
        result[name] = {"path": path, "optimizer": kind, "weights": weights(model)}
    print_result(result)


def resume(front_end, directory, seed, sources):
    import tensorflow as tf

    import tf_ftrl
    from tf_ftrl import convert_checkpoint
    front = tf_ftrl.legacy if front_end == "tf_keras" else tf_ftrl
    stock = _keras(front_end).optimizers
    stock = stock.legacy if front_end == "tf_keras" else stock
    data = batches(seed)
    result = {}
    for name, path, from_, kind in sources:
        for which, module in (("stock", stock), ("tf_ftrl", front)):
            cls = getattr(module, {"ftrl": "Ftrl", "adagrad": "Adagrad"}[kind])
            dst = f"{directory}/{front_end}_{which}_from_{name}"
            report = convert_checkpoint.convert(
                path, dst, from_=from_, to=front_end, model=build_model(front_end),
                optimizer=cls(**optimizer_arguments(kind, front_end)))
            # What the written checkpoint resumes in a fresh model and optimizer.
            model = build_model(front_end)
            optimizer = cls(**optimizer_arguments(kind, front_end))
            tf.train.Checkpoint(model=model, optimizer=optimizer).restore(dst) \
                .assert_existing_objects_matched()
            train(model, optimizer, data[FIRST:])
            result[f"{name}->{front_end}:{which}"] = {"weights": weights(model),
                                          "iterations": int(optimizer.iterations.numpy()),
                                          "report": report.to_dict()}
    if front_end == "keras3":
        result |= _reports(directory)
    print_result(result)


def _reports(directory):
    """Reports of an odd TF1 checkpoint (written by the test: its table named emb/table, an extra
    variable, no global_step), with and without a mapping, and a wrong optimizer's error."""
    import tf_ftrl
    from tf_ftrl import convert_checkpoint
    odd = f"{directory}/tf1_odd"
    arguments = optimizer_arguments("ftrl", "keras3")
    result = {}
    for key, mapping in (("unmapped", ()), ("mapped", ["emb/(.*)=embedding/embeddings"])):
        result[key] = convert_checkpoint.restore(
            odd, build_model("keras3"), tf_ftrl.Ftrl(**arguments), from_="tf1",
            mapping=mapping).to_dict()
    try:
        convert_checkpoint.restore(odd, build_model("keras3"), tf_ftrl.Adagrad(), from_="tf1")
    except ValueError as e:
        result["wrong optimizer"] = str(e)
    return result


if __name__ == "__main__":
    command, front, where, run_seed = sys.argv[1:5]
    if command == "write":
        write(front, where, int(run_seed))
    else:
        resume(front, where, int(run_seed), json.loads(sys.argv[5]))
