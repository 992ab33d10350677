"""The multi-tensor dense ops (`tf_ftrl.ops.multi_apply_ftrl`, `multi_apply_adagrad`) and the
optimizers' use of them: every variable gets the bits the one-variable op gives it, bad input
writes nothing, and both front ends' training is the same bit for bit with it on and off (one
device and MirroredStrategy with two replicas)."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

import tf_ftrl
from tf_ftrl import _optimizer_common, _specs
from tests.support import workers
from tests.support.numpy_reference import ftrl as reference_ftrl

SHAPES = [(7, 5), (5,), (), (0, 3), (300, 70), (1,), (64, 64), (64,)]
DTYPES = [tf.float32, tf.float64, tf.float16, tf.bfloat16]
FTRL = dict(lr=0.1, l1=0.01, l2=0.02, l2_shrinkage=0.03, lr_power=-0.5)
ADAGRAD = dict(lr=0.1, epsilon=1e-3)


def _state(rng, dtype, state_dtype, num_slots, shapes=SHAPES):
    def var(low, high, shape, as_dtype):
        return tf.Variable(tf.cast(rng.uniform(low, high, shape), as_dtype))

    variables = [var(-1, 1, s, dtype) for s in shapes]
    slots = [[var(0.1, 2, s, state_dtype) for s in shapes]]
    if num_slots == 2:
        slots.append([var(-1, 1, s, state_dtype) for s in shapes])
    grads = [tf.cast(rng.uniform(-1, 1, s), dtype) for s in shapes]
    return variables, slots, grads


def _copy(variables):
    return [tf.Variable(v) for v in variables]


def _values(*lists):
    return [v.numpy() for variables in lists for v in variables]


def _same_bits(a, b):
    return all(x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", ["ftrl", "adagrad"])
@pytest.mark.parametrize("flag", [False, True])
def test_each_variable_gets_the_one_variable_ops_bits(rng, dtype, name, flag):
    num_slots = 2 if name == "ftrl" else 1
    variables, slots, grads = _state(rng, dtype, dtype, num_slots)
    alone_vars, alone_slots = _copy(variables), [_copy(s) for s in slots]
    start = _values(variables)
    hyper = FTRL if name == "ftrl" else ADAGRAD
    flag_name = "multiply_linear_by_lr" if name == "ftrl" else "update_slots"
    getattr(tf_ftrl.ops, f"multi_apply_{name}")(variables, *slots, grads, **hyper,
                                                **{flag_name: flag})
    for i, grad in enumerate(grads):
        getattr(tf_ftrl.ops, f"apply_{name}")(alone_vars[i], *[s[i] for s in alone_slots], grad,
                                              **hyper, **{flag_name: flag})
    assert _same_bits(_values(variables, *slots), _values(alone_vars, *alone_slots))
    assert not _same_bits(_values(variables), start)


def test_ftrl_against_the_float64_reference(rng):
    variables, (accums, linears), grads = _state(rng, tf.float64, tf.float64, 2)
    expected = [reference_ftrl(v.numpy(), a.numpy(), l.numpy(), g.numpy(), **FTRL)
                for v, a, l, g in zip(variables, accums, linears, grads)]
    tf_ftrl.ops.multi_apply_ftrl(variables, accums, linears, grads, **FTRL)
    for (w, n, z), v, a, l in zip(expected, variables, accums, linears):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.numpy(), n, rtol=1e-12)
        np.testing.assert_allclose(l.numpy(), z, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("state_dtype", [tf.bfloat16, tf.float16], ids=lambda d: d.name)
@pytest.mark.parametrize("stochastic", [False, True])
def test_low_precision_state_with_each_variables_rounding_key(rng, state_dtype, stochastic):
    variables, slots, grads = _state(rng, tf.float32, state_dtype, 2)
    alone_vars, alone_slots = _copy(variables), [_copy(s) for s in slots]
    keys = [[int(rng.integers(0, 2**31)), 5] for _ in variables]
    tf_ftrl.ops.multi_apply_ftrl(variables, *slots, grads, **FTRL,
                                 stochastic_rounding=keys if stochastic else None)
    for i, grad in enumerate(grads):
        tf_ftrl.ops.apply_ftrl(alone_vars[i], *[s[i] for s in alone_slots], grad, **FTRL,
                               stochastic_rounding=keys[i] if stochastic else None)
    assert _same_bits(_values(variables, *slots), _values(alone_vars, *alone_slots))


def _bad_call(rng, change):
    """Calls multi_apply_ftrl with the inputs `change` spoils; returns the error's message, after
    checking that no variable changed."""
    variables, slots, grads = _state(rng, tf.float32, tf.float32, 2)
    before = _values(variables, *slots)
    args = {"var": variables, "accum": slots[0], "linear": slots[1], "grad": grads, **FTRL}
    change(args)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as raised:
        tf_ftrl.ops.multi_apply_ftrl(**args)
    assert _same_bits(_values(variables, *slots), before)
    return str(raised.value)


def test_a_bad_gradient_of_the_last_variable_writes_nothing(rng):
    def last_grad_wrong(args):
        args["grad"] = args["grad"][:-1] + [tf.zeros((3,))]

    message = _bad_call(rng, last_grad_wrong)
    last = len(SHAPES) - 1
    assert f"var[{last}] and grad[{last}] do not have the same shape: [64] vs [3]" in message


def test_one_variable_twice_is_refused(rng):
    def twice(args):
        args["linear"] = [args["linear"][1]] + args["linear"][1:]

    assert "linear[0] and linear[1] must be different variables" in _bad_call(rng, twice)


def test_mixed_state_dtypes_are_named(rng):
    def mixed(args):
        args["linear"] = args["linear"][:-1] + [tf.Variable(tf.zeros((64,), tf.bfloat16))]

    message = _bad_call(rng, mixed)
    assert f"linear[{len(SHAPES) - 1}] has dtype bfloat16" in message
    assert "share one dtype" in message


def test_a_bad_hyperparameter_and_rounding_shape_are_named(rng):
    def negative_l1(args):
        args["l1"] = -1.0

    assert "l1 must be non-negative" in _bad_call(rng, negative_l1)

    def pairs(args):
        args["stochastic_rounding"] = [[1, 2]] * len(SHAPES)

    assert "stochastic_rounding rounds state narrower than var" in _bad_call(rng, pairs)


def test_lists_of_other_lengths_and_dtypes_are_refused(rng):
    def short(args):
        args["accum"] = args["accum"][:-1]

    assert "accum has 7" in _bad_call(rng, short)

    def mixed_vars(args):
        args["var"] = args["var"][:-1] + [tf.Variable(tf.zeros((64,), tf.float64))]

    assert "updates variables of one dtype" in _bad_call(rng, mixed_vars)
    with pytest.raises(ValueError, match="at least one variable"):
        tf_ftrl.ops.multi_apply_adagrad([], [], [], lr=0.1)


def test_the_ops_shape_function_checks_each_variable():
    v = [tf.Variable(tf.zeros((2, 3))), tf.Variable(tf.zeros((4,)))]
    a = [tf.Variable(tf.zeros((2, 3))), tf.Variable(tf.zeros((4,)))]

    @tf.function
    def step(g):
        tf_ftrl.ops.multi_apply_adagrad(v, a, g, lr=0.1)

    with pytest.raises(ValueError, match=r"var\[1\] and grad\[1\] do not have the same shape: "
                                         r".*Dimension"):
        step.get_concrete_function([tf.TensorSpec((2, 3)), tf.TensorSpec((5,))])
    a[1] = tf.Variable(tf.zeros((3,)))
    with pytest.raises(ValueError, match=r"var\[1\] and accum\[1\] do not have the same "
                                         r"shape: "):
        step.get_concrete_function([tf.TensorSpec((2, 3)), tf.TensorSpec((4,))])


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_split_by_elements_cuts_consecutive_runs_of_about_equal_size(rng, parts):
    for n in (1, 2, 5, 40, 240):
        sizes = [int(s) for s in rng.integers(1, 5000, n)]
        runs = _optimizer_common.split_by_elements(sizes, parts)
        assert len(runs) == min(parts, n)
        assert runs[0][0] == 0 and runs[-1][1] == n
        assert all(begin < end for begin, end in runs)
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        # Each cut is where the running total comes closest to its share of the total (within
        # half a variable of it), unless that would leave a run empty.
        total = sum(sizes)
        for k, (_, end) in enumerate(runs[:-1], start=1):
            target = total * k / len(runs)
            best = min(range(k, n - len(runs) + k + 1),
                       key=lambda e: (abs(sum(sizes[:e]) - target), e))
            assert end == best, (sizes, runs, k)


def test_multi_tensor_calls_one_per_cpu_thread_one_on_a_gpu():
    calls = _optimizer_common.multi_tensor_calls
    cpu = "/job:localhost/replica:0/task:0/device:CPU:0"
    minimum = _optimizer_common.MIN_VARIABLES_PER_CALL
    assert calls(240, cpu, threads=2) == 2
    assert calls(240, cpu, threads=64) == 240 // minimum
    assert calls(minimum * 2 - 1, cpu, threads=8) == 1
    assert calls(240, "/job:worker/task:1/device:GPU:0", threads=8) == 1
    assert calls(240, "/device:GPU:1", threads=8) == 1
    # Unplaced: on the CPU here (the tests see no GPU).
    assert calls(240, "", threads=4) == 4
    assert _optimizer_common.intra_op_threads() >= 1


@pytest.fixture(scope="module", params=["keras3", "tf_keras"])
def trained(request):
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if request.param == "tf_keras" else None)
    return request.param, workers.run_for_result(
        "-m", "tests.support.multi_tensor_worker", "7", env=env, timeout=900)


def test_training_is_the_same_bit_for_bit_with_the_multi_tensor_ops_on_and_off(trained):
    front_end, result = trained
    cases = {case: outcome for case, outcome in result.items() if case != "override"}
    assert len(cases) == 2 * 3 * 2
    for case, outcome in cases.items():
        assert outcome["trained"], (front_end, case)
        assert outcome["same"], (front_end, case)


def test_dense_variables_take_the_multi_tensor_op_and_tables_their_sparse_one(trained):
    _, result = trained
    for case, outcome in result.items():
        if case == "override":
            continue
        op = "ftrl" if case.startswith("Ftrl") else "adagrad"
        rowwise = "rowwise" in case
        sparse = f"sparse_apply_rowwise_{op}" if rowwise else f"sparse_apply_{op}"
        assert f"multi_apply_{op}" in outcome["kernels_on"], case
        assert sparse in outcome["kernels_on"], case
        assert f"multi_apply_{op}" not in outcome["kernels_off"], case
        assert f"apply_{op}" in outcome["kernels_off"], case
        if rowwise:  # the Dense kernels' row-wise state keeps its own op
            assert f"apply_rowwise_{op}" in outcome["kernels_on"], case


def test_a_group_is_cut_into_calls_that_cover_every_variable_once(trained):
    # The model's 6 dense variables (3 Dense kernels and biases; row-wise: the 3 biases), cut
    # into calls of at least 2 variables, at most 3 calls: 3 calls, or 1 for the row-wise
    # cases' biases, each trace of the step (and each replica under MirroredStrategy).
    _, result = trained
    for case, outcome in result.items():
        if case == "override":
            continue
        calls = outcome["multi_calls"]
        group = 3 if "rowwise" in case else 6
        per_trace = 1 if "rowwise" in case else 3
        traces = sum(calls) // group
        assert traces >= 1 and sum(calls) == traces * group, (case, calls)
        assert len(calls) == traces * per_trace, (case, calls)


def test_a_subclass_overriding_the_per_variable_update_gets_every_variable(trained):
    # A subclass's update_step (_resource_apply_dense in tf_keras) sees every dense gradient, as
    # with the stock optimizers: the multi-tensor path is off for it.
    _, result = trained
    override = result["override"]
    assert override["seen"] == override["dense_variables"] == 6
    assert override["kernels"] == ["apply_ftrl", "sparse_apply_ftrl"]


@pytest.mark.parametrize("spec", _specs.OPTIMIZERS, ids=lambda s: s.name)
def test_the_multi_ops_are_the_descriptions(spec):
    tf_ftrl.ops.load_library()
    op = op_def_registry.get(spec.multi_op)
    assert [arg.name for arg in op.input_arg] == (
        ["var"] + [slot.op_input for slot in spec.slots] + ["grad"]
        + list(spec.op_hyperparameters) + ["stochastic_rounding"])
    assert all(arg.number_attr == "N" for arg in op.input_arg[:len(spec.slots) + 2])
    attrs = {attr.name: attr for attr in op.attr}
    assert attrs[spec.flag].default_value.b is spec.flag_default
    wrapper = getattr(tf_ftrl.ops, spec.multi_function)
    assert list(inspect.signature(wrapper).parameters) == (
        ["var"] + [slot.op_input for slot in spec.slots] + ["grad"]
        + list(spec.op_hyperparameters)
        + [spec.flag, "use_locking", "stochastic_rounding", "name"])
