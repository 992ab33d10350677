"""Saving and restoring tf_ftrl.Ftrl and tf_ftrl.Adagrad: tf.train.Checkpoint and .keras files
resumed in a new process, state interchanged with keras.optimizers.Ftrl/Adagrad, SavedModel
served in a new process, and the optimizer-variable API.

Resuming must give the same weights as training without the interruption; the fresh-process
halves live in tests/support/saving_worker.py.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl  # noqa: F401  (registers its optimizers for keras.models.load_model)
from tests.support import saving_worker, workers
from tests.support.saving_worker import FIRST_STEPS, OPTIMIZERS, RESUMED_STEPS

WORKER = "tests.support.saving_worker"
TIMEOUT_S = 120
ALL_STEPS = FIRST_STEPS + RESUMED_STEPS
# tf_ftrl against Keras's own optimizers: the same formulas evaluated in another order (Adagrad's
# epsilon, inside the square root in Keras, is 1e-12 in these tests).
INTERCHANGE_RTOL, INTERCHANGE_ATOL = 1e-6, 1e-7


def run_worker(mode, *args):
    return workers.run_for_result("-m", WORKER, mode, *args, timeout=TIMEOUT_S)


def assert_arrays_equal(actual, expected, what):
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(e, np.float32),
                                      err_msg=f"{what}[{i}]")


def assert_arrays_close(actual, expected, rtol, atol, what):
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32),
                                   rtol=rtol, atol=atol, err_msg=f"{what}[{i}]")


def assert_trained(state):
    """Guards against comparisons that pass because nothing happened."""
    assert state["optimizer_variables"][0] == ALL_STEPS, "iterations"
    untrained = saving_worker.make_model().get_weights()
    for i, (w, w0) in enumerate(zip(state["weights"], untrained)):
        assert not np.allclose(w, w0), f"weight {i} did not change"


def compiled_model(optimizer, sequential=False):
    model = saving_worker.make_model(sequential)
    model.compile(optimizer=optimizer, loss="mse")
    return model


# ------------------------------------------------------------------ resuming in a new process


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_checkpoint_resumes_in_new_process(tmp_path, kind):
    model = saving_worker.make_model()
    optimizer = saving_worker.make_optimizer(kind)
    saving_worker.train_steps(model, optimizer, 0, FIRST_STEPS)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).write(
        str(tmp_path / "ckpt"))
    saved = saving_worker.state(model, optimizer)
    saving_worker.train_steps(model, optimizer, FIRST_STEPS, ALL_STEPS)
    uninterrupted = saving_worker.state(model, optimizer)

    result = run_worker("checkpoint_resume", kind, prefix)

    assert_arrays_equal(result["restored"]["weights"], saved["weights"], "restored weights")
    assert_arrays_equal(result["restored"]["optimizer_variables"], saved["optimizer_variables"],
                        "restored optimizer variables")
    assert_arrays_equal(result["resumed"]["weights"], uninterrupted["weights"], "weights")
    assert_arrays_equal(result["resumed"]["optimizer_variables"],
                        uninterrupted["optimizer_variables"], "optimizer variables")
    assert_trained(result["resumed"])


# bfloat16 state, row-wise, rounded stochastically (the default), in a Sequential model: the
# loaded model's variables have other paths ("embedding/..." where they were
# "sequential/embedding/..."), and the rounding's seeds must not follow them.
STATES = {"float32": {}, "bfloat16_rowwise": dict(state_dtype="bfloat16", rowwise=True)}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_keras_file_resumes_in_new_process(tmp_path, kind, state):
    optimizer = saving_worker.make_optimizer(kind, **STATES[state])
    model = compiled_model(optimizer, sequential=state != "float32")
    saving_worker.fit_steps(model, 0, FIRST_STEPS)
    path = tmp_path / "model.keras"
    model.save(path)
    saved = saving_worker.state(model, optimizer)
    saving_worker.fit_steps(model, FIRST_STEPS, ALL_STEPS)
    uninterrupted = saving_worker.state(model, optimizer)

    result = run_worker("keras_resume", path)

    expected_class = type(optimizer)
    assert result["optimizer_class"] == f"{expected_class.__module__}.{expected_class.__qualname__}"
    assert result["optimizer_config"] == json.loads(json.dumps(optimizer.get_config()))
    assert_arrays_equal(result["restored"]["optimizer_variables"], saved["optimizer_variables"],
                        "restored optimizer variables")
    assert_arrays_equal(result["resumed"]["weights"], uninterrupted["weights"], "weights")
    assert_arrays_equal(result["resumed"]["optimizer_variables"],
                        uninterrupted["optimizer_variables"], "optimizer variables")
    assert_trained(result["resumed"])


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_saved_model_serves_in_new_process_without_tf_ftrl(tmp_path, kind):
    model = compiled_model(saving_worker.make_optimizer(kind))
    saving_worker.fit_steps(model, 0, ALL_STEPS)
    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(model, export_dir)
    ids, _ = saving_worker.dataset_arrays()
    expected = model.predict(ids, batch_size=len(ids), verbose=0)

    result = run_worker("serve", export_dir)

    assert result["tf_ftrl_imported"] is False
    np.testing.assert_allclose(np.asarray(result["predictions"], np.float32), expected,
                               rtol=1e-6, atol=1e-7)
    untrained = saving_worker.make_model().predict(ids, batch_size=len(ids), verbose=0)
    assert not np.allclose(expected, untrained)


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_saved_model_holds_optimizer_state(tmp_path, kind):
    optimizer = saving_worker.make_optimizer(kind)
    model = compiled_model(optimizer)
    saving_worker.fit_steps(model, 0, FIRST_STEPS)
    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(model, export_dir)

    restored_optimizer = saving_worker.make_optimizer(kind)
    restored_model = compiled_model(restored_optimizer)
    restored_optimizer.build(restored_model.trainable_variables)
    # A SavedModel's variables are a checkpoint whose root is the saved model.
    tf.train.Checkpoint(root=restored_model).read(
        os.path.join(export_dir, "variables", "variables")).assert_existing_objects_matched()

    assert_arrays_equal(restored_model.get_weights(), model.get_weights(), "weights")
    assert_arrays_equal([v.numpy() for v in restored_optimizer.variables],
                        [v.numpy() for v in optimizer.variables], "optimizer variables")


# --------------------------------------------------- state interchange with keras.optimizers


def _transfer_by_checkpoint(tmp_path, source_model, source, target_model, target):
    prefix = tf.train.Checkpoint(model=source_model, optimizer=source).write(
        str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=target_model, optimizer=target).read(prefix).assert_consumed()


def _transfer_by_keras_file(tmp_path, source_model, source, target_model, target):
    """model.save with one optimizer, model.load_weights into a model compiled with the other
    (the .keras file's weights include the optimizer's variables)."""
    path = tmp_path / "model.keras"
    source_model.save(path)
    target_model.load_weights(path)


def _transfer_by_own_variables(tmp_path, source_model, source, target_model, target):
    target_model.set_weights(source_model.get_weights())
    store = {}
    source.save_own_variables(store)
    target.load_own_variables(store)


TRANSFERS = {
    "checkpoint": _transfer_by_checkpoint,
    "keras_file": _transfer_by_keras_file,
    "own_variables": _transfer_by_own_variables,
}


@pytest.mark.parametrize("transfer", sorted(TRANSFERS))
@pytest.mark.parametrize("direction", ["keras_to_tf_ftrl", "tf_ftrl_to_keras"])
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_state_interchanges_with_keras_optimizer(tmp_path, kind, direction, transfer):
    source_impl, target_impl = direction.split("_to_")
    source = saving_worker.make_optimizer(kind, source_impl)
    source_model = compiled_model(source)
    saving_worker.fit_steps(source_model, 0, FIRST_STEPS)

    target = saving_worker.make_optimizer(kind, target_impl)
    target_model = compiled_model(target)
    target.build(target_model.trainable_variables)
    TRANSFERS[transfer](tmp_path, source_model, source, target_model, target)

    assert_arrays_equal([v.numpy() for v in target.variables],
                        [v.numpy() for v in source.variables], "transferred optimizer variables")
    assert_arrays_equal(target_model.get_weights(), source_model.get_weights(),
                        "transferred weights")

    # Continuing with either optimizer from the same state gives the same training.
    saving_worker.fit_steps(source_model, FIRST_STEPS, ALL_STEPS)
    saving_worker.fit_steps(target_model, FIRST_STEPS, ALL_STEPS)
    continued_target = saving_worker.state(target_model, target)
    continued_source = saving_worker.state(source_model, source)
    assert_arrays_close(continued_target["weights"], continued_source["weights"],
                        INTERCHANGE_RTOL, INTERCHANGE_ATOL, "weights")
    assert_arrays_close(continued_target["optimizer_variables"],
                        continued_source["optimizer_variables"],
                        INTERCHANGE_RTOL, INTERCHANGE_ATOL, "optimizer variables")
    assert_trained(continued_target)


@pytest.mark.parametrize("direction", ["keras_to_tf_ftrl", "tf_ftrl_to_keras"])
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_keras_file_loaded_then_optimizer_swapped(tmp_path, kind, direction):
    """load_model brings back the saved optimizer; its config builds the other implementation,
    which takes over the state through save_own_variables/load_own_variables."""
    source_impl, target_impl = direction.split("_to_")
    source_model = compiled_model(saving_worker.make_optimizer(kind, source_impl))
    saving_worker.fit_steps(source_model, 0, FIRST_STEPS)
    path = tmp_path / "model.keras"
    source_model.save(path)

    loaded = keras.models.load_model(path)
    loaded_optimizer = loaded.optimizer
    target_class = type(saving_worker.make_optimizer(kind, target_impl))
    config = loaded_optimizer.get_config()
    if target_impl == "keras":
        for tf_ftrl_only in ("multiply_linear_by_lr", "huge_pages", "rowwise", "state_dtype",
                             "stochastic_rounding", "warm_start"):
            config.pop(tf_ftrl_only, None)
    target = target_class.from_config(config)
    target.build(loaded.trainable_variables)
    store = {}
    loaded_optimizer.save_own_variables(store)
    target.load_own_variables(store)
    loaded.compile(optimizer=target, loss="mse")
    assert loaded.optimizer is target
    assert_arrays_equal([v.numpy() for v in target.variables],
                        [v.numpy() for v in source_model.optimizer.variables],
                        "transferred optimizer variables")

    saving_worker.fit_steps(source_model, FIRST_STEPS, ALL_STEPS)
    saving_worker.fit_steps(loaded, FIRST_STEPS, ALL_STEPS)
    assert_arrays_close(loaded.get_weights(), source_model.get_weights(),
                        INTERCHANGE_RTOL, INTERCHANGE_ATOL, "weights")
    assert_trained(saving_worker.state(loaded, target))


# ------------------------------------------------------------------- optimizer variable API


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_variables_match_keras_optimizer_names_and_order(kind):
    model = saving_worker.make_model()
    # Names are made unique within a process ("ftrl_3"); in a fresh one both would be `kind`.
    ours = saving_worker.make_optimizer(kind, "tf_ftrl", name=kind)
    theirs = saving_worker.make_optimizer(kind, "keras", name=kind)
    ours.build(model.trainable_variables)
    theirs.build(model.trainable_variables)
    assert [v.path for v in ours.variables] == [v.path for v in theirs.variables]
    assert [v.name for v in ours.variables] == [v.name for v in theirs.variables]
    assert [tuple(v.shape) for v in ours.variables] == [tuple(v.shape) for v in theirs.variables]
    assert [v.dtype for v in ours.variables] == [v.dtype for v in theirs.variables]
    # Keras 3.10+ names every slot after its variable ("..._accumulator"); earlier releases
    # named accumulators plainly "accumulator". Either way they end with the slot's name.
    slots = {"ftrl": ("accumulator", "linear"), "adagrad": ("accumulator",)}[kind]
    assert all(v.path.endswith(slots) for v in ours.variables[2:])


def _trained_pair(kind):
    """A model and optimizer after FIRST_STEPS steps."""
    model = saving_worker.make_model()
    optimizer = saving_worker.make_optimizer(kind)
    saving_worker.train_steps(model, optimizer, 0, FIRST_STEPS)
    return model, optimizer


def _set_by_own_variables(source, target):
    store = {}
    source.save_own_variables(store)
    assert sorted(store, key=int) == [str(i) for i in range(len(source.variables))]
    target.load_own_variables(store)


def _set_by_set_weights(source, target):
    target.set_weights([v.numpy() for v in source.variables])


def _set_by_assign(source, target):
    for s, t in zip(source.variables, target.variables):
        t.assign(s.numpy())


@pytest.mark.parametrize("setter", [_set_by_own_variables, _set_by_set_weights, _set_by_assign],
                         ids=["own_variables", "set_weights", "assign"])
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_optimizer_state_copies_and_training_continues_identically(kind, setter):
    source_model, source = _trained_pair(kind)
    target_model = saving_worker.make_model()
    target_model.set_weights(source_model.get_weights())
    target = saving_worker.make_optimizer(kind)
    target.build(target_model.trainable_variables)
    fresh = [v.numpy() for v in target.variables]

    setter(source, target)

    copied = [v.numpy() for v in target.variables]
    assert_arrays_equal(copied, [v.numpy() for v in source.variables], "copied variables")
    assert any(not np.array_equal(c, f) for c, f in zip(copied[2:], fresh[2:])), \
        "the source's slots were never trained, so copying them proves nothing"
    saving_worker.train_steps(source_model, source, FIRST_STEPS, ALL_STEPS)
    saving_worker.train_steps(target_model, target, FIRST_STEPS, ALL_STEPS)
    assert_arrays_equal(target_model.get_weights(), source_model.get_weights(), "weights")
    assert_arrays_equal([v.numpy() for v in target.variables],
                        [v.numpy() for v in source.variables], "optimizer variables")
    assert int(target.iterations.numpy()) == ALL_STEPS


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_checkpoint_keys_equal_keras_optimizer(tmp_path, kind):
    """A tf.train.Checkpoint of a tf_ftrl optimizer has exactly the keys and shapes of one of
    the Keras optimizer it replaces (the keys are positional)."""
    ours_model, ours = _trained_pair(kind)
    theirs_model = saving_worker.make_model()
    theirs = saving_worker.make_optimizer(kind, "keras")
    theirs.build(theirs_model.trainable_variables)
    ours_prefix = tf.train.Checkpoint(model=ours_model, optimizer=ours).write(
        str(tmp_path / "ours"))
    theirs_prefix = tf.train.Checkpoint(model=theirs_model, optimizer=theirs).write(
        str(tmp_path / "theirs"))
    ours_keys = tf.train.list_variables(ours_prefix)
    theirs_keys = tf.train.list_variables(theirs_prefix)
    assert ours_keys == theirs_keys
    assert any(key.startswith("optimizer/") for key, _ in ours_keys)
