"""Each optimizer's arguments, declared once.

For FTRL and Adagrad: the fused ops (their slots, their scalar inputs in the order of the ops'
signatures, their flag attr) and the optimizers' numeric constructor arguments, each with the
bound Keras checks it against and the op input it becomes. The op wrappers in `tf_ftrl.ops`, the
constructor checks in `tf_ftrl._arguments` and both front ends' slots and op arguments are derived
from this table; tests/test_specs.py checks it against the OpDefs the op library registers.

An optimizer added later declares its row in its own module (`register(OptimizerSpec(...))`,
docs/design.md "Adding an optimizer"); `registered()` lists every row, and the test checks that
each fused op the library registers has one.
"""

import dataclasses
import re
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Bound:
    """A sign bound on a hyperparameter, in the words of each voice that states it."""

    op_words: str  # TensorFlow's, in the ops' errors: "l1 must be non-negative"
    keras_words: str  # Keras's: "`l1_regularization_strength` needs to be positive or zero"
    symbol: str  # in docstrings: "l1 >= 0"
    at_most_zero: bool

    def violated_by(self, value):
        # A comparison, as Keras makes it (check_bound rejects NaN and infinities first).
        return value > 0.0 if self.at_most_zero else value < 0.0


NON_NEGATIVE = Bound("non-negative", "positive or zero", ">= 0", at_most_zero=False)
NON_POSITIVE = Bound("non-positive", "negative or zero", "<= 0", at_most_zero=True)


@dataclasses.dataclass(frozen=True)
class Argument:
    """A numeric constructor argument of an optimizer."""

    name: str  # the Keras argument: "l2_shrinkage_regularization_strength"
    bound: Bound
    op_input: Optional[str] = None  # the op input it is passed to as it is: "l2_shrinkage"
    op_default: Optional[float] = None  # the op wrapper's default for that input (None: required)
    # Checked only when it is a Python number (it may also be a tensor or a schedule).
    numbers_only: bool = False


@dataclasses.dataclass(frozen=True)
class Slot:
    name: str  # the slot variable's name in Keras: "accumulator"
    op_input: str  # the ops' input: "accum"
    initial_value: Optional[str] = None  # the constructor argument it starts at (None: zeros)
    per_row: bool = False  # one value per row of the variable (shape [var.shape[0]])


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str  # the C++ description's kName: "Ftrl" (the ops: FusedResourceApplyFtrl & co.)
    slots: Tuple[Slot, ...]  # the ops' inputs after var, in their order
    # The ops' scalar inputs, in their order (after grad, and indices for the sparse op).
    op_hyperparameters: Tuple[str, ...]
    # The constructor's numeric arguments but learning_rate (`LEARNING_RATE`, which the base
    # classes check first), in the order Keras checks them: the first bad one is reported.
    arguments: Tuple[Argument, ...]
    flag: str  # the ops' bool attr besides use_locking
    flag_default: bool

    @property
    def dense_op(self):
        """The registered dense op: "FusedResourceApplyFtrl"."""
        return f"FusedResourceApply{self.name}"

    @property
    def sparse_op(self):
        return f"FusedResourceSparseApply{self.name}"

    @property
    def snake_name(self):
        """"RowwiseFtrl" -> "rowwise_ftrl"."""
        return snake_case(self.name)

    @property
    def functions(self):
        """The names of the dense and the sparse op's wrappers in `tf_ftrl.ops`."""
        return f"apply_{self.snake_name}", f"sparse_apply_{self.snake_name}"

    @property
    def multi_op(self):
        """The registered multi-tensor dense op (element-wise optimizers only)."""
        return self.dense_op.replace("Apply", "MultiApply", 1)

    @property
    def multi_function(self):
        """The name of the multi-tensor dense op's wrapper in `tf_ftrl.ops`."""
        return f"multi_apply_{self.snake_name}"

    @property
    def slot_names(self):
        return tuple(slot.name for slot in self.slots)

    def op_argument(self, op_input):
        """The Argument that the op's scalar input `op_input` comes from."""
        return _op_arguments(self)[op_input]

    def op_values(self, learning_rate, value_of):
        """{op input: value} for the ops' scalar inputs, in the ops' order: `learning_rate` for lr,
        `value_of(argument)` for the others (`argument` the `Argument` it comes from)."""
        return {name: learning_rate if name == LEARNING_RATE.op_input
                else value_of(self.op_argument(name)) for name in self.op_hyperparameters}


def snake_case(name):
    """"FusedResourceApplyFtrl" -> "fused_resource_apply_ftrl" (also the name of an op's function
    in the loaded library)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_REGISTERED = []


def register(spec):
    """Adds `spec` to `registered()` and returns it."""
    if any(other.name == spec.name for other in _REGISTERED):
        raise ValueError(f"an optimizer named {spec.name!r} is registered already")
    _REGISTERED.append(spec)
    return spec


def registered():
    """Every optimizer's row: the ones below, and those their own modules register."""
    return tuple(_REGISTERED)


# Every optimizer's learning rate: a float, a schedule or a callable (checked at each step).
LEARNING_RATE = Argument("learning_rate", NON_NEGATIVE, op_input="lr", numbers_only=True)


def _op_arguments(spec):
    arguments = {a.op_input: a for a in (LEARNING_RATE,) + spec.arguments if a.op_input}
    return {name: arguments[name] for name in spec.op_hyperparameters}


ACCUMULATOR = Slot("accumulator", "accum", initial_value="initial_accumulator_value")
INITIAL_ACCUMULATOR_VALUE = Argument("initial_accumulator_value", NON_NEGATIVE)

FTRL = register(OptimizerSpec(
    name="Ftrl",
    slots=(ACCUMULATOR, Slot("linear", "linear")),
    op_hyperparameters=("lr", "l1", "l2", "l2_shrinkage", "lr_power"),
    arguments=(
        INITIAL_ACCUMULATOR_VALUE,
        Argument("learning_rate_power", NON_POSITIVE, "lr_power", op_default=-0.5),
        Argument("l1_regularization_strength", NON_NEGATIVE, "l1"),
        # l2 is passed as l2 + beta / (2 * lr) (`_arguments.ftrl_l2`).
        Argument("l2_regularization_strength", NON_NEGATIVE, "l2"),
        Argument("l2_shrinkage_regularization_strength", NON_NEGATIVE, "l2_shrinkage",
                 op_default=0.0),
        # A negative beta would surface as a negative l2 the user never set.
        Argument("beta", NON_NEGATIVE, numbers_only=True),
    ),
    flag="multiply_linear_by_lr",
    flag_default=False,
))

ADAGRAD = register(OptimizerSpec(
    name="Adagrad",
    slots=(ACCUMULATOR,),
    op_hyperparameters=("lr", "epsilon"),
    arguments=(
        INITIAL_ACCUMULATOR_VALUE,
        Argument("epsilon", NON_NEGATIVE, "epsilon", op_default=1e-7),
    ),
    flag="update_slots",
    flag_default=True,
))

OPTIMIZERS = (FTRL, ADAGRAD)

# Row-wise variants: the same arguments, one accumulator value per row of the variable.
ROW_ACCUMULATOR = dataclasses.replace(ACCUMULATOR, per_row=True)
ROWWISE_FTRL = register(dataclasses.replace(
    FTRL, name="RowwiseFtrl", slots=(ROW_ACCUMULATOR, FTRL.slots[1])))
ROWWISE_ADAGRAD = register(dataclasses.replace(
    ADAGRAD, name="RowwiseAdagrad", slots=(ROW_ACCUMULATOR,)))
ROWWISE = (ROWWISE_FTRL, ROWWISE_ADAGRAD)
