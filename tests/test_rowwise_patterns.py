"""`rowwise` as a list of regular expressions: row-wise state for the variables (of rank 2 and
more) whose names match, element-wise for the others, in both Keras front ends (a fresh process
each, tf_keras under TF_USE_LEGACY_KERAS=1): each variable's step equals the step of the
optimizer with `rowwise=True` or `rowwise=False` that it follows, bit for bit, on one device and
under MirroredStrategy with two replicas; slot shapes; the config and `.keras` round trips;
state saved with `rowwise=True` converted for the unmatched variables only."""

import numpy as np
import pytest

import tf_ftrl
from tests.support import workers

PATTERNS_CHECK = """
import sys, warnings
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tf_ftrl
from tests.support.workers import print_result
flavour, name, path = sys.argv[1], sys.argv[2], sys.argv[3]
if flavour == "legacy":
    import tf_keras as keras, tf_ftrl.legacy
    optimizer_class = getattr(tf_ftrl.legacy, name)
else:
    import keras
    optimizer_class = getattr(tf_ftrl, name)
rng = np.random.default_rng(5)
x = rng.integers(0, 50, (64, 3)).astype("int32")
y = rng.normal(size=(64, 1)).astype("float32")


def trained(rowwise, strategy=None, filename=None):
    scope = strategy.scope() if strategy else tf.init_scope()
    with scope:
        keras.utils.set_random_seed(1)
        inputs = keras.Input((3,), dtype="int32")
        hidden = keras.layers.Dense(2, name="hidden")(keras.layers.Flatten()(
            keras.layers.Embedding(50, 4, name="table")(inputs)))
        model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
        model.compile(optimizer=optimizer_class(learning_rate=0.1, rowwise=rowwise), loss="mse")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)  # one step
    if filename:
        model.save(filename)
    return model


def key_of(name):
    # "table/embeddings" of a Keras 3 path or a tf_keras name.
    return "/".join(name.split(":")[0].split("/")[-2:])


def build(optimizer, variables):
    # tf_keras's optimizers have no public build: _create_all_weights makes their slots.
    (getattr(optimizer, "build", None) or optimizer._create_all_weights)(variables)


def state(model):
    optimizer = model.optimizer
    out = {}
    for variable in model.trainable_variables:
        key = key_of(getattr(variable, "path", None) or variable.name)
        slots = [optimizer.get_slot(variable, slot) for slot in optimizer.get_slot_names()]
        out[key] = [np.asarray(variable.numpy()).tolist()] + [
            np.asarray(slot.numpy(), np.float64).tolist() for slot in slots]
    return out


patterns = ["tab.e/embeddings$", "^nothing$"]
model = trained(patterns, filename=path)
optimizer = model.optimizer
config = optimizer.get_config()
result = {"patterns": state(model), "all": state(trained(True)), "none": state(trained(False)),
          "config": config.get("rowwise"),
          "round_trip": list(type(optimizer).from_config(config).rowwise),
          "kernels": {key_of(k): v for k, v in optimizer.kernels_used().items()}}
mirrored = trained(patterns, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
result["mirrored"] = state(mirrored)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loaded = keras.models.load_model(path)
    build(loaded.optimizer, loaded.trainable_variables)  # (tf_keras: the state waits for it)
result["loaded"] = state(loaded)
result["loaded_rowwise"] = list(loaded.optimizer.rowwise)
result["load_warnings"] = [str(w.message) for w in caught if "rowwise" in str(w.message)]
# State saved with rowwise=True, loaded into the patterns' optimizer: the unmatched kernels'
# per-row accumulators become element-wise ones; the table's stays.
source = trained(True, filename=path)
converted = trained(patterns)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if flavour == "legacy":
        converted.optimizer.set_weights(source.optimizer.get_weights())
    else:
        converted.load_weights(path)
result["converted"] = state(converted)
result["convert_warnings"] = [str(w.message) for w in caught if "rowwise" in str(w.message)]
print_result(result)
"""


@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
@pytest.mark.parametrize("flavour", ["keras", "legacy"])
def test_patterns_choose_the_rowwise_variables(tmp_path, flavour, name):
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if flavour == "legacy" else "0")
    out = workers.run_for_result("-c", PATTERNS_CHECK, flavour, name,
                                 str(tmp_path / "model.keras"), timeout=300, env=env)
    table, kernels = "table/embeddings", ["hidden/kernel", "out/kernel"]
    assert set(out["patterns"]) == {table, *kernels, "hidden/bias", "out/bias"}
    # The table (rank 2, its name matches) is row-wise: its step is rowwise=True's, bit for bit.
    assert out["patterns"][table] == out["all"][table]
    assert np.shape(out["patterns"][table][1]) == (50,)
    # The kernels (rank 2, unmatched) and the biases are element-wise: rowwise=False's step.
    for key in kernels + ["hidden/bias", "out/bias"]:
        assert out["patterns"][key] == out["none"][key], key
        assert np.shape(out["patterns"][key][1]) == np.shape(out["patterns"][key][0])
    assert np.shape(out["all"]["hidden/kernel"][1]) == (12,)  # (rowwise=True: per row)
    assert out["kernels"][table] == f"sparse_apply_rowwise_{name.lower()}"
    assert "rowwise" not in out["kernels"]["hidden/kernel"]
    assert out["config"] == ["tab.e/embeddings$", "^nothing$"]
    assert out["round_trip"] == out["config"]
    # Two replicas: the replicas' gradients summed, the same layouts (tf_keras names each
    # replica's copy ".../replica_1": the patterns see the name without it).
    for key in out["patterns"]:
        assert [np.shape(v) for v in out["mirrored"][key]] == \
            [np.shape(v) for v in out["patterns"][key]], key
    # A `.keras` round trip keeps the patterns and the state, converting nothing.
    assert out["loaded_rowwise"] == ["tab.e/embeddings$", "^nothing$"]
    assert out["loaded"] == out["patterns"] and out["load_warnings"] == []
    # rowwise=True's state into the patterns: the kernels' accumulators converted, said once.
    assert [np.shape(v) for v in out["converted"]["hidden/kernel"]] == [(12, 2)] * len(
        out["converted"]["hidden/kernel"])
    assert np.shape(out["converted"][table][1]) == (50,)
    assert len(out["convert_warnings"]) == 1, out["convert_warnings"]
    assert "rowwise=True" in out["convert_warnings"][0]
    assert "kernel" in out["convert_warnings"][0] and "table" not in out["convert_warnings"][0]


@pytest.mark.parametrize("make", [tf_ftrl.Ftrl, tf_ftrl.Adagrad])
@pytest.mark.parametrize("value, message", [
    ("embedding", r"must be True, False or a non-empty list of regular expressions"),
    ([], r"must be True, False or a non-empty list"),
    ([1], r"Received: rowwise=\[1\]"),
    (["("], r"takes regular expressions; '\(' is not one"),
])
def test_bad_rowwise_values_are_named(make, value, message):
    with pytest.raises(ValueError, match=message):
        make(rowwise=value)


def test_legacy_bad_rowwise_values_are_named():
    import tf_ftrl.legacy
    with pytest.raises(ValueError, match=r"must be True, False or a non-empty list"):
        tf_ftrl.legacy.Adagrad(rowwise="embedding")


def test_legacy_patterns_see_the_name_of_a_partitioned_table():
    # ParameterServerStrategy's shards are variables named ".../part_N", MirroredStrategy's
    # copies ".../replica_N": the patterns see the table's own name.
    import tensorflow as tf
    import tf_ftrl.legacy
    optimizer = tf_ftrl.legacy.Adagrad(rowwise=["table/embeddings$"])
    for name in ["table/embeddings", "table/embeddings/part_3", "table/embeddings/replica_1"]:
        assert optimizer._is_rowwise(tf.Variable(tf.zeros([4, 2]), name=name)), name
    for name in ["table/embeddings_2", "hidden/kernel"]:
        assert not optimizer._is_rowwise(tf.Variable(tf.zeros([4, 2]), name=name)), name
    assert not optimizer._is_rowwise(tf.Variable(tf.zeros([4]), name="table/embeddings"))
