"""tf_ftrl.examples.local_cluster: every task an OS process with its TF_CONFIG, its lines
prefixed with its name, the chief's exit status, and no process left behind (after success, a
failing chief, a failing server, Ctrl-C, SIGTERM); then the CTR job itself as a cluster."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, workers

FAKE = ["--module", "tests.support.cluster_task", "--grace", "3"]


def launch(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "tf_ftrl.examples.local_cluster", *map(str, args)], cwd=ROOT,
        env=workers.environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def finish(launcher, timeout=60):
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        launcher.kill()
        raise
    return launcher.returncode, stdout, stderr


def alive(pid):
    """Whether pid is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def task_pids(stdout):
    """{task: [its pid, its child's pid]} from the stand-in job's TASK lines."""
    return {name: [int(pid), int(child)] for name, pid, child in
            re.findall(r"^\[[^\]]+\] TASK (\S+) pid (\d+) child (\d+)$", stdout, re.M)}


def assert_nothing_left(pids):
    every = [pid for both in pids.values() for pid in both]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(map(alive, every)):
        time.sleep(0.1)
    assert not [pid for pid in every if alive(pid)], f"processes left behind: {pids}"


def test_ps_cluster_prefixes_every_line_and_exits_with_the_chief_status():
    status, stdout, _ = finish(launch("--strategy", "ps", "--workers", "2", "--ps", "2", *FAKE,
                                      "--", "--chief-status", "0"))
    assert status == 0, stdout
    pids = task_pids(stdout)
    assert sorted(pids) == ["chief:0", "ps:0", "ps:1", "worker:0", "worker:1"]
    for name in ("chief", "worker:0", "worker:1", "ps:0", "ps:1"):
        task = name if ":" in name else "chief:0"
        assert re.search(rf"^\[{name}\] TASK {task} pid", stdout, re.M), stdout
        assert f"[{name}] to stderr from {task}" in stdout  # stderr too, prefixed
        assert re.search(rf"^local_cluster: started {name} \(pid \d+\) at 127\.0\.0\.1:\d+$",
                         stdout, re.M)
    assert "[chief] chief done" in stdout
    assert "local_cluster: chief exited with status 0" in stdout
    # No line of a task without its prefix.
    assert all(line.startswith(("[", "local_cluster: ")) for line in stdout.splitlines())
    assert_nothing_left(pids)


def test_failing_chief_status_is_the_launcher_status_and_servers_that_ignore_sigterm_die():
    status, stdout, _ = finish(launch("--strategy", "ps", "--workers", "1", "--ps", "1", *FAKE,
                                      "--", "--chief-status", "3", "--ignore-sigterm"))
    assert status == 3, stdout
    assert "local_cluster: chief exited with status 3" in stdout
    assert "local_cluster: ps:0 still running after 3 s: killed" in stdout
    assert_nothing_left(task_pids(stdout))


def test_multiworker_chief_is_worker_0():
    status, stdout, _ = finish(launch("--strategy", "multiworker", "--workers", "2", *FAKE,
                                      "--", "--chief-status", "4"))
    assert status == 4
    pids = task_pids(stdout)
    assert sorted(pids) == ["worker:0", "worker:1"]
    assert "[worker:0] chief done" in stdout
    assert "local_cluster: worker:0 exited with status 4" in stdout
    assert_nothing_left(pids)


def test_single_process_strategies_have_no_tf_config():
    status, stdout, _ = finish(launch("--strategy", "mirrored", *FAKE))
    assert status == 0
    assert list(task_pids(stdout)) == ["chief:0"]  # the stand-in's name without TF_CONFIG
    assert re.search(r"^local_cluster: started chief \(pid \d+\)$", stdout, re.M)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_launcher_stops_every_task(signum):
    launcher = launch("--strategy", "ps", "--workers", "2", "--ps", "1", *FAKE,
                      "--", "--chief-seconds", "600")
    lines = []
    while len(task_pids("".join(lines))) < 4:
        line = launcher.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    pids = task_pids("".join(lines))
    assert all(alive(pid) for both in pids.values() for pid in both)
    launcher.send_signal(signum)
    status, stdout, _ = finish(launcher)
    assert status == 128 + signum
    assert f"local_cluster: {signal.Signals(signum).name}: stopping the cluster" in stdout
    assert_nothing_left(pids)


def test_launcher_killed_with_sigkill_takes_its_tasks_along():
    launcher = launch("--strategy", "multiworker", "--workers", "2", *FAKE,
                      "--", "--chief-seconds", "600")
    lines = []
    while len(task_pids("".join(lines))) < 2:
        lines.append(launcher.stdout.readline())
    pids = task_pids("".join(lines))
    launcher.kill()
    launcher.wait()
    # The tasks die with the launcher (parent-death signal); their own children are orphans
    # outside the launcher's reach in this case, so only the tasks are checked.
    assert_nothing_left({name: both[:1] for name, both in pids.items()})
    for _, child in pids.values():
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_bad_arguments():
    status, _, stderr = finish(launch("--strategy", "ps", "--workers", "0"))
    assert status == 2
    assert "--workers and --ps must be at least 1. Received: --workers 0 --ps 2" in stderr
