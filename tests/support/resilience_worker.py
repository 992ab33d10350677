"""Training runs for tests/test_resilience.py, each in its own process.

    python -m tests.support.resilience_worker loop CKPT_DIR TOTAL_STEPS KILL_AT_STEP OUT_NPZ
    python -m tests.support.resilience_worker fit BACKUP_DIR EPOCHS KILL_AT_EPOCH OUT_NPZ
    python -m tests.support.resilience_worker soak STEPS OUT_JSON
    python -m tests.support.resilience_worker export MODEL_DIR OUT_NPZ

`loop`: an Embedding table trained with tf_ftrl.Ftrl and a Dense layer with tf_ftrl.Adagrad (two
optimizers, a custom loop), op determinism on, a tf.train.CheckpointManager save every
CHECKPOINT_EVERY steps; it resumes from the latest checkpoint if there is one, and kills itself
with SIGKILL right after step KILL_AT_STEP (0: never). The batch of step s depends only on s, so
a resumed run sees the same data as an uninterrupted one.
`fit`: model.fit with tf_ftrl.Ftrl and keras.callbacks.BackupAndRestore, killed with SIGKILL
during epoch KILL_AT_EPOCH (0: never).
`soak`: STEPS sparse tf_ftrl.Ftrl updates; resident memory sampled along the way.
`export`: trains a little, then writes tf.saved_model.save and model.export outputs under
MODEL_DIR and the model's predictions to OUT_NPZ.
"""

import json
import os
import signal
import sys

import numpy as np

ROWS = 1000
DIM = 8
IDS = 4
BATCH = 32
CHECKPOINT_EVERY = 5


def batch(step):
    rng = np.random.default_rng(1000 + step)
    ids = rng.integers(0, ROWS, size=(BATCH, IDS)).astype(np.int32)
    labels = (ids.sum(axis=1, keepdims=True) % 3 == 0).astype(np.float32)
    return ids, labels


def make_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(IDS,), dtype="int32")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(ROWS, DIM, name="table")(inputs))
    outputs = keras.layers.Dense(1, name="dense")(embedded)
    return keras.Model(inputs, outputs)


def loop(checkpoint_dir, total_steps, kill_at_step):
    import tensorflow as tf

    import tf_ftrl

    tf.config.experimental.enable_op_determinism()
    model = make_model()
    table = model.get_layer("table").trainable_variables
    dense = model.get_layer("dense").trainable_variables
    ftrl = tf_ftrl.Ftrl(learning_rate=0.1, l1_regularization_strength=0.001)
    adagrad = tf_ftrl.Adagrad(learning_rate=0.1)
    ftrl.build(table)
    adagrad.build(dense)
    step_counter = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, ftrl=ftrl, adagrad=adagrad, step=step_counter)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    first_step = int(step_counter.numpy()) + 1

    @tf.function
    def train_step(ids, labels):
        with tf.GradientTape() as tape:
            logits = model(ids, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, table + dense)
        ftrl.apply(grads[:len(table)], table)
        adagrad.apply(grads[len(table):], dense)

    while int(step_counter.numpy()) < total_steps:
        step = int(step_counter.numpy()) + 1
        train_step(*batch(step))
        step_counter.assign(step)
        if step % CHECKPOINT_EVERY == 0:
            manager.save(checkpoint_number=step)
        if step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    result = {w.path: w.numpy() for w in model.weights + ftrl.variables + adagrad.variables}
    return result, {"first_step": first_step}


class KillDuringEpoch:
    def __init__(self, epoch):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch_index, logs=None):
                if self.epoch_index == epoch and batch_index == 2:
                    os.kill(os.getpid(), signal.SIGKILL)

            def on_epoch_begin(self, epoch_index, logs=None):
                self.epoch_index = epoch_index + 1

        self.callback = Callback()


def fit(backup_dir, epochs, kill_at_epoch):
    import keras
    import tensorflow as tf

    import tf_ftrl

    tf.config.experimental.enable_op_determinism()
    model = make_model()
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    ids, labels = zip(*(batch(step) for step in range(8)))
    epochs_run = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch + 1))
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir), counter]
    if kill_at_epoch:
        callbacks.append(KillDuringEpoch(kill_at_epoch).callback)
    model.fit(np.concatenate(ids), np.concatenate(labels), batch_size=BATCH, epochs=epochs,
              shuffle=False, callbacks=callbacks, verbose=0)
    result = {w.path: w.numpy() for w in model.weights + model.optimizer.variables}
    return result, {"first_step": epochs_run[0]}


def resident_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def soak(steps):
    import tensorflow as tf

    import tf_ftrl

    table = tf.Variable(tf.zeros([100_000, 16]))
    optimizer = tf_ftrl.Ftrl(learning_rate=0.05, l1_regularization_strength=0.001)
    optimizer.build([table])
    rng = np.random.default_rng(0)
    id_sets = [tf.constant(rng.integers(0, 100_000, 2048), tf.int64) for _ in range(16)]
    values = tf.constant(rng.normal(size=(2048, 16)).astype(np.float32))

    @tf.function
    def step(ids):
        optimizer.apply([tf.IndexedSlices(values, ids, tf.constant([100_000, 16], tf.int64))],
                        [table])

    samples = []
    for i in range(steps):
        step(id_sets[i % len(id_sets)])
        if i % 500 == 0 or i == steps - 1:
            samples.append((i, resident_kb()))
    return {"samples": samples, "finite": bool(np.isfinite(table.numpy()).all())}


def export(model_dir):
    import tensorflow as tf

    import tf_ftrl

    model = make_model()
    model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1), loss="mse")
    ids, labels = batch(1)
    model.fit(ids, labels, epochs=2, verbose=0)
    tf.saved_model.save(model, os.path.join(model_dir, "saved_model"))
    model.export(os.path.join(model_dir, "exported"))
    return {"ids": ids, "predictions": model.predict(ids, verbose=0)}, {}


def main(argv):
    mode, args, out = argv[1], argv[2:-1], argv[-1]
    if mode == "loop":
        result = loop(args[0], int(args[1]), int(args[2]))
    elif mode == "fit":
        result = fit(args[0], int(args[1]), int(args[2]))
    elif mode == "soak":
        with open(out, "w") as f:
            json.dump(soak(int(args[0])), f)
        return
    elif mode == "export":
        result = export(args[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    arrays, info = result
    np.savez(out, **{k.replace("/", "|"): v for k, v in arrays.items()},
             **{f"info:{k}": v for k, v in info.items()})


if __name__ == "__main__":
    main(sys.argv)
