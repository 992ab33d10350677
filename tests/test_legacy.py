"""tf_ftrl.legacy (optimizers for tf_keras, Keras 2) against tf_keras's own optimizers, and
training under ParameterServerStrategy.

tf_keras must run with TF_USE_LEGACY_KERAS=1 in a process of its own (this one runs Keras 3), so
every check runs in a fresh process: tests/support/legacy_worker.py for the optimizers and the
imports, `python -m tf_ftrl.examples.parameter_server --json` for an in-process cluster on
127.0.0.1 (its servers end with that process, which is killed if it overruns).
"""

import numpy as np
import pytest

from tests.support import legacy_worker, workers

WORKER = "tests.support.legacy_worker"
TIMEOUT_S = 240
# Ours and tf_keras's run different kernels: equal up to float rounding.
TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


def _run(*args, legacy_keras=True):
    """The result of `python -m ARGS` in a fresh process, killed after TIMEOUT_S."""
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if legacy_keras else None)
    return workers.run_for_result("-m", *args, env=env, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def optimizers():
    return _run(WORKER, "optimizers")


@pytest.fixture(scope="module")
def imports():
    return _run(WORKER, "imports", legacy_keras=False)


@pytest.fixture(scope="module")
def cluster():
    return _run("tf_ftrl.examples.parameter_server", "--json")


def _assert_same_state(actual, expected, dtype="float32", what=""):
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(actual["var"], expected["var"], err_msg=f"{what} var", **tolerance)
    assert sorted(actual["slots"]) == sorted(expected["slots"])
    for name in expected["slots"]:
        np.testing.assert_allclose(actual["slots"][name], expected["slots"][name],
                                   err_msg=f"{what} slot {name}", **tolerance)
    assert actual["iterations"] == expected["iterations"]


# --- the same results as tf_keras's optimizers ---


def test_worker_runs_legacy_keras(optimizers):
    assert optimizers["legacy_keras_env"] == "1"
    assert optimizers["tf_keras_version"].startswith("2.")


@pytest.mark.parametrize("dtype", legacy_worker.DTYPES)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("case", sorted(legacy_worker.CASES))
def test_equals_tf_keras(optimizers, case, kind, dtype):
    runs = optimizers["equivalence"][f"{case}/{dtype}/{kind}"]
    assert runs["ours"]["iterations"] == legacy_worker.STEPS
    _assert_same_state(runs["ours"], runs["stock"], dtype, case)
    # Training moved the variable (so that agreeing means something).
    assert not np.allclose(runs["ours"]["var"], optimizers["equivalence"]["initial"], atol=1e-3)


# clipnorm and clipvalue act on the gradient before duplicates are summed (in tf_keras too), so
# those cases differ from clipping the deduplicated gradient.
UNCLIPPED_CASES = sorted(case for case, (_, kwargs) in legacy_worker.CASES.items()
                         if "clipnorm" not in kwargs and "clipvalue" not in kwargs)


@pytest.mark.parametrize("dtype", legacy_worker.DTYPES)
@pytest.mark.parametrize("case", UNCLIPPED_CASES)
def test_sparse_duplicates_equal_the_deduplicated_gradient(optimizers, case, dtype):
    runs = optimizers["equivalence"][f"{case}/{dtype}/sparse"]
    _assert_same_state(runs["ours"], runs["stock_deduplicated"], dtype, case)


@pytest.mark.parametrize("case", sorted(legacy_worker.CASES))
def test_sparse_leaves_untouched_rows_bit_identical(optimizers, case):
    runs = optimizers["equivalence"][f"{case}/float32/sparse"]
    initial = np.array(optimizers["equivalence"]["initial"], "float32")
    var = np.array(runs["ours"]["var"], "float32")
    rows = legacy_worker.UNTOUCHED_ROWS
    np.testing.assert_array_equal(var[rows], initial[rows])
    stock_accumulator = np.array(runs["stock"]["slots"]["accumulator"], "float32")
    np.testing.assert_array_equal(np.array(runs["ours"]["slots"]["accumulator"])[rows],
                                  stock_accumulator[rows])
    touched = sorted(set(range(legacy_worker.ROWS)) - set(rows))
    assert np.all(var[touched] != initial[touched])


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_updates_are_the_fused_ops_without_python_deduplication(optimizers, name):
    # The dense variable's update is the multi-tensor op (with every dense variable of its dtype).
    assert optimizers["update_op_types"][name] == [f"FusedResourceMultiApply{name}",
                                                   f"FusedResourceSparseApply{name}"]


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_ftrl_with_power_minus_half_from_zero_is_adagrad(optimizers, kind):
    runs = optimizers["special_cases"][f"adagrad/{kind}"]
    # Adagrad's epsilon is tf_keras's minimum, 1e-7, next to sqrt(accumulator) >= sqrt(0.1).
    np.testing.assert_allclose(runs["ftrl"], runs["other"], rtol=1e-5, atol=1e-7)
    assert np.any(np.abs(runs["ftrl"]) > 0.1)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_ftrl_with_power_zero_from_zero_is_sgd(optimizers, kind):
    runs = optimizers["special_cases"][f"sgd/{kind}"]
    np.testing.assert_allclose(runs["ftrl"], runs["other"], rtol=1e-5, atol=1e-7)
    assert np.any(np.abs(runs["ftrl"]) > 0.1)


# --- saving and configuration ---


@pytest.mark.parametrize("direction", ["ours_to_stock", "stock_to_ours"])
@pytest.mark.parametrize("case", ["ftrl_regularized", "adagrad"])
def test_checkpoints_interchange_with_tf_keras(optimizers, case, direction):
    run = optimizers["checkpoints"][f"{case}/{direction}"]
    assert run["consumed"] == "ok"
    _assert_same_state(run["reader"], run["writer"], what=f"{case} {direction}")
    assert run["reader"]["iterations"] == legacy_worker.STEPS


@pytest.mark.parametrize("case", sorted(legacy_worker.CASES) + ["ftrl_schedule",
                                                                "adagrad_schedule"])
def test_config_round_trip_and_same_config_as_tf_keras(optimizers, case):
    run = optimizers["configs"][case]
    assert run["round_trip"] == run["config"]
    assert run["config"] == run["stock_config"]
    assert run["from_stock_config"] == run["config"]
    name = legacy_worker.CASES.get(case, ("Ftrl" if "ftrl" in case else "Adagrad",))[0]
    assert run["serialized_names"] == [name, f"tf_ftrl>{name}"]
    assert run["deserialized_type"] == f"tf_ftrl.legacy.{name.lower()}.{name}"


@pytest.mark.parametrize("dtype", legacy_worker.DTYPES)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_multiply_linear_by_lr_equals_tensorflows_op(optimizers, kind, dtype):
    runs = optimizers["multiply_linear_by_lr"][f"{dtype}/{kind}"]
    seed = optimizers["multiply_linear_by_lr"]["seed"]
    _assert_same_state(runs["ours"], runs["tensorflow"], dtype, f"random seed {seed}")
    # The flag changes what the linear slot holds (lr times its usual value).
    assert not np.allclose(runs["ours"]["slots"]["linear"], runs["without"]["slots"]["linear"])


def test_multiply_linear_by_lr_is_configured_and_documented(optimizers):
    run = optimizers["multiply_linear_by_lr"]["config"]
    assert run["config"] is run["round_trip"] is run["deserialized"] is True
    # Left out of the default config, which stays tf_keras's own.
    assert run["default_has_it"] is False
    assert run["documented"]


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_docstrings_are_filled_in(optimizers, name):
    doc = optimizers["docstrings"][name]
    assert "{{" not in doc
    assert '\n        huge_pages: `"auto"` (the default)' in doc


def test_config_keeps_every_argument(optimizers):
    config = optimizers["configs"]["ftrl_regularized"]["config"]
    for key, value in legacy_worker.CASES["ftrl_regularized"][1].items():
        assert config[key] == pytest.approx(value), key
    config = optimizers["configs"]["adagrad_decay_clipnorm"]["config"]
    for key, value in legacy_worker.CASES["adagrad_decay_clipnorm"][1].items():
        assert config[key] == pytest.approx(value), key


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_lr_keyword_is_a_deprecated_alias(optimizers, name):
    run = optimizers["learning_rate_kwargs"][name]
    assert run["learning_rate"] == run["lr_attribute"] == 0.5
    assert any("`lr` argument is deprecated" in message for message in run["warnings"])
    np.testing.assert_allclose(run["trained_with_lr"], run["trained_stock_learning_rate"],
                               **TOLERANCE["float32"])


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_decay_is_inverse_time_decay_per_iteration(optimizers, name):
    run = optimizers["learning_rate_kwargs"][name]
    assert run["decay_config"] == 0.25
    expected = [0.5 / (1 + 0.25 * iteration) for iteration in range(1, legacy_worker.STEPS + 1)]
    np.testing.assert_allclose(run["decayed_rates"], expected, rtol=1e-6)


def test_errors_are_tf_keras_errors(optimizers):
    for entry in optimizers["errors"]:
        assert entry["ours"] is not None, entry
        assert entry["ours"] == entry["stock"], entry
    # Including the argument checks of OptimizerV2 itself (the base class).
    kinds = {entry["ours"][0] for entry in optimizers["errors"]}
    assert kinds == {"ValueError", "TypeError"}


def test_nan_and_infinite_arguments_are_rejected(optimizers):
    # tf_keras lets NaN through; ours name the argument.
    entries = optimizers["non_finite_errors"]
    assert len(entries) == 16
    for entry in entries:
        assert entry["ours"] is not None, entry
        assert "finite" in entry["ours"] and entry["argument"] in entry["ours"], entry
        assert entry["value"] in entry["ours"], entry
    assert any(entry["stock"] is None for entry in entries if entry["value"] == "nan")


# --- the OptimizerV2 API, inherited ---


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_minimize(optimizers, name, mode):
    runs = optimizers["api"][name][f"minimize/{mode}"]
    _assert_same_state(runs["ours"], runs["stock"], what=f"{name} minimize")
    assert runs["ours"]["iterations"] == 3


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_get_updates_in_graph_mode(optimizers, name):
    runs = optimizers["api"][name]["get_updates"]
    assert runs["ours"]["gradient_types"] == ["IndexedSlices"]
    assert runs["ours"]["iterations"] == runs["stock"]["iterations"] == 3
    np.testing.assert_allclose(runs["ours"]["var"], runs["stock"]["var"], **TOLERANCE["float32"])


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_slots_weights_and_set_weights(optimizers, name):
    run = optimizers["api"][name]["slots_and_weights"]
    expected_slots = ["accumulator", "linear"] if name == "Ftrl" else ["accumulator"]
    assert run["slot_names"] == expected_slots + ["extra"]
    assert run["stock_slot_names"] == expected_slots
    # Same weights, named alike: tf_keras's get_weights() loads into ours.
    assert run["weight_names"] == run["stock_weight_names"]
    assert run["weight_names"][0].endswith("/iter:0")
    assert run["weights_after_add_slot"] == 1
    assert run["variables_is_weights"] and run["extra_slot_is_get_slot"]
    states = run["after_set_weights"]
    ours = dict(states["ours"], slots={k: v for k, v in states["ours"]["slots"].items()
                                       if k != "extra"})
    _assert_same_state(ours, states["stock"], what=f"{name} after set_weights")


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_model_fit_with_embedding(optimizers, name):
    runs = optimizers["api"][name]["fit"]
    assert runs["ours"]["iterations"] == runs["stock"]["iterations"] == 16
    for i, (a, b) in enumerate(zip(runs["ours"]["weights"], runs["stock"]["weights"])):
        np.testing.assert_allclose(a, b, err_msg=f"weight {i}", **TOLERANCE["float32"])
    np.testing.assert_allclose(runs["ours"]["loss"], runs["stock"]["loss"], rtol=1e-5)
    # The optimizers' state, in the same order (get_weights/set_weights interchange).
    ours, stock = runs["ours"]["optimizer_weights"], runs["stock"]["optimizer_weights"]
    assert len(ours) == len(stock) == 1 + (2 if name == "Ftrl" else 1) * 3
    for i, (a, b) in enumerate(zip(ours, stock)):
        np.testing.assert_allclose(a, b, err_msg=f"optimizer weight {i}", **TOLERANCE["float32"])
    assert runs["ours"]["loss"][1] < runs["ours"]["loss"][0]


# --- imports ---


def test_import_tf_ftrl_does_not_import_tf_keras(imports):
    assert imports["tf_keras_imported_by_tf_ftrl"] is False
    assert imports["keras_3_optimizer"] == "tf_ftrl.optimizers.ftrl"


@pytest.mark.parametrize("how", ["attribute", "import"])
def test_legacy_without_tf_keras_says_what_to_install(imports, how):
    message = imports[how]
    assert message is not None, "tf_ftrl.legacy imported without tf_keras"
    assert "tf-keras" in message and "pip install" in message


# --- ParameterServerStrategy ---


def test_parameter_server_cluster_shards_the_table_over_the_ps(cluster):
    assert cluster["num_workers"] == 2 and cluster["num_ps"] == 2
    for run in ("fit", "steps"):
        placement = cluster[run]["placement"]
        devices = sorted(shard["shard"] for shard in placement)
        assert devices == ["/job:ps/replica:0/task:0/device:CPU:0",
                           "/job:ps/replica:0/task:1/device:CPU:0"]
        for shard in placement:
            assert set(shard["slots"].values()) == {shard["shard"]}, shard


def test_parameter_server_updates_run_the_fused_kernels_on_the_ps(cluster):
    ops = {tuple(op) for op in cluster["steps"]["update_ops"]}
    ps = ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]
    assert {("FusedResourceSparseApplyFtrl", device) for device in ps} <= ops
    assert {op_type for op_type, _ in ops} == {"FusedResourceSparseApplyFtrl",
                                               "FusedResourceMultiApplyFtrl"}, \
        "no other update op, and no Python-side deduplication (Unique)"
    assert all(device.startswith("/job:ps/") for _, device in ops)


def test_parameter_server_fit_converges_like_one_process(cluster):
    fit = cluster["fit"]
    assert fit["iterations"] == 200
    # Asynchronous steps: not the same trajectory, the same loss (initial loss ~7).
    assert fit["cluster_loss"] < 0.02 * cluster["initial_loss"]
    assert fit["cluster_loss"] == pytest.approx(fit["single_process_stock_loss"], rel=0.25)


def test_parameter_server_synchronous_steps_equal_one_process(cluster):
    steps = cluster["steps"]
    assert steps["iterations"] == 60
    assert steps["max_table_difference"] < 1e-5
    assert steps["max_dense_difference"] < 1e-5
    assert steps["cluster_loss"] == pytest.approx(steps["single_process_stock_loss"], rel=1e-4)
    assert steps["cluster_loss"] < 0.1 * cluster["initial_loss"]
    assert steps["table_rows_touched"] == 200
