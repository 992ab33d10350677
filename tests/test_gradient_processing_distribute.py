"""Gradient processing (clipnorm, clipvalue, global_clipnorm, loss_scale_factor) under
MirroredStrategy with 2 replicas, each with a gradient of its own: tf_ftrl's optimizers against
the stock ones on the densified gradient (Keras 3) or the same gradient (tf_keras), with sparse
and dense gradients. Every replica's gradient must be processed (Keras clips each replica's
gradient before the all-reduce), and the replicas must end identical.
"""

import numpy as np
import pytest

from tests.support import processing_worker as worker
from tests.support import workers

WORKER = "tests.support.processing_worker"
TIMEOUT_S = 240
# Float32 state after 2 steps; the all-reduce and the duplicate sums round differently.
RTOL, ATOL = 2e-5, 2e-6

CASES = ([f"keras/{name}/{option}/{kind}" for name in ("ftrl", "adagrad")
          for option in worker.PROCESSING for kind in ("sparse", "dense")]
         + [f"legacy/{name}/{option}/{kind}" for name in ("ftrl", "adagrad")
            for option in worker.LEGACY_PROCESSING for kind in ("sparse", "dense")])


@pytest.fixture(scope="module")
def runs():
    return workers.run_for_result("-m", WORKER, timeout=TIMEOUT_S)


def test_two_replicas(runs):
    assert runs["num_replicas"] == 2


@pytest.mark.parametrize("case", CASES)
def test_matches_stock_optimizer(runs, case):
    ours, stock = runs[case]["ours"], runs[case]["stock"]
    np.testing.assert_array_equal(ours["replicas"][0], ours["replicas"][1],
                                  err_msg="replicas differ")
    ours_var, stock_var = np.asarray(ours["variable"]), np.asarray(stock["variable"])
    initial = worker.initial_value()
    rows = worker.TOUCHED_ROWS
    if case.startswith("keras/") and case.endswith("/sparse"):
        # A sparse update changes only the touched rows; stock Keras's dense one rewrites every
        # row (FTRL recomputes each weight from its linear slot).
        untouched = [r for r in range(worker.ROWS) if r not in rows]
        np.testing.assert_array_equal(ours_var[untouched], initial[untouched])
    else:
        rows = list(range(worker.ROWS))
    np.testing.assert_allclose(ours_var[rows], stock_var[rows], rtol=RTOL, atol=ATOL,
                               err_msg="variable")
    assert len(ours["slots"]) == len(stock["slots"])
    for i, (a, b) in enumerate(zip(ours["slots"], stock["slots"])):
        np.testing.assert_allclose(np.asarray(a)[rows], np.asarray(b)[rows], rtol=RTOL,
                                   atol=ATOL, err_msg=f"slot {i}")
    # The step moved the touched rows, so agreeing means something.
    assert not np.allclose(ours_var[worker.TOUCHED_ROWS], initial[worker.TOUCHED_ROWS])


@pytest.mark.parametrize("name", ["ftrl", "adagrad"])
@pytest.mark.parametrize("option", [o for o in worker.PROCESSING if o != "none"])
def test_processing_changes_the_result(runs, name, option):
    # Each option must matter for these gradients, or the comparison above tests nothing.
    processed = np.asarray(runs[f"keras/{name}/{option}/sparse"]["stock"]["variable"])
    plain = np.asarray(runs[f"keras/{name}/none/sparse"]["stock"]["variable"])
    assert not np.allclose(processed, plain, rtol=1e-3, atol=1e-4)
