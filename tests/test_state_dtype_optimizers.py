"""`state_dtype="bfloat16"` in both Keras front ends, element-wise and row-wise
(tests/support/state_dtype_worker.py, a fresh process per front end): a step rounded to nearest
is the float32-state step rounded once, stochastic rounding repeats its bits, the config keeps
the settings, checkpoints and files round-trip and convert float32 state, MirroredStrategy's two
replicas hold the same bits."""

import zlib

import pytest

from tests.support import workers

FRONT_ENDS = ["keras3", "tf_keras"]
OPTIMIZERS = ["Ftrl", "Ftrl_rowwise", "Adagrad", "Adagrad_rowwise"]


@pytest.fixture(scope="module", params=FRONT_ENDS)
def run(request):
    seed = zlib.crc32(b"state_dtype" + request.param.encode(), request.config.rng_run_seed)
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if request.param == "tf_keras" else None)
    return workers.run_for_result("-m", "tests.support.state_dtype_worker", str(seed), env=env,
                                  timeout=400)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_to_nearest_is_the_float32_step_rounded_once(run, name):
    result = run[name]
    assert result["nearest_var_equal"]
    assert result["nearest_state_rounded_once"]
    assert result["slot_dtypes"] == ["bfloat16"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_stochastic_rounding_repeats_and_config_keeps_the_settings(run, name):
    assert run[name]["stochastic_deterministic"]
    assert run[name]["config"] == ["bfloat16", True, "bfloat16", True]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checkpoints_round_trip_and_convert(run, name):
    checkpoint = run[name]["checkpoint"]
    assert checkpoint["round_trip_equal"]
    # float32 state restored into bfloat16 state (before and after the optimizer is built):
    # each value rounded once, and a warning says so; bfloat16 into float32: exact.
    assert checkpoint["from_float32_built_True"] == [True, True]
    assert checkpoint["from_float32_built_False"] == [True, True]
    assert checkpoint["to_float32"][0]
    assert set(checkpoint["to_float32"][1]) == {"float32"}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_files_round_trip_and_convert(run, name):
    file = run[name]["file"]
    assert file["loaded_state_dtype"] == "bfloat16"
    assert file["equal"] and file["dtypes"] == ["bfloat16"]
    assert file["from_float32"] == [True, True]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_mirrored_replicas_hold_the_same_bits(run, name):
    mirrored = run[name]["mirrored"]
    assert mirrored == {"replicas": 2, "equal": True, "dtype": "bfloat16"}


def test_state_dtype_is_checked():
    import tf_ftrl

    with pytest.raises(ValueError, match='`state_dtype` must be None, "bfloat16" or "float16". '
                                         "Received: state_dtype='int8'"):
        tf_ftrl.Ftrl(state_dtype="int8")
    assert tf_ftrl.Adagrad(state_dtype="float16").state_dtype == "float16"
