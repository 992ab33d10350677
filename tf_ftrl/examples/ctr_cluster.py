"""The CTR job (tf_ftrl.examples.ctr) under a distribution strategy: `--strategy mirrored`,
`multiworker` or `ps`, the cluster read from `TF_CONFIG` as on real machines
(tf_ftrl.examples.local_cluster starts such a cluster on one machine).

Which Keras front end each strategy uses, and why:

- mirrored: Keras 3 `model.fit`, as `--strategy none` (over the GPUs, or --replicas logical CPU
  devices without one);
- multiworker: Keras 3 with a custom loop (`strategy.run` in a `tf.function`): Keras 3's `fit`
  fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); the optimizers are
  `tf_ftrl.Ftrl`/`tf_ftrl.Adagrad` as in one process, the gradients all-reduced;
- ps: tf_keras with `tf_ftrl.legacy.Ftrl`/`Adagrad` and a `ClusterCoordinator` loop: Keras 3 has
  no ParameterServerStrategy. The hashed tables are sharded over the parameter servers (rows cut
  in --ps parts), the optimizers' slots live with their shards, and the updates (the sparse ones
  through the fused kernels) run on the servers; workers take steps asynchronously.

Whatever the strategy, the chief writes the same reports and the same serving SavedModel as one
process: the trained weights (shards concatenated) are copied into a plain Keras 3 model, which
is exported as `--strategy none` exports it. So is `model.keras`, the model with its optimizers'
state: under ps, the sharded tf_keras tables and slots are copied whole into that Keras 3 model
with `tf_ftrl.Ftrl`/`tf_ftrl.Adagrad`, step counts included, so it trains on in one process.

Checkpoints (--resume): `--strategy none` and mirrored write one at every epoch end;
multiworker too, every worker under its --out, and every worker restores the chief's (a
filesystem they share); ps writes one at every epoch end and every --checkpoint-steps steps,
under --out/checkpoints/ps/, and any number of parameter servers restores it. A lost parameter
server ends the ps job with one line naming it; the same command with --resume continues from
the last checkpoint. A lost ps worker is not an error: the coordinator gives its steps to the
other workers and takes it back once it serves again (tf_ftrl.examples.local_cluster starts it
again).
"""

import json
import logging
import os
import re
import signal
import socket
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tf_ftrl
from tf_ftrl.examples import criteo_data, ctr


def configure_logical_cpus(replicas):
    """--replicas logical CPU devices for MirroredStrategy where there is no GPU; before
    TensorFlow's runtime starts."""
    if tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])


def server_config(num_workers):
    """Servers on machines with fewer cores than workers + 1 deadlock without enough inter-op
    threads (each worker's step waits on parameter-server ops)."""
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = max(num_workers + 1, os.cpu_count() or 1)
    return config


def serve(resolver, num_workers):
    """A `ps` task, or a `worker` task of the ps strategy: a server with tf_ftrl's kernels,
    until it is stopped."""
    name = f"{resolver.task_type}:{resolver.task_id}"
    # server.join() blocks in C++, where Python's handlers never run: die of SIGINT at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        tf_ftrl.ops.load_library()
    except Exception as e:  # noqa: BLE001 - any failure to load ends the job with its reason
        sys.exit(f"ctr: task {name} cannot load tf_ftrl's op library, which the fused updates "
                 f"on the parameter servers need: {e}")
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol="grpc",
                                  config=server_config(num_workers), start=True)
    address = resolver.cluster_spec().task_address(resolver.task_type, resolver.task_id)
    print(f"ctr: {name} serving at {address} with tf_ftrl's kernels", flush=True)
    server.join()


# --- the model's weights by name, in both front ends ---


def _weights(model):
    """{name: variable} of a WideAndDeep (Keras 3) or LegacyWideAndDeep (tf_keras)."""
    weights = {"wide_weights": model.wide_weights.embeddings, "wide_bias": model.wide_bias,
               "deep_embedding": model.deep_embedding.embeddings,
               "deep_output/kernel": model.deep_output.kernel,
               "deep_output/bias": model.deep_output.bias}
    for i, layer in enumerate(model.hidden):
        weights[f"hidden_{i}/kernel"] = layer.kernel
        weights[f"hidden_{i}/bias"] = layer.bias
    return weights


def _whole(parts):
    """One array of a variable's shards (or of the variable itself), concatenated along rows."""
    values = [np.asarray(part.numpy() if hasattr(part, "numpy") else part) for part in parts]
    return values[0] if len(values) == 1 else np.concatenate(values, axis=0)


def _shards(variable):
    shards = getattr(variable, "variables", None)
    return list(shards) if shards else [variable]


def named_weights(model):
    """{name: array} of a WideAndDeep (Keras 3) or LegacyWideAndDeep (tf_keras), sharded
    variables concatenated along their rows."""
    return {name: _whole(_shards(variable)) for name, variable in _weights(model).items()}


def plain_copy(model, args, optimizers=None):
    """A Keras 3 WideAndDeep outside any strategy, with model's trained weights: what is
    exported for serving, whatever trained it. With `optimizers`, the (wide, deep) tf_keras
    optimizers that trained a LegacyWideAndDeep, their state too (slots with their shards
    concatenated, and step counts), so that the copy's model.keras trains on from there."""
    wide, deep = ctr.make_optimizers("tf_ftrl", args)
    copy = ctr.WideAndDeep(args.buckets, args.embedding_dim, wide, deep,
                           hidden_units=args.hidden_units)
    copy.build_optimizers()
    sources, targets = _weights(model), _weights(copy)
    for name, variable in targets.items():
        value = _whole(_shards(sources[name]))
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{name}: trained shape {value.shape} vs serving shape "
                             f"{tuple(variable.shape)}")
        variable.assign(value)
    if optimizers is not None:
        wide_names = {"wide_weights", "wide_bias"}
        pairs = ((optimizers[0], copy.wide_optimizer), (optimizers[1], copy.deep_optimizer))
        for name, variable in targets.items():
            source, target = pairs[0] if name in wide_names else pairs[1]
            for slot in target.get_slot_names():
                value = _whole([source.get_slot(shard, slot) for shard in _shards(sources[name])])
                target_slot = target.get_slot(variable, slot)
                if (tuple(target_slot.shape) != value.shape
                        or str(target_slot.dtype) != str(value.dtype)):
                    raise ValueError(
                        f"{name} ({slot}): trained {value.dtype} {value.shape} vs "
                        f"{target_slot.dtype} {tuple(target_slot.shape)} in the Keras 3 copy")
                target_slot.assign(value)
        for source, target in pairs:
            target.iterations.assign(int(source.iterations.numpy()))
    return copy


# --- evaluation and the epoch's row, as HeldOutEvaluation writes them ---


def held_out_row(predict, test_dataset, test_labels, epoch, examples, seconds):
    logits = np.concatenate([predict(features) for features, _ in test_dataset])
    probabilities = 1 / (1 + np.exp(-logits))
    row = {"epoch": epoch + 1,
           "test_log_loss": criteo_data.log_loss(test_labels, probabilities),
           "test_auc": criteo_data.auc(test_labels, probabilities),
           "train_examples": examples, "train_seconds": seconds,
           "train_examples_per_s": examples / seconds}
    print(f"  held-out: log-loss {row['test_log_loss']:.4f}, AUC {row['test_auc']:.4f}, "
          f"{examples:,} examples trained at {row['train_examples_per_s']:,.0f}/s", flush=True)
    return row


def training_examples(data):
    """The examples in the training lines (a step count needs it: the strategies' loops run a
    fixed number of steps per epoch)."""
    count = criteo_data.count_lines(data.train_paths, report=0)
    if data.train_take >= 0:
        return min(count.examples, data.train_take)
    return count.examples


# --- multiworker: Keras 3, custom loop ---


def train_multiworker(args, strategy, hashing, data, test_dataset, test_labels, is_chief,
                      chief_out):
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(args.seed)  # the same initial weights on every worker
    with strategy.scope():
        wide_optimizer, deep_optimizer = ctr.make_optimizers("tf_ftrl", args)
        model = ctr.WideAndDeep(args.buckets, args.embedding_dim, wide_optimizer,
                                deep_optimizer, hidden_units=args.hidden_units)
        model.build_optimizers()
        ctr.compile_for_fit(model)  # not for this loop: so that model.keras trains on with fit
    wide, deep = model.wide_variables, model.deep_variables

    def replica_step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.nn.compute_average_loss(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, wide + deep)
        wide_optimizer.apply(grads[:len(wide)], wide)
        deep_optimizer.apply(grads[len(wide):], deep)
        return loss, tf.shape(labels, out_type=tf.int64)[0]

    @tf.function
    def train_step(iterator):
        loss, examples = strategy.run(replica_step, args=next(iterator))
        return (strategy.reduce("SUM", loss, axis=None),
                strategy.reduce("SUM", examples, axis=None))

    predict = tf.function(lambda features: model(features, training=False))
    steps = max(1, training_examples(data) // args.batch_size)
    # Every worker writes a checkpoint at each epoch end (its own --out), and every worker
    # restores the chief's: the same state everywhere, as the collectives need.
    checkpoint = ctr.EpochCheckpoint(os.path.join(args.out, "checkpoints", "multiworker"), model)
    history = []
    if args.resume:
        latest = tf.train.latest_checkpoint(
            os.path.join(chief_out, "checkpoints", "multiworker"))
        history = checkpoint.restore(latest)
        print(f"Resuming after epoch {len(history)} ({latest})" if history
              else "No checkpoint to resume from: starting at epoch 1.", flush=True)
    for epoch in range(len(history), args.epochs):
        # Every worker reads the lines in the same order and takes its share of each global
        # batch (auto-shard by data); all run the same number of steps, as collectives need.
        dataset = data.training(args, hashing, epoch).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
        start = time.perf_counter()
        examples, losses = 0, []
        for _ in range(steps):
            loss, count = train_step(iterator)
            losses.append(float(loss))
            examples += int(count)
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1}/{args.epochs}: {steps} steps of {replicas} replicas, "
              f"loss {np.mean(losses):.4f}", flush=True)
        history.append(held_out_row(lambda f: predict(f).numpy(), test_dataset, test_labels,
                                    epoch, examples, seconds) if is_chief
                       else {"epoch": epoch + 1})
        checkpoint.save(history)
    return model, history, {"replicas": replicas, "steps_per_epoch": steps,
                            "front_end": "Keras 3, custom loop (strategy.run)"}


# --- ps: tf_keras, ClusterCoordinator loop ---


def legacy_model_class():
    import tf_keras

    class LegacyWideAndDeep(tf_keras.Model):
        """ctr.WideAndDeep in tf_keras (the same layers, names and initializers)."""

        def __init__(self, buckets, embedding_dim, hidden_units):
            super().__init__()
            self.wide_weights = tf_keras.layers.Embedding(
                buckets, 1, embeddings_initializer="zeros", name="wide_weights")
            self.wide_bias = self.add_weight(shape=(), initializer="zeros", name="wide_bias")
            self.deep_embedding = tf_keras.layers.Embedding(
                buckets, embedding_dim,
                embeddings_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
                name="deep_embedding")
            self.hidden = [tf_keras.layers.Dense(units, activation="relu")
                           for units in hidden_units]
            self.deep_output = tf_keras.layers.Dense(1)

        def call(self, features):
            wide = tf.reduce_sum(self.wide_weights(features["wide_ids"]), axis=[1, 2])
            embedded = self.deep_embedding(features["categorical_ids"])
            x = tf.concat([tf.reshape(embedded, (tf.shape(embedded)[0], -1)),
                           features["dense"]], axis=1)
            for layer in self.hidden:
                x = layer(x)
            return wide + self.wide_bias + self.deep_output(x)[:, 0]

        @property
        def wide_variables(self):
            # A sharded table's shards: what tf_keras's trainable_variables lists too.
            return [shard for variable in (self.wide_weights.embeddings, self.wide_bias)
                    for shard in getattr(variable, "variables", [variable])]

        @property
        def deep_variables(self):
            wide = {id(v) for v in self.wide_variables}
            return [v for v in self.trainable_variables if id(v) not in wide]

    return LegacyWideAndDeep


def table_partitioner(buckets, num_ps):
    """The hashed tables (buckets rows) in num_ps shards of rows; every other variable whole."""
    def partitioner(shape, dtype):
        if shape.rank and shape[0] == buckets:
            return [num_ps] + [1] * (shape.rank - 1)
        return [1] * (shape.rank or 0)
    return partitioner


def op_library_missing(error):
    return "not registered" in str(error) and "Fused" in str(error)


def coordinator_steps(strategy, coordinator, model, optimizer, replica_step, dataset_fn):
    """run_steps(n) of the ClusterCoordinator loop: n steps scheduled, then joined; returns the
    examples trained and the mean loss."""
    @tf.function
    def train_step(iterator):
        features, labels = next(iterator)
        return strategy.run(replica_step, args=(features, labels))

    iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

    def run_steps(steps):
        results = [coordinator.schedule(train_step, args=(iterator,)) for _ in range(steps)]
        coordinator.join()
        fetched = [r.fetch() for r in results]
        return (int(sum(count for _, count in fetched)),
                float(np.mean([loss for loss, _ in fetched])))

    return run_steps


def fit_steps(strategy, coordinator, model, optimizer, replica_step, dataset_fn):
    """run_steps(n) of tf_keras's model.fit with a DatasetCreator (the other front end for ps):
    one fit "epoch" of n steps, the same replica step as its train_step; examples counted in a
    variable on a server."""
    import tf_keras

    with strategy.scope():
        examples = tf.Variable(0, dtype=tf.int64, trainable=False)

    def train_step(batch):
        loss, count = replica_step(*batch)
        examples.assign_add(count)
        return {"loss": loss}

    model.train_step = train_step
    model.compile(optimizer=optimizer)
    creator = tf_keras.utils.experimental.DatasetCreator(lambda context: dataset_fn())

    def run_steps(steps):
        before = int(examples.numpy())
        history = model.fit(creator, epochs=1, steps_per_epoch=steps, verbose=0)
        return int(examples.numpy()) - before, float(history.history["loss"][-1])

    return run_steps


def server_huge_pages(num_ps):
    """Each parameter server's KiB of anonymous memory in transparent huge pages (Linux's
    /proc/self/smaps_rollup, read by an op placed on that server; None where unreadable): the
    optimizers' first-step advice runs beside the variables, on the servers."""
    kib = []
    for index in range(num_ps):
        try:
            with tf.device(f"/job:ps/replica:0/task:{index}/device:CPU:0"):
                text = tf.io.read_file("/proc/self/smaps_rollup").numpy().decode()
            kib.append(sum(int(line.split()[1]) for line in text.splitlines()
                           if line.startswith("AnonHugePages:")))
        except tf.errors.OpError:
            kib.append(None)
    return kib


def epoch_start(history):
    """The ps job's progress at the start of an epoch: the epochs done (their held-out rows), and
    the steps, examples, training seconds and summed step losses of the epoch under way."""
    return {"history": history, "steps": 0, "examples": 0, "seconds": 0.0, "loss_sum": 0.0}


class PsCheckpoint:
    """The ps job's checkpoints (--resume): the model, each sharded table saved whole (its shards
    as slices of one tensor, so that any number of servers can restore it), both optimizers (the
    slots likewise, and iterations), and the progress as a JSON string variable, written with the
    weights. The chief writes them; the variables are read from the servers."""

    def __init__(self, directory, model, wide_optimizer, deep_optimizer):
        self.progress = tf.Variable(json.dumps(epoch_start([])))  # on the chief
        checkpoint = tf.train.Checkpoint(model=model, wide_optimizer=wide_optimizer,
                                         deep_optimizer=deep_optimizer, progress=self.progress)
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)

    def save(self, progress):
        self.progress.assign(json.dumps(progress))
        return self.manager.save()

    def restore(self, strategy):
        """The progress saved, None where there is no checkpoint."""
        if self.manager.latest_checkpoint is None:
            return None
        checkpoint = self.manager.checkpoint
        with strategy.scope():
            # The slots first, so that the restore fills them (each shard's slots from the
            # slices of the whole saved slot) rather than waiting for the first step. tf_keras's
            # optimizers have no public build: _create_all_weights is what apply_gradients calls.
            for optimizer, variables in ((checkpoint.wide_optimizer,
                                          checkpoint.model.wide_variables),
                                         (checkpoint.deep_optimizer,
                                          checkpoint.model.deep_variables)):
                optimizer._create_all_weights(variables)
        # Not assert_consumed(): tf_keras's get_slot() of a sharded table builds a new
        # ShardedVariable view of the shards' slots at each call, and the check counts the
        # view it did not restore through as unmatched (the values are restored; tested).
        self.manager.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
        return json.loads(self.progress.numpy())


class CoordinatorLogFilter(logging.Filter):
    """The ClusterCoordinator logs each failed step with its whole gRPC error, dozens of lines per
    failure; the job says instead, in one line, that a worker was lost (its steps go to the other
    workers until it serves again). A lost parameter server ends the job (run_or_report)."""

    def filter(self, record):
        if (record.levelno < logging.WARNING
                or not record.pathname.endswith("cluster_coordinator.py")):
            return True
        message = record.getMessage()
        worker = re.match(r"Worker /job:worker/replica:0/task:(\d+) failed with (\w+)", message)
        if worker:
            print(f"ctr: lost worker:{worker.group(1)} ({worker.group(2)}): its steps go to the "
                  "other workers until it serves again", flush=True)
        return False


def unreachable(addresses, timeout=2.0):
    """The indices of the host:port addresses that refuse or time out a TCP connection."""
    down = []
    for index, address in enumerate(addresses):
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError:
            down.append(index)
    return down


def run_or_report(run_steps, steps, checkpoint, ps_addresses):
    """run_steps(steps), or the job's end in one line where a server cannot go on: one without
    tf_ftrl's op library, or a parameter server lost (its variables with it)."""
    try:
        return run_steps(steps)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
        if op_library_missing(e):
            sys.exit("ctr: a worker or parameter server cannot run tf_ftrl's fused ops: "
                     "every server must load tf_ftrl's op library "
                     "(tf_ftrl.ops.load_library()) before it starts. "
                     f"{str(e).splitlines()[0]}")
        raise
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as e:
        named = sorted({int(i) for i in re.findall(r"/job:ps/replica:0/task:(\d+)", str(e))})
        if not named:
            raise
        # The error names every server that relayed it (a live one that lost a transfer from
        # the dead one too): name those that no longer accept connections.
        lost = unreachable(ps_addresses) or named
        latest = checkpoint.manager.latest_checkpoint
        print(f"ctr: lost parameter server {', '.join(f'ps:{i}' for i in lost)} "
              f"({type(e).__name__}): the job stops. Run the same command with --resume to "
              "continue from " + (f"the last checkpoint, {latest}." if latest else
                                  "the start (no checkpoint was written yet)."), flush=True)
        sys.stderr.flush()
        # Not sys.exit: the runtime's teardown would retry its RPCs to the lost server and
        # log each failure.
        os._exit(1)


def build_ps_model(args, strategy):
    """The LegacyWideAndDeep and its two optimizers, made in strategy's scope (the tables
    sharded by its variable_partitioner) and built: (model, wide optimizer, deep optimizer)."""
    import tf_ftrl.legacy

    tf.random.set_seed(args.seed)
    with strategy.scope():
        model = legacy_model_class()(args.buckets, args.embedding_dim, args.hidden_units)
        model({name: tf.zeros([1] + spec.shape[1:], spec.dtype)
               for name, spec in criteo_data.feature_specs().items()})
        options = dict(rowwise=args.rowwise, state_dtype=args.state_dtype,
                       stochastic_rounding=args.stochastic_rounding)
        options = {key: value for key, value in options.items() if value}
        wide_optimizer = tf_ftrl.legacy.Ftrl(
            learning_rate=args.wide_learning_rate, l1_regularization_strength=args.l1,
            l2_regularization_strength=args.l2, initial_accumulator_value=1e-6, **options)
        deep_optimizer = tf_ftrl.legacy.Adagrad(
            learning_rate=args.deep_learning_rate, initial_accumulator_value=1e-6, **options)
    return model, wide_optimizer, deep_optimizer


def ps_replica_step(model, wide_optimizer, deep_optimizer):
    """A training step on one batch, for strategy.run on a worker: (mean loss, examples)."""
    wide, deep = model.wide_variables, model.deep_variables

    def replica_step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, wide + deep)
        wide_optimizer.apply_gradients(zip(grads[:len(wide)], wide))
        deep_optimizer.apply_gradients(zip(grads[len(wide):], deep))
        return loss, tf.shape(labels, out_type=tf.int64)[0]

    return replica_step


def train_ps(args, strategy, cluster, hashing, data, test_dataset, test_labels):
    from tf_ftrl.examples import parameter_server

    num_ps, num_workers = len(cluster["ps"]), len(cluster["worker"])
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    model, wide_optimizer, deep_optimizer = build_ps_model(args, strategy)
    replica_step = ps_replica_step(model, wide_optimizer, deep_optimizer)

    def dataset_fn():
        # Each worker reads all the lines in an order of its own, so that asynchronous steps see
        # different batches. Not seed=None: the function is traced once, on the chief, where
        # the global seed (set for the initial weights) fixes the shuffle's seed, the same on
        # every worker (seen: both workers took the same batches). The clock of the worker that
        # builds its dataset seeds its order instead.
        seed = tf.bitcast(tf.timestamp(), tf.int64)
        return criteo_data.read_dataset(data.train_paths, hashing, args.batch_size,
                                        shuffle_buffer=args.shuffle_buffer, seed=seed,
                                        take=data.train_take).repeat()

    steps = max(1, training_examples(data) // args.batch_size)
    run_steps = (fit_steps if args.ps_loop == "fit" else coordinator_steps)(
        strategy, coordinator, model, wide_optimizer, replica_step, dataset_fn)
    predict = tf.function(lambda features: model(features, training=False))
    checkpoint = PsCheckpoint(os.path.join(args.out, "checkpoints", "ps"), model,
                              wide_optimizer, deep_optimizer)
    progress = epoch_start([])
    if args.resume:
        progress = checkpoint.restore(strategy) or progress
        print(f"Resuming at epoch {len(progress['history']) + 1}, step {progress['steps']} "
              f"({checkpoint.manager.latest_checkpoint})" if checkpoint.manager.latest_checkpoint
              else "No checkpoint to resume from: starting at epoch 1.", flush=True)
    logging.getLogger("tensorflow").addFilter(CoordinatorLogFilter())
    for epoch in range(len(progress["history"]), args.epochs):
        while progress["steps"] < steps:
            chunk = min(steps - progress["steps"], args.checkpoint_steps or steps)
            start = time.perf_counter()
            examples, loss = run_or_report(run_steps, chunk, checkpoint, cluster["ps"])
            progress["seconds"] += time.perf_counter() - start
            progress["steps"] += chunk
            progress["examples"] += examples
            progress["loss_sum"] += loss * chunk
            if progress["steps"] < steps:
                path = checkpoint.save(progress)
                print(f"checkpoint: epoch {epoch + 1}, step {progress['steps']}/{steps}: {path}",
                      flush=True)
        print(f"epoch {epoch + 1}/{args.epochs}: {steps} steps on {num_workers} workers, "
              f"loss {progress['loss_sum'] / steps:.4f}", flush=True)
        row = held_out_row(lambda f: predict(f).numpy(), test_dataset, test_labels, epoch,
                           progress["examples"], progress["seconds"])
        progress = epoch_start(progress["history"] + [row])
        print(f"checkpoint: epoch {epoch + 1} done: {checkpoint.save(progress)}", flush=True)
    history = progress["history"]

    # Where the tables' shards and their slots are, and where each update op runs.
    element_spec = dataset_fn().element_spec
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # tracing outside schedule() is what we mean here
    try:
        traced = tf.function(lambda f, y: strategy.run(replica_step, args=(f, y))) \
            .get_concrete_function(*element_spec).graph
    finally:
        tf.get_logger().setLevel(level)
    placement = {}
    for name, table in (("wide_weights", model.wide_weights.embeddings),
                        ("deep_embedding", model.deep_embedding.embeddings)):
        optimizer = wide_optimizer if name == "wide_weights" else deep_optimizer
        placement[name] = [
            {"shard": shard.device, "shape": shard.shape.as_list(),
             "slots": {slot: optimizer.get_slot(shard, slot).device
                       for slot in optimizer.get_slot_names()}}
            for shard in getattr(table, "variables", [table])]
    # The Keras 3 model that model.keras holds, as the other strategies save theirs: the tables
    # whole, the optimizers' slots and step counts with them, compiled as one process compiles
    # its model, so that the file trains on with fit.
    keras_model = plain_copy(model, args, (wide_optimizer, deep_optimizer))
    ctr.compile_for_fit(keras_model)
    return keras_model, history, {
        "workers": num_workers, "ps": num_ps, "steps_per_epoch": steps,
        "front_end": ("tf_keras, model.fit (DatasetCreator)" if args.ps_loop == "fit"
                      else "tf_keras, custom loop (ClusterCoordinator.schedule)"),
        "placement": placement, "update_ops": parameter_server.update_ops(traced),
        "ps_anon_huge_pages_kib": server_huge_pages(num_ps),
        "wide_iterations": int(wide_optimizer.iterations.numpy()),
        "deep_iterations": int(deep_optimizer.iterations.numpy())}


# --- the job ---


def main(parser, args, argv):
    if args.checkpoint_steps < 0:
        ctr.fail(parser, f"--checkpoint-steps must be 0 or more. Received: "
                 f"{args.checkpoint_steps}")
    if args.checkpoint_steps and args.strategy != "ps":
        ctr.fail(parser, f"--checkpoint-steps works with --strategy ps only. Received: "
                 f"--strategy {args.strategy}")
    if args.compare:
        ctr.fail(parser, f"--compare works with --strategy none only. Received: --strategy "
                 f"{args.strategy}")
    if args.strategy == "mirrored":
        configure_logical_cpus(args.replicas)
        resolver, is_chief, task = None, True, "chief"
    else:
        if not os.environ.get("TF_CONFIG"):
            ctr.fail(parser, f"--strategy {args.strategy} reads the cluster from TF_CONFIG, "
                     "which is not set (tf_ftrl.examples.local_cluster sets it on one machine)")
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        cluster = resolver.cluster_spec().as_dict()
        task = f"{resolver.task_type}:{resolver.task_id}"
        chief_out = args.out
        if args.strategy == "ps":
            if not cluster.get("ps") or not cluster.get("worker") or not cluster.get("chief"):
                ctr.fail(parser, "--strategy ps needs chief, worker and ps tasks in TF_CONFIG. "
                         f"Received: {sorted(cluster)}")
            if resolver.task_type in ("ps", "worker"):
                return serve(resolver, len(cluster["worker"]))
            is_chief = True
        else:
            workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
            if args.state_dtype == "bfloat16" and workers > 1:
                ctr.fail(parser, f"--state-dtype bfloat16 does not work under --strategy "
                         f"multiworker with {workers} workers (TensorFlow's broadcast of initial "
                         f"values has no bfloat16): --state-dtype float16 keeps the state as "
                         f"small and works there, as do --strategy ps and mirrored")
            is_chief = resolver.task_type == "chief" or (
                resolver.task_type == "worker" and resolver.task_id == 0
                and "chief" not in cluster)
            if not is_chief:  # a worker writes its data and files apart from the chief's
                args.out = os.path.join(args.out, f"worker_{resolver.task_id}")
    # The strategy first: collectives must be configured, and the coordinator connected,
    # before TensorFlow runs anything (the data below).
    if args.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif args.strategy == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    else:
        strategy = tf.distribute.experimental.ParameterServerStrategy(
            resolver, variable_partitioner=table_partitioner(args.buckets,
                                                             len(cluster["ps"])))

    data = ctr.real_data(parser, args) if args.data else None
    os.makedirs(args.out, exist_ok=True)
    data = data or ctr.synthetic_data(args)
    hashing = criteo_data.HashingConfig(buckets=args.buckets)
    test_dataset = data.held_out(hashing)
    test_labels = np.concatenate([y for _, y in test_dataset.as_numpy_iterator()] + [[]])
    if not len(test_labels):
        ctr.fail(parser, f"no usable line in the held-out data {' '.join(data.test_paths)}")

    print(f"\n== tf_ftrl under --strategy {args.strategy} (task {task}), "
          f"{args.buckets:,} hashed rows per table")
    if args.strategy == "mirrored":
        model, history = ctr.train("tf_ftrl", args, hashing, data, test_dataset, test_labels,
                                   strategy=strategy)
        details = {"replicas": model.distribute_strategy.num_replicas_in_sync,
                   "front_end": "Keras 3, model.fit"}
    elif args.strategy == "multiworker":
        model, history, details = train_multiworker(args, strategy, hashing, data,
                                                    test_dataset, test_labels, is_chief,
                                                    chief_out)
    else:
        model, history, details = train_ps(args, strategy, cluster, hashing, data, test_dataset,
                                           test_labels)
    results = {"tf_ftrl": history}
    # The Keras 3 model with its optimizers and their slots, as one process saves it; every
    # worker saves (a save may read variables with collectives), each under its own --out. Under
    # ps the chief saves the whole-table copy that train_ps made of the sharded model.
    model.save(os.path.join(args.out, "model.keras"))
    if is_chief:
        write_outputs(model, hashing, data, results, details, args, argv)
    if args.strategy == "multiworker":
        # The workers leave together: one that exits while the chief (the coordination
        # service's leader) still exports would fail its shutdown barrier and linger.
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1)), axis=None)
    return results if is_chief else {}


def write_outputs(model, hashing, data, results, details, args, argv):
    """The chief's serving SavedModel and reports."""
    # train_ps returns the plain copy already; the other strategies' models are under theirs.
    export_model = model if args.strategy == "ps" else plain_copy(model, args)
    ctr.export_serving(export_model, hashing, os.path.join(args.out, "serving"))
    print(f"Model: {args.out}/model.keras, SavedModel for serving: {args.out}/serving/")
    print("\n" + ctr.write_reports(results, data, args, argv))
    with open(os.path.join(args.out, "cluster_report.json"), "w") as f:
        json.dump({"strategy": args.strategy, **details}, f, indent=2)
    print(f"Reports: {args.out}/ctr_report.json, {args.out}/ctr_report.md, "
          f"{args.out}/cluster_report.json", flush=True)
