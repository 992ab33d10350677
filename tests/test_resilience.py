"""Crash and resume, memory over many steps, and serving exported models without the library."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from tests.support import workers

WORKER = "tests.support.resilience_worker"
SERVER = "tests.support.serving_without_library"


def run(module, *args, expect_kill=False, timeout=300):
    workers.run("-m", module, *args, timeout=timeout,
                status=-signal.SIGKILL if expect_kill else 0)


def load(path):
    """(arrays, info) written by the worker."""
    data = dict(np.load(path))
    info = {k[len("info:"):]: data.pop(k).item() for k in list(data) if k.startswith("info:")}
    return data, info


def assert_bit_identical(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_killed_custom_loop_resumes_bit_identical(tmp_path):
    run(WORKER, "loop", tmp_path / "straight", 20, 0, tmp_path / "straight.npz")
    # Killed after step 13: the latest checkpoint is step 10, so steps 11-13 are redone.
    run(WORKER, "loop", tmp_path / "crashed", 20, 13, tmp_path / "unused.npz", expect_kill=True)
    assert not (tmp_path / "unused.npz").exists()
    run(WORKER, "loop", tmp_path / "crashed", 20, 0, tmp_path / "resumed.npz")
    straight, _ = load(tmp_path / "straight.npz")
    resumed, info = load(tmp_path / "resumed.npz")
    assert info["first_step"] == 11  # it did resume from the step-10 checkpoint
    assert_bit_identical(straight, resumed)


def test_killed_fit_resumes_with_backup_and_restore_bit_identical(tmp_path):
    run(WORKER, "fit", tmp_path / "straight", 4, 0, tmp_path / "straight.npz")
    run(WORKER, "fit", tmp_path / "crashed", 4, 3, tmp_path / "unused.npz", expect_kill=True)
    run(WORKER, "fit", tmp_path / "crashed", 4, 0, tmp_path / "resumed.npz")
    straight, _ = load(tmp_path / "straight.npz")
    resumed, info = load(tmp_path / "resumed.npz")
    assert info["first_step"] == 3  # it did resume at the epoch that was killed
    assert_bit_identical(straight, resumed)


def test_soak_resident_memory_does_not_grow(tmp_path):
    # The long version (20,000 steps): python tools/soak.py
    run(WORKER, "soak", 4000, tmp_path / "soak.json", timeout=600)
    import json

    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["finite"]
    samples = [(step, kb) for step, kb in result["samples"] if step >= 1000]  # after warm-up
    (first_step, first_kb), (last_step, last_kb) = samples[0], samples[-1]
    growth_kb_per_1000_steps = (last_kb - first_kb) / (last_step - first_step) * 1000
    assert growth_kb_per_1000_steps < 1024, result["samples"]


def fused_ops_in(saved_model_dir):
    """Op types named FusedResource* anywhere in a SavedModel's graph and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found = set()
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes += list(function.node_def)
        found |= {node.op for node in nodes if node.op.startswith("FusedResource")}
    return found


def test_exported_models_serve_without_the_library(tmp_path):
    run(WORKER, "export", tmp_path, tmp_path / "trained.npz")
    for name in ("saved_model", "exported"):
        assert fused_ops_in(str(tmp_path / name)) == set(), name
    run(SERVER, tmp_path, tmp_path / "trained.npz", tmp_path / "served.npz")
    expected = load(tmp_path / "trained.npz")[0]["predictions"]
    served, _ = load(tmp_path / "served.npz")
    for name in ("saved_model", "exported"):
        np.testing.assert_allclose(served[name], expected, rtol=1e-6, atol=1e-7, err_msg=name)
