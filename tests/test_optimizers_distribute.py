"""tf_ftrl.Ftrl and tf_ftrl.Adagrad under tf.distribute: MirroredStrategy over 2 logical CPUs
(model.fit and a custom loop) and MultiWorkerMirroredStrategy with 2 local worker processes.

Each case trains in fresh processes (tests/support/distribute_worker.py), because logical devices
and TF_CONFIG must be set before TensorFlow starts. Every distributed run is checked against one
device trained on the same global batches: replicas bit-identical, result equal to one device.
"""

import json
import subprocess

import numpy as np
import pytest

from tests.support import ROOT, distribute_worker, workers

WORKER = "tests.support.distribute_worker"
TIMEOUT_S = 120
# Distributed and single-device sums of the same gradients differ only in rounding.
RTOL, ATOL = 1e-5, 1e-6


def _run_cluster(num_workers, log_dir):
    """Starts num_workers worker processes of one MultiWorkerMirroredStrategy cluster on
    127.0.0.1 and returns their results in task order; kills every worker it started."""
    addresses = [f"127.0.0.1:{port}" for port in workers.free_loopback_ports(num_workers)]
    processes, logs = [], []
    try:
        for index in range(num_workers):
            tf_config = {"cluster": {"worker": addresses},
                         "task": {"type": "worker", "index": index}}
            # Output goes to files: a worker blocked on a full pipe would stall the collectives.
            stdout = open(log_dir / f"worker{index}.out", "w+")
            stderr = open(log_dir / f"worker{index}.err", "w+")
            logs.append((stdout, stderr))
            processes.append(subprocess.Popen(
                workers.command("-m", WORKER, "multi_worker"), cwd=ROOT,
                env=workers.environment(TF_CONFIG=json.dumps(tf_config)), stdout=stdout,
                stderr=stderr))
        results = []
        for index, (process, (stdout, stderr)) in enumerate(zip(processes, logs)):
            try:
                process.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                raise AssertionError(f"worker {index} did not finish in {TIMEOUT_S} s") from e
            stdout.seek(0)
            stderr.seek(0)
            out, err = stdout.read(), stderr.read()
            assert process.returncode == 0, f"worker {index} failed:\n{err[-5000:]}"
            results.append(workers.result_of(out, err, f"worker {index}"))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for files in logs:
            for f in files:
                f.close()


def _assert_replicas_identical(state):
    for name in ("weight_replicas", "optimizer_replicas"):
        for i, copies in enumerate(state[name]):
            assert len(copies) == 2, f"{name}[{i}] has {len(copies)} copies, expected 2"
            np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"{name}[{i}]")


def _assert_same_training(distributed, single):
    assert distributed["iterations"] == single["iterations"] == distribute_worker.STEPS
    assert distributed["gradient_kinds"] == single["gradient_kinds"] == \
        ["sparse", "dense", "dense"], "the Embedding gradient must reach update_step sparse"
    for i, (d, s) in enumerate(zip(distributed["weights"], single["weights"])):
        np.testing.assert_allclose(d, s, rtol=RTOL, atol=ATOL, err_msg=f"weight {i}")
    for i, (d, s) in enumerate(zip(distributed["optimizer_variables"],
                                   single["optimizer_variables"])):
        np.testing.assert_allclose(d, s, rtol=RTOL, atol=ATOL, err_msg=f"optimizer variable {i}")
    # Training moved every weight (so that agreeing means something).
    for i, (trained, initial) in enumerate(zip(single["weights"],
                                               distribute_worker.initial_weights())):
        assert not np.allclose(trained, initial), f"weight {i} did not change"


@pytest.fixture(scope="module")
def mirrored():
    return workers.run_for_result("-m", WORKER, "mirrored", timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    return _run_cluster(2, tmp_path_factory.mktemp("multi_worker"))


@pytest.mark.parametrize("optimizer", distribute_worker.OPTIMIZERS)
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_mirrored_replicas_stay_identical(mirrored, optimizer, loop):
    assert mirrored["num_replicas"] == 2
    _assert_replicas_identical(mirrored[optimizer][loop]["mirrored"])


@pytest.mark.parametrize("optimizer", distribute_worker.OPTIMIZERS)
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_mirrored_matches_single_device(mirrored, optimizer, loop):
    runs = mirrored[optimizer][loop]
    _assert_same_training(runs["mirrored"], runs["single"])


@pytest.mark.parametrize("optimizer", distribute_worker.OPTIMIZERS)
def test_mirrored_custom_loop_counts_one_iteration_per_step(mirrored, optimizer):
    after_each_step = mirrored[optimizer]["custom"]["mirrored"]["iterations_after_step"]
    expected = [[step, step] for step in range(1, distribute_worker.STEPS + 1)]
    assert after_each_step == expected


@pytest.mark.parametrize("optimizer", distribute_worker.OPTIMIZERS)
def test_multi_worker_matches_one_process(multi_worker, optimizer):
    first, second = multi_worker
    assert [first["task_index"], second["task_index"]] == [0, 1]
    assert first["num_replicas"] == second["num_replicas"] == 2
    a, b = first[optimizer]["multi_worker"], second[optimizer]["multi_worker"]
    for name in ("weights", "optimizer_variables"):
        for i, (x, y) in enumerate(zip(a[name], b[name])):
            np.testing.assert_array_equal(x, y, err_msg=f"{name}[{i}] differs between workers")
    expected_iterations = [[step] for step in range(1, distribute_worker.STEPS + 1)]
    assert a["iterations_after_step"] == b["iterations_after_step"] == expected_iterations
    _assert_same_training(a, first[optimizer]["single"])


@pytest.mark.parametrize("variant", sorted(distribute_worker.PROCESSING))
def test_mirrored_gradient_processing_keeps_sparse_gradients_sparse(mirrored, variant):
    runs = mirrored["processing"][variant]
    _assert_replicas_identical(runs["mirrored"])
    for run in runs.values():
        assert run["iterations"] == distribute_worker.STEPS
        assert run["gradient_kinds"] == ["sparse", "dense", "dense"]
        assert all(np.isfinite(np.asarray(w)).all() for w in run["weights"])
    if variant == "loss_scale_factor":
        # Unscaling is linear, so it commutes with the all-reduce: the same as one device.
        _assert_same_training(runs["mirrored"], runs["single"])
    else:
        # Keras clips each replica's gradient before the all-reduce, so clipping under a
        # strategy is not the same function as on one device; it must still have trained.
        for trained, initial in zip(runs["mirrored"]["weights"],
                                    distribute_worker.initial_weights()):
            assert not np.allclose(trained, initial)
