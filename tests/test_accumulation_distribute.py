"""Gradient accumulation and EMA overwrites under MirroredStrategy with 2 replicas, each with a
gradient of its own: tf_ftrl's Keras 3 optimizers there against the same optimizer and
`keras.optimizers` on one device given the replicas' summed gradient, with sparse and dense
gradients and row-wise state. Keras runs these updates inside a `cond`, where its
`merge_call` fails under the strategy; ours update each replica's copy there, and the replicas
must end identical. And under MultiWorkerMirroredStrategy with one worker (collective ops).
"""

import numpy as np
import pytest

from tests.support import accumulation_worker as worker
from tests.support import workers

WORKER = "tests.support.accumulation_worker"
TIMEOUT_S = 300
# Float32 state after 6 steps; the all-reduce and the duplicate sums round differently.
RTOL, ATOL = 2e-5, 2e-6

NAMES = ("ftrl", "adagrad")
CASES = [f"{name}/{option}/{kind}" for name in NAMES for option in worker.OPTIONS
         for kind in ("sparse", "dense", "rowwise")]


@pytest.fixture(scope="module")
def runs():
    return workers.run_for_result("-m", WORKER, timeout=TIMEOUT_S)


def test_two_replicas(runs):
    assert runs["num_replicas"] == 2


@pytest.mark.parametrize("case", CASES)
def test_two_replicas_match_one_device_given_their_summed_gradient(runs, case):
    mirrored, one = runs[case]["mirrored"], runs[case]["one_device"]
    np.testing.assert_array_equal(mirrored["replicas"][0], mirrored["replicas"][1],
                                  err_msg="replicas differ")
    np.testing.assert_allclose(mirrored["variable"], one["variable"], rtol=RTOL, atol=ATOL)
    assert len(mirrored["optimizer_variables"]) == len(one["optimizer_variables"])
    for i, (a, b) in enumerate(zip(mirrored["optimizer_variables"], one["optimizer_variables"])):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"optimizer variable {i}")
    assert mirrored["iterations"] == one["iterations"]
    assert mirrored["kernels"] == one["kernels"] and mirrored["kernels"], mirrored["kernels"]
    assert not np.allclose(mirrored["variable"], worker.initial_value())


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith("/rowwise")])
def test_matches_keras_on_one_device(runs, case):
    ours, stock = runs[case]["mirrored"], runs[case]["stock"]
    rows = list(range(worker.ROWS))
    if case.endswith("/sparse") and "accumulate" not in case:
        # A sparse update changes only the touched rows; stock Keras's dense one rewrites every
        # row (FTRL recomputes each weight from its linear slot). Accumulated gradients are
        # dense.
        rows = sorted(set(sum(worker.REPLICA_INDICES, [])))
        untouched = [r for r in range(worker.ROWS) if r not in rows]
        np.testing.assert_array_equal(np.asarray(ours["variable"])[untouched],
                                      worker.initial_value()[untouched])
    np.testing.assert_allclose(np.asarray(ours["variable"])[rows],
                               np.asarray(stock["variable"])[rows], rtol=RTOL, atol=ATOL)
    # The accumulators, the slots and the moving averages, in Keras's order.
    assert len(ours["optimizer_variables"]) == len(stock["optimizer_variables"])
    for i, (a, b) in enumerate(zip(ours["optimizer_variables"], stock["optimizer_variables"])):
        np.testing.assert_allclose(np.asarray(a)[rows], np.asarray(b)[rows], rtol=RTOL,
                                   atol=ATOL, err_msg=f"optimizer variable {i}")
    assert ours["iterations"] == stock["iterations"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("option", [o for o in worker.OPTIONS if o != "none"])
def test_each_option_changes_the_result(runs, name, option):
    # Or the comparisons above would not tell whether the option ran.
    with_option = np.asarray(runs[f"{name}/{option}/dense"]["stock"]["variable"])
    plain = np.asarray(runs[f"{name}/none/dense"]["stock"]["variable"])
    assert not np.allclose(with_option, plain, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def multiworker_runs():
    return workers.run_for_result("-m", WORKER, "multiworker", timeout=TIMEOUT_S)


@pytest.mark.parametrize("case", [f"{name}/{option}/{kind}" for name in NAMES
                                  for option in ("accumulate_clip_decay", "accumulate_ema")
                                  for kind in ("sparse", "rowwise")])
def test_multiworker_strategy_matches_one_device(multiworker_runs, case):
    assert multiworker_runs["num_replicas"] == 1
    ours, one = multiworker_runs[case]["strategy"], multiworker_runs[case]["one_device"]
    # One replica: the same values, summed in the same order.
    np.testing.assert_array_equal(ours["variable"], one["variable"])
    for a, b in zip(ours["optimizer_variables"], one["optimizer_variables"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert ours["iterations"] == one["iterations"] > 0
    assert not np.allclose(ours["variable"], worker.initial_value())
