"""What docs/porting.md says about the stock optimizers it ports from stays true: TensorFlow 1's
`FtrlOptimizer` and `AdagradOptimizer` (in this process) and tf_keras's optimizers (in a process
of its own, tests/support/porting_worker.py), each against tf_ftrl on the same inputs."""

import zlib

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import workers

ROWS, DIM = 30, 4


def _sparse_gradients(rng, steps):
    """Sparse gradients whose indices repeat, as (values, indices) float64 arrays."""
    return [(rng.normal(size=(16, DIM)), rng.integers(0, ROWS, 16)) for _ in range(steps)]


def _tf1_run(optimizer, start, gradients):
    """The table after TF1's optimizer applied `gradients` in graph mode, and its slots by
    variable name."""
    graph = tf.Graph()
    with graph.as_default():
        table = tf.compat.v1.get_variable("table", initializer=start, use_resource=True)
        values = tf.compat.v1.placeholder(tf.float64, [None, DIM])
        indices = tf.compat.v1.placeholder(tf.int64, [None])
        train = optimizer().apply_gradients(
            [(tf.IndexedSlices(values, indices, tf.constant([ROWS, DIM], tf.int64)), table)])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for v, i in gradients:
                session.run(train, {values: v, indices: i})
            variables = {v.op.name: session.run(v) for v in tf.compat.v1.global_variables()}
    return variables.pop("table"), variables


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_tf1_optimizers_equal_the_ops_with_the_documented_arguments(rng, name):
    start = rng.normal(size=(ROWS, DIM))
    gradients = _sparse_gradients(rng, 3)
    lr, l1, l2, shrinkage, beta = 0.2, 0.01, 0.03, 0.02, 0.5
    if name == "Ftrl":
        tf1 = lambda: tf.compat.v1.train.FtrlOptimizer(  # noqa: E731
            lr, l1_regularization_strength=l1, l2_regularization_strength=l2,
            l2_shrinkage_regularization_strength=shrinkage, beta=beta)
    else:
        tf1 = lambda: tf.compat.v1.train.AdagradOptimizer(lr)  # noqa: E731
    expected, slots = _tf1_run(tf1, start, gradients)
    # The slots' names, which the guide tells to read with tf.train.load_variable.
    assert sorted(slots) == (["table/Ftrl", "table/Ftrl_1"] if name == "Ftrl"
                             else ["table/Adagrad"])

    # TF1 keeps its hyperparameters as float32 tensors, also for float64 variables.
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    table = tf.Variable(start)
    accumulator = tf.Variable(np.full_like(start, 0.1))  # a float64 initializer
    linear = tf.Variable(np.zeros_like(start))
    for values, indices in gradients:
        if name == "Ftrl":
            tf_ftrl.ops.sparse_apply_ftrl(table, accumulator, linear, values, indices, lr=f32(lr),
                                          l1=f32(l1), l2=f32(l2 + beta / (2 * lr)),
                                          l2_shrinkage=f32(shrinkage))
        else:
            # TF1's Adagrad has no epsilon: epsilon=0.0 is its update.
            tf_ftrl.ops.sparse_apply_adagrad(table, accumulator, values, indices, lr=f32(lr),
                                             epsilon=0.0)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(accumulator.numpy(), slots[f"table/{name}"], rtol=1e-12)


def test_tf1_slots_read_with_load_variable_continue_training(rng, tmp_path):
    # The guide's recipe: TF1's slots, read from its checkpoint, continue the same run in ours.
    start = rng.normal(size=(ROWS, DIM))
    first, second = _sparse_gradients(rng, 2), _sparse_gradients(rng, 1)
    lr, l1 = 0.1, 0.02
    graph = tf.Graph()
    with graph.as_default():
        table = tf.compat.v1.get_variable("table", initializer=start, use_resource=True)
        values = tf.compat.v1.placeholder(tf.float64, [None, DIM])
        indices = tf.compat.v1.placeholder(tf.int64, [None])
        train = tf.compat.v1.train.FtrlOptimizer(lr, l1_regularization_strength=l1) \
            .apply_gradients([(tf.IndexedSlices(values, indices), table)])
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for v, i in first:
                session.run(train, {values: v, indices: i})
            path = saver.save(session, str(tmp_path / "tf1"))
            for v, i in second:
                session.run(train, {values: v, indices: i})
            expected = session.run(table)

    model_table = tf.Variable(tf.train.load_variable(path, "table"))
    # TF1's hyperparameters are float32 tensors: the same values here.
    optimizer = tf_ftrl.Ftrl(learning_rate=float(np.float32(lr)),
                             l1_regularization_strength=float(np.float32(l1)))
    optimizer.build([model_table])
    optimizer.get_slot(model_table, "accumulator").assign(
        tf.train.load_variable(path, "table/Ftrl"))
    optimizer.get_slot(model_table, "linear").assign(tf.train.load_variable(path, "table/Ftrl_1"))
    for v, i in second:
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(v), tf.constant(i),
                                                     tf.constant([ROWS, DIM])), model_table)])
    np.testing.assert_allclose(model_table.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def tf_keras_optimizers(request):
    seed = zlib.crc32(b"porting", request.config.rng_run_seed)
    return workers.run_for_result("-m", "tests.support.porting_worker", str(seed),
                                  env=workers.environment(TF_USE_LEGACY_KERAS="1"), timeout=240)


@pytest.mark.parametrize("name", ["default Adagrad", "default Ftrl", "legacy Adagrad",
                                  "legacy Ftrl", "tf_ftrl Adagrad", "tf_ftrl Ftrl"])
def test_tf_keras_optimizers_sum_a_repeated_id(tf_keras_optimizers, name):
    # One id four times with gradient 1: (4 * 1)^2 = 16 (plus FTRL's initial 0.1) on its row.
    accumulator = tf_keras_optimizers[name]["accumulator"]
    assert accumulator[1] == pytest.approx(16.0 if "Adagrad" in name else 16.1)


@pytest.mark.parametrize("name,recomputes_every_row", [
    ("default Ftrl", True), ("legacy Ftrl", False), ("tf_ftrl Ftrl", False),
    ("default Adagrad", False), ("legacy Adagrad", False), ("tf_ftrl Adagrad", False)])
def test_which_tf_keras_optimizers_recompute_untouched_rows(tf_keras_optimizers, name,
                                                            recomputes_every_row):
    weights = tf_keras_optimizers[name]["weights"]
    untouched = [weights[0], weights[2]]
    # Rows start at 0.5; FTRL recomputed from zero slots gives 0.
    assert (untouched != [0.5, 0.5]) == recomputes_every_row


def test_tf_keras_adagrad_epsilon(tf_keras_optimizers):
    # Legacy: epsilon outside the root, as ours (float rounding apart); default: inside.
    assert tf_keras_optimizers["legacy_adagrad_vs_ours"] < 1e-6
    assert tf_keras_optimizers["default_adagrad_vs_ours"] > 1e-3
