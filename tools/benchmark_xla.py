"""Benchmarks tf_ftrl's optimizers inside XLA (`tf.function(jit_compile=True)`) on the CPU: the
fused ops lowered to XLA custom calls (kernels/xla_ops.cc) against the plain TensorFlow ops the
optimizers use where the lowering is absent, and the uncompiled fused ops for reference.

1. Sparse: one `optimizer.apply` of a `tf.IndexedSlices` gradient of `--ids` uniform random ids
   (with duplicates) to a `--rows` x `--dim` float32 table.
2. Dense: one `optimizer.apply` of a dense gradient to a variable of `--dense` float32 elements.
3. The bare ops on the same inputs, compiled (one custom call) and not (the OpKernel), their calls
   interleaved: what the lowering itself costs, without the optimizer's other work (Keras's
   gradient processing, the deduplication of sparse ids), which XLA compiles differently.

Median milliseconds per call after warm-up. Run from the repository root:

    python tools/benchmark_xla.py                        # 2,000,000 x 64, 16,384 ids; 1e7 dense
    python tools/benchmark_xla.py --rows 100000 --dense 1000000 --repeats 5   # quick
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from tf_ftrl import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_optimizers import median_ms  # noqa: E402  (ms, after warm-up)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids", type=int, default=16_384)
    parser.add_argument("--dense", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=10)
    return parser.parse_args(argv)


# The paths compared: (name, jit_compile, whether the XLA lowering is used).
PATHS = [("XLA custom call", True, True), ("XLA plain TF ops", True, False),
         ("no XLA (fused op)", False, True)]


def time_apply(make_optimizer, shape, gradient, jit_compile, lowering, repeats):
    ops.load_library()
    loaded = ops._xla_lowering
    ops._xla_lowering = loaded and lowering
    try:
        variable = keras.Variable(np.zeros(shape, np.float32))
        optimizer = make_optimizer()
        optimizer.build([variable])

        @tf.function(jit_compile=jit_compile)
        def step():
            optimizer.apply([gradient], [variable])
            # Reads one element, so that the call waits for the update.
            return variable.value[0]

        ms = median_ms(lambda: step().numpy(), repeats)
        used = set(optimizer.kernels_used().values())
        return ms, used
    finally:
        ops._xla_lowering = loaded


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.rows, size=args.ids)
    sparse = tf.IndexedSlices(tf.constant(rng.normal(size=(args.ids, args.dim)), tf.float32),
                              tf.constant(ids, tf.int64), tf.constant([args.rows, args.dim],
                                                                      tf.int64))
    dense = tf.constant(rng.normal(size=args.dense), tf.float32)
    optimizers = {"Ftrl": lambda: tf_ftrl.Ftrl(learning_rate=0.05),
                  "Adagrad": lambda: tf_ftrl.Adagrad(learning_rate=0.05)}
    print(f"sparse: {args.rows:,} x {args.dim} float32, {args.ids:,} ids; dense: "
          f"{args.dense:,} float32; median ms per apply over {args.repeats} calls")
    print(f"| update | optimizer | {' | '.join(name for name, _, _ in PATHS)} |")
    print(f"|---|---|{'---:|' * len(PATHS)}")
    for kind, shape, gradient in [("sparse", (args.rows, args.dim), sparse),
                                  ("dense", (args.dense,), dense)]:
        for name, make in optimizers.items():
            cells = []
            for _, jit, lowering in PATHS:
                ms, used = time_apply(make, shape, gradient, jit, lowering, args.repeats)
                cells.append(f"{ms:.1f}")
                print(f"  ({kind} {name} jit={jit} lowering={lowering}: {sorted(used)})",
                      flush=True)
            print(f"| {kind} | {name} | {' | '.join(cells)} |", flush=True)
    bare_ops(args, rng, sparse, dense)


FTRL = dict(l1=0.001, l2=0.001, l2_shrinkage=0.0, lr_power=-0.5)


def time_bare_ops(op, initial, inputs, repeats):
    """Median ms of `op` on fresh variables, compiled and not, the calls interleaved."""
    steps = {}
    for jit in (True, False):
        state = [tf.Variable(x) for x in initial]

        def step(*tensors, state=state):
            op(*state, *tensors, 0.05)
            return state[0][0]

        steps[jit] = tf.function(step, jit_compile=jit)
        steps[jit](*inputs).numpy()
    times = {True: [], False: []}
    for _ in range(repeats):
        for jit, step in steps.items():
            start = time.perf_counter()
            step(*inputs).numpy()
            times[jit].append(time.perf_counter() - start)
    return {jit: 1000 * statistics.median(t) for jit, t in times.items()}


def bare_ops(args, rng, sparse, dense):
    print(f"\n| bare op | XLA custom call | OpKernel (no XLA) |\n|---|---:|---:|")
    table = (args.rows, args.dim)
    cases = [
        ("sparse_apply_adagrad", ops.sparse_apply_adagrad, [np.zeros(table, np.float32)] * 2,
         [sparse.values, sparse.indices]),
        ("sparse_apply_ftrl",
         lambda v, a, l, g, i, lr: ops.sparse_apply_ftrl(v, a, l, g, i, lr, **FTRL),
         [np.zeros(table, np.float32), np.full(table, 0.1, np.float32),
          np.zeros(table, np.float32)], [sparse.values, sparse.indices]),
        ("apply_adagrad", ops.apply_adagrad, [np.zeros(args.dense, np.float32)] * 2, [dense]),
        ("apply_ftrl", lambda v, a, l, g, lr: ops.apply_ftrl(v, a, l, g, lr, **FTRL),
         [np.zeros(args.dense, np.float32), np.full(args.dense, 0.1, np.float32),
          np.zeros(args.dense, np.float32)], [dense]),
    ]
    for name, op, initial, inputs in cases:
        ms = time_bare_ops(op, initial, inputs, args.repeats)
        print(f"| {name} | {ms[True]:.2f} | {ms[False]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
