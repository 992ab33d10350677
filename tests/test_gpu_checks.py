"""tools/gpu_checks.sh, the one command a GPU session runs, works end to end here for the steps
that need no GPU tooling (the GPU tests themselves skip without a device), and reports a missing
compute-sanitizer as a failure rather than passing over it."""

import os
import subprocess
import sys

from tests.support import ROOT


def run_checks(out, *steps):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_PATH="/nonexistent", PATH="/usr/bin:/bin")
    return subprocess.run(["bash", "tools/gpu_checks.sh", str(out), *steps], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_test_step_runs_the_driver_tests_and_summarises(tmp_path):
    done = run_checks(tmp_path, "test")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "- device:" in summary and "- commit:" in summary
    (line,) = [row for row in summary.splitlines() if row.startswith("| test |")]
    assert "passed:" in line and " passed" in line.split("passed:", 1)[1], line
    assert (tmp_path / "test.xml").exists() and (tmp_path / "test.log").exists()


def test_missing_sanitizer_fails_the_run(tmp_path):
    done = run_checks(tmp_path, "memcheck")
    assert done.returncode != 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| memcheck | FAILED: compute-sanitizer not found" in summary


def test_unknown_step_is_refused(tmp_path):
    done = run_checks(tmp_path, "everything")
    assert done.returncode == 2 and "unknown step: everything" in done.stderr
