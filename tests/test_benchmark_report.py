"""The benchmark report on tiny sizes: its files and the structure of its JSON (no timings)."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_benchmark_gpu():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import benchmark_gpu
    finally:
        sys.path.pop(0)
    return benchmark_gpu


def gpu_results_file(path):
    """A results file in the format of tools/benchmark_gpu.py --json (its own `result` builds the
    rows), as a GPU machine would send back; the timings are made up, there is no GPU here."""
    benchmark_gpu = import_benchmark_gpu()
    copy_gbps = 3000.0
    rows = [benchmark_gpu.result("ftrl", "dense", 10**8, 1.1, 1.0, 28 * 10**8, copy_gbps),
            benchmark_gpu.result("adagrad", "sparse", 16384, 0.04, 0.03, 20 * 16384 * 64,
                                 copy_gbps, rows=2_000_000, dim=64, id_distribution="zipf 1.1",
                                 unique_ids=9000, most_repeated_id=1100)]
    path.write_text(json.dumps({"device": "Example GPU", "buffers": "cupy", "dtype": "float32",
                                "copy": {}, "copy_bandwidth_gbps": copy_gbps, "results": rows}))
    return rows


def test_quick_report_has_every_part(tmp_path):
    gpu_rows = gpu_results_file(tmp_path / "gpu.json")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_report.py"), "--quick",
                    "--out", str(tmp_path), "--gpu-json", str(tmp_path / "gpu.json")],
                   check=True, cwd=ROOT, timeout=600, capture_output=True)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(report) >= {"command", "ops", "optimizers", "cpu_limit", "gpu"}
    assert [g["device"] for g in report["gpu"]] == ["Example GPU"]
    assert report["gpu"][0]["results"] == gpu_rows
    assert report["ops"]["machine"]["nproc"] >= 1
    ops_results = report["ops"]["results"]
    kinds = {(r["op"], r["kind"], r["implementation"]) for r in ops_results}
    for op in ("ftrl", "adagrad"):
        assert {(op, "dense", "tf_ftrl"), (op, "dense", "builtin"), (op, "sparse", "tf_ftrl"),
                (op, "sparse", "builtin"), (op, "sparse", "builtin_dedup")} <= kinds
    for r in ops_results:
        assert r["median_ms"] > 0 and r["gbps"] > 0
    assert report["ops"]["copy_bandwidth_gbps"] > 0
    for key in ("apply", "dense_apply"):
        assert [r["optimizer"] for r in report["optimizers"][key]] == ["ftrl", "adagrad"]
        assert all(r["tf_ftrl_ms"] > 0 and r["keras_ms"] > 0 and r["bare_op_ms"] > 0
                   for r in report["optimizers"][key])
    assert [r["optimizer"] for r in report["optimizers"]["fit"]] == ["ftrl", "adagrad"]
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| optimizer.apply, Embedding" in markdown and "| model.fit |" in markdown
    for op in ("ftrl", "adagrad"):
        for ids in ("uniform", "zipf 1.1"):
            assert f"| {op} | sparse | 200 {ids} ids | builtin_dedup |" in markdown
    assert "| optimizer.apply, 2 Dense 64 x 64 |" in markdown
    assert "GPU: Example GPU, float32" in markdown
    assert "| adagrad | sparse | 2,000,000 x 64, 16,384 zipf 1.1 ids | 0.0400 |" in markdown
    for name in ("dense_time.png", "dense_bandwidth.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_ids():
    # The sparse benchmarks' id sets: uniform, and Zipf with a hot head that stays hot.
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import benchmark_ids
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    uniform = benchmark_ids.id_sampler(rng, 2_000_000, 0.0)(16384)
    zipf_sampler = benchmark_ids.id_sampler(rng, 2_000_000, 1.1)
    zipf, zipf_again = zipf_sampler(16384), zipf_sampler(16384)
    for ids in (uniform, zipf, zipf_again):
        assert ids.dtype == np.int32 and ids.shape == (16384,)
        assert ids.min() >= 0 and ids.max() < 2_000_000
    uniform_counts = np.unique(uniform, return_counts=True)[1]
    zipf_ids, zipf_counts = np.unique(zipf, return_counts=True)
    assert uniform_counts.max() <= 4 and uniform_counts.size > 16000
    # The top id alone is several percent of the draws, and the same row in the next draw.
    assert 300 < zipf_counts.max() < 3000 and zipf_counts.size < 12000
    hottest = zipf_ids[np.argmax(zipf_counts)]
    assert (zipf_again == hottest).sum() > 300
    assert benchmark_ids.distribution_name(0.0) == "uniform"
    assert benchmark_ids.distribution_name(1.1) == "zipf 1.1"
