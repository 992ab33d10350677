"""Multi-tensor dense apply: `optimizer.apply` of dense gradients to many small variables (the
deep part of a CTR model), tf_ftrl's multi-tensor op calls (one per intra-op thread on the CPU)
against one op call per variable and against Keras's own optimizers, with the same bytes in one
buffer as the floor.

    .venv/bin/python tools/benchmark_multi_tensor.py [--layers 120] [--width 64]
                                                     [--repeats 30] [--inner 20] [--calls 2,4]
                                                     [--json PATH]

The variables are `--layers` Dense(width, width) kernels and their biases (240 variables of
float32 by default). Each case is timed two ways, interleaved in one process (medians):
- "per call": one `optimizer.apply` per call of a `tf.function`, which also pays for passing every
  variable into the function (the same for every case, and for `model.fit`'s train step);
- "in the graph": what one more apply costs inside a training step: a call of `--inner` applies
  written out one after the other, less a call of one apply, over `--inner` - 1 (the call's fixed
  cost of passing the variables in, ~4 ms for 720 variables here, cancels out);
- "in a loop": the same applies in a `tf.range` loop, per apply, which also pays for carrying
  every captured variable and gradient through each iteration (four executor nodes each: ~3,800
  node runs per iteration for 240 variables), a cost a training step does not have.
Cases: tf_ftrl (multi-tensor, the default), tf_ftrl with one op per variable, keras.optimizers,
the bare multi-tensor op (one call for all the variables; with `--calls`, also cut into that many
calls as the optimizers cut a group), and one fused dense op on one variable holding all the
elements.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from tf_ftrl._optimizer_common import split_by_elements  # noqa: E402

LR = 0.01


def shapes_of(layers, width):
    return [(width, width), (width,)] * layers


def optimizer_case(make_optimizer, shapes, gradients, inner, multi_tensor=True):
    variables = [keras.Variable(tf.random.uniform(shape, -0.05, 0.05)) for shape in shapes]
    optimizer = make_optimizer()
    if not multi_tensor:
        optimizer._multi_tensor = False
    optimizer.build(variables)

    def apply():
        optimizer.apply(gradients, variables)

    return apply


def bare_multi_case(name, shapes, gradients, inner, calls=1):
    """The multi-tensor op on its own: `calls` calls of consecutive variables with about equal
    numbers of elements (as the optimizers cut a group)."""
    states = [[tf.Variable(tf.random.uniform(s, -0.05, 0.05)) for s in shapes],
              [tf.Variable(tf.fill(s, 0.1)) for s in shapes]]
    if name == "ftrl":
        states.append([tf.Variable(tf.zeros(s)) for s in shapes])
    runs = split_by_elements([int(np.prod(s)) for s in shapes], calls)

    def apply():
        for begin, end in runs:
            part = [state[begin:end] for state in states]
            if name == "ftrl":
                tf_ftrl.ops.multi_apply_ftrl(*part, gradients[begin:end], lr=LR, l1=0.0, l2=0.0)
            else:
                tf_ftrl.ops.multi_apply_adagrad(*part, gradients[begin:end], lr=LR)

    return apply


def one_buffer_case(name, shapes, inner):
    size = int(sum(np.prod(s) for s in shapes))
    var = tf.Variable(tf.random.uniform((size,), -0.05, 0.05))
    accum = tf.Variable(tf.fill((size,), 0.1))
    linear = tf.Variable(tf.zeros((size,)))
    grad = tf.random.normal((size,), seed=3)

    def apply():
        if name == "ftrl":
            tf_ftrl.ops.apply_ftrl(var, accum, linear, grad, lr=LR, l1=0.0, l2=0.0)
        else:
            tf_ftrl.ops.apply_adagrad(var, accum, grad, lr=LR)

    return apply


def timed(apply, inner):
    """(per call, in the graph, in a loop) functions: one apply per call, `inner` applies per
    call written out, `inner` applies per call in a loop."""

    @tf.function
    def once():
        apply()

    @tf.function
    def unrolled():
        # One apply after the other (the variables' reads and writes order them), as in training.
        for _ in range(inner):
            apply()

    @tf.function
    def loop():
        for _ in tf.range(inner):
            # One apply after the other, as in training (a loop may otherwise overlap the
            # iterations' updates of different variables).
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            apply()

    return once, unrolled, loop


def median_ms(cases, repeats, inner):
    """{case: (per call ms, in the graph ms per apply, in a loop ms per apply)}, the cases'
    calls interleaved; in the graph: the difference of the medians of `inner` applies written
    out and one apply per call, per apply added."""
    fns = {name: timed(apply, inner) for name, apply in cases.items()}
    times = {name: ([], [], []) for name in cases}
    for functions in fns.values():
        for fn in functions:
            fn()
            fn()
    for _ in range(repeats):
        for name, functions in fns.items():
            for fn, series in zip(functions, times[name]):
                start = time.perf_counter()
                fn()
                series.append((time.perf_counter() - start) * 1e3)
    results = {}
    for name, all_series in times.items():
        once, unrolled, loop = (statistics.median(series) for series in all_series)
        results[name] = (once, (unrolled - once) / (inner - 1), loop / inner)
    return results


def fit_steps_per_s(make_optimizer, layers, width, batch, steps, multi_tensor=True):
    """Training steps per second of `model.fit` on an MLP of `layers` Dense(width) layers."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((width,))]
                             + [keras.layers.Dense(width, activation="relu")
                                for _ in range(layers - 1)] + [keras.layers.Dense(1)])
    optimizer = make_optimizer()
    if not multi_tensor:
        optimizer._multi_tensor = False
    model.compile(optimizer, "mse", jit_compile=False)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch * steps, width)).astype(np.float32)
    y = rng.normal(size=(batch * steps, 1)).astype(np.float32)
    model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, verbose=0)
    return steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--fit-steps", type=int, default=200,
                        help="model.fit steps per case (0: skip the fit measurement)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--calls", default="",
                        help="comma-separated numbers of calls to also time the bare op in, "
                             "e.g. 2,4,8 (the optimizers: one per intra-op thread)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.inner < 2:
        parser.error("--inner must be at least 2")
    calls = [int(k) for k in args.calls.split(",") if k]
    shapes = shapes_of(args.layers, args.width)
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
    params = int(sum(np.prod(s) for s in shapes))
    print(f"{len(shapes)} float32 variables ({args.layers} Dense({args.width}, {args.width}) "
          f"kernels and biases), {params:,} parameters; {tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} "
          f"intra-op threads")
    results = []
    for name, ours, theirs in (("ftrl", tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                               ("adagrad", tf_ftrl.Adagrad, keras.optimizers.Adagrad)):
        cases = {
            "tf_ftrl": optimizer_case(lambda: ours(LR), shapes, gradients, args.inner),
            "tf_ftrl one op per variable": optimizer_case(lambda: ours(LR), shapes, gradients,
                                                          args.inner, multi_tensor=False),
            "keras.optimizers": optimizer_case(lambda: theirs(LR), shapes, gradients,
                                               args.inner),
            "bare multi-tensor op": bare_multi_case(name, shapes, gradients, args.inner),
            **{f"bare multi-tensor op, {k} calls": bare_multi_case(
                name, shapes, gradients, args.inner, calls=k) for k in calls},
            "one buffer, one op": one_buffer_case(name, shapes, args.inner),
        }
        ms = median_ms(cases, args.repeats, args.inner)
        keras_ms = ms["keras.optimizers"]
        print(f"\n{name}: median ms per apply\n")
        print("| case | per call | Keras / case | in the graph | Keras / case | in a loop | "
              "Keras / case |")
        print("|---|---|---|---|---|---|---|")
        for case, measures in ms.items():
            print("| " + " | ".join([case] + [f"{m:.3f} | {k / m:.1f}x"
                                              for m, k in zip(measures, keras_ms)]) + " |")
            results.append({"optimizer": name, "case": case, "per_call_ms": measures[0],
                            "in_graph_ms": measures[1], "in_loop_ms": measures[2]})
    fit = []
    if args.fit_steps:
        print(f"\nmodel.fit, {args.layers} Dense({args.width}) layers, batch {args.batch}: "
              "steps per second (best of 3 alternating runs)\n")
        print("| optimizer | tf_ftrl | one op per variable | keras.optimizers | tf_ftrl / Keras |")
        print("|---|---|---|---|---|")
        for name, ours, theirs in (("ftrl", tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                                   ("adagrad", tf_ftrl.Adagrad, keras.optimizers.Adagrad)):
            runs = {"tf_ftrl": [], "per_variable": [], "keras": []}
            for _ in range(3):
                runs["tf_ftrl"].append(fit_steps_per_s(lambda: ours(LR), args.layers,
                                                       args.width, args.batch, args.fit_steps))
                runs["per_variable"].append(fit_steps_per_s(
                    lambda: ours(LR), args.layers, args.width, args.batch, args.fit_steps,
                    multi_tensor=False))
                runs["keras"].append(fit_steps_per_s(lambda: theirs(LR), args.layers,
                                                     args.width, args.batch, args.fit_steps))
            best = {case: max(values) for case, values in runs.items()}
            print(f"| {name} | {best['tf_ftrl']:.1f} | {best['per_variable']:.1f} | "
                  f"{best['keras']:.1f} | {best['tf_ftrl'] / best['keras']:.2f}x |")
            fit.append(dict(optimizer=name, **best))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "fit": fit, "config": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
