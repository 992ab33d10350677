"""A task of a two-worker MultiWorkerMirroredStrategy cluster (run by
tf_ftrl.examples.local_cluster): builds the optimizer with `--state-dtype` state on a table and a
dense kernel, then, where that works, applies one sparse and one dense gradient, and prints what it
saw as a result line (tests.support.workers).

    python -m tests.support.multiworker_state_task --strategy multiworker --state-dtype D
                                                   [--legacy]
"""

import argparse
import os
import sys

from tests.support import workers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy")
    parser.add_argument("--state-dtype")
    parser.add_argument("--legacy", action="store_true")
    args = parser.parse_args()
    if args.legacy:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf_ftrl
    import tf_ftrl.legacy

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    front_end = tf_ftrl.legacy if args.legacy else tf_ftrl
    with strategy.scope():
        table = tf.Variable(tf.reshape(tf.range(40, dtype=tf.float32), (10, 4)) / 40, name="t")
        kernel = tf.Variable(tf.ones((4, 2)), name="k")
        optimizer = front_end.Ftrl(0.5, rowwise=True, state_dtype=args.state_dtype)
    result = {"task": os.environ["TF_CONFIG"]}

    @tf.function
    def step():
        def replica_step():
            sparse = tf.IndexedSlices(tf.ones((3, 4)), tf.constant([1, 7, 1]),
                                   tf.constant([10, 4], tf.int64))
            optimizer.apply_gradients([(sparse, table), (tf.fill((4, 2), 0.25), kernel)])
        strategy.run(replica_step)

    try:
        step()
    except ValueError as error:
        result["refused"] = str(error)
        workers.print_result(result)
        return
    variables = optimizer.variables() if args.legacy else optimizer.variables
    result["slot_dtypes"] = sorted({tf.as_dtype(v.dtype).name for v in variables
                                    if "accumulator" in v.name or "linear" in v.name})
    result["table"] = table.numpy().tolist()
    result["kernel"] = kernel.numpy().tolist()
    workers.print_result(result)


if __name__ == "__main__":
    sys.exit(main())
