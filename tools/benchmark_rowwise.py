"""Row-wise and low-precision against element-wise float32 optimizer state: the sparse update of
a 2M x 64 float32 table with 16,384 uniform ids per call, timed interleaved in one process
(medians of tf.function calls, each call on ids its predecessors did not just touch), and the
state bytes per parameter.

    .venv/bin/python tools/benchmark_rowwise.py [--rows 2000000] [--dim 64] [--ids 16384]
                                                [--state-dtypes float32,bfloat16]
                                                [--huge-pages auto|off]

Element-wise FTRL keeps accumulator and linear per element (8 bytes per float32 parameter),
row-wise FTRL the accumulator per row (4 + 4 / D); Adagrad 4 against 4 / D; bfloat16 state
halves each (stored with stochastic rounding, the optimizers' default). Traffic per touched row:
element-wise reads and writes var and every slot row; row-wise one accumulator value.

`--huge-pages auto` (the default) advises huge pages for the variables the optimizers advise by
default (`huge_pages="auto"`: 16 MiB or more), so the figures are what a user of the optimizers
gets; `off` leaves every variable on the default pages.
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


def functions(rows, dim, state_dtypes, huge_pages):
    def variables(per_row, state_dtype):
        var = tf.Variable(tf.random.normal((rows, dim), seed=1))
        accum = tf.Variable(tf.cast(tf.fill((rows,) if per_row else (rows, dim), 0.1),
                                    state_dtype))
        linear = tf.Variable(tf.zeros((rows, dim), state_dtype))
        tf_ftrl.huge_pages.advise_huge_pages(
            tf_ftrl.huge_pages.chosen([var, accum, linear], huge_pages))
        return var, accum, linear

    made = {}
    for op in ("ftrl", "adagrad"):
        for rowwise in (False, True):
            for state_dtype in state_dtypes:
                var, accum, linear = variables(rowwise, state_dtype)
                name = f"{'rowwise_' if rowwise else ''}{op}"
                fn = getattr(tf_ftrl.ops, f"sparse_apply_{name}")
                key = name if state_dtype == tf.float32 else f"{name} {state_dtype.name}"
                rounding = None if state_dtype == tf.float32 else [1, 2]
                if op == "ftrl":
                    def run(g, i, fn=fn, v=(var, accum, linear), r=rounding):
                        fn(*v, g, i, LR, L1, L2, stochastic_rounding=r)
                else:
                    del linear
                    def run(g, i, fn=fn, v=(var, accum), r=rounding):
                        fn(*v, g, i, LR, epsilon=EPSILON, stochastic_rounding=r)
                made[key] = benchmark_ops.graph_function(run)
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--state-dtypes", default="float32,bfloat16",
                        help="comma-separated dtypes of the state (default: %(default)s)")
    parser.add_argument("--huge-pages", choices=("auto", "off"), default="auto",
                        help="advise huge pages as the optimizers do by default, or not")
    args = parser.parse_args()
    state_dtypes = [tf.as_dtype(d) for d in args.state_dtypes.split(",")]
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.uniform(-1, 1, (args.ids, args.dim)).astype(np.float32)),
                tf.constant(rng.integers(0, args.rows, args.ids))) for _ in range(16)]
    made = functions(args.rows, args.dim, state_dtypes,
                     "auto" if args.huge_pages == "auto" else False)
    times = benchmark_ops.time_interleaved(made, args.repeats, batches=batches)
    d = args.dim
    print(f"{args.rows:,} x {d} float32, {args.ids:,} uniform ids per call, "
          f"{args.repeats} interleaved calls each, huge pages {args.huge_pages}\n")
    print("| update | state bytes per parameter | median ms | GB/s | against element-wise "
          "float32 |")
    print("|---|---|---|---|---|")
    medians = {name: statistics.median(t) for name, t in times.items()}
    unique = statistics.mean(len(np.unique(ids.numpy())) for _, ids in batches)
    for name in made:
        op, _, dtype = name.partition(" ")
        size = tf.as_dtype(dtype or "float32").size
        per_element_slots = {"ftrl": 2, "rowwise_ftrl": 1, "adagrad": 1, "rowwise_adagrad": 0}[op]
        per_row_slots = 1 if op.startswith("rowwise") else 0
        state_bytes = size * (per_element_slots + per_row_slots / d)
        # Gradient read, var read and written, each slot read and written.
        row_bytes = 4 * d * 3 + 2 * size * (per_element_slots * d + per_row_slots)
        gbps = unique * row_bytes / (medians[name] * 1e-3) / 1e9
        base = op.replace("rowwise_", "")
        speedup = "" if name == base else f"{medians[base] / medians[name]:.2f}x"
        print(f"| {name} | {state_bytes:.3f} | {medians[name]:.3f} | {gbps:.1f} | {speedup} |")


if __name__ == "__main__":
    main()
