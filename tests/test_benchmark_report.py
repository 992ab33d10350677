"""The benchmark report on tiny sizes: its files and the structure of its JSON (no timings)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_report_has_every_part(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_report.py"), "--quick",
                    "--out", str(tmp_path)], check=True, cwd=ROOT, timeout=600,
                   capture_output=True)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(report) >= {"command", "ops", "optimizers", "cpu_limit", "gpu"}
    assert report["ops"]["machine"]["nproc"] >= 1
    ops_results = report["ops"]["results"]
    kinds = {(r["op"], r["kind"], r["implementation"]) for r in ops_results}
    for op in ("ftrl", "adagrad"):
        assert {(op, "dense", "tf_ftrl"), (op, "dense", "builtin"), (op, "sparse", "tf_ftrl"),
                (op, "sparse", "builtin"), (op, "sparse", "builtin_dedup")} <= kinds
    for r in ops_results:
        assert r["median_ms"] > 0 and r["gbps"] > 0
    assert report["ops"]["copy_bandwidth_gbps"] > 0
    assert [r["optimizer"] for r in report["optimizers"]["apply"]] == ["ftrl", "adagrad"]
    assert [r["optimizer"] for r in report["optimizers"]["fit"]] == ["ftrl", "adagrad"]
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| optimizer.apply |" in markdown and "| model.fit |" in markdown
    for name in ("dense_time.png", "dense_bandwidth.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
