"""Benchmarks tf_ftrl's fused FTRL and Adagrad ops against TensorFlow's built-in training ops.

What it measures (float32 only, on CPU):

* Dense: for each size n, `tf_ftrl.ops.apply_ftrl` vs `tf.raw_ops.ResourceApplyFtrlV2` and
  `tf_ftrl.ops.apply_adagrad` vs `tf.raw_ops.ResourceApplyAdagradV2` on n-element variables.
* Sparse: a `rows x dim` table updated at `ids` indices drawn with replacement, uniformly (so a
  few are duplicates) and from a Zipf law as ids in click logs are (`--sparse-zipf`, default
  exponent 1.1: a third of the ids are unique, the hottest comes back ~2,000 times per call and
  stays hot from call to call; tools/benchmark_ids.py), new ids and gradients on every call.
  `sparse_apply_ftrl` / `sparse_apply_adagrad` are compared with
  `ResourceSparseApplyFtrlV2` / `ResourceSparseApplyAdagradV2` called directly ("builtin", which
  applies duplicates one after the other and so is NOT equivalent) and after deduplication with
  `tf.unique` + `tf.math.unsorted_segment_sum` ("builtin_dedup", the equivalent computation).
* The machine's copy bandwidth (read + write bytes per second) of a large buffer, copied by one
  thread and by one thread per CPU, as the reference for "% of copy bandwidth".

How: every op variant runs in its own `tf.function` (traced once, then warmed up) on its own
variables; the variants of one case are called in interleaved rounds (rotating order) so that
background load hits them alike, and each call is timed with `time.perf_counter` (an eager call of
a `tf.function` with no outputs runs synchronously on CPU). Each sparse call gets new ids and
gradients (the next of 16 batches drawn up front), as in training: its rows come from memory,
not from caches warmed by the same ids a call earlier. Reported: median (and, in the JSON,
min) milliseconds per call, and the effective bandwidth from the minimum memory traffic: dense
FTRL 28 bytes/element (var, accum, linear read + written, grad read), dense Adagrad 20
bytes/element; sparse the same per element of every id's row (ids counted with duplicates,
indices not counted). Sparse indices are int32.

With --json PATH the results are also written as {"machine": {...}, "copy_bandwidth_gbps": ...,
"results": [{"op": "ftrl"|"adagrad", "kind": "dense"|"sparse", "size": elements (dense) or ids
(sparse), "implementation": "tf_ftrl"|"builtin"|"builtin_dedup", "median_ms", "min_ms", "gbps",
...}, ...]}.

Run (from the repository root, in the virtualenv with tf_ftrl installed):

    python tools/benchmark_ops.py
    python tools/benchmark_ops.py --only dense --dense-sizes 1e6,1e7 --json results.json
    python tools/benchmark_ops.py --dense-sizes 1000 --sparse-rows 1000 --sparse-ids 100 \\
        --repeats 3 --copy-mb 8        # quick smoke run
"""

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer of TensorFlow's C++ info logs

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from benchmark_ids import distribution_name, id_sampler, zipf_exponents  # noqa: E402  (tools/)

LR = 0.01
L1 = 0.001
L2 = 0.001
L2_SHRINKAGE = 0.0
LR_POWER = -0.5
EPSILON = 1e-7
ACCUM_INIT = 0.1

# Minimum memory traffic per updated element: state tensors read and written, grad read.
BYTES_PER_ELEMENT = {"ftrl": 3 * 2 * 4 + 4, "adagrad": 2 * 2 * 4 + 4}

OPS = ("ftrl", "adagrad")
OP_TITLES = {"ftrl": "FTRL", "adagrad": "Adagrad"}
BUILTIN_NAMES = {
    ("dense", "ftrl", "builtin"): "ResourceApplyFtrlV2",
    ("dense", "adagrad", "builtin"): "ResourceApplyAdagradV2",
    ("sparse", "ftrl", "builtin"): "ResourceSparseApplyFtrlV2 (no dedup)",
    ("sparse", "ftrl", "builtin_dedup"): "unique + segment_sum + ResourceSparseApplyFtrlV2",
    ("sparse", "adagrad", "builtin"): "ResourceSparseApplyAdagradV2 (no dedup)",
    ("sparse", "adagrad", "builtin_dedup"):
        "unique + segment_sum + ResourceSparseApplyAdagradV2",
}

WARMUP_CALLS = 3
SPARSE_REPEATS = 30
# Each sparse call takes the next of this many batches of ids and gradients drawn up front.
SPARSE_BATCHES = 16
COPY_REPEATS = 10
SEED = 1234


# ----------------------------------------------------------------------------- arguments


def parse_sizes(text):
    """'1e4,1e6' -> [10000, 1000000]."""
    sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dense-sizes", type=parse_sizes, default="1e4,1e6,1e7,3e7",
                        help="comma-separated element counts of the dense variables")
    parser.add_argument("--sparse-rows", type=lambda s: int(float(s)), default=2_000_000,
                        help="rows of the sparse table")
    parser.add_argument("--sparse-dim", type=lambda s: int(float(s)), default=64,
                        help="columns of the sparse table")
    parser.add_argument("--sparse-ids", type=lambda s: int(float(s)), default=16384,
                        help="indices per sparse update (drawn with replacement)")
    parser.add_argument("--sparse-zipf", type=float, default=1.1,
                        help="exponent of the second sparse case's Zipf-distributed ids (0: "
                             "uniform ids only)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per variant; by default 30, fewer for large dense "
                             "sizes (15 at 3e7 elements)")
    parser.add_argument("--copy-mb", type=float, default=256,
                        help="size in MB of the buffer copied to measure copy bandwidth")
    parser.add_argument("--only", choices=("dense", "sparse"), default=None,
                        help="run only the dense or only the sparse benchmarks")
    parser.add_argument("--huge-pages", action="store_true",
                        help="back every implementation's variables with transparent huge "
                             "pages (tf_ftrl.huge_pages.advise_huge_pages) before timing")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write all results to this JSON file")
    return parser.parse_args(argv)


def dense_repeats(size, requested):
    """Timed calls for a dense size: the requested number, else 30 down to 15 for large sizes."""
    if requested is not None:
        return requested
    return int(min(30, max(15, 3e8 // size)))


# ----------------------------------------------------------------------------- machine


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info():
    return {
        "nproc": usable_cpus(),
        "cpu_model": cpu_model(),
        "tensorflow": tf.__version__,
        "tf_ftrl": getattr(tf_ftrl, "__version__", "unknown"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def time_copies(pool, src_chunks, dst_chunks, repeats):
    """Seconds of each of `repeats` copies of all chunks, one pool task per chunk."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        wait([pool.submit(np.copyto, dst, src) for dst, src in zip(dst_chunks, src_chunks)])
        seconds.append(time.perf_counter() - start)
    return seconds


def copy_bandwidth_gbps(nbytes, threads, repeats):
    """(median, best) read + write bandwidth in GB/s of copying an nbytes float32 buffer with
    `threads` threads, each copying its own contiguous part (numpy releases the GIL while
    copying)."""
    count = max(threads, int(nbytes) // 4)
    src = np.ones(count, dtype=np.float32)
    dst = np.zeros(count, dtype=np.float32)  # np.zeros pages are touched by the warm-up copy
    src_chunks = np.array_split(src, threads)
    dst_chunks = np.array_split(dst, threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        time_copies(pool, src_chunks, dst_chunks, 2)  # warm-up: faults in dst's pages
        seconds = time_copies(pool, src_chunks, dst_chunks, repeats)
    traffic = 2 * src.nbytes
    return traffic / statistics.median(seconds) / 1e9, traffic / min(seconds) / 1e9


# ----------------------------------------------------------------------------- timing


def graph_function(fn):
    """fn as a tf.function (plain Python control flow, so no AutoGraph), traced on first call."""
    return tf.function(fn, autograph=False)


def time_interleaved(functions, repeats, warmup=WARMUP_CALLS, batches=None):
    """Calls every function `warmup` times, then times `repeats` rounds in which each is called
    once (the order rotating from round to round). With `batches` (argument tuples, cycled), call
    k of each function gets batch k: for the sparse cases every call then updates rows that the
    previous calls did not just bring into the caches, as in training. Returns
    {name: [milliseconds, ...]}."""
    names = list(functions)
    calls = {name: 0 for name in names}

    def call(name):
        args = () if batches is None else batches[calls[name] % len(batches)]
        calls[name] += 1
        start = time.perf_counter()
        functions[name](*args)
        return (time.perf_counter() - start) * 1e3

    return interleaved_rounds(names, call, repeats, warmup)


def interleaved_rounds(keys, call, repeats, warmup, seed=0):
    """call(key) (returning milliseconds) `warmup` times for every key, then `repeats` rounds
    of one call each, in a new order every round (a seeded shuffle): {key: [milliseconds, ...]}.
    Not a rotation of one order: that keeps each key after the same one, and a call after a
    heavy one pays for what that one left behind (its dirty rows written back, its working set in
    the caches): in tools/benchmark_rowwise.py, row-wise FTRL per call always came after a call
    of eight FTRL updates and FTRL after one that did nothing, and row-wise FTRL came out 0.82-0.84x
    FTRL per call; shuffled, 1.12-1.13x (docs/benchmarks.md, "Row-wise state")."""
    for _ in range(warmup):
        for key in keys:
            call(key)
    times = {key: [] for key in keys}
    order = random.Random(seed)
    for _ in range(repeats):
        for key in order.sample(keys, len(keys)):
            times[key].append(call(key))
    return times


def time_in_graph(functions, repeats, batches, inner, warmup=WARMUP_CALLS, make=None):
    """Each of `functions` (tf.functions of one update on a batch, e.g. (grad, ids)) timed per
    call and in the graph. In the graph is what one more update costs inside a training step: a
    call of `inner` updates written out one after the other, each on its own batch, less a call
    of one update, over `inner` - 1, so the call's fixed cost (its dispatch from Python, the
    captured variables passed in) cancels out; so does the cost of passing a batch into a call
    (a training step makes its gradients inside), measured by a function of the same arguments
    that does nothing. The calls interleave as in time_interleaved and take the next batches in
    turn (at least `inner` + 1 of them, so no call updates the rows of the one before).

    With `make` (a function of a batch's tensors returning new tensors of the same structure),
    every update takes make(*batch) made inside the call, just before it, as a training step's
    update takes the gradient its backward pass has just written (in cache, where a batch passed
    in has not been touched since the last round); the function that measures the passing makes
    them too, and every function returns what it made, so that the making is subtracted as well.

    Returns ({name: (ms per call, ms per update in the graph)}, ms to pass a batch), medians."""
    if len(batches) <= inner:
        raise ValueError(f"time_in_graph needs more than inner={inner} batches, "
                         f"got {len(batches)}")
    width = len(batches[0])
    passing = object()  # the key of the function that only takes the batches
    updates = {name: fn.python_function for name, fn in functions.items()}
    updates[passing] = lambda *batch: None
    timed = {}
    for name, update in updates.items():
        def once(*batch, update=update):
            if make is None:
                return update(*batch)
            made = make(*batch)
            update(*made)
            return made

        def written_out(*flat, update=once):
            if make is None:
                for k in range(inner):
                    update(*flat[k * width:(k + 1) * width])
                return None
            # Each making waits for the update before it, as a step's backward pass comes before
            # its update: unordered, the executor makes them all first, in parallel, and they no
            # longer fit in the caches.
            graph = tf.compat.v1.get_default_graph()
            made, after = [], []
            for k in range(inner):
                with tf.control_dependencies(after):
                    first = len(graph.get_operations())
                    made.append(update(*flat[k * width:(k + 1) * width]))
                    after = graph.get_operations()[first:]
            return made

        timed[name] = graph_function(once)
        timed[(name, inner)] = graph_function(written_out)
    next_batch = [0]

    def arguments(key):
        count = inner if isinstance(key, tuple) else 1
        picked = [batches[(next_batch[0] + k) % len(batches)] for k in range(count)]
        next_batch[0] += count
        return tuple(t for batch in picked for t in batch)

    def call(key):
        args = arguments(key)
        start = time.perf_counter()
        timed[key](*args)
        return (time.perf_counter() - start) * 1e3

    times = interleaved_rounds(list(timed), call, repeats, warmup)

    def per_update(name):
        once = statistics.median(times[name])
        return once, (statistics.median(times[(name, inner)]) - once) / (inner - 1)

    pass_ms = per_update(passing)[1]
    results = {name: per_update(name) for name in functions}
    return {name: (once, in_graph - pass_ms) for name, (once, in_graph) in results.items()}, pass_ms


def release(functions):
    """Drops the functions and, with them, their variables before the next case allocates its own
    (tf.functions sit in reference cycles, so this takes a garbage collection)."""
    functions.clear()
    gc.collect()


def summarize(op, kind, size, implementation, times_ms, traffic_bytes, **extra):
    median_ms = statistics.median(times_ms)
    return {
        "op": op,
        "kind": kind,
        "size": size,
        "implementation": implementation,
        "median_ms": median_ms,
        "min_ms": min(times_ms),
        "repeats": len(times_ms),
        "traffic_bytes": traffic_bytes,
        "gbps": traffic_bytes / (median_ms * 1e-3) / 1e9,
        **extra,
    }


# ----------------------------------------------------------------------------- variables


def random_variable(shape, seed):
    """A variable of uniform [-1, 1) values, the same for the same seed. Generated on the spot
    rather than copied from a stored array, so that large tables exist only as variables."""
    return tf.Variable(tf.random.stateless_uniform(shape, seed=(SEED, seed), minval=-1,
                                                   maxval=1, dtype=tf.float32))


def optimizer_state(op, shape, huge_pages=False):
    """Fresh variables for one implementation: accumulators at ACCUM_INIT, var and linear random
    (identical for every implementation)."""
    state = {
        "var": random_variable(shape, seed=1),
        "accum": tf.Variable(tf.fill(shape, tf.constant(ACCUM_INIT, tf.float32))),
    }
    if op == "ftrl":
        state["linear"] = random_variable(shape, seed=2)
    if huge_pages:
        tf_ftrl.huge_pages.advise_huge_pages(list(state.values()))
    return state


# ----------------------------------------------------------------------------- dense cases


def dense_functions(op, grad, huge_pages=False):
    """{implementation: tf.function doing one update}, each on its own variables."""
    ours = optimizer_state(op, grad.shape, huge_pages)
    builtin = optimizer_state(op, grad.shape, huge_pages)
    if op == "ftrl":
        def run_ours():
            tf_ftrl.ops.apply_ftrl(ours["var"], ours["accum"], ours["linear"], grad, LR, L1, L2,
                                   l2_shrinkage=L2_SHRINKAGE, lr_power=LR_POWER)

        def run_builtin():
            tf.raw_ops.ResourceApplyFtrlV2(
                var=builtin["var"].handle, accum=builtin["accum"].handle,
                linear=builtin["linear"].handle, grad=grad, lr=LR, l1=L1, l2=L2,
                l2_shrinkage=L2_SHRINKAGE, lr_power=LR_POWER)
    else:
        def run_ours():
            tf_ftrl.ops.apply_adagrad(ours["var"], ours["accum"], grad, LR, epsilon=EPSILON)

        def run_builtin():
            tf.raw_ops.ResourceApplyAdagradV2(
                var=builtin["var"].handle, accum=builtin["accum"].handle, lr=LR,
                epsilon=EPSILON, grad=grad)
    return {"tf_ftrl": graph_function(run_ours), "builtin": graph_function(run_builtin)}


def run_dense(sizes, requested_repeats, rng, huge_pages=False):
    results = []
    for size in sizes:
        grad = tf.constant(rng.uniform(-1, 1, size).astype(np.float32))
        repeats = dense_repeats(size, requested_repeats)
        for op in OPS:
            functions = dense_functions(op, grad, huge_pages)
            times = time_interleaved(functions, repeats)
            traffic = BYTES_PER_ELEMENT[op] * size
            results += [summarize(op, "dense", size, impl, times[impl], traffic)
                        for impl in functions]
            release(functions)
    return results


# ----------------------------------------------------------------------------- sparse cases


def dedup(grad, ids):
    """(summed grad rows, unique ids): duplicate ids' gradient rows added together."""
    unique_ids, positions = tf.unique(ids)
    summed = tf.math.unsorted_segment_sum(grad, positions, tf.shape(unique_ids)[0])
    return summed, unique_ids


def builtin_sparse_ftrl(state, grad, ids):
    tf.raw_ops.ResourceSparseApplyFtrlV2(
        var=state["var"].handle, accum=state["accum"].handle, linear=state["linear"].handle,
        grad=grad, indices=ids, lr=LR, l1=L1, l2=L2, l2_shrinkage=L2_SHRINKAGE,
        lr_power=LR_POWER)


def builtin_sparse_adagrad(state, grad, ids):
    tf.raw_ops.ResourceSparseApplyAdagradV2(
        var=state["var"].handle, accum=state["accum"].handle, lr=LR, epsilon=EPSILON,
        grad=grad, indices=ids)


def sparse_functions(op, rows, dim, huge_pages=False):
    """{implementation: tf.function(grad, ids) doing one sparse update}, each on its own
    variables."""
    shape = (rows, dim)
    ours = optimizer_state(op, shape, huge_pages)
    builtin = optimizer_state(op, shape, huge_pages)
    builtin_dedup = optimizer_state(op, shape, huge_pages)
    if op == "ftrl":
        def run_ours(grad, ids):
            tf_ftrl.ops.sparse_apply_ftrl(ours["var"], ours["accum"], ours["linear"], grad, ids,
                                          LR, L1, L2, l2_shrinkage=L2_SHRINKAGE,
                                          lr_power=LR_POWER)
        builtin_apply = builtin_sparse_ftrl
    else:
        def run_ours(grad, ids):
            tf_ftrl.ops.sparse_apply_adagrad(ours["var"], ours["accum"], grad, ids, LR,
                                             epsilon=EPSILON)
        builtin_apply = builtin_sparse_adagrad

    def run_builtin(grad, ids):
        builtin_apply(builtin, grad, ids)

    def run_builtin_dedup(grad, ids):
        builtin_apply(builtin_dedup, *dedup(grad, ids))

    return {
        "tf_ftrl": graph_function(run_ours),
        "builtin": graph_function(run_builtin),
        "builtin_dedup": graph_function(run_builtin_dedup),
    }


def run_sparse(rows, dim, num_ids, requested_repeats, rng, huge_pages=False, zipf_exponent=0.0):
    results = []
    for exponent in zipf_exponents(zipf_exponent):
        results += run_sparse_ids(rows, dim, num_ids, requested_repeats, rng, huge_pages,
                                  exponent)
    return results


def run_sparse_ids(rows, dim, num_ids, requested_repeats, rng, huge_pages, zipf_exponent):
    batches = []
    draw_ids = id_sampler(rng, rows, zipf_exponent)
    for _ in range(SPARSE_BATCHES):
        ids = draw_ids(num_ids)
        grad = rng.uniform(-1, 1, (num_ids, dim)).astype(np.float32)
        batches.append((tf.constant(grad), tf.constant(ids)))
    repeats = requested_repeats if requested_repeats is not None else SPARSE_REPEATS
    unique = [int(np.unique(ids.numpy()).size) for _, ids in batches]
    shape = {"rows": rows, "dim": dim, "ids": num_ids,
             "id_distribution": distribution_name(zipf_exponent),
             "unique_ids": int(round(statistics.mean(unique)))}
    results = []
    for op in OPS:
        functions = sparse_functions(op, rows, dim, huge_pages)
        times = time_interleaved(functions, repeats, batches=batches)
        traffic = BYTES_PER_ELEMENT[op] * dim * num_ids
        results += [summarize(op, "sparse", num_ids, impl, times[impl], traffic, **shape)
                    for impl in functions]
        release(functions)
    return results


# ----------------------------------------------------------------------------- report


def size_label(result):
    if result["kind"] == "dense":
        return f"{result['size']:,}"
    return (f"{result['rows']:,} x {result['dim']}, {result['ids']:,} "
            f"{result['id_distribution']} ids (~{result['unique_ids']:,} unique)")


def case_key(result):
    return result["kind"], result["op"], result["size"], result.get("id_distribution")


def comparison_rows(results):
    """(ours, builtin) result pairs: each built-in variant against ours in the same case."""
    ours = {case_key(r): r for r in results if r["implementation"] == "tf_ftrl"}
    return [(ours[case_key(r)], r) for r in results if r["implementation"] != "tf_ftrl"]


def markdown_table(results, copy_gbps):
    header = ["op", "size", "built-in", "ours ms", "built-in ms", "ours GB/s", "built-in GB/s",
              "speed-up (built-in / ours)", "ours % of copy bw"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for ours, builtin in comparison_rows(results):
        cells = [
            f"{ours['kind']} {OP_TITLES[ours['op']]}",
            size_label(ours),
            BUILTIN_NAMES[(ours["kind"], ours["op"], builtin["implementation"])],
            f"{ours['median_ms']:.3f}",
            f"{builtin['median_ms']:.3f}",
            f"{ours['gbps']:.1f}",
            f"{builtin['gbps']:.1f}",
            f"{builtin['median_ms'] / ours['median_ms']:.2f}x",
            f"{100 * ours['gbps'] / copy_gbps:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(machine, copy, results):
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"TensorFlow {machine['tensorflow']}, tf_ftrl {machine['tf_ftrl']}, "
          f"numpy {machine['numpy']}, Python {machine['python']}")
    print(f"copy bandwidth (read+write, {copy['buffer_mb']:.0f} MB buffer): "
          f"{copy['gbps']:.1f} GB/s with {copy['threads']} threads "
          f"(best {copy['best_gbps']:.1f}), {copy['single_thread_gbps']:.1f} GB/s with 1 thread "
          f"(best {copy['single_thread_best_gbps']:.1f}); medians over {copy['repeats']} copies")
    print()
    print(markdown_table(results, copy["gbps"]))
    print()
    print("Notes: float32; times are medians per call of a tf.function (warmed up). GB/s is "
          "the minimum traffic / median time: FTRL 28 B and Adagrad 20 B per element (dense), "
          "per element of each id's row counting duplicate ids (sparse; indices not counted). "
          "'% of copy bw' is against the median multi-threaded copy bandwidth; small sizes run "
          "from cache and can exceed it, and so can a noisy copy measurement on a busy machine. "
          "The built-in sparse op without dedup is not equivalent (duplicates are applied one "
          "after another); with dedup it is.")


def main(argv=None):
    args = parse_args(argv)
    tf_ftrl.ops.load_library()  # load (or fail) up front rather than inside a trace
    rng = np.random.default_rng(SEED)
    machine = machine_info()
    copy_repeats = args.repeats if args.repeats is not None else COPY_REPEATS
    copy_bytes = args.copy_mb * 1e6
    copy = {"buffer_mb": args.copy_mb, "threads": machine["nproc"], "repeats": copy_repeats}
    copy["gbps"], copy["best_gbps"] = copy_bandwidth_gbps(copy_bytes, machine["nproc"],
                                                          copy_repeats)
    copy["single_thread_gbps"], copy["single_thread_best_gbps"] = copy_bandwidth_gbps(
        copy_bytes, 1, copy_repeats)

    results = []
    if args.only in (None, "dense"):
        results += run_dense(args.dense_sizes, args.repeats, rng, args.huge_pages)
    if args.only in (None, "sparse"):
        results += run_sparse(args.sparse_rows, args.sparse_dim, args.sparse_ids,
                              args.repeats, rng, args.huge_pages, args.sparse_zipf)

    report(machine, copy, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "machine": machine,
                "copy_bandwidth_gbps": copy["gbps"],
                "copy": copy,
                "results": results,
            }, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
