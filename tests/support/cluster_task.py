"""A stand-in job for tf_ftrl.examples.local_cluster's tests (no TensorFlow): every task prints
its name from TF_CONFIG, its pid and that of a child it starts (a grandchild of the launcher);
the chief then sleeps --chief-seconds and exits with --chief-status; the other tasks wait
forever, as servers do, and with --ignore-sigterm do not even die of SIGTERM.

    python -m tests.support.cluster_task --strategy ps [--chief-status N] [--chief-seconds S]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy")
    parser.add_argument("--chief-status", type=int, default=0)
    parser.add_argument("--chief-seconds", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    args = parser.parse_args()
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {"type": "chief", "index": 0})
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    is_chief = task["type"] == "chief" or ("chief" not in cluster and task == {"type": "worker",
                                                                               "index": 0})
    if args.ignore_sigterm and not is_chief:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"TASK {task['type']}:{task['index']} pid {os.getpid()} child {child.pid}", flush=True)
    print(f"to stderr from {task['type']}:{task['index']}", file=sys.stderr, flush=True)
    if is_chief:
        time.sleep(args.chief_seconds)
        print("chief done", flush=True)
        sys.exit(args.chief_status)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
