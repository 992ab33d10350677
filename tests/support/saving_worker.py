"""The model, data and training loops of tests/test_optimizers_saving.py, and the fresh-process
half of its tests: restoring what the test process saved and training on (or serving).

    python -m tests.support.saving_worker checkpoint_resume KIND CHECKPOINT_PREFIX
    python -m tests.support.saving_worker keras_resume MODEL_KERAS
    python -m tests.support.saving_worker serve SAVED_MODEL_DIR

The test process trains FIRST_STEPS steps and saves; the worker restores and trains the
following RESUMED_STEPS steps, then prints the model weights and optimizer variables as its
JSON result (float32 values are exact in JSON).
"""

import sys

from tests.support.models import embedding_regression_model
from tests.support.workers import print_result

EMBEDDING_DIM = 4
IDS_PER_EXAMPLE = 3
BATCH = 8
VOCABULARY = BATCH * IDS_PER_EXAMPLE
FIRST_STEPS = 3
RESUMED_STEPS = 3

OPTIMIZERS = ("ftrl", "adagrad")

# Non-default values everywhere, so that a config that comes back with defaults is caught.
# l2_shrinkage stays 0 because keras.optimizers.Ftrl densifies sparse gradients: on a row with
# zero gradient it would shrink w, which the sparse update rightly does not do.
HYPERPARAMETERS = {
    "ftrl": dict(learning_rate=0.2, learning_rate_power=-0.5, initial_accumulator_value=0.2,
                 l1_regularization_strength=0.001, l2_regularization_strength=0.01, beta=0.1),
    # A tiny epsilon makes tf_ftrl's sqrt(accum) + eps and Keras's sqrt(accum + eps) agree.
    "adagrad": dict(learning_rate=0.2, initial_accumulator_value=0.2, epsilon=1e-12),
}


def make_optimizer(kind, implementation="tf_ftrl", **overrides):
    """A `kind` optimizer ('ftrl' or 'adagrad') from tf_ftrl or from keras.optimizers."""
    import keras

    import tf_ftrl

    module = {"tf_ftrl": tf_ftrl, "keras": keras.optimizers}[implementation]
    cls = {"ftrl": module.Ftrl, "adagrad": module.Adagrad}[kind]
    return cls(**{**HYPERPARAMETERS[kind], **overrides})


def dataset_arrays():
    """(ids, targets) for FIRST_STEPS + RESUMED_STEPS batches; every batch holds every id once.

    Every row is touched in every step, because keras.optimizers.Ftrl, which densifies, sets a
    never-touched row to 0 (w = f(linear = 0)) where the sparse update keeps its initial value.
    No id repeats within a batch, because Keras 3's Ftrl and Adagrad square an IndexedSlices
    gradient's rows before summing duplicates (accum += sum(g_i^2)), whereas tf_ftrl, like the
    dense update, adds (sum g_i)^2.
    """
    import numpy as np

    rng = np.random.default_rng(3)
    steps = FIRST_STEPS + RESUMED_STEPS
    ids = np.stack([rng.permutation(VOCABULARY) for _ in range(steps)])
    ids = ids.reshape(steps * BATCH, IDS_PER_EXAMPLE).astype("int32")
    targets = rng.normal(size=(steps * BATCH, 1)).astype("float32")
    return ids, targets


def make_model(sequential=False):
    import numpy as np

    model = embedding_regression_model(VOCABULARY, EMBEDDING_DIM, IDS_PER_EXAMPLE, sequential)
    rng = np.random.default_rng(5)
    model.set_weights([rng.uniform(-0.2, 0.2, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def batches(first_step, last_step):
    ids, targets = dataset_arrays()
    return ids[first_step * BATCH:last_step * BATCH], targets[first_step * BATCH:last_step * BATCH]


def train_steps(model, optimizer, first_step, last_step):
    """A custom loop (GradientTape + apply_gradients) over batches [first_step, last_step)."""
    import tensorflow as tf

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    ids, targets = batches(first_step, last_step)
    for start in range(0, len(ids), BATCH):
        step(tf.constant(ids[start:start + BATCH]), tf.constant(targets[start:start + BATCH]))


def fit_steps(model, first_step, last_step):
    """model.fit (compiled with loss='mse') over batches [first_step, last_step)."""
    ids, targets = batches(first_step, last_step)
    model.fit(ids, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def state(model, optimizer):
    """Model weights and optimizer variables as lists (JSON-ready)."""
    return {
        "weights": [w.tolist() for w in model.get_weights()],
        "optimizer_variables": [v.numpy().tolist() for v in optimizer.variables],
        "optimizer_paths": [v.path for v in optimizer.variables],
    }


def checkpoint_resume(kind, prefix):
    import tensorflow as tf

    model = make_model()
    optimizer = make_optimizer(kind)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint.read(prefix).assert_consumed()
    restored = state(model, optimizer)
    train_steps(model, optimizer, FIRST_STEPS, FIRST_STEPS + RESUMED_STEPS)
    return {"restored": restored, "resumed": state(model, optimizer)}


def keras_resume(path):
    import keras

    import tf_ftrl  # noqa: F401  (registers tf_ftrl>Ftrl and tf_ftrl>Adagrad)

    model = keras.models.load_model(path)
    optimizer = model.optimizer
    restored = state(model, optimizer)
    fit_steps(model, FIRST_STEPS, FIRST_STEPS + RESUMED_STEPS)
    return {
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "optimizer_config": optimizer.get_config(),
        "restored": restored,
        "resumed": state(model, optimizer),
    }


def serve(saved_model_dir):
    """Serves the SavedModel without importing tf_ftrl: serving must not need its op library."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    serving = loaded.signatures["serving_default"]
    ids, _ = dataset_arrays()
    (output,) = serving(tf.constant(ids)).values()
    return {
        "predictions": output.numpy().tolist(),
        "tf_ftrl_imported": "tf_ftrl" in sys.modules,
    }


def main(argv):
    mode, args = argv[1], argv[2:]
    modes = {"checkpoint_resume": checkpoint_resume, "keras_resume": keras_resume,
             "serve": serve}
    if mode not in modes:
        raise SystemExit(f"unknown mode {mode!r}; expected one of {sorted(modes)}")
    print_result(modes[mode](*args))


if __name__ == "__main__":
    main(sys.argv)
