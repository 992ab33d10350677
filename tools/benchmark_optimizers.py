"""Benchmarks tf_ftrl's Keras optimizers against keras.optimizers on an embedding table.

1. One `optimizer.apply` of a sparse gradient (`tf.IndexedSlices` of `--ids` random ids, with
   duplicates) to an Embedding table of `--rows` x `--dim` float32, inside a `tf.function`:
   tf_ftrl.Ftrl / tf_ftrl.Adagrad, keras.optimizers.Ftrl / Adagrad (which densify the gradient
   and rewrite the whole table), and the bare fused op on the same gradient (the floor for the
   optimizer's overhead). Median milliseconds per call after warm-up.
2. One `optimizer.apply` of dense gradients to the variables of an MLP (`--mlp-layers` Dense
   layers of `--mlp-width` x `--mlp-width` float32, kernels and biases), the deep part of a CTR
   model: ours, Keras's, and the bare fused ops on the same gradients.
3. End-to-end `model.fit` of a small wide model (Embedding(rows, dim) over `--features` ids per
   example, summed, then Dense(1); logistic loss), steps per second, ours vs Keras's.

Run from the repository root in the virtualenv with tf_ftrl installed:

    python tools/benchmark_optimizers.py                 # 2,000,000 x 16, 4,096 ids
    python tools/benchmark_optimizers.py --rows 10000 --repeats 3 --fit-steps 5   # quick

With --json PATH the results are also written as {"apply": [{"optimizer", "tf_ftrl_ms",
"keras_ms", "bare_op_ms"}, ...], "dense_apply": [the same keys], "fit": [{"optimizer",
"tf_ftrl_steps_per_s", "keras_steps_per_s"}, ...], "config": {...}}.
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--ids", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed calls of each of our ops (Keras's get a quarter, min 3)")
    parser.add_argument("--mlp-layers", type=int, default=8)
    parser.add_argument("--mlp-width", type=int, default=1024)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--fit-steps", type=int, default=40)
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def apply_case(make_optimizer, shapes, gradients):
    variables = [keras.Variable(tf.random.uniform(shape, -0.05, 0.05)) for shape in shapes]
    optimizer = make_optimizer()
    optimizer.build(variables)

    @tf.function
    def step():
        optimizer.apply(gradients, variables)

    return step


def bare_op_case(name, shapes, gradients):
    """The fused ops alone, one per variable, on variables and slots made here."""
    states = [(tf.Variable(tf.random.uniform(shape, -0.05, 0.05)), tf.Variable(tf.fill(shape, 0.1)),
               tf.Variable(tf.zeros(shape))) for shape in shapes]

    @tf.function
    def step():
        for (var, accum, linear), gradient in zip(states, gradients):
            sparse = isinstance(gradient, tf.IndexedSlices)
            if name == "ftrl" and sparse:
                tf_ftrl.ops.sparse_apply_ftrl(var, accum, linear, gradient.values,
                                              gradient.indices, lr=0.01, l1=0.0, l2=0.0)
            elif name == "ftrl":
                tf_ftrl.ops.apply_ftrl(var, accum, linear, gradient, lr=0.01, l1=0.0, l2=0.0)
            elif sparse:
                tf_ftrl.ops.sparse_apply_adagrad(var, accum, gradient.values, gradient.indices,
                                                 lr=0.01)
            else:
                tf_ftrl.ops.apply_adagrad(var, accum, gradient, lr=0.01)

    return step


def compare(shapes, gradients, repeats):
    """[{optimizer, tf_ftrl_ms, keras_ms, bare_op_ms}] for one apply of `gradients`."""
    keras_repeats = max(3, repeats // 4)
    rows = []
    for name, ours, theirs in (("ftrl", tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                               ("adagrad", tf_ftrl.Adagrad, keras.optimizers.Adagrad)):
        bare = median_ms(bare_op_case(name, shapes, gradients), repeats)
        our_ms = median_ms(apply_case(lambda: ours(learning_rate=0.01), shapes, gradients),
                           repeats)
        keras_ms = median_ms(apply_case(lambda: theirs(learning_rate=0.01), shapes, gradients),
                             keras_repeats)
        rows.append({"optimizer": name, "tf_ftrl_ms": our_ms, "keras_ms": keras_ms,
                     "bare_op_ms": bare})
    return rows


def print_apply_table(title, rows):
    print(f"\n{title} (median ms per call)\n")
    print("| optimizer | tf_ftrl ms | keras.optimizers ms | speed-up | bare fused op ms "
          "| tf_ftrl / bare op |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['tf_ftrl_ms']:.3f} | {r['keras_ms']:.1f} | "
              f"{r['keras_ms'] / r['tf_ftrl_ms']:.1f}x | {r['bare_op_ms']:.3f} | "
              f"{r['tf_ftrl_ms'] / r['bare_op_ms']:.2f}x |")


def bench_apply(args):
    rng = np.random.default_rng(0)
    shape = (args.rows, args.dim)
    gradient = tf.IndexedSlices(
        tf.constant(rng.normal(size=(args.ids, args.dim)).astype(np.float32)),
        tf.constant(rng.integers(0, args.rows, args.ids).astype(np.int32)),
        tf.constant(shape))
    rows = compare([shape], [gradient], args.repeats)
    print_apply_table(f"optimizer.apply, Embedding {args.rows:,} x {args.dim} float32, sparse "
                      f"gradient of {args.ids:,} ids", rows)
    return rows


def bench_dense_apply(args):
    rng = np.random.default_rng(2)
    width = args.mlp_width
    shapes = [(width, width), (width,)] * args.mlp_layers
    gradients = [tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in shapes]
    rows = compare(shapes, gradients, args.repeats)
    params = args.mlp_layers * (width * width + width)
    print_apply_table(f"optimizer.apply, {args.mlp_layers} Dense layers {width} x {width} "
                      f"float32 ({len(shapes)} variables, {params:,} parameters), dense "
                      "gradients", rows)
    return rows


def wide_model(rows, dim, features):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(features,), dtype="int32")
    embedded = keras.layers.Embedding(rows, dim)(inputs)
    summed = keras.layers.Lambda(lambda x: tf.reduce_sum(x, axis=1))(embedded)
    return keras.Model(inputs, keras.layers.Dense(1)(summed))


def bench_fit(args):
    rng = np.random.default_rng(1)
    n = args.batch * args.fit_steps
    x = rng.integers(0, args.rows, size=(n, args.features)).astype(np.int32)
    y = (rng.random((n, 1)) < 0.3).astype(np.float32)
    print(f"\nmodel.fit steps/s: Embedding({args.rows:,}, {args.dim}) over {args.features} ids "
          f"per example, batch {args.batch}, {args.fit_steps} steps after one warm-up epoch\n")
    print("| optimizer | tf_ftrl steps/s | keras.optimizers steps/s | speed-up |")
    print("|---|---|---|---|")
    results = []
    for name, ours, theirs in (("ftrl", tf_ftrl.Ftrl, keras.optimizers.Ftrl),
                               ("adagrad", tf_ftrl.Adagrad, keras.optimizers.Adagrad)):
        rates = []
        for cls in (ours, theirs):
            model = wide_model(args.rows, args.dim, args.features)
            model.compile(optimizer=cls(learning_rate=0.05),
                          loss=keras.losses.BinaryCrossentropy(from_logits=True))
            model.fit(x[:args.batch * 2], y[:args.batch * 2], batch_size=args.batch, verbose=0)
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
            rates.append(args.fit_steps / (time.perf_counter() - start))
        print(f"| {name} | {rates[0]:.1f} | {rates[1]:.2f} | {rates[0] / rates[1]:.0f}x |")
        results.append({"optimizer": name, "tf_ftrl_steps_per_s": rates[0],
                        "keras_steps_per_s": rates[1]})
    return results


def main(argv=None):
    args = parse_args(argv)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    results = {"apply": bench_apply(args), "dense_apply": bench_dense_apply(args),
               "fit": bench_fit(args),
               "config": {k: v for k, v in vars(args).items() if k != "json"}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
