"""Where a step of the CTR job's ps configuration spends its time: input, compute, the updates on
the servers, and RPC.

One worker and one parameter server take steps one at a time (schedule, then join), so the
figures add up per step rather than overlap; then as the job schedules them (all, then one
join), where the coordinator overlaps RPCs with work. Each part runs in a process of its own (a process
that has connected to a cluster cannot run the local parts):

  input      the job's input pipeline alone (read, shuffle, parse, hash, batch): ms per batch
  local      the same model and replica step (tf_ftrl.examples.ctr_cluster) in one process,
             without a strategy, on one batch in memory: a whole step, and the optimizers'
             updates alone (apply_gradients of fixed gradients; on the ps, these run on the server)
  cluster    an in-process cluster of 1 worker and 1 parameter server (gRPC on 127.0.0.1):
             a step on a batch held in memory on the worker, and a step reading the input pipeline

    python tools/benchmark_ps_step.py [--buckets 100000] [--batch-size 1024] [--steps 200]

RPC and coordination are what the in-memory cluster step costs above the local step.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARM_STEPS = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buckets", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--part", choices=("input", "local", "cluster"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def job_args(args):
    from tf_ftrl.examples import ctr
    return ctr.build_parser().parse_args(["--buckets", str(args.buckets), "--batch-size",
                                          str(args.batch_size)])


def dataset(args, data, seed=0):
    from tf_ftrl.examples import criteo_data
    return criteo_data.read_dataset([data], criteo_data.HashingConfig(buckets=args.buckets),
                                    args.batch_size, shuffle_buffer=20_000, seed=seed).repeat()


def ms_per(function, steps):
    for _ in range(WARM_STEPS):
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return 1000 * (time.perf_counter() - start) / steps


def part_input(args):
    iterator = iter(dataset(args, args.data))
    return {"input_ms": ms_per(lambda: next(iterator), args.steps)}


def part_local(args):
    import tensorflow as tf
    from tf_ftrl.examples import ctr_cluster

    strategy = tf.distribute.get_strategy()
    model, wide_optimizer, deep_optimizer = ctr_cluster.build_ps_model(job_args(args), strategy)
    replica_step = ctr_cluster.ps_replica_step(model, wide_optimizer, deep_optimizer)
    features, labels = next(iter(dataset(args, args.data)))
    step = tf.function(lambda: replica_step(features, labels))
    result = {"local_step_ms": ms_per(lambda: step()[0].numpy(), args.steps)}
    wide, deep = model.wide_variables, model.deep_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=labels, logits=model(features, training=True)))
    grads = tape.gradient(loss, wide + deep)

    @tf.function
    def updates():
        wide_optimizer.apply_gradients(zip(grads[:len(wide)], wide))
        deep_optimizer.apply_gradients(zip(grads[len(wide):], deep))
        return wide_optimizer.iterations

    result["updates_ms"] = ms_per(lambda: updates().numpy(), args.steps)
    return result


def part_cluster(args):
    import tensorflow as tf
    from tf_ftrl.examples import ctr_cluster, parameter_server

    resolver = parameter_server.start_in_process_cluster(1, 1)
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=ctr_cluster.table_partitioner(args.buckets, 1))
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    model, wide_optimizer, deep_optimizer = ctr_cluster.build_ps_model(job_args(args), strategy)
    replica_step = ctr_cluster.ps_replica_step(model, wide_optimizer, deep_optimizer)

    @tf.function
    def train_step(iterator):
        features, labels = next(iterator)
        return strategy.run(replica_step, args=(features, labels))

    def timed(dataset_fn, pipelined=False):
        iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

        def step():
            coordinator.schedule(train_step, args=(iterator,))
            coordinator.join()

        def steps():  # as the job's loop: every step scheduled, then one join
            for _ in range(args.steps):
                coordinator.schedule(train_step, args=(iterator,))
            coordinator.join()
        return ms_per(steps, 1) / args.steps if pipelined else ms_per(step, args.steps)

    in_memory = lambda: dataset(args, args.data).take(1).cache().repeat()  # noqa: E731
    with_input = lambda: dataset(args, args.data)  # noqa: E731
    return {"cluster_step_in_memory_ms": timed(in_memory),
            "cluster_step_with_input_ms": timed(with_input),
            "cluster_pipelined_in_memory_ms": timed(in_memory, pipelined=True),
            "cluster_pipelined_with_input_ms": timed(with_input, pipelined=True)}


def main(argv=None):
    args = parse_args(argv)
    if args.part:
        result = {"input": part_input, "local": part_local, "cluster": part_cluster}[args.part](
            args)
        print("RESULT " + json.dumps(result), flush=True)
        return result
    from tf_ftrl.examples import criteo_data
    with tempfile.TemporaryDirectory() as directory:
        data = os.path.join(directory, "train.txt")
        criteo_data.SyntheticCriteo(seed=7).write(data, 50_000, seed=8)
        result = {}
        for part in ("input", "local", "cluster"):
            done = subprocess.run(
                [sys.executable, __file__, "--part", part, "--data", data, "--buckets",
                 str(args.buckets), "--batch-size", str(args.batch_size), "--steps",
                 str(args.steps)], capture_output=True, text=True, check=True)
            line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
            result.update(json.loads(line[len("RESULT "):]))
    rpc = result["cluster_step_in_memory_ms"] - result["local_step_ms"]
    input_cost = result["cluster_step_with_input_ms"] - result["cluster_step_in_memory_ms"]
    print(f"batch {args.batch_size}, {args.buckets:,} rows per table, 1 worker + 1 ps, "
          f"{args.steps} steps after {WARM_STEPS}, ms per step:")
    print("| part | ms per step |\n|---|---|")
    print(f"| input pipeline alone (read, shuffle, parse, hash) | {result['input_ms']:.2f} |")
    print(f"| local step (forward, backward, updates; no strategy) | "
          f"{result['local_step_ms']:.2f} |")
    print(f"| of which the updates (on the ps: run on the server) | {result['updates_ms']:.2f} |")
    print(f"| cluster step, batch in memory | {result['cluster_step_in_memory_ms']:.2f} |")
    print(f"| cluster step, reading the input | {result['cluster_step_with_input_ms']:.2f} |")
    print(f"| cluster, steps scheduled then joined (the job's loop), batch in memory | "
          f"{result['cluster_pipelined_in_memory_ms']:.2f} |")
    print(f"| cluster, steps scheduled then joined, reading the input | "
          f"{result['cluster_pipelined_with_input_ms']:.2f} |")
    print(f"| RPC and coordination (cluster in memory - local) | {rpc:.2f} |")
    print(f"| input on the worker (cluster with input - in memory) | {input_cost:.2f} |")
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
