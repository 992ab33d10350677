"""`rowwise=True` in both Keras front ends (tests/support/rowwise_worker.py, a fresh process per
front end): two steps against float64 references of the row-wise formulas (rank-1 variables
element-wise), slot shapes, checkpoint and file round trips, MirroredStrategy with two replicas
against one device, state saved with the other `rowwise` setting converted on loading, and
(Keras 3) the plain-TF path under XLA against the fused ops."""

import zlib

import numpy as np
import pytest

from tests.support import numpy_reference as ref
from tests.support import workers

FRONT_ENDS = ["keras3", "tf_keras"]
OPTIMIZERS = ["Ftrl", "Adagrad"]
FTRL = dict(lr=0.1, l1=0.01, l2=0.02, l2_shrinkage=0.01)
ADAGRAD = dict(lr=0.1, epsilon=1e-3)


@pytest.fixture(scope="module", params=FRONT_ENDS)
def run(request):
    seed = zlib.crc32(b"rowwise" + request.param.encode(), request.config.rng_run_seed)
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if request.param == "tf_keras" else None)
    result = workers.run_for_result("-m", "tests.support.rowwise_worker", str(seed), env=env,
                                    timeout=300)
    result["seed"] = seed
    return result


def _reference(name, run):
    """The three variables and their slots after the worker's two steps, in float64."""
    start = {k: np.array(v) for k, v in run["start"].items()}
    state = {}
    for key, value in start.items():
        rows = value.shape[0] if value.ndim >= 2 else value.shape
        state[key] = {"var": value, "accum": np.full(rows, 0.1), "linear": np.zeros(value.shape)}
    for g in run["grads"]:
        table = np.zeros_like(start["table"])
        np.add.at(table, np.array(g["table_indices"]), np.array(g["table_values"]))
        touched = np.unique(g["table_indices"])
        for key, grad in (("table", table), ("kernel", np.array(g["kernel"])),
                          ("bias", np.array(g["bias"]))):
            s = state[key]
            rowwise = s["var"].ndim >= 2
            if name == "Ftrl":
                update = ref.rowwise_ftrl if rowwise else ref.ftrl
                new = dict(zip(("var", "accum", "linear"),
                               update(s["var"], s["accum"], s["linear"], grad, **FTRL)))
            else:
                update = ref.rowwise_adagrad if rowwise else ref.adagrad
                new = dict(zip(("var", "accum"), update(s["var"], s["accum"], grad, **ADAGRAD)))
                new["linear"] = s["linear"]
            if key == "table":  # only the looked-up rows change
                for k in new:
                    kept = s[k].copy()
                    kept[touched] = new[k][touched]
                    new[k] = kept
            state[key] = new
    return state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_two_steps_match_float64_reference(run, name):
    expected = _reference(name, run)
    result = run[name]
    slot_names = ["accum", "linear"] if name == "Ftrl" else ["accum"]
    for key, variable, slots in zip(("table", "kernel", "bias"), result["variables"],
                                    result["slots"]):
        np.testing.assert_allclose(variable, expected[key]["var"], rtol=2e-5, atol=2e-6,
                                   err_msg=f"{key} (seed {run['seed']})")
        for slot_name, slot in zip(slot_names, slots):
            np.testing.assert_allclose(slot, expected[key][slot_name], rtol=2e-5, atol=2e-6,
                                       err_msg=f"{key} {slot_name}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_accumulators_are_per_row_for_rank_two(run, name):
    slots = run[name]["slots"]
    assert np.shape(slots[0][0]) == (40,)  # table: one per row
    assert np.shape(slots[1][0]) == (6,)  # kernel
    assert np.shape(slots[2][0]) == (3,)  # bias: element-wise
    if name == "Ftrl":
        assert np.shape(slots[0][1]) == (40, 4)  # linear stays per element
    used = run[name]["kernels_used"]
    op = name.lower()
    assert used["table"] == f"sparse_apply_rowwise_{op}"
    assert used["kernel"] == f"apply_rowwise_{op}"
    assert used["bias"] == f"multi_apply_{op}"  # element-wise, with the other dense variables
    assert run[name]["config_rowwise"] is True and run[name]["from_config_rowwise"] is True


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checkpoint_round_trip(run, name):
    assert run[name]["checkpoint_equal"] and run[name]["checkpoint_slots_equal"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_file_round_trip(run, name):
    saved = run[name]["file"]
    assert saved["rowwise"] is True and saved["equal"]
    assert [200] in saved["shapes"]  # the table's per-row accumulator
    op = name.lower()
    assert set(saved["kernels_after_load"].values()) == {
        f"sparse_apply_rowwise_{op}", f"apply_rowwise_{op}", f"multi_apply_{op}"}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_mirrored_strategy_equals_one_device(run, name):
    mirrored = run[name]["mirrored"]
    assert mirrored["max_difference"] < 1e-5
    assert f"sparse_apply_rowwise_{name.lower()}" in mirrored["kernels"].values()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_xla_plain_ops_equal_fused_ops(run, name):
    if run["front_end"] != "keras3":
        # tf_ftrl.legacy has no plain-TF path (README, Limits): nothing to compare there.
        assert "xla" not in run[name]
        return
    assert run[name]["xla"] < 1e-5


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_of_the_other_setting_is_converted_and_said(run, name):
    conversion = run[name]["conversion"]
    op = name.lower()
    for source, how in (("from_element_wise", "became row-wise ones (the mean of each row)"),
                        ("from_rowwise", "became element-wise ones (each row's value repeated)")):
        converted = conversion[source]
        assert converted["max_difference"] < 1e-6, source
        assert len(converted["warnings"]) == 1, converted["warnings"]
        message = converted["warnings"][0]
        assert how in message
        # The table (200 x 8) and the kernel (24 x 1); the bias is element-wise either way.
        assert "(200, 8) -> (200,)" in message or "(200,) -> (200, 8)" in message
        assert "(24, 1) -> (24,)" in message or "(24,) -> (24, 1)" in message
        rowwise_target = source == "from_element_wise"
        assert (f"sparse_apply_rowwise_{op}" in converted["kernels"]) == rowwise_target


def test_other_shape_mismatches_are_named():
    from tf_ftrl._slot_conversion import convert_slot

    with pytest.raises(ValueError, match=r"adagrad/x_accumulator has shape \(5, 3\), which "
                                         r"cannot be converted to its shape here, \(4,\)"):
        convert_slot(np.zeros((5, 3)), (4,), "adagrad/x_accumulator")
    np.testing.assert_array_equal(convert_slot(np.arange(6.0).reshape(2, 3), (2,), "a"), [1, 4])
    np.testing.assert_array_equal(convert_slot(np.array([1.0, 2.0]), (2, 2), "a"),
                                  [[1, 1], [2, 2]])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checkpoint_of_the_other_setting_is_converted(run, name):
    # Restored before the optimizer is built, after, and before under MirroredStrategy (into
    # both replicas' copies).
    conversions = run[name]["checkpoint_conversion"]
    assert set(conversions) == {"built", "deferred", "mirrored"}
    assert conversions["mirrored"]["copies"] == 2
    for when, converted in conversions.items():
        assert converted["max_difference"] < 1e-6, when
        # The table's and the kernel's accumulators, each named.
        assert converted["warnings"] == 2, when
        assert converted["iterations"] == 4 + 4, when  # restored 4 steps, then one epoch
