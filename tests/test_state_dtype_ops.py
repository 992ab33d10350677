"""The fused ops with low-precision state (bfloat16 or float16 slots of a float32 var), every
optimizer, dense and sparse: against float64 references of the formulas (var to float32's
tolerance, the state to one rounding of the state dtype), exactly the float32-state op's result
rounded once to nearest, stochastic rounding (a neighbour of that result, the same bits for the
same [seed, step], others for another step, untouched rows bit-identical) and bad input rejected
with nothing written."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry

import tf_ftrl
from tests.support import numpy_reference as ref

OPTIMIZERS = ["ftrl", "adagrad", "rowwise_ftrl", "rowwise_adagrad"]
STATE_DTYPES = [tf.bfloat16, tf.float16]
H = {"ftrl": dict(lr=0.2, l1=0.01, l2=0.05, l2_shrinkage=0.02),
     "adagrad": dict(lr=0.2, epsilon=1e-3)}
ROWS, DIM = 300, 16


def _start(rng, name, state_dtype):
    """var (float32), slots (as the state dtype holds them, in float64) and the slots' names."""
    rowwise = name.startswith("rowwise")
    var = rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32).astype(np.float64)
    accum = rng.uniform(0.1, 2, (ROWS,) if rowwise else (ROWS, DIM))
    slots = {"accum": accum}
    if name.endswith("ftrl"):
        slots["linear"] = rng.uniform(-1, 1, (ROWS, DIM))
    slots = {k: tf.cast(tf.constant(v, tf.float32), state_dtype).numpy().astype(np.float64)
             for k, v in slots.items()}
    return var, slots


def _variables(var, slots, state_dtype):
    return [tf.Variable(tf.constant(var, tf.float32))] + [
        tf.Variable(tf.cast(tf.constant(v, tf.float32), state_dtype)) for v in slots.values()]


def _apply(name, variables, grad, indices=None, rounding=None):
    h = H[name.replace("rowwise_", "")]
    prefix = "apply_" if indices is None else "sparse_apply_"
    op = getattr(tf_ftrl.ops, prefix + name)
    args = variables + [tf.constant(grad, tf.float32)] + ([] if indices is None else [indices])
    op(*args, **h, stochastic_rounding=rounding)


def _reference(name, var, slots, grad):
    h = H[name.replace("rowwise_", "")]
    function = getattr(ref, name)
    if name.endswith("ftrl"):
        return function(var, slots["accum"], slots["linear"], grad, **h)
    return function(var, slots["accum"], grad, **h)


def _bits(variable):
    return variable.numpy().view(np.uint16 if variable.dtype.size == 2 else np.uint32)


def _step_size(values, dtype):
    """The spacing of `dtype`'s values at each of `values` (one step away from zero)."""
    low = tf.cast(tf.constant(values, tf.float32), dtype)
    bits = low.numpy().view(np.uint16).astype(np.int32) + 1
    high = bits.astype(np.uint16).view(low.numpy().dtype).astype(np.float64)
    return np.abs(high - low.numpy().astype(np.float64))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("state_dtype", STATE_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_to_nearest_matches_float64_reference_and_float32_state(rng, name, state_dtype, sparse):
    var, slots = _start(rng, name, state_dtype)
    if sparse:
        indices = rng.integers(0, ROWS // 2, 200)
        indices[::5] = 3  # a hot id, past one chunk of duplicates
        grad = rng.uniform(-1, 1, (200, DIM)).astype(np.float32)
        dense = ref.densify(grad.astype(np.float64), indices, ROWS)
    else:
        indices, grad = None, rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32)
        dense = grad.astype(np.float64)
    low = _variables(var, slots, state_dtype)
    wide = _variables(var, slots, tf.float32)
    _apply(name, low, grad, indices)
    _apply(name, wide, grad, indices)
    # Exactly the float32 state's step, its state rounded once to nearest.
    np.testing.assert_array_equal(low[0].numpy(), wide[0].numpy())
    for a, b in zip(low[1:], wide[1:]):
        np.testing.assert_array_equal(_bits(a), _bits(tf.cast(b, state_dtype)))
    # And the float64 formulas: var to float32's tolerance, the state within one step of its
    # dtype (the rounding) plus float32's tolerance.
    expected = _reference(name, var, slots, dense)
    touched = np.unique(indices) if sparse else np.arange(ROWS)
    np.testing.assert_allclose(low[0].numpy()[touched], expected[0][touched], rtol=5e-5,
                               atol=5e-6)
    for variable, value in zip(low[1:], expected[1:]):
        actual = variable.numpy().astype(np.float64)[touched]
        value = value[touched]
        assert np.all(np.abs(actual - value) <= _step_size(value, state_dtype) + 5e-5 *
                      np.abs(value) + 5e-6), name


@pytest.mark.parametrize("state_dtype", STATE_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_stochastic_rounding_is_a_neighbour_deterministic_and_keyed(rng, name, state_dtype):
    var, slots = _start(rng, name, state_dtype)
    indices = rng.integers(0, ROWS // 2, 200)
    grad = rng.uniform(-1, 1, (200, DIM)).astype(np.float32)
    wide = _variables(var, slots, tf.float32)
    _apply(name, wide, grad, indices)
    runs = {}
    for key in [(5, 9), (5, 9), (5, 10), (6, 9)]:
        variables = _variables(var, slots, state_dtype)
        _apply(name, variables, grad, indices, rounding=key)
        runs.setdefault(key, []).append(variables)
    first, again = runs[(5, 9)]
    np.testing.assert_array_equal(first[0].numpy(), wide[0].numpy())
    untouched = np.setdiff1d(np.arange(ROWS), indices)
    away_from_nearest = 0
    for i, (variable, exact) in enumerate(zip(first[1:], wide[1:])):
        np.testing.assert_array_equal(_bits(variable), _bits(again[i + 1]))
        stored = variable.numpy().astype(np.float64)
        exact = exact.numpy().astype(np.float64)
        nearest = tf.cast(wide[i + 1], state_dtype).numpy().astype(np.float64)
        # One of the two values of the state dtype around the float32 result: the nearest, or
        # the one a step away on the result's other side.
        step = _step_size(np.minimum(np.abs(stored), np.abs(nearest)) * np.sign(exact),
                          state_dtype)
        other_side = ((np.minimum(stored, nearest) <= exact) &
                      (exact <= np.maximum(stored, nearest)) &
                      (np.abs(stored - nearest) <= step * 1.0001))
        assert np.all((stored == nearest) | other_side)
        away_from_nearest += int(np.sum(stored != nearest))
        np.testing.assert_array_equal(_bits(variable)[untouched],
                                      _bits(_variables(var, slots, state_dtype)[i + 1])[untouched])
        for other in (runs[(5, 10)][0], runs[(6, 9)][0]):
            assert np.any(_bits(variable) != _bits(other[i + 1])), "another key, other bits"
    assert away_from_nearest > 0


def test_growing_accumulator_stalls_to_nearest_and_tracks_stochastically():
    """Adagrad's accumulator, 1,000 steps of a gradient whose square is 1/1000 of its start: in
    bfloat16 rounded to nearest it never grows; rounded stochastically its mean over 256 rows
    ends within 2% of the exact sum."""
    rows, steps, g = 256, 1000, np.float32(np.sqrt(1e-3))
    exact = 1.0 + steps * float(g) ** 2
    finals = {}
    for stochastic in (False, True):
        var = tf.Variable(tf.zeros([rows, 1]))
        accum = tf.Variable(tf.ones([rows, 1], tf.bfloat16))
        for step in range(steps):
            tf_ftrl.ops.apply_adagrad(var, accum, tf.fill([rows, 1], g), 0.0,
                                      stochastic_rounding=[1, step] if stochastic else None)
        finals[stochastic] = accum.numpy().astype(np.float64)
    assert np.all(finals[False] == 1.0)
    assert abs(finals[True].mean() - exact) < 0.02 * exact, finals[True].mean()


def _bad_inputs():
    return [
        ("mixed state dtypes", [tf.float32, tf.bfloat16, tf.float32], None,
         "linear has dtype float but accum has dtype bfloat16"),
        ("narrow state of a double var", [tf.float64, tf.bfloat16, tf.bfloat16], None,
         "accum has dtype bfloat16 but var has dtype double"),
        ("stochastic rounding of float32 state", [tf.float32] * 3, [1, 2],
         "stochastic_rounding rounds state narrower than var"),
        ("a stochastic_rounding of three", [tf.float32, tf.bfloat16, tf.bfloat16], [1, 2, 3],
         "must be \\[seed, step\\]|Dimension must be 2"),
    ]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("case,dtypes,rounding,message", _bad_inputs(),
                         ids=[c[0] for c in _bad_inputs()])
def test_bad_dtypes_are_named_and_change_nothing(rng, case, dtypes, rounding, message, sparse):
    values = [rng.uniform(0.1, 1, (8, 4)) for _ in dtypes]
    variables = [tf.Variable(tf.constant(v, dtype)) for v, dtype in zip(values, dtypes)]
    before = [v.numpy().copy() for v in variables]
    grad = tf.constant(rng.uniform(-1, 1, (3 if sparse else 8, 4)), dtypes[0])
    args = variables + [grad] + ([tf.constant([0, 5, 5])] if sparse else [])
    op = tf_ftrl.ops.sparse_apply_ftrl if sparse else tf_ftrl.ops.apply_ftrl
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        op(*args, lr=0.1, l1=0.0, l2=0.0, stochastic_rounding=rounding)
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_graphs_without_the_rounding_input_still_run():
    """The stochastic_rounding input is a list of zero or one tensor: a NodeDef written before
    it existed (no N attr, no such input) gets N = 0 and runs."""
    tf_ftrl.ops.load_library()
    op_def = op_def_registry.get("FusedResourceApplyAdagrad")
    attr = {a.name: a for a in op_def.attr}["N"]
    assert attr.default_value.i == 0 and attr.minimum == 0
    assert op_def.input_arg[-1].name == "stochastic_rounding"
    old = node_def_pb2.NodeDef(name="old_apply", op="FusedResourceApplyAdagrad",
                               input=["var", "accum", "grad", "lr", "epsilon"])
    old.attr["T"].type = tf.float32.as_datatype_enum
    graph_def = graph_pb2.GraphDef()
    graph_def.node.extend([old])
    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.Variable([1.0, 2.0], use_resource=True)
        accum = tf.compat.v1.Variable([0.5, 0.5], use_resource=True)
        tf.graph_util.import_graph_def(graph_def, name="", input_map={
            "var:0": var.handle, "accum:0": accum.handle, "grad:0": tf.constant([1.0, 1.0]),
            "lr:0": tf.constant(0.1), "epsilon:0": tf.constant(0.0)})
        node = graph.get_operation_by_name("old_apply")
        assert node.get_attr("N") == 0
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(node)
            np.testing.assert_allclose(session.run(accum), [1.5, 1.5])
