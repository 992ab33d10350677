"""The right front end, or a clear error: tf_ftrl's Keras 3 optimizers given to a tf_keras model,
models saved with tf_ftrl's optimizers loaded in a fresh process after `import tf_ftrl` alone,
and `tf_ftrl.custom_objects` for code that passes custom_objects to load_model.

Every check that saves or loads runs in fresh processes (tests/support/front_end_worker.py), so
that a load sees only what that process's imports registered.
"""

import numpy as np
import pytest

from tests.support import front_end_worker, workers

WORKER = "tests.support.front_end_worker"
TIMEOUT_S = 240
OPTIMIZERS = ("Ftrl", "Adagrad")


def _run(*args, legacy_keras):
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if legacy_keras else None)
    return workers.run_for_result("-m", WORKER, *args, env=env, timeout=TIMEOUT_S)


def _assert_same_state(loaded, saved):
    assert loaded["class"] == saved["class"]
    assert loaded["learning_rate"] == saved["learning_rate"]
    assert len(loaded["weights"]) == len(saved["weights"])
    for actual, expected in zip(loaded["weights"], saved["weights"]):
        np.testing.assert_array_equal(actual, expected)


def _assert_loaded(loaded, saved, fmt):
    """An .h5 or .keras file gives back the optimizer's weights (tf_keras's own legacy optimizers
    keep none in a .keras file); a SavedModel, in tf_keras, only its class and config (its
    load_model compiles a fresh optimizer: the same with tf_keras's own)."""
    if fmt in ("h5", "keras"):
        _assert_same_state(loaded, saved)
    else:
        assert (loaded["class"], loaded["learning_rate"]) == (saved["class"],
                                                              saved["learning_rate"])


@pytest.fixture(scope="module")
def legacy_saved(tmp_path_factory):
    pytest.importorskip("tf_keras")
    directory = tmp_path_factory.mktemp("legacy")
    return directory, _run("save_legacy", directory, legacy_keras=True)


@pytest.fixture(scope="module")
def keras_saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keras")
    return directory, _run("save_keras", directory, legacy_keras=False)


def test_keras_3_optimizer_given_to_tf_keras_names_the_legacy_class():
    pytest.importorskip("tf_keras")
    errors = _run("wrong_class", legacy_keras=True)
    for name in OPTIMIZERS:
        kind, message = errors[name]
        assert kind == "ValueError"
        assert f"a Keras 3 optimizer; for a tf_keras (Keras 2) model, use tf_ftrl.legacy.{name}" \
            in message


def test_str_names_the_legacy_class():
    import tf_ftrl

    assert str(tf_ftrl.Adagrad()) == (
        "<tf_ftrl.Adagrad: a Keras 3 optimizer; for a tf_keras (Keras 2) model, use "
        "tf_ftrl.legacy.Adagrad>")


def test_import_tf_ftrl_alone_loads_tf_keras_models(legacy_saved):
    directory, saved = legacy_saved
    loaded = _run("load_legacy", directory, legacy_keras=True)
    assert loaded["tf_keras_in_use"].startswith("tf_keras")
    for name in OPTIMIZERS:
        assert saved[name]["class"] == f"tf_ftrl.legacy.{name.lower()}.{name}"
        for fmt in front_end_worker.LEGACY_FORMATS:
            _assert_loaded(loaded[f"{name}/{fmt}"], saved[name], fmt)


def test_custom_objects_load_tf_keras_models(legacy_saved):
    directory, saved = legacy_saved
    # tf_keras imported after tf_ftrl, without TF_USE_LEGACY_KERAS: nothing registered until
    # tf_ftrl.custom_objects is read.
    loaded = _run("load_legacy_custom_objects", directory, legacy_keras=False)
    assert loaded["tf_keras_in_use"] == "tf_keras"
    for name in OPTIMIZERS:
        for fmt in front_end_worker.LEGACY_FORMATS:
            if fmt == "keras":  # tf_keras's .keras files name the module to import
                assert loaded[f"{name}/{fmt}/without"] is None
            else:
                assert f"Unknown optimizer: 'tf_ftrl>{name}'" in loaded[f"{name}/{fmt}/without"]
            _assert_loaded(loaded[f"{name}/{fmt}"], saved[name], fmt)


def test_custom_objects_load_keras_3_models(keras_saved):
    directory, saved = keras_saved
    loaded = _run("load_keras_custom_objects", directory, legacy_keras=False)
    for name in OPTIMIZERS:
        assert saved[name]["class"] == f"tf_ftrl.optimizers.{name.lower()}.{name}"
        _assert_same_state(loaded[name], saved[name])


def test_keras_3_custom_objects():
    import tf_ftrl

    assert tf_ftrl.optimizers.custom_objects == {
        "tf_ftrl>Ftrl": tf_ftrl.Ftrl, "Ftrl": tf_ftrl.Ftrl,
        "tf_ftrl>Adagrad": tf_ftrl.Adagrad, "Adagrad": tf_ftrl.Adagrad}


def test_keras_files_keep_legacy_state_under_mirrored_strategy(tmp_path):
    pytest.importorskip("tf_keras")
    result = _run("legacy_keras_file_resume", tmp_path, legacy_keras=True)
    for name in OPTIMIZERS:
        out = result[name]
        # 96 examples in batches of 16: 6 steps in the epoch before the save.
        assert out["iterations"] == [6, 6]
        assert out["weights_equal"] and out["state_equal"]
        # A loaded file saved again before the first step keeps the state it was loaded with.
        assert out["resaved_weights_equal"] and out["resaved_state_equal"]
        # iterations, then each variable's slots: all exact (bfloat16 into float32).
        assert len(out["converted_exactly"]) == (7 if name == "Ftrl" else 4)
        assert all(out["converted_exactly"]), out["converted_exactly"]
        assert any("rowwise=True" in w for w in out["conversion_warnings"])
        assert any("another dtype" in w for w in out["conversion_warnings"])
        # The other model's own 6 steps, its state not taken from the file.
        assert out["other_model"]["iterations"] == 6
        assert any(f"{name}: the optimizer state in the Keras file was not loaded: it holds "
                   f"{len(out['converted_exactly'])} values" in w
                   for w in out["other_model"]["warnings"]), out["other_model"]["warnings"]
        # tf_keras's own optimizers' files and ours do not load into each other (other layouts).
        assert out["stock_file"]["iterations"] == 6
        assert any(f"{name}: the optimizer state in the Keras file was not loaded: another "
                   "optimizer wrote it" in w for w in out["stock_file"]["warnings"])
        assert out["stock_file"]["stock_iterations"] == 6
        # Under mixed precision (tf_keras's LossScaleOptimizer around ours) too.
        assert out["mixed"]["wrapper"] == "LossScaleOptimizer"
        assert out["mixed"]["iterations"] == 6 and out["mixed"]["state_equal"]
