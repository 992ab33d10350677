"""Regularized embedding tables: the dense-gradient warning, `optimizer.kernels_used()`, and
`tf_ftrl.sparse_regularizers(model)`, which keeps their updates sparse.

The model is DeepFM as DeepCTR builds it (tf_ftrl.examples.deepfm), with 1M-row tables, trained
in a fresh process per Keras front end (tests/support/sparse_regularizer_worker.py); the penalty
itself is checked here against its whole-table counterpart's gradient.
"""

import zlib

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tf_ftrl.regularizers import looked_up_rows_penalty
from tests.support import workers

WORKER = "tests.support.sparse_regularizer_worker"
FIELDS = 3


@pytest.fixture(scope="module", params=["keras3", "tf_keras"])
def trained(request):
    # Seeded like the rng fixture: fresh each run, the same again with --rng-seed N.
    seed = zlib.crc32(request.param.encode(), request.config.rng_run_seed)
    env = workers.environment(
        TF_USE_LEGACY_KERAS="1" if request.param == "tf_keras" else None)
    result = workers.run_for_result("-m", WORKER, str(seed), env=env, timeout=300)
    result["seed"] = seed
    return result


def _tables(kernels, prefix):
    return {name: update for name, update in kernels.items() if name.startswith(prefix)}


def test_dense_gradient_warning_names_each_table_once(trained):
    # Two steps, 2 * FIELDS regularized tables (l2 and l2(0)): one warning per table.
    messages = trained["warnings"]
    assert len(messages) == 2 * FIELDS, messages
    for i in range(FIELDS):
        for table in (f"sparse_emb_C{i + 1}", f"linear_C{i + 1}"):
            assert sum(f"'{table}/embeddings'" in m for m in messages) == 1, (table, messages)
    assert all("regularizer" in m and "sparse_regularizers" in m and "1000000 x" in m
               for m in messages)
    assert trained["warnings_after"] == []


def test_kernels_used_shows_the_dense_kernel_then_the_sparse_one(trained):
    before, after = trained["kernels_before"], trained["kernels_after"]
    assert len(_tables(before, "sparse_emb")) == FIELDS
    # Dense gradients: the multi-tensor dense kernel, with the network's variables.
    assert set(_tables(before, "sparse_emb").values()) == {"multi_apply_adagrad"}
    assert set(_tables(before, "linear").values()) == {"multi_apply_adagrad"}
    assert set(_tables(after, "sparse_emb").values()) == {"sparse_apply_adagrad"}
    assert set(_tables(after, "linear").values()) == {"sparse_apply_adagrad"}
    # The network's own variables keep the dense kernel.
    assert "multi_apply_adagrad" in {v for k, v in after.items() if k.startswith("dense")}


def test_sparse_regularizers_says_what_it_did(trained):
    done = trained["done"]
    assert {k: v for k, v in done.items() if k.startswith("sparse_emb")} == {
        f"sparse_emb_C{i + 1}": "L2(0.05) on the looked-up rows" for i in range(FIELDS)}
    assert {k: v for k, v in done.items() if k.startswith("linear")} == {
        f"linear_C{i + 1}": "dropped: the regularizer has strength 0" for i in range(FIELDS)}
    assert trained["done_again"] == done


def test_penalty_is_the_looked_up_rows_each_once(trained):
    assert trained["penalty"] == pytest.approx(trained["penalty_reference"], rel=1e-5)
    assert trained["data_gradient_sparse"]


def test_step_matches_float64_reference_and_leaves_other_rows(trained):
    # Adagrad with the data gradient plus 2 * l2 * w on the looked-up rows.
    assert trained["step_relative_error"] < 2e-5, trained["seed"]
    assert trained["untouched_rows_changed"] == 0
    # The whole-table penalty gives the same looked-up rows, and decays all the others.
    assert trained["looked_up_rows_vs_whole_table"] < 1e-6
    assert trained["whole_table_rows_changed"] > FIELDS * 900_000


def test_trains_sparse_under_mirrored_strategy(trained):
    assert trained["mirrored_replicas"] == 2
    # A row one replica looks up gets half the penalty's gradient (docs/porting.md).
    assert trained["mirrored_rows_with_half_share"] > 0
    assert trained["mirrored_step_relative_error"] < 2e-5, trained["seed"]
    assert all(np.isfinite(trained["mirrored_loss"]))
    kernels = trained["mirrored_kernels"]
    assert set(_tables(kernels, "sparse_emb").values()) == {"sparse_apply_adagrad"}
    assert set(_tables(kernels, "linear").values()) == {"sparse_apply_adagrad"}


@pytest.fixture(scope="module")
def deepctr():
    return workers.run_for_result("-m", WORKER, "deepctr", timeout=300,
                                  env=workers.environment(TF_USE_LEGACY_KERAS="1"))


def test_deepctr_deepfm_trains_sparse_after_one_line(deepctr):
    # DeepCTR 0.9.4's DeepFM with its defaults: a linear and an FM/deep table per field, each
    # with l2(1e-5). Its embedding layers' names are DeepCTR's, found, not assumed.
    layers = deepctr["embedding_layers"]
    assert len(layers) == 2 * FIELDS
    assert deepctr["done"] == {name: "L2(1e-05) on the looked-up rows" for name in layers}
    tables = [name for name, update in deepctr["kernels_before"].items()
              if name.split("/")[0] in layers]
    assert len(tables) == 2 * FIELDS
    assert deepctr["warnings_before"] == 2 * FIELDS
    assert {deepctr["kernels_before"][t] for t in tables} == {"multi_apply_adagrad"}
    assert deepctr["warnings_after"] == 0  # (and the optimizer warns once per table anyway)
    assert {deepctr["kernels_after"][t] for t in tables} == {"sparse_apply_adagrad"}


@pytest.mark.parametrize("l1,l2", [(0.0, 0.01), (0.003, 0.0), (0.002, 0.02)])
def test_penalty_gradient_is_whole_table_gradient_on_looked_up_rows(rng, l1, l2):
    table = tf.Variable(rng.normal(size=(50, 3)).astype(np.float32))
    ids = rng.integers(0, 50, (4, 6))
    with tf.GradientTape(persistent=True) as tape:
        sparse = looked_up_rows_penalty(table, ids, l1, l2)
        whole = l1 * tf.reduce_sum(tf.abs(table)) + l2 * tf.reduce_sum(tf.square(table))
    gradient = tape.gradient(sparse, table)
    assert isinstance(gradient, tf.IndexedSlices)
    looked_up = np.unique(ids)
    # Each looked-up row once.
    assert sorted(gradient.indices.numpy().tolist()) == looked_up.tolist()
    dense = tf.convert_to_tensor(gradient).numpy()
    np.testing.assert_allclose(dense[looked_up], tape.gradient(whole, table).numpy()[looked_up],
                               rtol=1e-6)
    others = np.setdiff1d(np.arange(50), looked_up)
    assert not dense[others].any()
    w = table.numpy().astype(np.float64)[looked_up]
    assert float(sparse) == pytest.approx(l1 * np.abs(w).sum() + l2 * (w ** 2).sum(), rel=1e-5)


def test_keras3_regularizers_of_other_kinds_are_left_alone(rng):
    import keras

    class Custom(keras.regularizers.Regularizer):
        def __call__(self, x):
            return 0.01 * keras.ops.sum(keras.ops.abs(x))

    inputs = keras.Input((2,), dtype="int32")
    custom = keras.layers.Embedding(10, 2, embeddings_regularizer=Custom(), name="custom")
    plain = keras.layers.Embedding(10, 2, name="plain")
    both = keras.layers.Embedding(10, 2, name="both",
                                  embeddings_regularizer=keras.regularizers.L1L2(0.01, 0.02))
    model = keras.Model(inputs, [custom(inputs), plain(inputs), both(inputs)])
    done = tf_ftrl.sparse_regularizers(model)
    assert done == {
        "custom": "left as it is: Custom is not an L1, L2 or L1L2 regularizer (its gradient "
                  "stays dense)",
        "both": "L1L2(l1=0.01, l2=0.02) on the looked-up rows"}
    assert custom.embeddings.regularizer is not None
    assert both.embeddings.regularizer is None


def test_a_model_that_has_trained_is_traced_again():
    import keras

    model = keras.Sequential([
        keras.Input((3,), dtype="int32"),
        keras.layers.Embedding(1000, 2, embeddings_regularizer=keras.regularizers.L2(1e-3)),
        keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(tf_ftrl.Ftrl(0.1), "mse")
    x, y = np.arange(12, dtype=np.int32).reshape(4, 3), np.ones((4, 1), np.float32)
    model.fit(x, y, verbose=0)
    table = model.layers[0].embeddings.path
    assert model.optimizer.kernels_used()[table] == "multi_apply_ftrl"
    tf_ftrl.sparse_regularizers(model)
    before = model.layers[0].embeddings.numpy()
    model.fit(x, y, verbose=0)  # the same compiled model and optimizer
    assert model.optimizer.kernels_used()[table] == "sparse_apply_ftrl"
    after = model.layers[0].embeddings.numpy()
    assert not (after[12:] != before[12:]).any() and (after[:12] != before[:12]).all()


def test_unbuilt_layer_is_an_error():
    import keras

    layer = keras.layers.Embedding(10, 2, embeddings_regularizer="l2")
    with pytest.raises(ValueError, match="'embedding.*' is not built yet"):
        tf_ftrl.sparse_regularizers(layer)
    assert layer.embeddings_regularizer is not None
