"""Compares two builds of the op library: the same bits on the same inputs, and their speed.

    python tools/compare_op_libraries.py OLD.so NEW.so [--rounds 3]

For a change that must not change results (a refactoring, a new loop), build the library before
and after (keep a copy of tf_ftrl/_tf_ftrl_ops.so) and run this. Each library runs in its own
process (both register the same ops). Step 1 runs the four element-wise fused ops on 400 seeded random
cases (four dtypes, dense and sparse, both optimizers and flags, int32 and int64 indices,
duplicates and hot ids, lr 0, rows of 1 to 100 elements) and on 20,000 x 64 tables with Zipf ids
(the thread pool's paths: pieces of equal work, hot rows summed ahead), the row-wise ops and
bfloat16 and float16 state (rounded to nearest and stochastically) on 240 more, the multi-tensor
ops on 40 lists of variables, and compares every resulting bit pattern. Step 2 times sparse and dense updates of both libraries in alternating processes and
prints the medians (a VM's speed drifts, so only alternating runs compare); `--rounds 0` skips
it.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

def _load_ops(tf, library):
    """The four fused ops of `library`, rounding stored state to nearest (no stochastic
    rounding), under their own names."""
    import functools
    import types
    lib = tf.load_op_library(library)
    names = ("fused_resource_apply_ftrl", "fused_resource_sparse_apply_ftrl",
             "fused_resource_apply_adagrad", "fused_resource_sparse_apply_adagrad")
    return types.SimpleNamespace(**{
        name: functools.partial(getattr(lib, name), stochastic_rounding=[]) for name in names})


def _bits(tf, v):
    return tf.bitcast(v, {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[v.dtype.size]).numpy()


def run_cases(library, out_path):
    """Runs the seeded cases with `library` and saves every variable's bits to out_path."""
    import tensorflow as tf
    lib = _load_ops(tf, library)
    rng = np.random.default_rng(1234)
    dtypes = (tf.float32, tf.float64, tf.float16, tf.bfloat16)
    out = {}
    for case in range(400):
        dtype = dtypes[case % 4]
        sparse, ftrl = bool(case % 2), (case // 2) % 2 == 0
        rows = int(rng.integers(1, 300))
        width = int(rng.choice([1, 3, 8, 16, 17, 32, 64, 100]))
        n = int(rng.integers(0, 3 * rows + 1))
        indices = rng.integers(0, rows, size=n)
        if rng.random() < 0.3 and n:
            indices[: n // 2] = indices[0]  # a hot id
        indices = tf.constant(indices, tf.int64 if case % 3 else tf.int32)
        state = [tf.Variable(tf.cast(rng.normal(size=(rows, width)), dtype)),
                 tf.Variable(tf.cast(rng.uniform(0.01, 2, size=(rows, width)), dtype)),
                 tf.Variable(tf.cast(rng.normal(size=(rows, width)), dtype))]
        grad = tf.cast(rng.normal(size=(n if sparse else rows, width))
                       * rng.choice([1e-3, 1, 30]), dtype)
        flag = bool(rng.random() < 0.5)
        scalar = lambda v: tf.cast(v, dtype)  # noqa: E731
        if ftrl:
            hyper = [scalar(rng.choice([0.0, 0.01, 0.3])), scalar(rng.choice([0, 0.01, 0.5])),
                     scalar(rng.choice([0, 0.1])), scalar(rng.choice([0, 0.02])),
                     scalar(rng.choice([-0.5, -0.3, 0.0]))]
            handles = [v.handle for v in state]
            if sparse:
                lib.fused_resource_sparse_apply_ftrl(*handles, grad, indices, *hyper,
                                                     multiply_linear_by_lr=flag)
            else:
                lib.fused_resource_apply_ftrl(*handles, grad, *hyper, multiply_linear_by_lr=flag)
        else:
            hyper = [scalar(rng.choice([0.0, 0.05])), scalar(rng.choice([0, 1e-7, 0.1]))]
            handles = [v.handle for v in state[:2]]
            if sparse:
                lib.fused_resource_sparse_apply_adagrad(*handles, grad, indices, *hyper,
                                                        update_slots=flag)
            else:
                lib.fused_resource_apply_adagrad(*handles, grad, *hyper, update_slots=flag)
        for i, v in enumerate(state):
            out[f"case{case}_{i}"] = _bits(tf, v)
    for dtype in (tf.float32, tf.bfloat16):
        for ftrl in (True, False):
            rows, width, n = 20000, 64, 30000
            indices = tf.constant(rng.zipf(1.3, size=n) % rows)
            state = [tf.Variable(tf.cast(rng.normal(size=(rows, width)), dtype)),
                     tf.Variable(tf.cast(rng.uniform(0.1, 1, size=(rows, width)), dtype)),
                     tf.Variable(tf.cast(rng.normal(size=(rows, width)), dtype))]
            grad = tf.cast(rng.normal(size=(n, width)), dtype)
            dense_grad = tf.cast(rng.normal(size=(rows, width)), dtype)
            for _ in range(3):
                if ftrl:
                    hyper = [tf.cast(v, dtype) for v in (0.1, 0.01, 0.01, 0.0, -0.5)]
                    handles = [v.handle for v in state]
                    lib.fused_resource_sparse_apply_ftrl(*handles, grad, indices, *hyper)
                    lib.fused_resource_apply_ftrl(*handles, dense_grad, *hyper)
                else:
                    hyper = [tf.cast(v, dtype) for v in (0.1, 1e-7)]
                    handles = [v.handle for v in state[:2]]
                    lib.fused_resource_sparse_apply_adagrad(*handles, grad, indices, *hyper)
                    lib.fused_resource_apply_adagrad(*handles, dense_grad, *hyper)
            for i, v in enumerate(state):
                out[f"zipf_{dtype.name}_{'ftrl' if ftrl else 'adagrad'}_{i}"] = _bits(tf, v)
    run_state_cases(tf, tf.load_op_library(library), rng, out)
    np.savez(out_path, **out)


def run_state_cases(tf, lib, rng, out):
    """The other ops on seeded random cases, into `out`: the row-wise ops (dense and sparse,
    four dtypes, one accumulator value per row), float32 variables with bfloat16 or float16 state
    rounded to nearest or stochastically, and the multi-tensor ops on lists of variables."""
    def hyper(ftrl, dtype):
        scalar = lambda v: tf.cast(v, dtype)  # noqa: E731
        if ftrl:
            return [scalar(rng.choice([0.0, 0.01, 0.3])), scalar(rng.choice([0, 0.01, 0.5])),
                    scalar(rng.choice([0, 0.1])), scalar(rng.choice([0, 0.02])),
                    scalar(rng.choice([-0.5, -0.3]))]
        return [scalar(rng.choice([0.0, 0.05])), scalar(rng.choice([0, 1e-7, 0.1]))]

    def flag(ftrl):
        name = "multiply_linear_by_lr" if ftrl else "update_slots"
        return {name: bool(rng.random() < 0.5)}

    def rounding():
        return [] if rng.random() < 0.3 else [tf.constant(rng.integers(0, 2**40, 2), tf.int64)]

    for case in range(240):
        ftrl, sparse, rowwise = case % 2 == 0, (case // 2) % 2 == 1, (case // 4) % 2 == 1
        low = (case // 8) % 3  # 0: state of the variable's dtype; 1, 2: bfloat16, float16 state
        dtype = (tf.float32, tf.float64, tf.float16, tf.bfloat16)[(case // 24) % 4] if not low \
            else tf.float32
        state_dtype = (dtype, tf.bfloat16, tf.float16)[low]
        rows = int(rng.integers(1, 200))
        width = int(rng.choice([1, 3, 16, 17, 64]))
        n = int(rng.integers(0, 3 * rows + 1))
        indices = rng.integers(0, rows, size=n)
        if rng.random() < 0.3 and n:
            indices[: n // 2] = indices[0]
        indices = tf.constant(indices, tf.int64 if case % 3 else tf.int32)
        var = tf.Variable(tf.cast(rng.normal(size=(rows, width)), dtype))
        accum = tf.Variable(tf.cast(rng.uniform(0.01, 2, size=(rows,) if rowwise
                                                else (rows, width)), state_dtype))
        linear = tf.Variable(tf.cast(rng.normal(size=(rows, width)), state_dtype))
        state = [var, accum, linear] if ftrl else [var, accum]
        grad = tf.cast(rng.normal(size=(n if sparse else rows, width))
                       * rng.choice([1e-3, 1, 30]), dtype)
        name = (f"fused_resource_{'sparse_' if sparse else ''}apply_"
                f"{'rowwise_' if rowwise else ''}{'ftrl' if ftrl else 'adagrad'}")
        getattr(lib, name)(*[v.handle for v in state], grad, *([indices] if sparse else []),
                           *hyper(ftrl, dtype), stochastic_rounding=rounding() if low else [],
                           **flag(ftrl))
        for i, v in enumerate(state):
            out[f"state{case}_{i}"] = _bits(tf, v)
    for case in range(40):
        ftrl, low = case % 2 == 0, (case // 2) % 3
        dtype = tf.float32 if low else (tf.float32, tf.float64)[(case // 6) % 2]
        state_dtype = (dtype, tf.bfloat16, tf.float16)[low]
        shapes = [tuple(int(d) for d in rng.integers(1, 70, size=int(rng.integers(1, 3))))
                  for _ in range(int(rng.integers(1, 12)))]
        columns = [[tf.Variable(tf.cast(rng.normal(size=s), dtype)) for s in shapes],
                   [tf.Variable(tf.cast(rng.uniform(0.01, 2, size=s), state_dtype))
                    for s in shapes]]
        if ftrl:
            columns.append([tf.Variable(tf.cast(rng.normal(size=s), state_dtype))
                            for s in shapes])
        grads = [tf.cast(rng.normal(size=s), dtype) for s in shapes]
        stochastic = [tf.constant(rng.integers(0, 2**40, (len(shapes), 2)), tf.int64)] \
            if low and rng.random() < 0.7 else []
        getattr(lib, f"fused_resource_multi_apply_{'ftrl' if ftrl else 'adagrad'}")(
            *[[v.handle for v in column] for column in columns], grads, *hyper(ftrl, dtype),
            stochastic_rounding=stochastic, **flag(ftrl))
        for i, column in enumerate(columns):
            for j, v in enumerate(column):
                out[f"multi{case}_{i}_{j}"] = _bits(tf, v)


def time_updates(library):
    """Prints the median milliseconds of each update with `library`, as `name=ms` pairs."""
    import time
    import tensorflow as tf
    lib = _load_ops(tf, library)
    rng = np.random.default_rng(0)
    rows, dim, ids, size = 2_000_000, 64, 16_384, 4_000_000
    table = [tf.Variable(tf.fill((rows, dim), v)) for v in (0.0, 0.1, 0.0)]
    flat = [tf.Variable(tf.fill((size,), v)) for v in (0.0, 0.1, 0.0)]
    grad = tf.constant(rng.normal(size=(ids, dim)).astype(np.float32))
    dense_grad = tf.constant(rng.normal(size=(size,)).astype(np.float32))
    uniform = [tf.constant(rng.integers(0, rows, ids)) for _ in range(8)]
    zipf = [tf.constant((rng.zipf(1.1, ids) * 7919) % rows) for _ in range(8)]
    ftrl = [tf.constant(v) for v in (0.1, 0.01, 0.01, 0.0, -0.5)]
    adagrad = [tf.constant(v) for v in (0.1, 1e-7)]
    def update(op, state, grad, hyper, sparse):
        handles = [v.handle for v in state]

        @tf.function
        def run(*indices):  # an op returns an Operation, which tf.function may not
            op(*handles, grad, *indices, *hyper)
        return run if sparse else (lambda: run())

    cases = {
        "sparse_ftrl": (update(lib.fused_resource_sparse_apply_ftrl, table, grad, ftrl, True),
                        uniform),
        "sparse_ftrl_zipf": (update(lib.fused_resource_sparse_apply_ftrl, table, grad, ftrl,
                                    True), zipf),
        "sparse_adagrad": (update(lib.fused_resource_sparse_apply_adagrad, table[:2], grad,
                                  adagrad, True), uniform),
        "dense_ftrl": (update(lib.fused_resource_apply_ftrl, flat, dense_grad, ftrl, False),
                       None),
        "dense_adagrad": (update(lib.fused_resource_apply_adagrad, flat[:2], dense_grad, adagrad,
                                 False), None),
    }
    results = []
    for name, (fn, inputs) in cases.items():
        times = []
        for k in range(45):
            start = time.perf_counter()
            fn(inputs[k % 8]) if inputs else fn()
            times.append(time.perf_counter() - start)
        results.append(f"{name}={np.median(times[5:]) * 1e3:.3f}")
    print(" ".join(results))


def _run_self(*args):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True,
                            capture_output=True, text=True)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating timing runs of each library (0: compare the bits only)")
    parser.add_argument("--worker", choices=("cases", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "cases":
        return run_cases(args.old, args.out)
    if args.worker == "time":
        return time_updates(args.old)

    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{k}.npz") for k in ("old", "new")]
        for library, path in zip((args.old, args.new), paths):
            _run_self(library, "-", "--worker", "cases", "--out", path)
        old, new = (np.load(p) for p in paths)
        differ = [k for k in old.files if not np.array_equal(old[k], new[k])]
        print(f"bits: {len(old.files)} arrays compared, {len(differ)} differ"
              + (f": {differ[:8]}" if differ else ""))
    if args.rounds <= 0:
        return 1 if differ else 0
    timings = {"old": [], "new": []}
    for _ in range(args.rounds):
        for key, library in (("old", args.old), ("new", args.new)):
            line = _run_self(library, "-", "--worker", "time")
            timings[key].append(dict((k, float(v)) for k, v in
                                     (pair.split("=") for pair in line.split())))
    print(f"median ms over {args.rounds} alternating runs of each:")
    for name in timings["old"][0]:
        old_ms = np.median([t[name] for t in timings["old"]])
        new_ms = np.median([t[name] for t in timings["new"]])
        print(f"  {name:18s} old {old_ms:7.3f}  new {new_ms:7.3f}  new/old {new_ms / old_ms:5.2f}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
