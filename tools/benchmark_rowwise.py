"""Row-wise and low-precision against element-wise float32 optimizer state: the sparse update of
a 2M x 64 float32 table with 16,384 uniform ids per call, timed interleaved in one process
(medians; each call on ids its predecessors did not just touch), and the state bytes per
parameter.

    .venv/bin/python tools/benchmark_rowwise.py [--rows 2000000] [--dim 64] [--ids 16384]
                                                [--state-dtypes float32,bfloat16]
                                                [--huge-pages auto|off] [--inner 8] [--builtin]
                                                [--made-gradients]

Element-wise FTRL keeps accumulator and linear per element (8 bytes per float32 parameter),
row-wise FTRL the accumulator per row (4 + 4 / D); Adagrad 4 against 4 / D; bfloat16 state
halves each (stored with stochastic rounding, the optimizers' default). Traffic per touched row:
element-wise reads and writes var and every slot row; row-wise one accumulator value.

Each update is timed two ways (benchmark_ops.time_in_graph): per call of a `tf.function` of one
update (which also pays the call's fixed cost: its dispatch from Python and the captured
variables passed in), and in the graph: what one more update costs inside a call, from a call of
`--inner` updates written out (as a training step runs it, the call's cost shared by the step),
less the cost of passing a batch into the call (a step makes its gradients inside).
`--made-gradients` makes each update's gradient in the call just before the update (the batch's
times a constant, after the update before it), as a step's backward pass writes the gradient its
update then reads, in cache; the making is subtracted too. Without it the gradient is a batch
passed in, untouched since the round before, so each update also reads it from memory.
`--builtin` adds TensorFlow's built-in sparse ops with the duplicates summed first
(`tf.unique` + `unsorted_segment_sum`), on element-wise float32 state, for the speed-up over them.

`--huge-pages auto` (the default) advises huge pages for the variables the optimizers advise by
default (`huge_pages="auto"`: 16 MiB or more), so the figures are what a user of the optimizers
gets; `off` leaves every variable on the default pages.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_ops  # noqa: E402  (timing helpers of the op benchmark)

import tf_ftrl  # noqa: E402

LR, L1, L2, SHRINKAGE, EPSILON = 0.05, 0.001, 0.001, 0.0, 1e-7
# --made-gradients: the gradient made in the call is the batch's times this.
MADE_GRADIENT_SCALE = 0.5


def functions(rows, dim, state_dtypes, huge_pages, builtin=False):
    def variables(per_row, state_dtype):
        var = tf.Variable(tf.random.normal((rows, dim), seed=1))
        accum = tf.Variable(tf.cast(tf.fill((rows,) if per_row else (rows, dim), 0.1),
                                    state_dtype))
        linear = tf.Variable(tf.zeros((rows, dim), state_dtype))
        tf_ftrl.huge_pages.advise_huge_pages(
            tf_ftrl.huge_pages.chosen_for(var, [accum, linear], huge_pages))
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
        if builtin:
            var, accum, linear = variables(False, tf.float32)
            state = {"var": var, "accum": accum, **({"linear": linear} if op == "ftrl" else {})}
            apply = getattr(benchmark_ops, f"builtin_sparse_{op}")

            def run(g, i, state=state, apply=apply):
                apply(state, *benchmark_ops.dedup(g, i))

            made[f"built-in {op} + dedup"] = benchmark_ops.graph_function(run)
    return made


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--inner", type=int, default=8,
                        help="updates written out in one call for the in-graph time")
    parser.add_argument("--state-dtypes", default="float32,bfloat16",
                        help="comma-separated dtypes of the state (default: %(default)s)")
    parser.add_argument("--huge-pages", choices=("auto", "off"), default="auto",
                        help="advise huge pages as the optimizers do by default, or not")
    parser.add_argument("--made-gradients", action="store_true",
                        help="make each update's gradient inside the call just before it (as a "
                             "training step's backward pass does, so it is in cache), instead of "
                             "passing it in untouched")
    parser.add_argument("--builtin", action="store_true",
                        help="also time TensorFlow's built-in sparse ops with deduplication")
    args = parser.parse_args(argv)
    state_dtypes = [tf.as_dtype(d) for d in args.state_dtypes.split(",")]
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.uniform(-1, 1, (args.ids, args.dim)).astype(np.float32)),
                tf.constant(rng.integers(0, args.rows, args.ids)))
               for _ in range(max(16, 2 * args.inner))]
    made = functions(args.rows, args.dim, state_dtypes,
                     "auto" if args.huge_pages == "auto" else False, builtin=args.builtin)
    make = None
    if args.made_gradients:
        def make(grad, ids):
            return grad * MADE_GRADIENT_SCALE, ids
    times, pass_ms = benchmark_ops.time_in_graph(made, args.repeats, batches, args.inner,
                                                 make=make)
    d = args.dim
    gradients, less = "passed in", "passing its batch into the call"
    if args.made_gradients:
        gradients = "made in the call just before each update"
        less += " and making its gradient"
    print(f"{args.rows:,} x {d} float32, {args.ids:,} uniform ids per call, "
          f"{args.repeats} interleaved calls each, huge pages {args.huge_pages}, gradients "
          f"{gradients}; in the graph: {args.inner} updates written out in a call, less "
          f"{pass_ms:.3f} ms per update for {less}\n")
    print("| update | state bytes per parameter | per call ms | in the graph ms | GB/s in the "
          "graph | against element-wise float32, per call | in the graph |")
    print("|---|---|---|---|---|---|---|")
    unique = np.mean([len(np.unique(ids.numpy())) for _, ids in batches])
    footer = []
    for name, (per_call, in_graph) in times.items():
        if name.startswith("built-in"):
            op = name.split()[1]
            print(f"| {name} | {4 * (2 if op == 'ftrl' else 1):.3f} | {per_call:.3f} | "
                  f"{in_graph:.3f} | | {times[op][0] / per_call:.2f}x | "
                  f"{times[op][1] / in_graph:.2f}x |")
            footer.append(f"tf_ftrl's element-wise {op} against the built-in + dedup: "
                          f"{per_call / times[op][0]:.2f}x per call, "
                          f"{in_graph / times[op][1]:.2f}x in the graph")
            continue
        op, _, dtype = name.partition(" ")
        size = tf.as_dtype(dtype or "float32").size
        per_element_slots = {"ftrl": 2, "rowwise_ftrl": 1, "adagrad": 1, "rowwise_adagrad": 0}[op]
        per_row_slots = 1 if op.startswith("rowwise") else 0
        state_bytes = size * (per_element_slots + per_row_slots / d)
        # Gradient read, var read and written, each slot read and written.
        row_bytes = 4 * d * 3 + 2 * size * (per_element_slots * d + per_row_slots)
        gbps = unique * row_bytes / (in_graph * 1e-3) / 1e9
        base = times[op.replace("rowwise_", "")]
        ratios = ("| |" if name == op.replace("rowwise_", "")
                  else f"| {base[0] / per_call:.2f}x | {base[1] / in_graph:.2f}x |")
        print(f"| {name} | {state_bytes:.3f} | {per_call:.3f} | {in_graph:.3f} | {gbps:.1f} "
              f"{ratios}")
    print("\n".join([""] + footer) if footer else "")


if __name__ == "__main__":
    main()
