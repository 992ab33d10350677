"""Runs a test's worker in a fresh Python process and reads back the result it printed; finds
free loopback ports for a cluster of workers.

A worker is a module run as `python -m tests.support.NAME ARGS` (or a `python -c` script) from
the repository root. It prints its result as one JSON line after RESULT_PREFIX (print_result);
anything else on stdout, such as TensorFlow's messages, is passed over.

Imports no TensorFlow: the workers import this module before they set up TensorFlow.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

from tests.support import ROOT

# tf_ftrl.examples.parameter_server --json prints its result after the same prefix.
RESULT_PREFIX = "RESULT_JSON:"

_scratch = None


def scratch_directory():
    """A new empty directory for a worker's files, removed when the worker exits (all of them
    sit in one temporary directory that the process deletes at exit)."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="tf_ftrl_worker_")
    return tempfile.mkdtemp(dir=_scratch.name)


def print_result(result):
    """What a worker calls last: result (JSON-serialisable) as the line the parent reads."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def environment(**overrides):
    """This process's environment for a worker: CPU only, TensorFlow's info messages off, no
    TF_CONFIG or TF_USE_LEGACY_KERAS inherited; then overrides (None: unset)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    for name, value in {"TF_CONFIG": None, "TF_USE_LEGACY_KERAS": None, **overrides}.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def command(*args):
    """The command line of `python ARGS` in this Python."""
    return [sys.executable, *map(str, args)]


def describe(args):
    """args for a message: a `-c` script by its arguments only."""
    shown = ["-c", "SCRIPT", *args[2:]] if args[0] == "-c" else args
    return "python " + " ".join(map(str, shown))


def run(*args, timeout, env=None, status=0):
    """Runs `python ARGS` from the repository root in environment() (or env), and returns the
    subprocess.CompletedProcess, its output captured as text, once it has exited with `status`
    (a negative status: killed by that signal)."""
    try:
        done = subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True,
                              env=environment() if env is None else env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{describe(args)} did not finish in {timeout} s") from e
    assert done.returncode == status, (
        f"{describe(args)} exited with status {done.returncode}, expected {status}:\n"
        f"{done.stderr[-5000:]}")
    return done


def result_of(stdout, stderr, what):
    """The JSON of the last RESULT_PREFIX line in stdout."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise AssertionError(f"{what} printed no result.\nstdout:\n{stdout[-5000:]}\n"
                         f"stderr:\n{stderr[-5000:]}")


def run_for_result(*args, **kwargs):
    """run(*args, **kwargs), then the result the process printed."""
    done = run(*args, **kwargs)
    return result_of(done.stdout, done.stderr, describe(args))


def free_loopback_ports(count):
    """count TCP ports free on 127.0.0.1 a moment ago, for a cluster of worker processes."""
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
