"""The XLA lowering of the element-wise fused ops (kernels/xla_ops.cc, xla_custom_calls.cc): under
`tf.function(jit_compile=True)` each op is one XLA custom call of the same CPU kernels, with the
state buffers aliased to its results; the bits equal the ops run by TensorFlow; a bad index fails
the call and writes nothing; and tf_ftrl's Keras optimizers take that path under XLA."""

import logging
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tf_ftrl import ops
from tf_ftrl.optimizers import _fused_optimizer


def test_the_lowering_is_loaded_wherever_tensorflow_ships_the_xla_ffi():
    # The tests below need the lowering; wherever TensorFlow's headers have XLA's typed FFI (2.20
    # and newer) it must be built and loaded (an editable install once left it out of the tree,
    # and they all skipped). Elsewhere (2.16-2.19) the fallback tests at the end run instead.
    ops.load_library()
    if os.environ.get("TF_FTRL_XLA_CUSTOM_CALL", "1") == "0":
        pytest.skip("TF_FTRL_XLA_CUSTOM_CALL=0 turns the lowering off")
    assert ops._xla_lowering == ops._has_xla_ffi_header(), (
        f"TensorFlow {tf.__version__} {'ships' if ops._has_xla_ffi_header() else 'lacks'} "
        f"{ops._XLA_FFI_HEADER}, but the XLA lowering (_tf_ftrl_xla_ops.so) is "
        f"{'' if ops._xla_lowering else 'not '}loaded")


needs_lowering = pytest.mark.skipif(
    not (ops.load_library() and ops._xla_lowering),
    reason="the XLA lowering (_tf_ftrl_xla_ops.so) is not built or did not load")


FTRL = dict(lr=0.05, l1=0.02, l2=0.03, l2_shrinkage=0.01)


def _state(rng, shape, num_state):
    var = rng.normal(size=shape).astype(np.float32)
    accum = rng.uniform(0.1, 1.0, size=shape).astype(np.float32)
    linear = rng.normal(size=shape).astype(np.float32)
    return [var, accum, linear][:num_state]


# (op wrapper, number of state arrays, hyperparameters and flag)
CASES = {
    "ftrl": (ops.apply_ftrl, ops.sparse_apply_ftrl, 3, dict(FTRL, lr_power=-0.5)),
    "ftrl_power": (ops.apply_ftrl, ops.sparse_apply_ftrl, 3,
                   dict(FTRL, lr_power=-0.3, multiply_linear_by_lr=True)),
    "adagrad": (ops.apply_adagrad, ops.sparse_apply_adagrad, 2, dict(lr=0.1, epsilon=1e-7)),
    "adagrad_no_slots": (ops.apply_adagrad, ops.sparse_apply_adagrad, 2,
                         dict(lr=0.1, epsilon=1e-7, update_slots=False)),
}


def _run(op, initial, args, kwargs, jit_compile):
    """The state after `op(*state, *args, **kwargs)` in a tf.function, and the function."""
    state = [tf.Variable(x) for x in initial]

    @tf.function(jit_compile=jit_compile)
    def step(*tensors):
        op(*state, *tensors, **kwargs)

    error = None
    try:
        step(*args)
    except tf.errors.InvalidArgumentError as e:
        error = e
    return [v.numpy() for v in state], step, error


def _hlo(step, *args):
    return step.experimental_get_compiler_ir(*args)(stage="hlo")


@needs_lowering
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(37,), (40, 16), (6, 5, 7)], ids=str)
def test_dense_op_is_one_custom_call_with_the_bits_of_the_op(rng, case, shape):
    dense, _, num_state, kwargs = CASES[case]
    initial = _state(rng, shape, num_state)
    grad = tf.constant(rng.normal(size=shape).astype(np.float32))
    plain, _, _ = _run(dense, initial, [grad], kwargs, jit_compile=False)
    compiled, step, error = _run(dense, initial, [grad], kwargs, jit_compile=True)
    assert error is None
    for name, a, b in zip(["var", "accum", "linear"], plain, compiled):
        np.testing.assert_array_equal(b, a, err_msg=name)
    hlo = _hlo(step, grad)
    op_name = dense.__name__.replace("apply_", "Apply").replace("ftrl", "Ftrl").replace(
        "adagrad", "Adagrad")
    assert f'custom_call_target="tf_ftrl_FusedResource{op_name}"' in hlo
    assert "output_to_operand_aliasing={" in hlo
    assert hlo.count("custom-call(") == 1


@needs_lowering
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(50,), (40, 16), (30, 9), (25, 4, 3)], ids=str)
def test_sparse_op_is_one_custom_call_with_the_bits_of_the_op(rng, case, index_dtype, shape):
    _, sparse, num_state, kwargs = CASES[case]
    initial = _state(rng, shape, num_state)
    # Duplicates included: both sum them before the update.
    indices = rng.integers(0, shape[0], size=24).astype(index_dtype)
    grad = tf.constant(rng.normal(size=(24,) + shape[1:]).astype(np.float32))
    plain, _, _ = _run(sparse, initial, [grad, tf.constant(indices)], kwargs, False)
    compiled, step, error = _run(sparse, initial, [grad, tf.constant(indices)], kwargs, True)
    assert error is None
    for name, a, b in zip(["var", "accum", "linear"], plain, compiled):
        np.testing.assert_array_equal(b, a, err_msg=name)
    untouched = np.setdiff1d(np.arange(shape[0]), indices)
    np.testing.assert_array_equal(compiled[0][untouched], initial[0][untouched])
    hlo = _hlo(step, grad, tf.constant(indices))
    assert 'custom_call_target="tf_ftrl_FusedResourceSparseApply' in hlo
    assert "output_to_operand_aliasing={" in hlo


@needs_lowering
@pytest.mark.parametrize("bad", [-1, 40, 2**40], ids=["negative", "rows", "huge"])
@pytest.mark.parametrize("case", ["ftrl", "adagrad"])
def test_bad_index_fails_the_call_and_writes_nothing(rng, case, bad):
    _, sparse, num_state, kwargs = CASES[case]
    initial = _state(rng, (40, 8), num_state)
    indices = np.array([3, 7, bad, 1], np.int64)
    grad = tf.constant(rng.normal(size=(4, 8)).astype(np.float32))
    after, _, error = _run(sparse, initial, [grad, tf.constant(indices)], kwargs, True)
    # What the user sees: TensorFlow's InvalidArgumentError with the OpKernel's words.
    assert error is not None
    assert f"indices[2] = {bad} is not in [0, 40)" in str(error)
    for a, b in zip(initial, after):
        np.testing.assert_array_equal(b, a)


@needs_lowering
def test_bad_hyperparameter_fails_the_call_and_writes_nothing(rng):
    initial = _state(rng, (10, 4), 2)
    grad = tf.constant(rng.normal(size=(10, 4)).astype(np.float32))
    after, _, error = _run(ops.apply_adagrad, initial, [grad, tf.constant(-0.1)],
                           dict(epsilon=1e-7), True)
    assert error is not None and "lr must be non-negative but got -0.1" in str(error)
    for a, b in zip(initial, after):
        np.testing.assert_array_equal(b, a)


@needs_lowering
def test_bad_shapes_fail_at_compile_time_with_the_ops_message(rng):
    # Shapes left unknown to the graph's shape function reach the lowering's check.
    var, accum = (tf.Variable(x) for x in _state(rng, (10, 4), 2))

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def step(grad):
        ops.apply_adagrad(var, accum, grad, 0.1)

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"var and grad do not have the same shape: \[10,4\] vs \[10,3\]"):
        step(tf.ones((10, 3)))


# ------------------------------------------------------------ low-precision state and row-wise

# (optimizer, hyperparameters and flag): the element-wise and row-wise ops of each.
VARIANTS = {
    "ftrl": dict(FTRL, lr_power=-0.5),
    "adagrad": dict(lr=0.1, epsilon=1e-7),
}


def _variant_state(rng, name, shape, state_dtype):
    """var (float32) and the slots (in state_dtype; a row-wise accumulator one value per row)."""
    var = rng.normal(size=shape).astype(np.float32)
    accum = rng.uniform(0.1, 1.0, size=shape[:1] if name.startswith("rowwise") else shape)
    slots = [accum] + ([rng.normal(size=shape)] if name.endswith("ftrl") else [])
    return [tf.constant(var)] + [tf.cast(tf.constant(s, tf.float32), state_dtype) for s in slots]


def _variant_run(name, initial, tensors, rounding, jit_compile):
    """The state's bits after the op of `name` (sparse when `tensors` has indices), and its HLO
    when compiled."""
    state = [tf.Variable(x) for x in initial]
    op = getattr(ops, ("sparse_apply_" if len(tensors) > 1 else "apply_") + name)
    kwargs = VARIANTS[name.replace("rowwise_", "")]

    @tf.function(jit_compile=jit_compile)
    def step(*tensors):
        op(*state, *tensors, **kwargs, stochastic_rounding=rounding)

    step(*tensors)
    bits = [v.numpy().view(np.uint16 if v.dtype.size == 2 else np.uint32) for v in state]
    return bits, _hlo(step, *tensors) if jit_compile else None


@needs_lowering
@pytest.mark.parametrize("stochastic", [False, True], ids=["to_nearest", "stochastic"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("state_dtype", [tf.bfloat16, tf.float16], ids=lambda d: d.name)
@pytest.mark.parametrize("name", ["ftrl", "adagrad"])
def test_low_precision_state_is_one_custom_call_with_the_bits_of_the_op(
        rng, name, state_dtype, sparse, stochastic):
    shape = (30, 16)
    initial = _variant_state(rng, name, shape, state_dtype)
    tensors = [tf.constant(rng.normal(size=shape).astype(np.float32))]
    if sparse:
        indices = rng.integers(0, shape[0], size=24)  # duplicates included
        tensors = [tf.constant(rng.normal(size=(24, shape[1])).astype(np.float32)),
                   tf.constant(indices)]
    rounding = (tf.constant(rng.integers(0, 2**40, size=2), tf.int64) if stochastic else None)
    plain, _ = _variant_run(name, initial, tensors, rounding, jit_compile=False)
    compiled, hlo = _variant_run(name, initial, tensors, rounding, jit_compile=True)
    for i, (a, b) in enumerate(zip(plain, compiled)):
        np.testing.assert_array_equal(b, a, err_msg=f"state {i}")
    assert not np.array_equal(compiled[1], initial[1].numpy().view(np.uint16))
    op = ("FusedResourceSparseApply" if sparse else "FusedResourceApply") + _camel(name)
    assert f'custom_call_target="tf_ftrl_{op}"' in hlo
    assert "output_to_operand_aliasing={" in hlo and hlo.count("custom-call(") == 1


@needs_lowering
@pytest.mark.parametrize("kept", ["some", "none", "all"])
@pytest.mark.parametrize("state_dtype", [tf.float32, tf.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("name", ["ftrl", "adagrad", "rowwise_ftrl", "rowwise_adagrad"])
def test_sparse_update_of_a_dynamic_number_of_indices(rng, name, state_dtype, kept):
    # Inside XLA a boolean mask (or tf.unique, as tf_ftrl.sparse_regularizers uses) leaves the
    # number of indices dynamic, which a custom call cannot take ("is not supported to have a
    # dynamic dimension"): the lowering pads to the bound, with positions that change nothing.
    # The bits are the uncompiled op's: with some positions, with all of them, and with none
    # (FTRL's var, pretrained and not its closed form, must not be recomputed anywhere).
    shape = (30, 8)
    initial = _variant_state(rng, name, shape, state_dtype)
    ids = tf.constant(rng.integers(0, shape[0], size=40))  # duplicates included
    values = tf.constant(rng.normal(size=(40, shape[1])).astype(np.float32))
    mask = tf.constant({"some": rng.random(40) < 0.4, "none": np.zeros(40, bool),
                        "all": np.ones(40, bool)}[kept])
    seed_and_step = (tf.constant(rng.integers(0, 2**40, size=2), tf.int64)
                     if state_dtype != tf.float32 else None)
    results = []
    for jit_compile in (False, True):
        state = [tf.Variable(x) for x in initial]
        op = getattr(ops, "sparse_apply_" + name)
        kwargs = VARIANTS[name.replace("rowwise_", "")]

        @tf.function(jit_compile=jit_compile)
        def step(ids, values, mask):
            op(*state, tf.boolean_mask(values, mask), tf.boolean_mask(ids, mask), **kwargs,
               stochastic_rounding=seed_and_step)

        step(ids, values, mask)
        results.append([v.numpy().view(np.uint16 if v.dtype.size == 2 else np.uint32)
                        for v in state])
    hlo = _hlo(step, ids, values, mask)
    assert f'custom_call_target="tf_ftrl_FusedResourceSparseApply{_camel(name)}"' in hlo
    for i, (a, b) in enumerate(zip(*results)):
        np.testing.assert_array_equal(b, a, err_msg=f"state {i}")
    start = [x.numpy().view(np.uint16 if x.dtype.size == 2 else np.uint32) for x in initial]
    touched = np.unique(ids.numpy()[mask.numpy()])
    untouched = np.setdiff1d(np.arange(shape[0]), touched)
    for i, (after, before) in enumerate(zip(results[1], start)):
        np.testing.assert_array_equal(after[untouched], before[untouched], err_msg=f"state {i}")
    if kept != "none":
        assert not np.array_equal(results[1][0][touched], start[0][touched])


def test_sparse_regularizers_train_inside_xla_on_the_custom_calls(rng):
    # tf_ftrl.sparse_regularizers penalizes the looked-up rows once each (tf.unique): inside XLA
    # its gradient has a dynamic number of rows, which stopped model.fit with jit_compile=True.
    x = rng.integers(0, 500, (512, 4)).astype("int32")
    y = rng.integers(0, 2, (512, 1)).astype("float32")
    weights = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(4)
        model = keras.Sequential([
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(500, 8, embeddings_regularizer=keras.regularizers.l2(1e-3)),
            keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
        tf_ftrl.sparse_regularizers(model)
        model.compile(optimizer=tf_ftrl.Ftrl(learning_rate=0.1, rowwise=["embedding"]),
                      loss="binary_crossentropy", jit_compile=jit_compile)
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
        used = model.optimizer.kernels_used()
        assert any(k.endswith("embeddings") and v == "sparse_apply_rowwise_ftrl" +
                   (" (XLA custom call)" if jit_compile else "") for k, v in used.items()), used
        weights.append(model.get_weights())
    # The optimizer's bits are the same; XLA may compile the forward and backward passes
    # differently.
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _camel(name):
    """"rowwise_ftrl" -> "RowwiseFtrl", as the ops name it."""
    return "".join(part.capitalize() for part in name.split("_"))


@needs_lowering
@pytest.mark.parametrize("rounding", ["float32", "bfloat16", "float16", "bfloat16_stochastic",
                                      "float16_stochastic"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("shape", [(30,), (30, 16), (20, 4, 3)], ids=str)
@pytest.mark.parametrize("name", ["rowwise_ftrl", "rowwise_adagrad"])
def test_rowwise_op_is_one_custom_call_with_the_bits_of_the_op(rng, name, shape, sparse,
                                                               rounding):
    state_dtype = tf.as_dtype(rounding.split("_")[0])
    initial = _variant_state(rng, name, shape, state_dtype)
    tensors = [tf.constant(rng.normal(size=shape).astype(np.float32))]
    if sparse:
        indices = rng.integers(0, shape[0], size=24)  # duplicates included
        tensors = [tf.constant(rng.normal(size=(24,) + shape[1:]).astype(np.float32)),
                   tf.constant(indices)]
    seed_and_step = (tf.constant(rng.integers(0, 2**40, size=2), tf.int64)
                     if rounding.endswith("stochastic") else None)
    plain, _ = _variant_run(name, initial, tensors, seed_and_step, jit_compile=False)
    compiled, hlo = _variant_run(name, initial, tensors, seed_and_step, jit_compile=True)
    for i, (a, b) in enumerate(zip(plain, compiled)):
        np.testing.assert_array_equal(b, a, err_msg=f"state {i}")
    assert compiled[1].shape == shape[:1]  # the per-row accumulator
    if sparse:
        untouched = np.setdiff1d(np.arange(shape[0]), indices)
        np.testing.assert_array_equal(compiled[0][untouched],
                                      initial[0].numpy()[untouched].view(np.uint32))
    op = ("FusedResourceSparseApply" if sparse else "FusedResourceApply") + _camel(name)
    assert f'custom_call_target="tf_ftrl_{op}"' in hlo
    assert "output_to_operand_aliasing={" in hlo and hlo.count("custom-call(") == 1


@needs_lowering
@pytest.mark.parametrize("bad", [-1, 40], ids=["negative", "rows"])
def test_rowwise_bad_index_fails_the_call_and_writes_nothing(rng, bad):
    initial = _variant_state(rng, "rowwise_adagrad", (40, 8), tf.float32)
    state = [tf.Variable(x) for x in initial]
    grad = tf.constant(rng.normal(size=(3, 8)).astype(np.float32))
    step = tf.function(lambda g, i: ops.sparse_apply_rowwise_adagrad(
        *state, g, i, **VARIANTS["adagrad"]) and None, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"indices\[2\] = {bad} is not in \[0, 40\)"):
        step(grad, tf.constant([3, 5, bad]))
    for variable, value in zip(state, initial):
        np.testing.assert_array_equal(variable.numpy(), value.numpy())


@needs_lowering
def test_rowwise_accumulator_of_another_shape_is_rejected_as_by_the_op(rng):
    var, _, linear = _variant_state(rng, "ftrl", (10, 4), tf.float32)
    # (Of unknown shape to the graph: the op's shape function would reject it first.)
    state = [tf.Variable(var), tf.Variable(tf.ones((9,)), shape=tf.TensorShape(None)),
             tf.Variable(linear)]
    step = tf.function(lambda g: ops.apply_rowwise_ftrl(*state, g, **VARIANTS["ftrl"]) and None,
                       jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"accum must hold one value per row of var, shape \[10\], but has "
                             r"shape \[9\]"):
        step(tf.ones((10, 4)))


@needs_lowering
def test_low_precision_state_bad_index_fails_the_call_and_writes_nothing(rng):
    initial = _variant_state(rng, "ftrl", (40, 8), tf.bfloat16)
    state = [tf.Variable(x) for x in initial]
    grad = tf.constant(rng.normal(size=(3, 8)).astype(np.float32))
    step = tf.function(lambda g, i: ops.sparse_apply_ftrl(
        *state, g, i, **VARIANTS["ftrl"], stochastic_rounding=tf.constant([1, 2], tf.int64))
        and None, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[1\] = 40 is not in"):
        step(grad, tf.constant([3, 40, 5]))
    for variable, value in zip(state, initial):
        np.testing.assert_array_equal(variable.numpy(), value.numpy())


@needs_lowering
def test_mixed_state_dtypes_are_rejected_as_by_the_op(rng):
    var, accum, linear = _variant_state(rng, "ftrl", (10, 4), tf.bfloat16)
    state = [tf.Variable(var), tf.Variable(accum), tf.Variable(tf.cast(linear, tf.float16))]
    step = tf.function(lambda g: ops.apply_ftrl(*state, g, **VARIANTS["ftrl"]) and None,
                       jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="linear has dtype half but accum has dtype bfloat16: the "
                             "optimizer's state variables share one dtype"):
        step(tf.ones((10, 4)))


@needs_lowering
def test_the_lowering_registers_after_an_earlier_xla_compilation():
    # XlaOpRegistry makes its kernels once, at the first XLA compilation: a library loaded later
    # registers its own (xla_ops.cc). A fresh process compiles first, then loads tf_ftrl's ops.
    script = """
import numpy as np, tensorflow as tf
x = tf.Variable(1.0)
tf.function(lambda: x.assign_add(1.0), jit_compile=True)()
from tf_ftrl import ops
var, accum = tf.Variable(np.ones(4, np.float32)), tf.Variable(np.ones(4, np.float32))
@tf.function(jit_compile=True)
def step(g):
    ops.apply_adagrad(var, accum, g, 0.5)
step(tf.ones(4))
assert "tf_ftrl_FusedResourceApplyAdagrad" in step.experimental_get_compiler_ir(tf.ones(4))()
print("accum", accum.numpy()[0])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accum 2.0" in result.stdout


@needs_lowering
@pytest.mark.parametrize("rounding", ["float32", "bfloat16", "float16_stochastic"])
@pytest.mark.parametrize("name", ["ftrl", "adagrad"])
def test_multi_tensor_op_is_one_custom_call_with_the_bits_of_the_op(rng, name, rounding):
    state_dtype = tf.as_dtype(rounding.split("_")[0])
    shapes = [(37,), (4, 5), (3, 2, 2), (1,)]
    initial = [_variant_state(rng, name, shape, state_dtype) for shape in shapes]
    grads = [tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in shapes]
    pairs = (tf.constant(rng.integers(0, 2**40, size=(len(shapes), 2)), tf.int64)
             if rounding.endswith("stochastic") else None)
    op = getattr(ops, "multi_apply_" + name)
    results = []
    for jit in (False, True):
        state = [[tf.Variable(x) for x in variable] for variable in initial]

        @tf.function(jit_compile=jit)
        def step(grads):
            op(*[list(column) for column in zip(*state)], grads, **VARIANTS[name],
               stochastic_rounding=pairs)

        step(grads)
        results.append([v.numpy().view(np.uint16 if v.dtype.size == 2 else np.uint32)
                        for variable in state for v in variable])
    for i, (a, b) in enumerate(zip(*results)):
        np.testing.assert_array_equal(b, a, err_msg=f"array {i}")
    hlo = _hlo(step, grads)
    assert hlo.count(f'custom_call_target="tf_ftrl_FusedResourceMultiApply{_camel(name)}"') == 1
    assert hlo.count("custom-call(") == 1 and "output_to_operand_aliasing={" in hlo


@needs_lowering
def test_multi_tensor_bad_hyperparameter_fails_and_writes_nothing(rng):
    initial = [_variant_state(rng, "adagrad", shape, tf.float32) for shape in [(5,), (2, 3)]]
    state = [[tf.Variable(x) for x in variable] for variable in initial]
    step = tf.function(lambda lr: ops.multi_apply_adagrad(
        *[list(c) for c in zip(*state)], [tf.ones((5,)), tf.ones((2, 3))], lr, epsilon=1e-7)
        and None, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="lr must be non-negative"):
        step(tf.constant(-1.0))
    for variable, values in zip(state, initial):
        for v, x in zip(variable, values):
            np.testing.assert_array_equal(v.numpy(), x.numpy())


@needs_lowering
def test_multi_tensor_shapes_are_checked_with_the_ops_names(rng):
    var = [tf.Variable(tf.ones((5,))), tf.Variable(tf.ones((2, 3)))]
    # (Of unknown shape to the graph: the op's shape function would reject it first.)
    accum = [tf.Variable(tf.ones((5,))), tf.Variable(tf.ones((3, 2)), shape=tf.TensorShape(None))]
    step = tf.function(lambda: ops.multi_apply_adagrad(
        var, accum, [tf.ones((5,)), tf.ones((2, 3))], 0.1) and None, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"var\[1\] and accum\[1\] do not have the same shape"):
        step()


# ------------------------------------------------------------------------- the Keras optimizers


def _model(rows=200, dim=8):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,), dtype="int32")
    embedded = keras.layers.Embedding(rows, dim)(inputs)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(embedded))
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


@pytest.mark.parametrize("make", [lambda: tf_ftrl.Ftrl(learning_rate=0.1),
                                  lambda: tf_ftrl.Adagrad(learning_rate=0.1)],
                         ids=["ftrl", "adagrad"])
@needs_lowering
def test_optimizer_step_under_xla_is_the_custom_call_dense_and_sparse(rng, make):
    model = _model()
    optimizer = make()
    optimizer.build(model.trainable_variables)
    x = tf.constant(rng.integers(0, 200, size=(16, 4)).astype(np.int32))
    y = tf.constant(rng.normal(size=(16, 1)).astype(np.float32))

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)

    hlo = _hlo(step, x, y)
    name = type(optimizer).__name__
    assert f'custom_call_target="tf_ftrl_FusedResourceSparseApply{name}"' in hlo
    # The dense kernels and biases: one multi-tensor call.
    assert hlo.count(f'custom_call_target="tf_ftrl_FusedResourceMultiApply{name}"') == 1
    assert hlo.count("custom-call(") == 2
    step(x, y)
    used = optimizer.kernels_used()
    assert any("(XLA custom call)" in update for update in used.values()), used


@pytest.mark.parametrize("make", [lambda: tf_ftrl.Ftrl(learning_rate=0.1),
                                  lambda: tf_ftrl.Adagrad(learning_rate=0.1)],
                         ids=["ftrl", "adagrad"])
@needs_lowering
def test_jit_compiled_fit_equals_uncompiled_fit_bit_for_bit(make):
    data = np.random.default_rng(3)
    x = data.integers(0, 200, size=(128, 4)).astype(np.int32)
    y = (x.sum(axis=1, keepdims=True) % 2).astype(np.float32)
    optimizer_weights, weights = [], []
    for jit in (False, True):
        model = _model()
        model.compile(optimizer=make(), loss="mse", jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "fused kernels cannot run"
            model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
        optimizer_weights.append([v.numpy() for v in model.optimizer.variables])
    # The optimizer's update is the same kernel; the model's forward and backward pass may be
    # compiled differently by XLA, so the weights agree closely, not bit for bit.
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@needs_lowering
def test_plain_ops_without_the_lowering(monkeypatch, rng):
    monkeypatch.setattr(ops, "_xla_lowering", False)
    variable = keras.Variable(rng.normal(size=(10, 4)).astype(np.float32))
    optimizer = tf_ftrl.Adagrad(learning_rate=0.1)
    optimizer.build([variable])
    grad = tf.constant(rng.normal(size=(10, 4)).astype(np.float32))
    step = tf.function(lambda: optimizer.apply([grad], [variable]), jit_compile=True)
    _fused_optimizer._xla_warned.discard("Adagrad")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert "custom-call" not in _hlo(step)
        step()
    assert "tensorflow ops (inside XLA, dense)" in optimizer.kernels_used().values()


@needs_lowering
def test_one_log_line_says_which_path(caplog, monkeypatch):
    monkeypatch.setattr(ops, "_xla_lowering", False)
    with caplog.at_level(logging.INFO, logger="tf_ftrl"):
        assert ops._load_xla_lowering()
    assert [r.getMessage() for r in caplog.records] == [
        "tf_ftrl: under XLA (jit_compile=True) the float32 updates run the fused CPU kernels as "
        "XLA custom calls"]
    caplog.clear()
    monkeypatch.setenv("TF_FTRL_XLA_CUSTOM_CALL", "0")
    with caplog.at_level(logging.INFO, logger="tf_ftrl"):
        assert not ops._load_xla_lowering()
    assert [r.getMessage() for r in caplog.records] == [
        "tf_ftrl: under XLA (jit_compile=True) the updates run as plain TensorFlow ops "
        "(TF_FTRL_XLA_CUSTOM_CALL=0)"]


REGULARIZED = {"ftrl": lambda: tf_ftrl.Ftrl(learning_rate=0.1, l1_regularization_strength=0.01,
                                             l2_regularization_strength=0.02),
               "adagrad": lambda: tf_ftrl.Adagrad(learning_rate=0.1)}


def _table_and_kernel(rng):
    """The initial values of an embedding table and a dense kernel, and their gradients: sparse
    (with duplicate ids) and dense."""
    table = rng.normal(size=(60, 16)).astype(np.float32)
    kernel = rng.normal(size=(16, 8)).astype(np.float32)
    indices = rng.integers(0, 60, size=40)  # duplicates included
    sparse = tf.IndexedSlices(tf.constant(rng.normal(size=(40, 16)).astype(np.float32)),
                              tf.constant(indices), tf.constant([60, 16], tf.int64))
    dense = tf.constant(rng.normal(size=(16, 8)).astype(np.float32))
    return [table, kernel], [sparse, dense]


def _two_steps(make, initial, grads, jit_compile):
    """The variables and the optimizer's variables after two steps of `make()`, the step
    function and the optimizer."""
    variables = [keras.Variable(value) for value in initial]
    optimizer = make()
    optimizer.build(variables)
    step = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=jit_compile)
    step()
    step()
    return [v.numpy() for v in variables + list(optimizer.variables)], step, optimizer


@needs_lowering
def test_checkpoint_and_saved_model_after_jit_compiled_fit(tmp_path):
    from tests.support import saving_worker
    from tests.test_optimizers_saving import run_worker
    from tests.test_resilience import fused_ops_in

    optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    model = saving_worker.make_model()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    saving_worker.fit_steps(model, 0, 4)
    assert all("(XLA custom call)" in u for u in optimizer.kernels_used().values())
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer).write(
        str(tmp_path / "ckpt"))
    restored_optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    restored = saving_worker.make_model()
    restored.compile(optimizer=restored_optimizer, loss="mse", jit_compile=True)
    restored_optimizer.build(restored.trainable_variables)
    tf.train.Checkpoint(model=restored, optimizer=restored_optimizer).read(
        checkpoint).assert_existing_objects_matched()
    for a, b in zip(restored_optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(model, export_dir)
    assert fused_ops_in(export_dir) == set()
    ids, _ = saving_worker.dataset_arrays()
    expected = model.predict(ids, batch_size=len(ids), verbose=0)
    result = run_worker("serve", export_dir)
    assert result["tf_ftrl_imported"] is False
    np.testing.assert_allclose(np.asarray(result["predictions"], np.float32), expected,
                               rtol=1e-6, atol=1e-7)


@needs_lowering
def test_a_lowering_built_for_another_tensorflow_is_not_loaded(caplog, monkeypatch):
    monkeypatch.setattr(ops, "_built_tensorflow_version", lambda path: "2.0.0")
    with caplog.at_level(logging.INFO, logger="tf_ftrl"):
        assert not ops._load_xla_lowering()
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"was built against TensorFlow 2.0.0, not {tf.__version__}" in message


@needs_lowering
def test_the_same_variable_twice_is_rejected_as_by_the_op(rng):
    var = tf.Variable(_state(rng, (10, 4), 1)[0])
    step = tf.function(lambda g: [ops.apply_adagrad(var, var, g, 0.1)] and None, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="var and accum must be different variables"):
        step(tf.ones((10, 4)))


@needs_lowering
@pytest.mark.parametrize("name", ["Ftrl", "Adagrad"])
def test_legacy_optimizers_run_under_xla_with_the_bits_of_the_op(rng, name):
    legacy = pytest.importorskip("tf_ftrl.legacy")
    initial = rng.normal(size=(20, 4)).astype(np.float32)
    grad = tf.IndexedSlices(tf.constant(rng.normal(size=(5, 4)).astype(np.float32)),
                            tf.constant([1, 2, 1, 7, 19]), tf.constant([20, 4]))
    # And two dense variables, which take the multi-tensor op.
    dense_initial = [rng.normal(size=shape).astype(np.float32) for shape in ((4, 3), (3,))]
    dense_grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32))
                   for v in dense_initial]
    results = []
    for jit in (False, True):
        var = tf.Variable(initial, name="table")
        dense = [tf.Variable(v, name=n) for v, n in zip(dense_initial, ("kernel", "bias"))]
        optimizer = getattr(legacy, name)(learning_rate=0.1)
        step = tf.function(lambda: optimizer.apply_gradients(
            [(grad, var)] + list(zip(dense_grads, dense))) and None, jit_compile=jit)
        step()
        step()
        results.append([var.numpy()] + [v.numpy() for v in dense])
        kernels = optimizer.kernels_used()
    for compiled, uncompiled in zip(results[1], results[0]):
        np.testing.assert_array_equal(compiled, uncompiled)
    assert not np.array_equal(results[1][1], dense_initial[0])
    op = name.lower()
    assert kernels == {"table": f"sparse_apply_{op} (XLA custom call)",
                       "kernel": f"multi_apply_{op} (XLA custom call)",
                       "bias": f"multi_apply_{op} (XLA custom call)"}


# The optimizers' variants whose updates lower to custom calls too.
PLAIN_OPTIMIZERS = {
    "ftrl": (tf_ftrl.Ftrl, dict(l1_regularization_strength=0.01,
                                l2_regularization_strength=0.02)),
    "adagrad": (tf_ftrl.Adagrad, {}),
}
OPTIMIZER_VARIANTS = {
    "ftrl_bfloat16": (tf_ftrl.Ftrl, dict(state_dtype="bfloat16")),
    "adagrad_float16": (tf_ftrl.Adagrad, dict(state_dtype="float16")),
    "ftrl_bfloat16_to_nearest": (tf_ftrl.Ftrl, dict(state_dtype="bfloat16",
                                                    stochastic_rounding=False)),
    "rowwise_ftrl": (tf_ftrl.Ftrl, dict(rowwise=True)),
    "rowwise_adagrad_bfloat16": (tf_ftrl.Adagrad, dict(rowwise=True, state_dtype="bfloat16")),
}


@needs_lowering
@pytest.mark.parametrize("variant", {**PLAIN_OPTIMIZERS, **OPTIMIZER_VARIANTS})
def test_optimizer_step_under_xla_takes_the_custom_call_with_the_bits_of_the_step(
        rng, variant):
    cls, options = {**PLAIN_OPTIMIZERS, **OPTIMIZER_VARIANTS}[variant]
    (table, kernel), (sparse, dense) = _table_and_kernel(rng)
    results = []
    for jit in (False, True):
        # Named: stochastic rounding's seed is a checksum of the variable's path.
        variables = [keras.Variable(table, name="table"), keras.Variable(kernel, name="kernel")]
        optimizer = cls(learning_rate=0.1, **options)
        optimizer.build(variables)
        step = tf.function(lambda: optimizer.apply([sparse, dense], variables),
                           jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "fused kernels cannot run"
            step()
            step()
        results.append([v.numpy() for v in variables] + [v.numpy() for v in optimizer.variables])
    for i, (plain, compiled) in enumerate(zip(*results)):
        np.testing.assert_array_equal(compiled, plain, err_msg=f"variable {i}")
    assert all(u.endswith("(XLA custom call)") for u in optimizer.kernels_used().values()), (
        optimizer.kernels_used())
    hlo = _hlo(step)
    assert hlo.count('custom_call_target="tf_ftrl_FusedResource') == 2


@needs_lowering
@pytest.mark.parametrize("variant", OPTIMIZER_VARIANTS)
def test_jit_compiled_fit_of_a_variant_takes_the_custom_call(variant):
    cls, options = OPTIMIZER_VARIANTS[variant]
    data = np.random.default_rng(5)
    x = data.integers(0, 200, size=(64, 4)).astype(np.int32)
    y = (x.sum(axis=1, keepdims=True) % 2).astype(np.float32)
    model = _model()
    optimizer = cls(learning_rate=0.1, **options)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "fused kernels cannot run"
        history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    used = optimizer.kernels_used()
    assert used and all(u.endswith("(XLA custom call)") for u in used.values()), used


@needs_lowering
@pytest.mark.parametrize("variant", OPTIMIZER_VARIANTS)
def test_legacy_variants_run_under_xla_with_the_bits_of_the_op(rng, variant):
    legacy = pytest.importorskip("tf_ftrl.legacy")
    cls, options = OPTIMIZER_VARIANTS[variant]
    initial = rng.normal(size=(20, 4)).astype(np.float32)
    grad = tf.IndexedSlices(tf.constant(rng.normal(size=(5, 4)).astype(np.float32)),
                            tf.constant([1, 2, 1, 7, 19]), tf.constant([20, 4]))
    dense_initial = rng.normal(size=(4, 3)).astype(np.float32)
    dense_grad = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
    results = []
    for jit in (False, True):
        var = tf.Variable(initial, name="table")
        dense = tf.Variable(dense_initial, name="kernel")
        optimizer = getattr(legacy, cls.__name__)(learning_rate=0.1, **options)
        step = tf.function(lambda: optimizer.apply_gradients(
            [(grad, var), (dense_grad, dense)]) and None, jit_compile=jit)
        step()
        step()
        results.append([var.numpy(), dense.numpy()] + [
            v.numpy() for v in optimizer.variables()])
        kernels = optimizer.kernels_used()
    for compiled, uncompiled in zip(results[1], results[0]):
        np.testing.assert_array_equal(compiled, uncompiled)
    assert all(u.endswith("(XLA custom call)") for u in kernels.values()), kernels
    assert "custom-call(" in _hlo(step)


@needs_lowering
@pytest.mark.parametrize("front_end", ["keras3", "legacy"])
def test_multi_tensor_call_under_xla_leaves_out_the_huge_page_advice(front_end):
    # The advice's op has no XLA kernel: with huge_pages=True the compiled step still builds.
    grads = [tf.ones((4, 3)), tf.ones((3,))]
    if front_end == "keras3":
        variables = [keras.Variable(np.ones((4, 3), np.float32), name="kernel"),
                     keras.Variable(np.ones((3,), np.float32), name="bias")]
        optimizer = tf_ftrl.Ftrl(learning_rate=0.1, huge_pages=True)
        optimizer.build(variables)
        step = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=True)
    else:
        legacy = pytest.importorskip("tf_ftrl.legacy")
        variables = [tf.Variable(np.ones((4, 3), np.float32), name="kernel"),
                     tf.Variable(np.ones((3,), np.float32), name="bias")]
        optimizer = legacy.Ftrl(learning_rate=0.1, huge_pages=True)
        step = tf.function(lambda: optimizer.apply_gradients(zip(grads, variables)) and None,
                           jit_compile=True)
    step()
    assert set(optimizer.kernels_used().values()) == {"multi_apply_ftrl (XLA custom call)"}


# ------------------------------------- without the lowering (TensorFlow 2.16-2.19): plain ops

without_lowering = pytest.mark.skipif(
    ops.load_library() and ops._xla_lowering,
    reason="the XLA lowering is loaded: the tests above run the custom calls")


@without_lowering
def test_without_the_lowering_one_log_line_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="tf_ftrl"):
        assert not ops._load_xla_lowering()
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(
        "tf_ftrl: under XLA (jit_compile=True) the updates run as plain TensorFlow ops (")
    if not ops._has_xla_ffi_header() and os.environ.get("TF_FTRL_XLA_CUSTOM_CALL", "1") != "0":
        assert (f"TensorFlow {tf.__version__} ships no xla/ffi/api/ffi.h (XLA's typed FFI), "
                "which the lowering is built with; TensorFlow 2.20 and newer do") in message


@pytest.mark.parametrize("make", REGULARIZED.values(), ids=REGULARIZED.keys())
@without_lowering
def test_without_the_lowering_the_xla_step_is_plain_ops_with_the_same_math(rng, make):
    initial, grads = _table_and_kernel(rng)
    plain, _, _ = _two_steps(make, initial, grads, jit_compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "its fused kernels cannot run"
        compiled, step, optimizer = _two_steps(make, initial, grads, jit_compile=True)
    assert 'custom_call_target="tf_ftrl_' not in _hlo(step)
    assert sorted(optimizer.kernels_used().values()) == [
        "tensorflow ops (inside XLA, dense)", "tensorflow ops (inside XLA, sparse)"]
    # The same formulas in TensorFlow ops, which XLA may fuse and round differently.
    for i, (a, b) in enumerate(zip(plain, compiled)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"variable {i}")
