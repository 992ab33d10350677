"""SavedModels of models whose optimizer keeps row-wise or low-precision state
(tests/support/legacy_saved_model_worker.py). tf_keras with tf_ftrl.legacy (on one device, under
MirroredStrategy, and under ParameterServerStrategy with sharded tables): they load and serve
in a process without tf_ftrl, tf_keras's load_model loads them, they hold every slot, and a
tf.train.Checkpoint written afterwards still keeps the slots as slot variables (loading such a
SavedModel failed: tf_keras remakes an optimizer_v2's slot variables in their variable's shape
and dtype). Keras 3: one serves alike, and its slots restore from it into a fresh model."""

import numpy as np
import pytest

from tests.support import workers
from tests.support.legacy_saved_model_worker import CASES, KERAS3_CASE, PS_CASE

WORKER = "tests.support.legacy_saved_model_worker"
# Slot shapes or dtypes that differ from their variables'.
NARROW_OR_ROWWISE = [case for case, (_, arguments, _) in CASES.items() if arguments]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy_saved_models")
    result = workers.run_for_result("-m", WORKER, "save", out, timeout=600,
                                    env=workers.environment(TF_USE_LEGACY_KERAS="1"))
    return out, result


@pytest.fixture(scope="module")
def saved_keras3(saved):
    out, _ = saved
    return workers.run_for_result("-m", WORKER, "save_keras3", out, timeout=300)[KERAS3_CASE]


@pytest.fixture(scope="module")
def saved_ps(saved):
    out, _ = saved
    return workers.run_for_result("-m", WORKER, "save_ps", out, timeout=300,
                                  env=workers.environment(TF_USE_LEGACY_KERAS="1"))[PS_CASE]


@pytest.fixture(scope="module")
def served(saved, saved_keras3, saved_ps):
    out, _ = saved
    return workers.run_for_result("-m", WORKER, "serve",
                                  *(out / case for case in [*CASES, KERAS3_CASE, PS_CASE]),
                                  timeout=300)


def test_the_cases_keep_the_state_they_name(saved):
    _, result = saved
    for case, (_, arguments, _) in CASES.items():
        shapes, dtypes = result[case]["slot_shapes"], result[case]["slot_dtypes"]
        accumulator = next(k for k in shapes if "embeddings/accumulator" in k)
        assert shapes[accumulator] == ([40] if arguments.get("rowwise") else [40, 4]), case
        assert set(dtypes.values()) == {arguments.get("state_dtype", "float32")}, case


@pytest.mark.parametrize("case", list(CASES))
def test_serves_without_tf_ftrl(saved, served, case):
    _, result = saved
    assert served["tf_ftrl_imported"] is False
    np.testing.assert_allclose(served["predictions"][case], result[case]["predictions"],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", list(CASES))
def test_tf_keras_load_model_loads_and_trains(saved, case):
    _, result = saved
    out = result[case]
    np.testing.assert_allclose(out["loaded_predictions"], out["predictions"], rtol=1e-6,
                               atol=1e-7)
    assert out["loaded_optimizer"].startswith("tf_ftrl.legacy")
    assert out["loaded_trains"]


@pytest.mark.parametrize("case", list(CASES))
def test_saved_model_holds_every_slot(saved, case):
    _, result = saved
    assert result[case]["slots_in_saved_model"]


def test_slot_variables_where_a_saved_model_can_remake_them(saved):
    """Element-wise state in the variables' dtype keeps the slot variables TensorFlow and
    tf_keras write (and restore into keras.optimizers' state); the others are the optimizer's
    own variables in the SavedModel."""
    _, result = saved
    for case in CASES:
        keys = result[case]["slot_variable_keys"]
        if case in NARROW_OR_ROWWISE:
            assert keys == [], case
        else:
            assert len(keys) == len(result[case]["slot_shapes"]), case


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoints_after_a_saved_model_keep_slot_variables(saved, case):
    _, result = saved
    out = result[case]
    assert len(out["checkpoint_slot_keys"]) == len(out["slot_shapes"])
    assert out["checkpoint_restores_slots"]


def test_keras3_saved_model_serves_and_restores_row_wise_bfloat16_state(saved_keras3, served):
    assert saved_keras3["slot_dtypes"] == ["bfloat16"]
    assert [40] in saved_keras3["slot_shapes"]  # the table's row-wise accumulator
    np.testing.assert_allclose(served["predictions"][KERAS3_CASE], saved_keras3["predictions"],
                               rtol=1e-6, atol=1e-7)
    assert saved_keras3["saved_model_restores_slots"]


def test_parameter_server_saved_model_serves(saved_ps, served):
    """Row-wise bfloat16 state of a table sharded over two parameter servers (each shard's
    accumulator one value per row of the shard)."""
    assert saved_ps["table_shards"] == 2
    assert [20] in saved_ps["slot_shapes"] and saved_ps["slot_dtypes"] == ["bfloat16"]
    np.testing.assert_allclose(served["predictions"][PS_CASE], saved_ps["predictions"],
                               rtol=1e-6, atol=1e-7)
