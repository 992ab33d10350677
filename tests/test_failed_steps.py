"""A step with one bad index changes nothing: not the variable whose gradient holds it, not the
step's other variables (sparse or dense), their slots, the weight decay or the step count; the
error names the variable, the position, the value and the bound; the steps after it give the bits
of a run that never saw it. Both front ends (a fresh process each, tf_keras under
TF_USE_LEGACY_KERAS=1), eagerly, in a `tf.function`, and under MirroredStrategy with two replicas
where only the second replica's batch holds the bad index.

(Each fused op checks its own indices before it writes; without the optimizers' check of the
whole step first, the step's other updates, run before the failing one, would stay applied.)
The check op itself on the edges of its reduction: the first bad index anywhere in lists of
several lengths, negative int32 indices of a table of more than 2^32 rows, int64 extremes, empty
lists, and the list named."""

import pytest

from tests.support import workers

FAILED_STEP_CHECK = """
import sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tf_ftrl
from tests.support.workers import print_result
flavour, seed = sys.argv[1], int(sys.argv[2])
if flavour == "legacy":
    import tf_ftrl.legacy as front
else:
    import keras
    front = tf_ftrl
ROWS, DIM, BAD = 6, 4, 7
CASES = {
    "ftrl": ("Ftrl", dict(l1_regularization_strength=0.01, l2_regularization_strength=0.02)),
    "adagrad": ("Adagrad", {}),
    "rowwise_ftrl_bfloat16": ("Ftrl", dict(rowwise=True, state_dtype="bfloat16")),
}
rng = np.random.default_rng(seed)
initial = [rng.normal(size=shape).astype("float32") for shape in ((ROWS, DIM), (ROWS, DIM), (DIM,))]
gradients = [[rng.normal(size=shape).astype("float32") for shape in ((3, DIM), (2, DIM), (DIM,))]
             for _ in range(4)]


def made(case, strategy, mode):
    name, kwargs = CASES[case]
    if flavour != "legacy":
        kwargs = dict(kwargs, weight_decay=0.05)
    with strategy.scope():
        variables = [(tf.Variable if flavour == "legacy" else keras.Variable)(value, name=name)
                     for value, name in zip(initial, ("table", "other", "bias"))]
        optimizer = getattr(front, name)(learning_rate=0.1, **kwargs)
        if flavour != "legacy" and mode == "mirrored":
            # Keras 3 optimizers (its own too) cannot build in a replica's first step.
            optimizer.build(variables)
        return variables, optimizer


def state(variables, optimizer, strategy):
    optimizer_variables = optimizer.variables() if flavour == "legacy" else optimizer.variables
    values = []
    for variable in variables + list(optimizer_variables):
        variable = getattr(variable, "value", variable) if flavour != "legacy" else variable
        values += [np.asarray(copy.numpy(), "float32")
                   for copy in strategy.experimental_local_results(variable)]
    return values


def step_function(variables, optimizer, strategy, mode, k, bad):
    # The table's indices hold BAD where `bad` (in the second replica only, under the strategy).
    def step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        wrong = tf.logical_and(bad, tf.equal(replica, 1 if mode == "mirrored" else 0))
        table_indices = tf.where(wrong, tf.constant([1, BAD, 1]), tf.constant([1, 2, 1]))
        table, other, bias = gradients[k]
        optimizer.apply_gradients([
            (tf.IndexedSlices(tf.constant(table), table_indices, tf.constant([ROWS, DIM])),
             variables[0]),
            (tf.IndexedSlices(tf.constant(other), tf.constant([0, 3]), tf.constant([ROWS, DIM])),
             variables[1]),
            (tf.constant(bias), variables[2])])
    if mode == "eager":
        return step
    if mode == "function":
        return tf.function(step)
    return tf.function(lambda: strategy.run(step))


def run(case, mode):
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mode == "mirrored"
                else tf.distribute.get_strategy())
    variables, optimizer = made(case, strategy, mode)
    twin_variables, twin = made(case, strategy, mode)
    for k in range(2):
        step_function(variables, optimizer, strategy, mode, k, False)()
        step_function(twin_variables, twin, strategy, mode, k, False)()
    before = state(variables, optimizer, strategy)
    error = None
    try:
        step_function(variables, optimizer, strategy, mode, 2, True)()
    except tf.errors.InvalidArgumentError as e:
        error = str(e)
    after = state(variables, optimizer, strategy)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if not np.array_equal(a, b)]
    # The next steps, against the twin that never saw the failed one.
    for k in (2, 3):
        step_function(variables, optimizer, strategy, mode, k, False)()
        step_function(twin_variables, twin, strategy, mode, k, False)()
    continued = all(np.array_equal(a, b) for a, b in zip(
        state(variables, optimizer, strategy), state(twin_variables, twin, strategy)))
    return {"error": error, "changed": changed, "arrays": len(before), "continued": continued}


print_result({f"{case}/{mode}": run(case, mode)
              for case in CASES for mode in ("eager", "function", "mirrored")})
"""


@pytest.fixture(scope="module", params=["keras3", "legacy"])
def failed_steps(request):
    if request.param == "legacy":
        pytest.importorskip("tf_keras")
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if request.param == "legacy" else "0")
    seed = 1 + (request.param == "legacy")
    return request.param, workers.run_for_result("-c", FAILED_STEP_CHECK, request.param,
                                                 str(seed), env=env, timeout=240)


def test_a_step_with_a_bad_index_changes_nothing_and_names_it(failed_steps):
    flavour, results = failed_steps
    assert len(results) == 9
    for name, result in results.items():
        assert result["error"] is not None, name
        assert "the sparse gradient of table" in result["error"], (name, result["error"])
        assert "indices[1] = 7 is not in [0, 6)" in result["error"], (name, result["error"])
        # Three variables and their slots, and the step count, on each copy.
        assert result["arrays"] >= 7, name
        assert result["changed"] == [], (flavour, name, result)


def test_the_steps_after_a_failed_one_are_those_of_a_run_without_it(failed_steps):
    flavour, results = failed_steps
    for name, result in results.items():
        assert result["continued"], (flavour, name)


# --- the check itself (FusedCheckSparseIndices), on the edges of its reduction ---


def _check(indices, num_rows, names=None):
    import tensorflow as tf

    from tf_ftrl import ops

    names = names or [f"v{i}" for i in range(len(indices))]
    ops.load_library().fused_check_sparse_indices(
        indices=indices, num_rows=tf.constant(num_rows, tf.int64), names=names)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("n", [1, 7, 64, 4099])
def test_check_finds_the_first_bad_index_anywhere(rng, dtype, n):
    import tensorflow as tf

    rows = 1000
    values = rng.integers(0, rows, n)
    _check([tf.constant(values, dtype)], [rows])  # all in range
    for bad in (rows, -1, rows + 12345):
        position = int(rng.integers(0, n))
        wrong = values.copy()
        wrong[position] = bad
        if position + 1 < n:  # a later bad one too: the first is named
            wrong[int(rng.integers(position + 1, n))] = -7
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"v0: indices\[{position}\] = {bad} is not in \[0, {rows}\)"):
            _check([tf.constant(wrong, dtype)], [rows])


def test_check_edges_of_the_index_types():
    import tensorflow as tf

    # int32 indices of a table with more rows than 2^32: a negative one is still caught (its
    # unsigned value is below the row count).
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[1\] = -1 is not in"):
        _check([tf.constant([5, -1], tf.int32)], [5_000_000_000])
    _check([tf.constant([2**31 - 1], tf.int32)], [5_000_000_000])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"indices\[0\] = {2**40} is not in \[0, 10\)"):
        _check([tf.constant([2**40], tf.int64)], [10])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"indices\[0\] = -9223372036854775808"):
        _check([tf.constant([-(2**63)], tf.int64)], [10])
    _check([tf.constant([], tf.int32), tf.constant([0], tf.int64)], [0, 1])  # empty: nothing
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"indices\[0\] = 0 is not in \[0, 0\)"):
        _check([tf.constant([0], tf.int32)], [0])


def test_check_names_the_list_that_holds_the_bad_index():
    import tensorflow as tf

    lists = [tf.constant([0, 1], tf.int32), tf.constant([2, 3], tf.int64),
             tf.constant([4, 9], tf.int32)]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"the sparse gradient of deep/table: indices\[1\] = 9 is not in "
                             r"\[0, 5\)"):
        _check(lists, [5, 5, 5], names=["a", "b", "deep/table"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_rows must be a vector of 3"):
        _check(lists, [5, 5], names=["a", "b", "c"])
