"""Moves FTRL and Adagrad optimizer state between checkpoint formats, so that training resumes
with the same weights, accumulators, linear terms and step count:

    python -m tf_ftrl.convert_checkpoint SRC DST --from tf1 --to keras3 --model my.models:build

The formats, as each front end writes them:

- `tf1`: a name-based checkpoint of `tf.compat.v1.train.Saver`, with
  `tf.compat.v1.train.FtrlOptimizer`'s slots `<variable>/Ftrl` (accumulator) and
  `<variable>/Ftrl_1` (linear), or `AdagradOptimizer`'s `<variable>/Adagrad`, and the step count
  in `global_step`.
- `tf_keras`: a `tf.train.Checkpoint` (or `model.save_weights` in the TensorFlow format) of a
  tf_keras model and optimizer. As a source, both of tf_keras's layouts are read: OptimizerV2
  (`tf_keras.optimizers.legacy`, `tf_ftrl.legacy`: slots saved beside their variables) and
  tf_keras's default optimizers (`tf_keras.optimizers.Ftrl`, whose slots are named
  `accumulator/<variable>`). As a target, the state goes into whichever tf_keras optimizer
  you pass.
- `keras3`: a `tf.train.Checkpoint` of a Keras 3 model and optimizer (`keras.optimizers`,
  `tf_ftrl.Ftrl`, `tf_ftrl.Adagrad`), whose optimizer variables are saved by position and
  named `<variable path with _ for />_accumulator`.

Checkpoints are read from the file alone (`tf.train.load_checkpoint` and, for the object-based
formats, the object graph saved in them, whose variables keep their full names). A Keras target
is written from live objects: the state is assigned to your model and optimizer (built on the
model's trainable variables), which are then saved as
`tf.train.Checkpoint(model=model, optimizer=optimizer)`. Variables are matched by name (a Keras 3
variable's `path`, a tf_keras or TF1 variable's name without `:0`): the same name, or one name
ending in `/` and the other; `mapping` renames the checkpoint's names first. What could not be
matched is reported, not guessed.
"""

import argparse
import dataclasses
import importlib
import json
import re
import sys

import numpy as np

FORMATS = ("tf1", "tf_keras", "keras3")
_FORMAT_NAMES = {"tf1": "TensorFlow 1 (tf.compat.v1.train, a Saver's name-based checkpoint)",
                 "tf_keras": "tf_keras (Keras 2)", "keras3": "Keras 3"}
_OPTIMIZERS = {"ftrl": ("accumulator", "linear"), "adagrad": ("accumulator",)}
# Slot names as each optimizer family saves them (TF1's v1 FtrlOptimizer names its accumulator
# "accum" where it is saved object-based).
_SLOT_NAMES = {"accumulator": "accumulator", "accum": "accumulator", "linear": "linear"}
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ITERATION_NAMES = ("iter", "_iterations")


@dataclasses.dataclass
class SavedState:
    """Optimizer state read from a checkpoint: model variables and their slots by name."""

    format: str
    optimizer: str  # "ftrl" or "adagrad"
    variables: dict  # name -> np.ndarray
    slots: dict  # variable name -> {slot name: np.ndarray}
    iterations: int = None
    iterations_from: str = None
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    layout: str = ""  # which layout of the format (e.g. tf_keras's OptimizerV2 or default)
    unread: dict = dataclasses.field(default_factory=dict)  # checkpoint entry -> why


@dataclasses.dataclass
class Report:
    """What a conversion mapped and what it did not.

    `variables` maps each checkpoint name to the target name it went to; `slots` lists the slots
    restored for each target variable; `not_mapped` says, for each checkpoint entry and each target
    variable left as it was, why; `converted` lists values reshaped or cast on the way;
    `hyperparameters` are those the checkpoint holds, `advice` what to pass the target optimizer.
    """

    source: str
    target: str
    source_format: str
    target_format: str
    optimizer: str
    layout: str = ""
    variables: dict = dataclasses.field(default_factory=dict)
    slots: dict = dataclasses.field(default_factory=dict)
    iterations: int = None
    iterations_from: str = None
    not_mapped: dict = dataclasses.field(default_factory=dict)
    converted: list = dataclasses.field(default_factory=list)
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    advice: list = dataclasses.field(default_factory=list)

    @property
    def complete(self):
        """Whether every variable, slot and the step count found a place."""
        return not self.not_mapped

    def to_dict(self):
        return dataclasses.asdict(self) | {"complete": self.complete}

    def __str__(self):
        lines = [f"{self.source} ({self.source_format}{', ' + self.layout if self.layout else ''})"
                 f" -> {self.target} ({self.target_format}): {self.optimizer} state"]
        lines.append(f"  mapped {len(self.variables)} variables:")
        lines += [f"    {s} -> {t}  [{', '.join(self.slots.get(t, [])) or 'no slots'}]"
                  for s, t in self.variables.items()]
        lines.append(f"  iterations: {self.iterations} (from {self.iterations_from})"
                     if self.iterations is not None else "  iterations: not mapped")
        for item in self.converted:
            lines.append(f"  converted: {item}")
        if self.not_mapped:
            lines.append(f"  NOT mapped ({len(self.not_mapped)}):")
            lines += [f"    {name}: {why}" for name, why in self.not_mapped.items()]
        if self.hyperparameters:
            lines.append("  hyperparameters in the checkpoint: " + ", ".join(
                f"{k}={v:g}" for k, v in self.hyperparameters.items()))
        lines += [f"  note: {item}" for item in self.advice]
        return "\n".join(lines)


def _check_format(value, argument):
    if value not in FORMATS:
        raise ValueError(f"`{argument}` must be one of {list(FORMATS)}. Received: "
                         f"{argument}={value!r}")


def _reader(src):
    import tensorflow as tf
    try:
        return tf.train.load_checkpoint(src)
    except (ValueError, tf.errors.OpError) as e:
        raise ValueError(f"No checkpoint found at {src!r} (a checkpoint prefix such as "
                         f"'dir/ckpt-5', or a directory with a `checkpoint` file): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _detected_format(reader):
    """"tf1", "tf_keras" or "keras3" for what the checkpoint holds, and the layout's name."""
    if not reader.has_tensor(_GRAPH_KEY):
        return "tf1", "name-based"
    graph = _object_graph(reader)
    optimizer = _optimizer_node(graph)
    if optimizer is None:
        return None, "no optimizer"
    children = {c.local_name for c in graph.nodes[optimizer].children}
    if any(node.slot_variables for node in graph.nodes) or "iter" in children:
        return "tf_keras", "OptimizerV2"
    if "_trainable_variables" in children:
        # keras.optimizers and tf_ftrl.Ftrl/Adagrad save the same layout, by design: nothing in
        # the file tells them apart.
        return "keras3", "keras.optimizers or tf_ftrl"
    return "tf_keras", "tf_keras.optimizers (default)"


def _object_graph(reader):
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_GRAPH_KEY))
    return graph


def _optimizer_node(graph):
    """The id of the node that holds the optimizer's own variables (step count, slots)."""
    for node_id, node in enumerate(graph.nodes):
        if node.slot_variables:
            return node_id
    for node_id, node in enumerate(graph.nodes):
        if {c.local_name for c in node.children} & set(_ITERATION_NAMES):
            return node_id
    return None


def _variable_nodes(graph):
    """{node id: (checkpoint key, full name)} for every saved variable."""
    found = {}
    for node_id, node in enumerate(graph.nodes):
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                found[node_id] = (attribute.checkpoint_key, attribute.full_name)
    return found


def read(src, from_, tf1_name=None):
    """The optimizer state saved at `src` in format `from_` ("tf1", "tf_keras" or "keras3"), as a
    SavedState. A checkpoint of another format than `from_` is an error that names the format it
    holds. `tf1_name`: the `name` the TF1 optimizer was given, if not "Ftrl" or "Adagrad", or its
    slots' names as "ACCUM,LINEAR" (FtrlOptimizer's `accum_name` and `linear_name`)."""
    _check_format(from_, "from_")
    reader = _reader(src)
    detected, layout = _detected_format(reader)
    if detected != from_:
        holds = (f"holds {_FORMAT_NAMES[detected]} state ({layout})" if detected
                 else "is an object-based checkpoint with no optimizer in it")
        hint = f": pass --from {detected}" if detected else ""
        raise ValueError(f"The checkpoint {src!r} {holds}, not {_FORMAT_NAMES[from_]}{hint}.")
    state = _read_tf1(reader, tf1_name) if from_ == "tf1" else _read_object_based(reader)
    state.format, state.layout = from_, layout
    return state


def _optimizer_of(slots, where):
    names = {name for variable_slots in slots.values() for name in variable_slots}
    if not names:
        raise ValueError(f"{where} holds no FTRL or Adagrad slots (accumulator, linear).")
    return "ftrl" if "linear" in names else "adagrad"


def _tf1_slot_names(tf1_name):
    """(accumulator's, linear's) suffix from `tf1_name` given as "ACCUM,LINEAR" or a pair (the
    `accum_name` and `linear_name` of FtrlOptimizer), or None where it is the optimizer's name."""
    if isinstance(tf1_name, str):
        tf1_name = tf1_name.split(",") if "," in tf1_name else None
    if tf1_name is None:
        return None
    names = [n.strip() for n in tf1_name if n and n.strip()]
    if not 1 <= len(names) <= 2 or len(names) != len(tf1_name):
        raise ValueError(f"`tf1_name` must be the optimizer's name, or its slots' names as "
                         f"'ACCUM,LINEAR' (FtrlOptimizer's accum_name and linear_name). "
                         f"Received: tf1_name={tf1_name!r}")
    return names[0], names[1] if len(names) == 2 else None


def _read_tf1(reader, tf1_name=None):
    shapes = reader.get_variable_to_shape_map()
    suffixes = {}
    for key in shapes:
        parent, _, suffix = key.rpartition("/")
        if parent in shapes and shapes[parent] == shapes[key]:
            suffixes.setdefault(suffix, []).append(parent)
    slot_names = _tf1_slot_names(tf1_name)
    if slot_names:
        accumulator, linear = slot_names
        if accumulator not in suffixes:
            raise ValueError(f"The checkpoint holds no TF1 slots named `<variable>/{accumulator}` "
                             f"(the accumulator's name given in tf1_name).")
        if linear is not None and linear not in suffixes:
            raise ValueError(f"The checkpoint holds no TF1 slots named `<variable>/{linear}` "
                             f"(the linear slot's name given in tf1_name).")
    else:
        name = tf1_name or next((n for n in ("Ftrl", "Adagrad") if n in suffixes), None)
        if name is None or name not in suffixes:
            raise ValueError(
                "The checkpoint holds no TF1 FTRL or Adagrad slots (`<variable>/Ftrl`, "
                "`<variable>/Ftrl_1`, `<variable>/Adagrad`): "
                + (f"none named `<variable>/{tf1_name}`." if tf1_name else
                   "if the optimizer was given another `name`, pass it as tf1_name (or its "
                   "slots' names, 'ACCUM,LINEAR')."))
        accumulator, linear = name, f"{name}_1"
    slot_keys = {f"{v}/{accumulator}": (v, "accumulator") for v in suffixes[accumulator]}
    slot_keys |= {f"{v}/{linear}": (v, "linear") for v in suffixes.get(linear, [])}
    state = SavedState("tf1", "", {}, {})
    for key in sorted(shapes):
        value = reader.get_tensor(key)
        if key in slot_keys:
            variable, slot = slot_keys[key]
            state.slots.setdefault(variable, {})[slot] = value
        elif key == "global_step":
            state.iterations, state.iterations_from = int(value), key
        else:
            state.variables[key] = value
    state.optimizer = _optimizer_of(state.slots, "The checkpoint")
    return state


def _read_object_based(reader):
    graph = _object_graph(reader)
    variables = _variable_nodes(graph)
    optimizer_id = _optimizer_node(graph)
    optimizer = graph.nodes[optimizer_id]
    state = SavedState("", "", {}, {})
    own = {}  # the optimizer's own variables: node id -> name it has there
    for child in optimizer.children:
        if child.node_id in variables:
            own[child.node_id] = child.local_name
        elif child.local_name == "_variables":
            for item in graph.nodes[child.node_id].children:
                own.setdefault(item.node_id, None)
    slot_of = {s.slot_variable_node_id: (s.original_variable_node_id, s.slot_name)
               for s in optimizer.slot_variables}
    # tf.train.Checkpoint.save's (and CheckpointManager's) count of saves: no model's variable.
    save_counter = {c.node_id for c in graph.nodes[0].children if c.local_name == "save_counter"}
    for node_id, (key, full_name) in variables.items():
        if node_id in slot_of or node_id in own or node_id in save_counter:
            continue
        state.variables[full_name] = reader.get_tensor(key)
    by_id = {node_id: full for node_id, (_, full) in variables.items()}
    for slot_id, (original, slot_name) in slot_of.items():
        slot = _SLOT_NAMES.get(slot_name)
        if slot is None:
            state.unread[variables[slot_id][0]] = f"a slot {slot_name!r} of no FTRL or Adagrad"
            continue
        state.slots.setdefault(by_id[original], {})[slot] = reader.get_tensor(
            variables[slot_id][0])
    for node_id, local_name in own.items():
        key, full_name = variables[node_id]
        value = reader.get_tensor(key)
        if local_name in _ITERATION_NAMES or full_name.rpartition("/")[2] == "iteration":
            state.iterations, state.iterations_from = int(value), key.split("/.")[0]
        elif local_name is not None or np.ndim(value) == 0:
            state.hyperparameters[(local_name or full_name.rpartition("/")[2]).lstrip("_")] = \
                float(value)
        else:
            owner = _slot_owner(full_name, state.variables)
            if owner is None:
                state.unread[key] = (f"optimizer variable {full_name!r} names no saved variable "
                                     f"and slot")
            else:
                state.slots.setdefault(owner[0], {})[owner[1]] = value
    state.optimizer = _optimizer_of(state.slots, "The checkpoint")
    return state


def _slot_owner(full_name, variables):
    """(variable, slot) that an optimizer variable's full name names: Keras 3 names a slot
    `<optimizer>/<path with _ for />_<slot>`, tf_keras's default optimizers
    `<optimizer>/<slot>/<variable name>`."""
    found = []
    for variable in variables:
        for slot in ("accumulator", "linear"):
            keras3 = f"{variable.replace('/', '_')}_{slot}"
            tf_keras = f"{slot}/{variable}"
            if any(full_name == n or full_name.endswith("/" + n) for n in (keras3, tf_keras)):
                found.append((variable, slot))
    return found[0] if len(found) == 1 else None


# Matching names.

def parse_mapping(items):
    """[(pattern, replacement)] from "OLD=NEW" strings (OLD a regular expression matched against
    a whole checkpoint name, NEW its replacement, `\\1` for groups)."""
    rules = []
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ValueError(f"A mapping must read OLD=NEW. Received: {item!r}")
        try:
            rules.append((re.compile(old), new))
        except re.error as e:
            raise ValueError(f"The mapping {item!r}: {old!r} is not a regular expression: {e}.") \
                from None
    return rules


def _renamed(name, rules):
    for pattern, replacement in rules:
        if pattern.fullmatch(name):
            return pattern.sub(replacement, name, count=1)
    return name


def match_names(source_names, target_names, rules=()):
    """{source name: target name}: the same name after `rules`, or else the one target name that
    ends with "/" + the source name (or that the source name so ends with)."""
    targets = list(target_names)
    renamed = {s: _renamed(s, rules) for s in source_names}
    matched = {s: r for s, r in renamed.items() if r in targets}
    taken = set(matched.values())
    for s, r in renamed.items():
        if s in matched:
            continue
        candidates = [t for t in targets if t not in taken
                      and (t.endswith("/" + r) or r.endswith("/" + t))]
        if len(candidates) == 1:
            matched[s] = candidates[0]
            taken.add(candidates[0])
    return matched


# Advice on hyperparameters.

def _advice(state, target_format, target_optimizer=None):
    advice = []
    if state.format == "tf1":
        advice.append("TF1 checkpoints hold no hyperparameters: give the target optimizer the "
                      "TF1 run's arguments" + (
                          " (FtrlOptimizer's names and defaults carry over; beta=None is "
                          "beta=0.0)." if state.optimizer == "ftrl" else "."))
    if state.optimizer == "adagrad" and state.format == "tf1" and target_format != "tf1":
        advice.append("TF1's AdagradOptimizer has no epsilon: use tf_ftrl.Adagrad(epsilon=0.0) "
                      "or keras.optimizers.Adagrad(epsilon=0.0) for its update exactly; "
                      "tf_keras's Adagrad (stock and tf_ftrl.legacy) turns epsilon=0 into "
                      "1e-7, added to sqrt(accumulator).")
    if state.optimizer == "adagrad" and {state.format, target_format} == {"tf_keras", "keras3"}:
        advice.append("Adagrad's epsilon: Keras 3's and tf_keras's default Adagrad add it inside "
                      "the square root, tf_keras's legacy Adagrad and tf_ftrl's outside "
                      "(a difference under 2e-7 relative with the default 1e-7).")
    if state.hyperparameters.get("decay"):
        advice.append(
            f"The checkpoint's optimizer had decay={state.hyperparameters['decay']:g} "
            "(lr / (1 + decay * iterations)); Keras 3 has no `decay`: pass "
            "learning_rate=keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, "
            f"decay_rate={state.hyperparameters['decay']:g}).")
    if target_optimizer is not None:
        for name, saved in state.hyperparameters.items():
            value = _hyperparameter(target_optimizer, name)
            if value is not None and not np.isclose(value, saved, rtol=1e-6, atol=0.0):
                advice.append(f"{name}: the checkpoint's optimizer had {saved:g}, the target "
                              f"optimizer has {value:g}.")
    return advice


def _hyperparameter(optimizer, name):
    try:
        value = (optimizer._get_hyper(name) if hasattr(optimizer, "_get_hyper")
                 else getattr(optimizer, name))
        if callable(value):
            return None  # a schedule
        return float(np.asarray(value))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


# Targets.

def _front_end(model):
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and isinstance(model, tf_keras.Model):
        return "tf_keras"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "keras3"
    raise ValueError(f"`model` must be a Keras 3 or tf_keras model. Received: {type(model)}")


def _target_name(variable):
    return variable.path if hasattr(variable, "path") else variable.name.split(":")[0]


def _build_optimizer(optimizer, variables):
    if hasattr(optimizer, "_create_all_weights"):  # tf_keras OptimizerV2
        optimizer._create_all_weights(variables)
    elif not optimizer.built:
        optimizer.build(variables)


def _optimizer_kind(optimizer):
    name = type(optimizer).__name__.lower()
    return next((k for k in _OPTIMIZERS if k in name), None)


def _slot(optimizer, variable, slot):
    """The target optimizer's slot variable `slot` of model variable `variable`."""
    if hasattr(optimizer, "get_slot"):  # OptimizerV2 and tf_ftrl's Keras 3 optimizers
        return optimizer.get_slot(variable, slot)
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    if hasattr(variable, "path"):  # Keras 3
        wanted = f"{variable.path.replace('/', '_')}_{slot}"
        found = [v for v in variables if v.name == wanted]
    else:  # tf_keras's default optimizers: <optimizer>/<slot>/<variable name>
        wanted = f"/{slot}/{variable.name.split(':')[0]}"
        found = [v for v in variables if ("/" + v.name.split(":")[0]).endswith(wanted)]
    if len(found) == 1:
        return found[0]
    # Keras 3 before 3.10 named accumulators plainly: its lists are by the variable's index.
    lists = getattr(optimizer, {"accumulator": "_accumulators", "linear": "_linears"}[slot])
    return lists[optimizer._get_variable_index(variable)]


def _in_layout(value, shape, dtype, what, converted):
    """`value` (a saved variable or slot) in `shape`: an accumulator saved with the other
    `rowwise` setting converted (`convert_slot`; any other mismatch a clear error). That, and a
    dtype other than `dtype` (a tf.DType, which the caller casts to), go into `converted`."""
    import tensorflow as tf
    from tf_ftrl._slot_conversion import convert_slot
    value = np.asarray(value)
    shape = tuple(shape)
    if value.shape != shape:
        value = convert_slot(value, shape, what)
        converted.append(f"{what}: shape {np.shape(value)} from the checkpoint's other layout")
    if tf.as_dtype(value.dtype) != dtype:
        converted.append(f"{what}: {value.dtype} -> {dtype.name}")
    return value


def _assign(target, value, what, converted):
    import tensorflow as tf
    dtype = tf.as_dtype(target.dtype)
    target.assign(tf.cast(_in_layout(value, target.shape, dtype, what, converted), dtype))


def restore(src, model, optimizer, *, from_, mapping=(), iterations=None, tf1_name=None):
    """Assigns the optimizer state saved at `src` (format `from_`) to a live `model` and
    `optimizer` (Keras 3 or tf_keras; built on `model.trainable_variables` if not yet), and
    returns the Report. Save them as you like afterwards.

    Args:
        src: The checkpoint's prefix (or a directory with a `checkpoint` file).
        model: The model to resume, built (its variables created).
        optimizer: The optimizer to resume: FTRL state needs an FTRL optimizer, Adagrad state an
            Adagrad one (stock or tf_ftrl's).
        from_: "tf1", "tf_keras" or "keras3".
        mapping: "OLD=NEW" strings or (compiled pattern, replacement) pairs renaming the
            checkpoint's variable names before matching (see `parse_mapping`).
        iterations: The step count to set, instead of the checkpoint's.
        tf1_name: The `name` the TF1 optimizer was given, if not "Ftrl" or "Adagrad", or its
            slots' names as "ACCUM,LINEAR" (FtrlOptimizer's `accum_name` and `linear_name`).
    """
    state = read(src, from_, tf1_name)
    target_format = _front_end(model)
    kind = _optimizer_kind(optimizer)
    if kind is not None and kind != state.optimizer:
        raise ValueError(f"The checkpoint {src!r} holds {state.optimizer} state, which does not "
                         f"resume a {type(optimizer).__name__}: pass a "
                         f"{'Ftrl' if state.optimizer == 'ftrl' else 'Adagrad'} optimizer.")
    report = Report(src, "(model, optimizer)", from_, target_format, state.optimizer,
                    layout=state.layout, hyperparameters=state.hyperparameters)
    report.not_mapped.update(state.unread)
    rules = [r if isinstance(r, tuple) else parse_mapping([r])[0] for r in mapping]
    trainable = list(model.trainable_variables)
    _build_optimizer(optimizer, trainable)
    targets = {_target_name(v): v for v in model.variables}
    trainable_names = {_target_name(v) for v in trainable}
    matched = match_names(state.variables, targets, rules)
    for source_name, value in state.variables.items():
        if source_name not in matched:
            report.not_mapped[source_name] = "no variable of this name in the target model"
            continue
        target_name = matched[source_name]
        target = targets[target_name]
        if np.size(value) != int(np.prod(target.shape)):
            report.not_mapped[source_name] = (f"shape {tuple(np.shape(value))} in the checkpoint, "
                                              f"{tuple(target.shape)} in the target")
            continue
        _assign(target, np.reshape(value, target.shape), target_name, report.converted)
        report.variables[source_name] = target_name
        saved_slots = state.slots.get(source_name, {})
        restored = []
        for slot in _OPTIMIZERS[state.optimizer]:
            if slot not in saved_slots:
                continue
            if target_name not in trainable_names:
                report.not_mapped[f"{source_name} ({slot})"] = "its target is not trainable"
                continue
            _assign(_slot(optimizer, target, slot), saved_slots[slot],
                    f"{target_name} ({slot})", report.converted)
            restored.append(slot)
        report.slots[target_name] = restored
        if target_name in trainable_names and len(restored) < len(_OPTIMIZERS[state.optimizer]):
            report.not_mapped[f"{target_name} (slots)"] = (
                "the checkpoint holds no slots for it: they start fresh")
    for name in targets:
        if name not in report.variables.values():
            report.not_mapped[name] = ("not in the checkpoint: keeps its value here"
                                       + (" and fresh slots" if name in trainable_names else ""))
    step = iterations if iterations is not None else state.iterations
    if step is not None:
        optimizer.iterations.assign(step)
        report.iterations = int(step)
        report.iterations_from = "argument" if iterations is not None else state.iterations_from
    else:
        report.not_mapped["iterations"] = (
            "the checkpoint holds no step count (TF1: no `global_step`); the optimizer's "
            "iterations start at 0, which matters only to learning-rate schedules and `decay`")
    report.advice = _advice(state, target_format, optimizer)
    return report


def _tf1_slot(value, variable, what, converted):
    """A slot as TF1's optimizers keep it: element-wise, in its variable's dtype. tf_ftrl's
    row-wise accumulators (one value per row) repeat each row's value, and bfloat16 or float16
    state is widened exactly; `converted` gets a line for each."""
    import tensorflow as tf
    variable = np.asarray(variable)
    return _in_layout(value, variable.shape, tf.as_dtype(variable.dtype), what,
                      converted).astype(variable.dtype)


def _write_tf1(state, dst, rules, tf1_name, iterations, report):
    import tensorflow as tf
    slot_names = _tf1_slot_names(tf1_name)
    if slot_names:
        slot_suffixes = {"accumulator": slot_names[0], "linear": slot_names[1]}
        if "linear" in {slot for slots in state.slots.values() for slot in slots} and \
                slot_names[1] is None:
            raise ValueError(f"FTRL state needs both slots' names in tf1_name, 'ACCUM,LINEAR'. "
                             f"Received: tf1_name={tf1_name!r}")
    else:
        name = tf1_name or {"ftrl": "Ftrl", "adagrad": "Adagrad"}[state.optimizer]
        slot_suffixes = {"accumulator": name, "linear": f"{name}_1"}
    tensors = {}
    for source_name, value in state.variables.items():
        target = _renamed(source_name, rules)
        tensors[target] = value
        report.variables[source_name] = target
        slots = state.slots.get(source_name, {})
        for slot, value_of_slot in slots.items():
            tensors[f"{target}/{slot_suffixes[slot]}"] = _tf1_slot(
                value_of_slot, value, f"{target} ({slot})", report.converted)
        report.slots[target] = list(slots)
    step = iterations if iterations is not None else state.iterations
    if step is not None:
        tensors["global_step"] = np.int64(step)
        report.iterations = int(step)
        report.iterations_from = "argument" if iterations is not None else state.iterations_from
    else:
        report.not_mapped["iterations"] = "the checkpoint holds no step count"
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=dst, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return dst


def convert(src, dst, *, from_, to, model=None, optimizer=None, mapping=(), iterations=None,
            tf1_name=None):
    """Rewrites the optimizer state saved at `src` in format `from_` into a checkpoint `dst` of
    format `to`, and returns the Report.

    For `to="tf1"` no model is needed: the variables keep their names (after `mapping`), the
    slots become `<name>/Ftrl`, `<name>/Ftrl_1` or `<name>/Adagrad` (`tf1_name` instead of the
    optimizer's name, or "ACCUM,LINEAR" for the slots' names), element-wise in the variable's
    dtype as TF1 keeps them (row-wise or 16-bit slots converted, and reported), the step count
    `global_step`; a `tf.compat.v1.train.Saver` restores it.
    For "tf_keras" and "keras3", `model` and `optimizer` are those to resume training with (the
    optimizer's hyperparameters are saved with it); the state is assigned to them as `restore`
    does, and `tf.train.Checkpoint(model=model, optimizer=optimizer)` is written to `dst`.
    """
    _check_format(from_, "from_")
    _check_format(to, "to")
    if to == "tf1":
        state = read(src, from_, tf1_name)
        report = Report(src, dst, from_, to, state.optimizer, layout=state.layout,
                        hyperparameters=state.hyperparameters)
        report.not_mapped.update(state.unread)
        rules = [r if isinstance(r, tuple) else parse_mapping([r])[0] for r in mapping]
        _write_tf1(state, dst, rules, None if from_ == "tf1" else tf1_name, iterations, report)
        report.advice = _advice(state, to)
        return report
    if model is None or optimizer is None:
        raise ValueError(f"Converting to {to} needs the `model` and `optimizer` to resume with "
                         f"(on the command line: --model MODULE:FUNCTION).")
    front_end = _front_end(model)
    if front_end != to:
        raise ValueError(f"to={to!r}, but the model is a {_FORMAT_NAMES[front_end]} model.")
    report = restore(src, model, optimizer, from_=from_, mapping=mapping, iterations=iterations,
                     tf1_name=tf1_name)
    import tensorflow as tf
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    # Made before `write` so that it is saved: without it, restoring into a Checkpoint (which
    # has one) fails `assert_existing_objects_matched`.
    checkpoint.save_counter  # noqa: B018
    checkpoint.write(dst)
    report.target = dst
    return report


# The command line.

def _model_and_optimizer(spec):
    module_name, sep, function_name = spec.partition(":")
    if not sep:
        raise ValueError(f"--model must read MODULE:FUNCTION. Received: {spec!r}")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model {spec}: {e}") from None
    built = function()
    model, optimizer = built if isinstance(built, tuple) else (built, built.optimizer)
    if optimizer is None:
        raise ValueError(f"{spec}() returned a model with no optimizer: compile it with the "
                         f"optimizer to resume with, or return (model, optimizer).")
    return model, optimizer


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tf_ftrl.convert_checkpoint",
        description="Rewrite FTRL or Adagrad optimizer state (weights, accumulators, linear "
                    "terms, the step count) from one checkpoint format into another, and say "
                    "what could not be mapped.")
    parser.add_argument("src", help="the checkpoint to read (prefix, or its directory)")
    parser.add_argument("dst", help="the checkpoint prefix to write")
    parser.add_argument("--from", dest="from_", required=True, choices=FORMATS)
    parser.add_argument("--to", required=True, choices=FORMATS)
    parser.add_argument("--model", metavar="MODULE:FUNCTION",
                        help="(--to tf_keras/keras3) a function returning the built model, "
                             "compiled with the optimizer to resume with, or (model, optimizer)")
    parser.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                        help="rename checkpoint variables: OLD a regular expression matched "
                             "against the whole name, NEW its replacement (repeatable)")
    parser.add_argument("--iterations", type=int, help="the step count to write instead")
    parser.add_argument("--tf1-name", metavar="NAME|ACCUM,LINEAR",
                        help="the `name` of the TF1 optimizer (default: Ftrl or Adagrad), or its "
                             "slots' names (FtrlOptimizer's accum_name and linear_name)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when anything was not mapped")
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        rules = parse_mapping(args.map)
        model = optimizer = None
        if args.to != "tf1":
            if not args.model:
                parser.error(f"--to {args.to} needs --model MODULE:FUNCTION (the model and "
                             f"optimizer to resume with)")
            model, optimizer = _model_and_optimizer(args.model)
        report = convert(args.src, args.dst, from_=args.from_, to=args.to, model=model,
                         optimizer=optimizer, mapping=rules, iterations=args.iterations,
                         tf1_name=args.tf1_name)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps(report.to_dict()) if args.json else report)
    return 1 if args.strict and not report.complete else 0


if __name__ == "__main__":
    sys.exit(main())
