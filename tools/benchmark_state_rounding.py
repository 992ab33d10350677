"""Why low-precision state rounds stochastically by default: 1,000 Adagrad accumulators (starting
at 1e-6, as the main job's) summing the squares of N(0, 0.01) gradients for 10,000 updates, in
float32, bfloat16 and float16, rounded to nearest and stochastically; the mean accumulator after
100, 1,000 and 10,000 updates, and its ratio to float32's.

    .venv/bin/python tools/benchmark_state_rounding.py
"""

import numpy as np
import tensorflow as tf

import tf_ftrl

ROWS, STEPS, CHECKPOINTS = 1000, 10_000, (100, 1000, 10_000)
CASES = [("float32", tf.float32, False), ("bfloat16, to nearest", tf.bfloat16, False),
         ("bfloat16, stochastic", tf.bfloat16, True), ("float16, to nearest", tf.float16, False),
         ("float16, stochastic", tf.float16, True)]


def main():
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(0, 0.01, (ROWS, 1)).astype(np.float32)) for _ in range(64)]
    results = {}
    for name, dtype, stochastic in CASES:
        var = tf.Variable(tf.zeros((ROWS, 1)))
        accum = tf.Variable(tf.cast(tf.fill((ROWS, 1), 1e-6), dtype))

        @tf.function
        def step(grad, k, var=var, accum=accum, stochastic=stochastic):
            rounding = tf.stack([tf.constant(3, tf.int64), k]) if stochastic else None
            # lr 0: only the accumulator changes.
            tf_ftrl.ops.apply_adagrad(var, accum, grad, 0.0, stochastic_rounding=rounding)

        means = []
        for k in range(STEPS):
            step(grads[k % len(grads)], tf.constant(k, tf.int64))
            if k + 1 in CHECKPOINTS:
                means.append(float(tf.reduce_mean(tf.cast(accum, tf.float64))))
        results[name] = means
    print("| state | " + " | ".join(f"after {n:,} updates" for n in CHECKPOINTS) + " |")
    print("|---|" + "---|" * len(CHECKPOINTS))
    for name, means in results.items():
        cells = [f"{m:.4g} ({m / b:.3f})" for m, b in zip(means, results["float32"])]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
