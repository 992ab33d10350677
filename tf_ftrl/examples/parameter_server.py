"""Trains a wide linear model with `tf_ftrl.legacy.Ftrl` under tf_keras's
`ParameterServerStrategy`: the embedding table is sharded over the parameter servers, and every
update (the sparse ones through the fused kernel) runs on the parameter server holding the
variable.

    python -m tf_ftrl.examples.parameter_server            # an in-process cluster, ~10 s
    python -m tf_ftrl.examples.parameter_server --json     # the same, results as one JSON line

Without TF_CONFIG, the script starts an in-process cluster on 127.0.0.1 (2 workers and 2
parameter servers as `tf.distribute.Server`s in this process, which is the chief), then trains
twice and compares each run with single-process training with tf_keras's own
`tf_keras.optimizers.legacy.Ftrl`:

- `model.fit` with a `DatasetCreator`: workers run steps asynchronously, so the result is not
  the single-process one step for step; it converges to the same loss.
- a custom loop with a `ClusterCoordinator` that schedules one step at a time and waits for it
  (`schedule` + `join`), each step on a batch chosen by its step number: synchronous, so the
  weights equal single-process training up to float rounding.

Running on a real cluster
-------------------------
Every task runs this same script (or your own, with the same structure) with `TF_CONFIG`
describing the cluster and the task, e.g. for the first parameter server:

    TF_CONFIG='{"cluster": {"chief": ["host0:2222"],
                            "worker": ["host1:2222", "host2:2222"],
                            "ps": ["host3:2222", "host4:2222"]},
                "task": {"type": "ps", "index": 0}}' \\
        python -m tf_ftrl.examples.parameter_server

- `ps` and `worker` tasks start a `tf.distribute.Server` and serve forever (`server.join()`).
  They must load tf_ftrl's op library first (`tf_ftrl.ops.load_library()`, done here by
  `serve`): the fused kernels run on the parameter servers and the workers' functions contain
  the ops, so a server without the library fails with "Op type not registered
  'FusedResourceSparseApplyFtrl'". Give servers `inter_op_parallelism_threads` of at least
  the number of workers + 1 on small machines (see `server_config`), or steps can deadlock.
- the `chief` task (exactly one) builds the strategy from `TFConfigClusterResolver()`, creates
  the model and the optimizer inside `strategy.scope()` and drives training; it runs no steps
  itself. It needs the op library too (imported with tf_ftrl).
- Start the servers first; the chief waits for them. When training ends the chief exits; stop
  the servers yourself (they do not exit on their own).
- This script uses `tf_keras` directly. Code that says `tf.keras` gets tf_keras only with
  `TF_USE_LEGACY_KERAS=1` set before TensorFlow is imported (in the environment, not in the
  script).
"""

import argparse
import gc
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
import tf_ftrl.legacy  # noqa: E402,F401
import tf_keras  # noqa: E402

from tf_ftrl.examples.local_cluster import free_loopback_ports  # noqa: E402

RESULT_PREFIX = "RESULT_JSON:"

VOCABULARY = 200
IDS_PER_EXAMPLE = 3
DENSE_FEATURES = 4
EXAMPLES = 1024
BATCH_SIZE = 32
SEED = 5
OPTIMIZER_ARGS = dict(learning_rate=0.5, l2_regularization_strength=1e-4)
# Embedding shards need at least this many bytes: the 200 x 1 float32 table (800 bytes) gets
# one shard per parameter server, the small dense variables one shard each.
MIN_SHARD_BYTES = 256


def make_data(seed=SEED):
    """Features (hashed ids and dense values) and targets of a hidden linear model."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCABULARY, size=(EXAMPLES, IDS_PER_EXAMPLE)).astype("int32")
    dense = rng.normal(size=(EXAMPLES, DENSE_FEATURES)).astype("float32")
    id_weights = rng.normal(size=VOCABULARY)
    dense_weights = rng.normal(size=DENSE_FEATURES)
    targets = id_weights[ids].mean(axis=1) + dense @ dense_weights + 0.3
    targets += rng.normal(scale=0.05, size=EXAMPLES)
    return {"ids": ids, "dense": dense}, targets.astype("float32")[:, None]


def build_model():
    """prediction = mean of one weight per id (a sparse table) + a dense linear part."""
    ids = tf_keras.Input(shape=(IDS_PER_EXAMPLE,), dtype="int32", name="ids")
    dense = tf_keras.Input(shape=(DENSE_FEATURES,), name="dense")
    # Zero initial weights: FTRL recomputes a weight from its `linear` slot on its first update,
    # so a random start would be discarded anyway.
    wide = tf_keras.layers.Embedding(VOCABULARY, 1, embeddings_initializer="zeros",
                                     name="id_weights")(ids)
    wide = tf_keras.layers.GlobalAveragePooling1D()(wide)
    linear = tf_keras.layers.Dense(1, kernel_initializer="zeros", name="dense_weights")(dense)
    return tf_keras.Model([ids, dense], tf_keras.layers.Add()([wide, linear]))


def mean_squared_error(model, features, targets):
    predictions = model([features["ids"], features["dense"]], training=False)
    return float(tf.reduce_mean(tf.square(predictions - targets)))


def make_dataset(features, targets, seed=None):
    dataset = tf.data.Dataset.from_tensor_slices(((features["ids"], features["dense"]), targets))
    return dataset.shuffle(EXAMPLES, seed=seed).repeat().batch(BATCH_SIZE)


def make_step_function(model, optimizer, features, targets):
    """A replica function that trains on the batch picked by its step number (the same batches
    in the same order wherever it runs)."""
    ids = tf.constant(features["ids"])
    dense = tf.constant(features["dense"])
    all_targets = tf.constant(targets)

    def replica_step(step):
        rows = (step * BATCH_SIZE + tf.range(BATCH_SIZE, dtype=tf.int64)) % EXAMPLES
        with tf.GradientTape() as tape:
            predictions = model([tf.gather(ids, rows), tf.gather(dense, rows)], training=True)
            loss = tf.reduce_mean(tf.square(predictions - tf.gather(all_targets, rows)))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return replica_step


def server_config(num_workers):
    """Servers on machines with fewer cores than workers + 1 deadlock without enough inter-op
    threads (each worker's step waits on parameter-server ops)."""
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = num_workers + 1
    return config


def start_in_process_cluster(num_workers, num_ps):
    """Worker and parameter-server `tf.distribute.Server`s in this process, on 127.0.0.1.

    They live as long as the process (TensorFlow cannot stop an in-process server).
    """
    ports = free_loopback_ports(num_workers + num_ps)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports[:num_workers]],
               "ps": [f"127.0.0.1:{port}" for port in ports[num_workers:]]}
    cluster_spec = tf.train.ClusterSpec(cluster)
    tf_ftrl.ops.load_library()  # the servers run the fused ops: register their kernels first
    for job, count in (("worker", num_workers), ("ps", num_ps)):
        for index in range(count):
            tf.distribute.Server(cluster_spec, job_name=job, task_index=index, protocol="grpc",
                                 config=server_config(num_workers), start=True)
    return tf.distribute.cluster_resolver.SimpleClusterResolver(cluster_spec, rpc_layer="grpc")


def make_strategy(cluster_resolver, num_ps):
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=MIN_SHARD_BYTES, max_shards=num_ps)
    return tf.distribute.experimental.ParameterServerStrategy(
        cluster_resolver, variable_partitioner=partitioner)


# --- single-process training with tf_keras's own Ftrl (the reference) ---


def fit_single_process(features, targets, epochs, steps_per_epoch):
    model = build_model()
    model.compile(optimizer=tf_keras.optimizers.legacy.Ftrl(**OPTIMIZER_ARGS), loss="mse")
    model.fit(make_dataset(features, targets, seed=SEED), epochs=epochs,
              steps_per_epoch=steps_per_epoch, verbose=0)
    return model


def steps_single_process(features, targets, steps):
    model = build_model()
    optimizer = tf_keras.optimizers.legacy.Ftrl(**OPTIMIZER_ARGS)
    step_function = tf.function(make_step_function(model, optimizer, features, targets))
    for step in range(steps):
        step_function(tf.constant(step, tf.int64))
    return model


# --- training on the cluster with tf_ftrl.legacy.Ftrl ---


def fit_on_cluster(strategy, features, targets, epochs, steps_per_epoch):
    with strategy.scope():
        model = build_model()
        optimizer = tf_ftrl.legacy.Ftrl(**OPTIMIZER_ARGS)
        model.compile(optimizer=optimizer, loss="mse")

    def dataset_fn(input_context):
        # Each worker builds its own pipeline; different shuffles make the workers' asynchronous
        # steps see different batches.
        return make_dataset(features, targets)

    model.fit(tf_keras.utils.experimental.DatasetCreator(dataset_fn), epochs=epochs,
              steps_per_epoch=steps_per_epoch, verbose=0)
    return model, optimizer


def steps_on_cluster(strategy, features, targets, steps):
    """One scheduled step at a time, each waited for: synchronous training on the workers."""
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        model = build_model()
        optimizer = tf_ftrl.legacy.Ftrl(**OPTIMIZER_ARGS)
    replica_step = make_step_function(model, optimizer, features, targets)

    @tf.function
    def step_function(step):
        return strategy.run(replica_step, args=(step,))

    for step in range(steps):
        coordinator.schedule(step_function, args=(tf.constant(step, tf.int64),))
        coordinator.join()
    traced = step_function.get_concrete_function(tf.TensorSpec([], tf.int64)).graph
    return model, optimizer, traced


def table_shards(model):
    """The parameter-server shards of the embedding table (a ShardedVariable)."""
    table = model.get_layer("id_weights").embeddings
    return list(getattr(table, "variables", [table]))


def full_table(model):
    return np.concatenate([shard.numpy() for shard in table_shards(model)], axis=0)


def placement(model, optimizer):
    """Devices of the table's shards and of their optimizer slots."""
    return [{"shard": shard.device,
             "shape": shard.shape.as_list(),
             "slots": {name: optimizer.get_slot(shard, name).device
                       for name in optimizer.get_slot_names()}}
            for shard in table_shards(model)]


def update_ops(graph):
    """(op type, device) of every optimizer update op in a traced step function.

    An op that takes a variable's resource handle runs on the device holding the variable; in
    the traced function the update is colocated with the captured handle, whose device we read.
    """
    captured_devices = {internal.op.name: external.device
                        for external, internal in graph.captures}
    found = set()
    for op in graph.get_operations():
        if "Apply" in op.type or op.type in ("Unique", "UnsortedSegmentSum"):
            groups = [group.decode().removeprefix("loc:@") for group in op.colocation_groups()]
            devices = sorted({captured_devices.get(group, op.device) for group in groups})
            found.add((op.type, ",".join(devices)))
    return sorted(found)


def dense_weights(model):
    layer = model.get_layer("dense_weights")
    return [layer.kernel.numpy(), layer.bias.numpy()]


def run_in_process(num_workers, num_ps, epochs, steps_per_epoch, steps):
    features, targets = make_data()
    initial = mean_squared_error(build_model(), features, targets)

    # The references first, as numbers: once this process connects to the cluster, variables
    # made before on /job:localhost are out of reach.
    started = time.time()
    reference_fit = mean_squared_error(
        fit_single_process(features, targets, epochs, steps_per_epoch), features, targets)
    model = steps_single_process(features, targets, steps)
    reference_steps = {"loss": mean_squared_error(model, features, targets),
                       "table": full_table(model), "dense": dense_weights(model)}
    del model
    # Drop the references' functions now: collected after connecting, they would be "removed"
    # from the cluster's servers, which never had them (harmless, but noisy).
    tf_keras.backend.clear_session()
    gc.collect()
    single_s = time.time() - started

    started = time.time()
    strategy = make_strategy(start_in_process_cluster(num_workers, num_ps), num_ps)
    fit_model, fit_optimizer = fit_on_cluster(strategy, features, targets, epochs,
                                              steps_per_epoch)
    fit_s = time.time() - started
    started = time.time()
    steps_model, steps_optimizer, traced = steps_on_cluster(strategy, features, targets, steps)
    steps_s = time.time() - started

    table = full_table(steps_model)
    return {
        "num_workers": num_workers,
        "num_ps": num_ps,
        "initial_loss": initial,
        "fit": {
            "single_process_stock_loss": reference_fit,
            "cluster_loss": mean_squared_error(fit_model, features, targets),
            "iterations": int(fit_optimizer.iterations.numpy()),
            "placement": placement(fit_model, fit_optimizer),
            "seconds": fit_s,
        },
        "steps": {
            "single_process_stock_loss": reference_steps["loss"],
            "cluster_loss": mean_squared_error(steps_model, features, targets),
            "iterations": int(steps_optimizer.iterations.numpy()),
            "max_table_difference": float(np.max(np.abs(table - reference_steps["table"]))),
            "max_dense_difference": float(max(
                np.max(np.abs(a - b))
                for a, b in zip(dense_weights(steps_model), reference_steps["dense"]))),
            "table_rows_touched": int(np.count_nonzero(table)),
            "placement": placement(steps_model, steps_optimizer),
            "update_ops": update_ops(traced),
            "seconds": steps_s,
        },
        "single_process_seconds": single_s,
    }


def serve(task_type, task_index, cluster_spec, num_workers):
    """A `ps` or `worker` task of a real cluster: a server with tf_ftrl's kernels, forever."""
    tf_ftrl.ops.load_library()
    server = tf.distribute.Server(cluster_spec, job_name=task_type, task_index=task_index,
                                  protocol="grpc", config=server_config(num_workers),
                                  start=True)
    server.join()


def run_from_tf_config(epochs, steps_per_epoch):
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster_spec = resolver.cluster_spec()
    num_workers = len(cluster_spec.as_dict().get("worker", []))
    num_ps = len(cluster_spec.as_dict().get("ps", []))
    if resolver.task_type in ("ps", "worker"):
        serve(resolver.task_type, resolver.task_id, cluster_spec, num_workers)
        return None
    if resolver.task_type != "chief":
        raise SystemExit(f"TF_CONFIG task type {resolver.task_type!r}: expected chief, worker "
                         "or ps")
    features, targets = make_data()
    strategy = make_strategy(resolver, num_ps)
    model, optimizer = fit_on_cluster(strategy, features, targets, epochs, steps_per_epoch)
    return {"num_workers": num_workers, "num_ps": num_ps,
            "initial_loss": mean_squared_error(build_model(), features, targets),
            "cluster_loss": mean_squared_error(model, features, targets),
            "iterations": int(optimizer.iterations.numpy()),
            "placement": placement(model, optimizer)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=60,
                        help="steps of the synchronous custom loop")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if os.environ.get("TF_CONFIG"):
        result = run_from_tf_config(args.epochs, args.steps_per_epoch)
        if result is None:
            return
    else:
        result = run_in_process(args.workers, args.ps, args.epochs, args.steps_per_epoch,
                                args.steps)
    if args.json:
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
    # In-process servers cannot be stopped; leave without waiting for their threads.
    sys.stdout.flush()
    os._exit(0)
