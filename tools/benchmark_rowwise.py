"""Row-wise against element-wise optimizer state: the sparse update of a 2M x 64 float32 table
with 16,384 uniform ids per call, timed interleaved in one process (medians of tf.function
calls, each call on ids its predecessors did not just touch), and the state bytes per parameter.

    .venv/bin/python tools/benchmark_rowwise.py [--rows 2000000] [--dim 64] [--ids 16384]

Element-wise FTRL keeps accumulator and linear per element (8 bytes per float32 parameter),
row-wise FTRL the accumulator per row (4 + 4 / D); Adagrad 4 against 4 / D. Traffic per touched
row: element-wise reads and writes var and every slot row; row-wise one accumulator value.
"""

import argparse
import os
import statistics
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_ops  # noqa: E402  (timing helpers of the op benchmark)

import tf_ftrl  # noqa: E402

LR, L1, L2, SHRINKAGE, EPSILON = 0.05, 0.001, 0.001, 0.0, 1e-7


def functions(rows, dim):
    def variables(per_row):
        var = tf.Variable(tf.random.normal((rows, dim), seed=1))
        accum = tf.Variable(tf.fill((rows,) if per_row else (rows, dim), 0.1))
        linear = tf.Variable(tf.zeros((rows, dim)))
        return var, accum, linear

    made = {}
    for op in ("ftrl", "adagrad"):
        for rowwise in (False, True):
            var, accum, linear = variables(rowwise)
            name = f"{'rowwise_' if rowwise else ''}{op}"
            if op == "ftrl":
                fn = getattr(tf_ftrl.ops, f"sparse_apply_{name}")
                def run(g, i, fn=fn, v=(var, accum, linear)):
                    fn(*v, g, i, LR, L1, L2)
                made[name] = benchmark_ops.graph_function(run)
            else:
                del linear
                fn = getattr(tf_ftrl.ops, f"sparse_apply_{name}")
                def run(g, i, fn=fn, v=(var, accum)):
                    fn(*v, g, i, LR, epsilon=EPSILON)
                made[name] = benchmark_ops.graph_function(run)
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.uniform(-1, 1, (args.ids, args.dim)).astype(np.float32)),
                tf.constant(rng.integers(0, args.rows, args.ids))) for _ in range(16)]
    times = benchmark_ops.time_interleaved(functions(args.rows, args.dim), args.repeats,
                                           batches=batches)
    d = args.dim
    state_bytes = {"ftrl": 8.0, "rowwise_ftrl": 4 + 4 / d, "adagrad": 4.0,
                   "rowwise_adagrad": 4 / d}
    # Bytes moved per touched row: gradient read, var and per-element slots read and written,
    # per-row slots one value read and written.
    row_bytes = {"ftrl": 4 * d * (1 + 2 * 3), "rowwise_ftrl": 4 * d * (1 + 2 * 2) + 8,
                 "adagrad": 4 * d * (1 + 2 * 2), "rowwise_adagrad": 4 * d * (1 + 2) + 8}
    print(f"{args.rows:,} x {d} float32, {args.ids:,} uniform ids per call, "
          f"{args.repeats} interleaved calls each\n")
    print("| update | state bytes per parameter | median ms | GB/s | row-wise speed-up |")
    print("|---|---|---|---|---|")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name in ("ftrl", "rowwise_ftrl", "adagrad", "rowwise_adagrad"):
        unique = statistics.mean(len(np.unique(ids.numpy())) for _, ids in batches)
        gbps = unique * row_bytes[name] / (medians[name] * 1e-3) / 1e9
        speedup = (f"{medians[name.replace('rowwise_', '')] / medians[name]:.2f}x"
                   if name.startswith("rowwise") else "")
        print(f"| {name} | {state_bytes[name]:.3f} | {medians[name]:.3f} | {gbps:.1f} | "
              f"{speedup} |")


if __name__ == "__main__":
    main()
