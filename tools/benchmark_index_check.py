"""What the step's index check costs: `tf_ftrl.Ftrl.apply` of sparse gradients to `--tables`
tables inside a `tf.function`, with the check (FusedCheckSparseIndices before the step's writes,
as the optimizers run it) and without it (the optimizers' module patched for the comparison),
calls of the two interleaved in a seeded shuffle each round; medians.

    .venv/bin/python tools/benchmark_index_check.py [--tables 26] [--rows 100000] [--dim 16]
                                                    [--ids 4096] [--rounds 300]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from tf_ftrl.optimizers import _fused_optimizer  # noqa: E402


def step_function(args, checked, rng):
    tables = [keras.Variable(rng.normal(size=(args.rows, args.dim)).astype("float32"))
              for _ in range(args.tables)]
    optimizer = tf_ftrl.Ftrl(0.1)
    indices = [tf.constant(rng.integers(0, args.rows, args.ids), tf.int32)
               for _ in range(args.tables)]
    values = tf.constant(rng.normal(size=(args.ids, args.dim)).astype("float32"))
    shape = tf.constant([args.rows, args.dim])

    @tf.function
    def step():
        optimizer.apply([tf.IndexedSlices(values, i, shape) for i in indices], tables)

    check = _fused_optimizer.sparse_index_check
    if not checked:
        _fused_optimizer.sparse_index_check = lambda *unused: None
    try:
        step()  # traced here, with or without the check
    finally:
        _fused_optimizer.sparse_index_check = check
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=26)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--ids", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    steps = {checked: step_function(args, checked, rng) for checked in (False, True)}
    times = {checked: [] for checked in steps}
    order = list(steps)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for checked in order:
            start = time.perf_counter()
            steps[checked]()
            times[checked].append(time.perf_counter() - start)
    without, with_check = (statistics.median(times[c]) * 1e3 for c in (False, True))
    print(f"{args.tables} tables of {args.rows:,} x {args.dim}, {args.ids:,} ids each, "
          f"{args.rounds} interleaved calls each: without the check {without:.3f} ms, with it "
          f"{with_check:.3f} ms ({(with_check - without) * 1e3:+.1f} us, "
          f"{with_check / without:.3f}x)")


if __name__ == "__main__":
    main()
