"""The CTR job's ps model on an in-process cluster of NUM_PS parameter servers (one worker), for
tests/test_local_cluster.py's resharding test.

    python -m tests.support.reshard_worker train NUM_PS CHECKPOINT_DIR [JOB ARGUMENTS]
    python -m tests.support.reshard_worker restore NUM_PS CHECKPOINT_DIR [JOB ARGUMENTS]

`train`: STEPS steps, one at a time, on fixed batches, then the job's checkpoint
(ctr_cluster.PsCheckpoint) under CHECKPOINT_DIR. `restore`: the job's restore of that checkpoint.
Both then print (workers.print_result) the shards' row counts, the predictions on a fixed batch,
each table and slot whole (shards concatenated), the optimizers' iterations, and the tables after
one more step on a fixed batch.
"""

import sys

import numpy as np
import tensorflow as tf

from tests.support import workers
from tf_ftrl.examples import criteo_data, ctr, ctr_cluster, parameter_server

STEPS = 3
BATCH = 64


def batch(seed, buckets):
    """Features and labels of BATCH examples, ids in [0, buckets)."""
    rng = np.random.default_rng(seed)
    features = {}
    for name, spec in criteo_data.feature_specs().items():
        shape = [BATCH] + spec.shape[1:]
        features[name] = tf.constant(
            rng.integers(0, buckets, shape) if spec.dtype.is_integer
            else rng.random(shape).astype(np.float32), spec.dtype)
    return features, tf.constant((rng.random(BATCH) < 0.3).astype(np.float32))


def whole(variable):
    shards = getattr(variable, "variables", [variable])
    return np.concatenate([shard.numpy() for shard in shards], axis=0)


def state(model, wide_optimizer, deep_optimizer, features):
    tables = {"wide_weights": (model.wide_weights.embeddings, wide_optimizer),
              "deep_embedding": (model.deep_embedding.embeddings, deep_optimizer)}
    result = {"shard_rows": {name: [int(shard.shape[0]) for shard in table.variables]
                             if hasattr(table, "variables") else [int(table.shape[0])]
                             for name, (table, _) in tables.items()},
              "predictions": model(features).numpy().tolist(),
              "iterations": [int(wide_optimizer.iterations.numpy()),
                             int(deep_optimizer.iterations.numpy())]}
    for name, (table, optimizer) in tables.items():
        result[name] = whole(table).tolist()
        for slot in optimizer.get_slot_names():
            result[f"{name}/{slot}"] = whole(optimizer.get_slot(table, slot)).tolist()
    return result


def main():
    mode, num_ps, directory, job_args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    args = ctr.build_parser().parse_args(job_args)
    resolver = parameter_server.start_in_process_cluster(1, num_ps)
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=ctr_cluster.table_partitioner(args.buckets, num_ps))
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    model, wide_optimizer, deep_optimizer = ctr_cluster.build_ps_model(args, strategy)
    replica_step = ctr_cluster.ps_replica_step(model, wide_optimizer, deep_optimizer)
    checkpoint = ctr_cluster.PsCheckpoint(directory, model, wide_optimizer, deep_optimizer)

    @tf.function
    def train_step(features, labels):
        return strategy.run(replica_step, args=(features, labels))

    def step(seed):  # one at a time: the same steps in the same order, whatever the servers
        coordinator.schedule(train_step, args=batch(seed, args.buckets))
        coordinator.join()

    if mode == "train":
        for seed in range(STEPS):
            step(seed)
        checkpoint.save(ctr_cluster.epoch_start([]))
    else:
        assert checkpoint.restore(strategy) is not None
    result = state(model, wide_optimizer, deep_optimizer, batch(100, args.buckets)[0])
    step(101)
    result["next"] = {name: whole(table).tolist() for name, table in (
        ("wide_weights", model.wide_weights.embeddings),
        ("deep_embedding", model.deep_embedding.embeddings))}
    workers.print_result(result)


if __name__ == "__main__":
    main()
