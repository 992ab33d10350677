"""tf_ftrl/_specs.py, the one description of each optimizer's arguments, against what it describes:
the OpDefs the op library registers, the bounds its kernels enforce, the op wrappers and the
Keras optimizers derived from it."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.python.framework import op_def_registry

import tf_ftrl
from tf_ftrl import _docstrings, _specs
from tf_ftrl._arguments import check_arguments

SPECS = {spec.name: spec for spec in _specs.OPTIMIZERS}
# The ops' descriptions: every registered row (the optimizers' and their row-wise variants').
OP_SPECS = {spec.name: spec for spec in _specs.registered()}
WRAPPERS = {(spec.name, sparse): tf_ftrl.ops.wrapper(spec.functions[sparse])
            for spec in OP_SPECS.values() for sparse in (False, True)}
SPARSE = pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
NAME = pytest.mark.parametrize("name", sorted(SPECS))
OP_NAME = pytest.mark.parametrize("name", sorted(OP_SPECS))


def test_wrappers_are_named_after_the_spec():
    assert WRAPPERS["RowwiseFtrl", True] is tf_ftrl.ops.sparse_apply_rowwise_ftrl
    assert WRAPPERS["Adagrad", False] is tf_ftrl.ops.apply_adagrad
    for (name, sparse), wrapper in WRAPPERS.items():
        assert wrapper.__name__ == OP_SPECS[name].functions[sparse]


def test_every_fused_op_of_the_library_has_its_row():
    # A registration line in kernels/optimizers.h makes the ops; the Python row describes them.
    assert set(OP_SPECS) >= set(SPECS) | {"RowwiseFtrl", "RowwiseAdagrad"}
    # The loaded library's functions, one per registered op ("fused_resource_apply_ftrl").
    registered = {name for name in dir(tf_ftrl.ops.load_library())
                  if name.startswith("fused_resource_") and not name.endswith("_fallback")}
    described = {_specs.snake_case(op) for spec in OP_SPECS.values()
                 for op in (spec.dense_op, spec.sparse_op)}
    assert {name for name in registered if "multi_apply" not in name} == described
    assert {_specs.snake_case(spec.multi_op) for spec in SPECS.values()} <= registered


def test_rows_and_wrappers_are_named_once():
    with pytest.raises(ValueError, match="'Ftrl' is registered already"):
        _specs.register(_specs.FTRL)
    with pytest.raises(ValueError, match="'apply_adagrad' exists already"):
        tf_ftrl.ops.op_wrappers(_specs.ADAGRAD, "", "")
    assert tf_ftrl.ops.wrapper("apply_adagrad") is tf_ftrl.ops.apply_adagrad


def op_def(spec, sparse):
    tf_ftrl.ops.load_library()
    op = op_def_registry.get(spec.sparse_op if sparse else spec.dense_op)
    assert op is not None, "the op library registers no such op"
    return op


@OP_NAME
@SPARSE
def test_inputs_are_the_op_defs_in_order(name, sparse):
    spec = OP_SPECS[name]
    op = op_def(spec, sparse)
    tensors = ["var", *(slot.op_input for slot in spec.slots), "grad"]
    if sparse:
        tensors.append("indices")
    assert [arg.name for arg in op.input_arg] == (tensors + list(spec.op_hyperparameters) +
                                                  ["stochastic_rounding"])
    rounding = op.input_arg[-1]  # zero or one [seed, step]
    assert rounding.type == types_pb2.DT_INT64 and rounding.number_attr == "N"
    types = {arg.name: arg.type or arg.type_attr for arg in op.input_arg}
    for variable in ["var", *(slot.op_input for slot in spec.slots)]:
        assert types[variable] == types_pb2.DT_RESOURCE, variable
    for tensor in ["grad", *spec.op_hyperparameters]:
        assert types[tensor] == "T", tensor
    if sparse:
        assert types["indices"] == "Tindices"
    assert not op.output_arg


@OP_NAME
@SPARSE
def test_attrs_are_the_op_defs(name, sparse):
    spec = OP_SPECS[name]
    attrs = {attr.name: attr for attr in op_def(spec, sparse).attr}
    assert set(attrs) == {"T", "N", "use_locking", spec.flag} | (
        {"Tindices"} if sparse else set())
    assert attrs["N"].default_value.i == 0 and attrs["N"].minimum == 0
    assert attrs[spec.flag].type == "bool"
    assert attrs[spec.flag].default_value.b is spec.flag_default
    assert attrs["use_locking"].default_value.b is False


@OP_NAME
@SPARSE
def test_wrapper_signature_is_derived_from_the_spec(name, sparse):
    spec = OP_SPECS[name]
    parameters = inspect.signature(WRAPPERS[name, sparse]).parameters
    assert list(parameters) == [arg.name for arg in op_def(spec, sparse).input_arg][:-1] + [
        spec.flag, "use_locking", "stochastic_rounding", "name"]
    for op_input in spec.op_hyperparameters:
        default = spec.op_argument(op_input).op_default
        assert parameters[op_input].default == (inspect.Parameter.empty if default is None
                                                else default), op_input
    assert parameters[spec.flag].default is spec.flag_default


def test_wrapper_signatures_as_documented():
    # As docs/design.md's list of the ops shows them (plus `name`).
    assert str(inspect.signature(tf_ftrl.ops.apply_ftrl)) == (
        "(var, accum, linear, grad, lr, l1, l2, l2_shrinkage=0.0, lr_power=-0.5, "
        "multiply_linear_by_lr=False, use_locking=False, stochastic_rounding=None, name=None)")
    assert str(inspect.signature(tf_ftrl.ops.sparse_apply_adagrad)) == (
        "(var, accum, grad, indices, lr, epsilon=1e-07, update_slots=True, use_locking=False, "
        "stochastic_rounding=None, name=None)")


def bad_value(bound):
    return -0.5 if bound is _specs.NON_NEGATIVE else 0.5


@OP_NAME
@SPARSE
def test_bounds_are_the_kernels(name, sparse):
    spec = OP_SPECS[name]
    wrapper = WRAPPERS[name, sparse]
    variables = [tf.Variable(tf.fill([4, 2], 0.5))] + [
        tf.Variable(tf.fill([4] if slot.per_row else [4, 2], 0.5)) for slot in spec.slots]
    start = [v.numpy() for v in variables]
    tensors = variables + [tf.ones([4, 2])] + ([tf.constant([0, 1, 2, 3])] if sparse else [])
    valid = {op_input: 0.1 if op_input == "lr" else 0.0 for op_input in spec.op_hyperparameters}
    for op_input in spec.op_hyperparameters:
        bound = spec.op_argument(op_input).bound
        value = bad_value(bound)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{op_input} must be {bound.op_words} but got {value}"):
            wrapper(*tensors, **dict(valid, **{op_input: value}))
        for variable, before in zip(variables, start):
            np.testing.assert_array_equal(variable.numpy(), before)


@NAME
def test_constructor_checks_use_the_bounds_in_keras_voice(name):
    spec = SPECS[name]
    valid = {argument.name: 0.0 for argument in spec.arguments}
    for argument in spec.arguments:
        value = bad_value(argument.bound)
        words = "positive or zero" if argument.bound is _specs.NON_NEGATIVE else "negative or zero"
        message = f"`{argument.name}` needs to be {words}. Received: {argument.name}={value}."
        with pytest.raises(ValueError) as error:
            check_arguments(spec, dict(valid, **{argument.name: value}))
        assert str(error.value) == message
        with pytest.raises(ValueError) as error:
            getattr(tf_ftrl, name)(**{argument.name: value})
        assert str(error.value) == message


@NAME
def test_keras_optimizers_take_every_argument_of_the_spec(name):
    spec = SPECS[name]
    ours = getattr(tf_ftrl, name)
    stock = inspect.signature(getattr(keras.optimizers, name)).parameters
    config = ours().get_config()
    for argument in spec.arguments:
        assert argument.name in stock, argument.name
        assert inspect.signature(ours).parameters[argument.name].default == \
            stock[argument.name].default, argument.name
        assert argument.name in config, argument.name
    assert ours().get_slot_names() == list(spec.slot_names)


@NAME
def test_docstrings_are_filled_in(name):
    doc = getattr(tf_ftrl, name).__doc__
    assert "{{" not in doc
    assert _docstrings.PARAGRAPHS["huge_pages_arg"].splitlines()[0] in doc
    assert '\n        huge_pages: `"auto"` (the default)' in doc  # at the Args entries' indent


def test_fill_indents_as_the_placeholder_and_rejects_unknown_names():
    assert _docstrings.fill("Args:\n    {{initial_accumulator_value_arg}}\n") == (
        "Args:\n    initial_accumulator_value: The starting value of the accumulators, >= 0. "
        "Defaults to\n        `0.1`.\n")
    with pytest.raises(KeyError):
        _docstrings.fill("    {{no_such_paragraph}}\n")
