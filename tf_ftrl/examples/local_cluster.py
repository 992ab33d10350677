"""Runs a job as a cluster of OS processes on this machine, each task with its own `TF_CONFIG`,
as on real machines.

    python -m tf_ftrl.examples.local_cluster --strategy ps --workers 2 --ps 2 -- --epochs 1
    python -m tf_ftrl.examples.local_cluster --strategy multiworker --workers 2 -- --epochs 1
    python -m tf_ftrl.examples.local_cluster --strategy mirrored -- --epochs 1

Every task runs `python -m MODULE --strategy STRATEGY ARGS` (MODULE: tf_ftrl.examples.ctr
unless --module says otherwise; ARGS: what follows `--`) on free 127.0.0.1 ports:

- ps: a `chief` (the coordinator), --workers `worker` tasks and --ps `ps` tasks;
- multiworker: --workers `worker` tasks, worker 0 being the chief;
- none, mirrored: one process, without TF_CONFIG.

Each line a task prints comes out prefixed with the task's name (`[chief]`, `[worker:1]`,
`[ps:0]`). The launcher exits with the chief's status once the chief has exited, or with a task's
status (or 1) as soon as any other task fails first, with two exceptions, as a cluster manager
would have them:

- ps: a worker that dies is started again (up to --restarts times per worker), with the same
  TF_CONFIG; meanwhile the coordinator gives its steps to the other workers, and takes it back
  once it serves again;
- a task killed by a signal (`kill -9`, the kernel's OOM killer) cannot say why it stopped: the
  chief gets --grace seconds to notice and say so (the ps job names the lost parameter server
  and how to resume) before the cluster is stopped.

Every task runs in a process group of its
own: on the way out (success, failure, Ctrl-C or SIGTERM) the launcher signals each group,
waits --grace seconds, then kills what is left, so that no process stays behind; a task also
dies with the launcher if the launcher itself is killed (Linux's parent-death signal).
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PREFIX = "local_cluster:"
STRATEGIES = ("none", "mirrored", "multiworker", "ps")


def free_loopback_ports(count):
    """count TCP ports free on 127.0.0.1 a moment ago (a task could lose one to another program
    before it binds it: then it fails at start, and so does the job)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(strategy, workers, ps):
    """The cluster (as in TF_CONFIG) and the chief's (type, index); ({}, None) without one."""
    if strategy in ("none", "mirrored"):
        return {}, None
    counts = {"ps": {"chief": 1, "worker": workers, "ps": ps},
              "multiworker": {"worker": workers}}[strategy]
    ports = iter(free_loopback_ports(sum(counts.values())))
    cluster = {job: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for job, n in counts.items()}
    return cluster, ("chief", 0) if "chief" in cluster else ("worker", 0)


def task_name(task_type, index):
    return "chief" if task_type == "chief" else f"{task_type}:{index}"


def _die_with_parent():
    """In the child before exec: SIGKILL when the launcher dies (PR_SET_PDEATHSIG), so that even
    a launcher killed with SIGKILL leaves nothing behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the launcher's own clean-up still applies
        pass


class Task:
    """One task's process (its own process group) and the thread that copies its output,
    line by line, prefixed with its name."""

    def __init__(self, name, command, env, out):
        self.name = name
        self.command, self.env, self.out = command, env, out
        self.restarts = 0
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.copier = threading.Thread(target=self._copy_output, args=(self.out,), daemon=True)
        self.copier.start()

    def restart(self):
        """The same command and TF_CONFIG in a new process (the old one has exited; what it
        left in its group goes first)."""
        self.signal_group(signal.SIGKILL)
        self.copier.join(timeout=5)
        self.restarts += 1
        self.start()

    def _copy_output(self, out):
        for line in iter(self.process.stdout.readline, b""):
            out.write(f"[{self.name}] " + line.decode(errors="replace").rstrip("\n") + "\n")
            out.flush()

    @property
    def pid(self):
        return self.process.pid

    def signal_group(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:  # the group is empty
            pass

    def group_alive(self):
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # a member we may not signal: still alive
            return True


class Cluster:
    def __init__(self, args, out=sys.stdout):
        self.args = args
        self.out = out
        self.lock = threading.Lock()
        self.tasks = {}
        self.chief_name = "chief"

    def start(self, job_args):
        args = self.args
        cluster, chief = cluster_spec(args.strategy, args.workers, args.ps)
        if chief:
            self.chief_name = task_name(*chief)
        command = [sys.executable, "-u", "-m", args.module, "--strategy", args.strategy,
                   *job_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TF_CONFIG", None)
        # The ps and workers first, the chief last: the chief connects to them.
        order = [(job, i) for job in ("ps", "worker", "chief") for i in range(len(
            cluster.get(job, [])))]
        for task_type, index in order or [("chief", 0)]:
            name = task_name(task_type, index)
            if cluster:
                env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                               "task": {"type": task_type, "index": index}})
            self.tasks[name] = Task(name, command, dict(env), self.out)
            self.say(f"started {name} (pid {self.tasks[name].pid})"
                     + (f" at {cluster[task_type][index]}" if cluster else ""))

    def say(self, message):
        with self.lock:
            self.out.write(f"{PREFIX} {message}\n")
            self.out.flush()

    def wait(self):
        """The job's exit status: the chief's, or that of a task that failed before it."""
        chief = self.tasks[self.chief_name]
        while True:
            status = chief.process.poll()
            if status is not None:
                chief.copier.join(timeout=1)  # a grandchild may hold the pipe
                # A task killed while this loop slept, which the chief reported first, is named
                # before the chief's exit, as it is when the loop sees it first.
                for name, task in self.tasks.items():
                    other = task.process.poll()
                    if name != self.chief_name and other is not None and other < 0:
                        self.say(f"{name} was killed by {signal.Signals(-other).name}: the "
                                 f"chief has {self.args.grace:g} s to report it")
                self.say(f"{self.chief_name} exited with status {status}")
                return status
            for name, task in self.tasks.items():
                other = task.process.poll()
                if name == self.chief_name or other in (None, 0):
                    continue
                task.copier.join(timeout=5)
                if (self.args.strategy == "ps" and name.startswith("worker:")
                        and task.restarts < self.args.restarts):
                    self.say(f"{name} exited with status {other}: starting it again "
                             f"({task.restarts + 1} of {self.args.restarts})")
                    task.restart()
                    self.say(f"started {name} (pid {task.pid})")
                    continue
                if other < 0:
                    self.say(f"{name} was killed by {signal.Signals(-other).name}: the chief "
                             f"has {self.args.grace:g} s to report it")
                    status = self.wait_for_chief()
                    if status is not None:
                        return status
                self.say(f"{name} exited with status {other} before the chief: stopping "
                         "the cluster")
                return other if other > 0 else 1
            time.sleep(0.1)

    def wait_for_chief(self):
        """The chief's status if it exits within --grace seconds, else None."""
        chief = self.tasks[self.chief_name]
        try:
            status = chief.process.wait(timeout=self.args.grace)
        except subprocess.TimeoutExpired:
            return None
        chief.copier.join(timeout=1)
        self.say(f"{self.chief_name} exited with status {status}")
        return status

    def wait_for_others(self):
        """Up to --grace seconds for the tasks other than the chief to end on their own (the
        multi-worker job's workers finish with the chief; servers never do)."""
        deadline = time.monotonic() + self.args.grace
        while (time.monotonic() < deadline
               and any(t.process.poll() is None for t in self.tasks.values())):
            time.sleep(0.05)

    def stop(self, signum=signal.SIGTERM):
        """Signals every task's group, waits up to --grace seconds, then SIGKILLs what is
        left, and reaps the tasks."""
        for task in self.tasks.values():
            task.signal_group(signum)
        deadline = time.monotonic() + self.args.grace
        while time.monotonic() < deadline and any(t.group_alive() for t in self.tasks.values()):
            for task in self.tasks.values():
                task.process.poll()  # reap an exited leader, so its group can empty
            time.sleep(0.05)
        for task in self.tasks.values():
            if task.group_alive():
                self.say(f"{task.name} still running after {self.args.grace:g} s: killed")
                task.signal_group(signal.SIGKILL)
        for task in self.tasks.values():
            task.process.wait()
            task.copier.join(timeout=5)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tf_ftrl.examples.local_cluster", description=__doc__.split("\n\n")[0],
        usage="%(prog)s [-h] --strategy {none,mirrored,multiworker,ps} [--workers N] [--ps N] "
        "[--module MODULE] [--grace S] [--restarts N] [-- JOB ARGUMENTS]")
    parser.add_argument("--strategy", choices=STRATEGIES, required=True)
    parser.add_argument("--workers", metavar="N", type=int, default=2,
                        help="worker tasks, for ps and multiworker (default: %(default)s)")
    parser.add_argument("--ps", metavar="N", type=int, default=2,
                        help="parameter-server tasks, for ps (default: %(default)s)")
    parser.add_argument("--module", default="tf_ftrl.examples.ctr",
                        help="the job every task runs (default: %(default)s)")
    parser.add_argument("--grace", metavar="S", type=float, default=10.0,
                        help="seconds the tasks get to exit after a signal, before SIGKILL; "
                        "and the chief, to report a task killed by a signal (default: "
                        "%(default)s)")
    parser.add_argument("--restarts", metavar="N", type=int, default=3,
                        help="ps: times each worker is started again after it dies "
                        "(default: %(default)s)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    job_args = argv[split + 1:]
    if args.workers < 1 or (args.strategy == "ps" and args.ps < 1):
        parser.error(f"--workers and --ps must be at least 1. Received: --workers "
                     f"{args.workers} --ps {args.ps}")
    received = []

    def on_signal(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = Cluster(args)
    try:
        cluster.start(job_args)
        status = cluster.wait()
        if args.strategy != "ps":
            cluster.wait_for_others()
        cluster.stop(signal.SIGTERM)
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
        # Ignore further signals while stopping: a second Ctrl-C must not skip the clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.say(f"{signal.Signals(signum).name}: stopping the cluster")
        cluster.stop(signum)
        status = 128 + signum
    return status


if __name__ == "__main__":
    sys.exit(main())
