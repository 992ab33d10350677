"""Runs tf_ftrl.legacy's optimizers beside tf_keras's own in a process of its own and prints what
tests/test_legacy.py checks as one JSON line.

tf_keras (Keras 2) must run with TF_USE_LEGACY_KERAS=1 set before TensorFlow starts, and the
pytest process already runs Keras 3, so tests/test_legacy.py runs this script in fresh processes:

    # equivalence with tf_keras's optimizers, the API, saving
    TF_USE_LEGACY_KERAS=1 python -m tests.support.legacy_worker optimizers
    # import tf_ftrl alone; tf_ftrl.legacy with tf_keras blocked
    python -m tests.support.legacy_worker imports
"""

import copy
import json
import sys
import warnings

from tests.support.workers import print_result, scratch_directory

ROWS, COLUMNS = 8, 3
STEPS = 4
# Per step: indices with duplicates (rows 0, 3 and 7 are never touched).
SPARSE_INDICES = [[1, 4, 4, 6, 1], [2, 2, 2, 5, 6], [1, 6, 5, 4, 1], [4, 2, 6, 6, 5]]
UNTOUCHED_ROWS = [0, 3, 7]

# name: (optimizer, constructor arguments given to ours and to tf_keras's class alike)
CASES = {
    "ftrl": ("Ftrl", dict(learning_rate=0.2)),
    "ftrl_regularized": ("Ftrl", dict(
        learning_rate=0.2, learning_rate_power=-0.7, initial_accumulator_value=0.2,
        l1_regularization_strength=0.01, l2_regularization_strength=0.02,
        l2_shrinkage_regularization_strength=0.03, beta=0.5)),
    "ftrl_decay_clipvalue": ("Ftrl", dict(learning_rate=0.3, beta=0.1, decay=0.2,
                                          clipvalue=0.6)),
    "adagrad": ("Adagrad", dict(learning_rate=0.2)),
    "adagrad_decay_clipnorm": ("Adagrad", dict(learning_rate=0.2, initial_accumulator_value=0.5,
                                               epsilon=1e-3, decay=0.1, clipnorm=0.8)),
}
DTYPES = ("float32", "float64")


def gradients(kind, dtype, seed=3):
    """STEPS gradients: dense arrays, or (values, indices) pairs with duplicate indices."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "dense":
        return [rng.normal(size=(ROWS, COLUMNS)).astype(dtype) for _ in range(STEPS)]
    return [(rng.normal(size=(len(indices), COLUMNS)).astype(dtype), np.array(indices, "int32"))
            for indices in SPARSE_INDICES]


def deduplicated(values, indices):
    """The same sparse gradient with each row's duplicates summed (numpy)."""
    import numpy as np

    unique = np.unique(indices)
    summed = np.stack([values[indices == row].sum(axis=0) for row in unique])
    return summed, unique.astype("int32")


def initial_value(dtype, zeros=False):
    import numpy as np

    if zeros:
        return np.zeros((ROWS, COLUMNS), dtype)
    return np.random.default_rng(1).uniform(-0.5, 0.5, size=(ROWS, COLUMNS)).astype(dtype)


def train(optimizer, grads, dtype, zeros=False, use_function=False):
    """Applies grads step by step to a fresh variable; returns its final value and slots."""
    import tensorflow as tf

    var = tf.Variable(initial_value(dtype, zeros))

    def apply(grad):
        if isinstance(grad, tuple):
            values, indices = grad
            grad = tf.IndexedSlices(tf.convert_to_tensor(values), tf.convert_to_tensor(indices),
                                    tf.constant([ROWS, COLUMNS]))
        optimizer.apply_gradients([(grad, var)])

    if use_function:
        apply = tf.function(apply)
    for grad in grads:
        apply(grad)
    return state(optimizer, var)


def state(optimizer, var):
    return {"var": var.numpy().tolist(),
            "slots": {name: optimizer.get_slot(var, name).numpy().tolist()
                      for name in optimizer.get_slot_names()},
            "iterations": int(optimizer.iterations.numpy())}


def classes(name):
    import tf_keras

    import tf_ftrl

    # Attribute access, not `import tf_ftrl.legacy`: tf_ftrl imports it lazily on first use.
    return getattr(tf_ftrl.legacy, name), getattr(tf_keras.optimizers.legacy, name)


def equivalence():
    """Ours and tf_keras's on the same gradients; sparse ones also against tf_keras's on the
    deduplicated gradients."""
    result = {}
    for case, (name, kwargs) in CASES.items():
        ours, stock = classes(name)
        for dtype in DTYPES:
            for kind in ("dense", "sparse"):
                grads = gradients(kind, dtype)
                entry = {"ours": train(ours(**kwargs), grads, dtype, use_function=True),
                         "stock": train(stock(**kwargs), grads, dtype)}
                if kind == "sparse":
                    entry["stock_deduplicated"] = train(
                        stock(**kwargs), [deduplicated(*g) for g in grads], dtype)
                result[f"{case}/{dtype}/{kind}"] = entry
    result["initial"] = initial_value("float32").tolist()
    return result


def special_cases():
    """FTRL with learning_rate_power=-0.5 and no regularisation from zero weights is Adagrad;
    with learning_rate_power=0 it is SGD."""
    import tf_keras

    ftrl, _ = classes("Ftrl")
    adagrad, _ = classes("Adagrad")
    result = {}
    for kind in ("dense", "sparse"):
        grads = gradients(kind, "float32", seed=9)
        result[f"adagrad/{kind}"] = {
            # epsilon=0 means tf_keras.backend.epsilon() (1e-7), as for tf_keras's Adagrad.
            "ftrl": train(ftrl(learning_rate=0.3), grads, "float32", zeros=True)["var"],
            "other": train(adagrad(learning_rate=0.3, epsilon=0), grads, "float32",
                           zeros=True)["var"],
        }
        result[f"sgd/{kind}"] = {
            "ftrl": train(ftrl(learning_rate=0.3, learning_rate_power=0.0), grads, "float32",
                          zeros=True)["var"],
            "other": train(tf_keras.optimizers.legacy.SGD(0.3), grads, "float32",
                           zeros=True)["var"],
        }
    return result


def update_op_types():
    """The update ops in a traced sparse + dense apply_gradients of ours: the fused ops only, no
    Python-side deduplication (Unique, segment sums)."""
    import tensorflow as tf

    result = {}
    for name in ("Ftrl", "Adagrad"):
        ours, _ = classes(name)
        optimizer = ours()
        table, dense = tf.Variable(tf.zeros((ROWS, COLUMNS))), tf.Variable(tf.zeros(COLUMNS))

        @tf.function
        def step(values, indices):
            optimizer.apply_gradients([
                (tf.IndexedSlices(values, indices, tf.constant([ROWS, COLUMNS])), table),
                (tf.reduce_sum(values, axis=0), dense)])

        values, indices = gradients("sparse", "float32")[0]
        graph = step.get_concrete_function(tf.constant(values), tf.constant(indices)).graph
        result[name] = sorted({op.type for op in graph.get_operations()
                               if "Apply" in op.type or "Unique" in op.type
                               or "Segment" in op.type})
    return result


def checkpoints():
    """tf.train.Checkpoint from ours into tf_keras's and back: after restoring and one more step,
    the restored side equals the side that kept training."""
    import tensorflow as tf

    result = {}
    for case in ("ftrl_regularized", "adagrad"):
        name, kwargs = CASES[case]
        ours, stock = classes(name)
        for direction, (writer_class, reader_class) in (("ours_to_stock", (ours, stock)),
                                                       ("stock_to_ours", (stock, ours))):
            grads = gradients("sparse", "float32")
            writer, var = writer_class(**kwargs), tf.Variable(initial_value("float32"))
            for values, indices in grads[:-1]:
                writer.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]),
                                         var)])
            path = tf.train.Checkpoint(optimizer=writer, var=var).write(
                scratch_directory() + "/ckpt")
            values, indices = grads[-1]
            writer.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]), var)])

            reader = reader_class(**kwargs)
            restored = tf.Variable(tf.zeros((ROWS, COLUMNS)))
            status = tf.train.Checkpoint(optimizer=reader, var=restored).read(path)
            # The slots do not exist yet: they are restored when this step creates them.
            reader.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]),
                                     restored)])
            try:
                status.assert_consumed()
                consumed = "ok"
            except AssertionError as e:
                consumed = str(e)
            result[f"{case}/{direction}"] = {"writer": state(writer, var),
                                             "reader": state(reader, restored),
                                             "consumed": consumed}
    return result


def configs():
    import tf_keras

    result = {}
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10,
                                                              decay_rate=0.5)
    for case, (name, kwargs) in list(CASES.items()) + [
            ("ftrl_schedule", ("Ftrl", dict(learning_rate=schedule))),
            ("adagrad_schedule", ("Adagrad", dict(learning_rate=schedule)))]:
        ours, stock = classes(name)
        optimizer = ours(**kwargs)
        config = optimizer.get_config()
        # from_config and deserialize edit the dicts they are given (as tf_keras's do).
        restored = ours.from_config(copy.deepcopy(config))
        serialized = tf_keras.optimizers.serialize(optimizer)
        deserialized = tf_keras.optimizers.deserialize(copy.deepcopy(serialized))
        result[case] = {
            "config": json.loads(json.dumps(config, default=str)),
            "stock_config": json.loads(json.dumps(stock(**kwargs).get_config(), default=str)),
            "round_trip": json.loads(json.dumps(restored.get_config(), default=str)),
            "from_stock_config": json.loads(json.dumps(
                ours.from_config(stock(**kwargs).get_config()).get_config(), default=str)),
            "serialized_names": [serialized["class_name"], serialized["registered_name"]],
            "deserialized_type": f"{type(deserialized).__module__}.{type(deserialized).__name__}",
        }
    return result


def learning_rate_kwargs():
    """The deprecated `lr` alias (warned about) and `decay`."""
    import tensorflow as tf

    result = {}
    for name in ("Ftrl", "Adagrad"):
        ours, stock = classes(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizer = ours(lr=0.5)
        grads = gradients("dense", "float32")
        result[name] = {
            "learning_rate": float(optimizer.learning_rate.numpy()),
            "lr_attribute": float(optimizer.lr.numpy()),
            "warnings": [str(w.message) for w in caught],
            "trained_with_lr": train(optimizer, grads, "float32")["var"],
            "trained_stock_learning_rate": train(stock(learning_rate=0.5), grads,
                                                 "float32")["var"],
        }
        decayed = ours(learning_rate=0.5, decay=0.25)
        var = tf.Variable(initial_value("float32"))
        rates = []
        for grad in grads:
            decayed.apply_gradients([(tf.constant(grad), var)])
            rates.append(float(decayed._decayed_lr(tf.float32).numpy()))
        result[name]["decayed_rates"] = rates
        result[name]["decay_config"] = decayed.get_config()["decay"]
    return result


def errors():
    """ValueError/TypeError messages of ours next to tf_keras's for the same bad arguments."""
    bad = {
        "Ftrl": [dict(initial_accumulator_value=-0.1), dict(learning_rate_power=0.5),
                 dict(l1_regularization_strength=-1.0), dict(l2_regularization_strength=-1.0),
                 dict(l2_shrinkage_regularization_strength=-1.0), dict(decay=-0.1),
                 dict(clipnorm=-1.0), dict(clipnorm=1.0, global_clipnorm=1.0),
                 dict(momentum=0.9)],
        "Adagrad": [dict(initial_accumulator_value=-0.1), dict(decay=-0.1),
                    dict(clipvalue=-1.0), dict(momentum=0.9)],
    }
    result = []
    for name, cases in bad.items():
        ours, stock = classes(name)
        for kwargs in cases:
            entry = {"optimizer": name, "kwargs": kwargs}
            for side, cls in (("ours", ours), ("stock", stock)):
                try:
                    cls(**kwargs)
                    entry[side] = None
                except (ValueError, TypeError) as e:
                    entry[side] = [type(e).__name__, str(e)]
            result.append(entry)
    return result


def non_finite_errors():
    """Our ValueError for NaN and infinite arguments, which tf_keras's optimizers let through."""
    arguments = {
        "Ftrl": ["initial_accumulator_value", "learning_rate_power", "l1_regularization_strength",
                 "l2_regularization_strength", "l2_shrinkage_regularization_strength", "beta"],
        "Adagrad": ["initial_accumulator_value", "epsilon"],
    }
    result = []
    for name, names in arguments.items():
        ours, stock = classes(name)
        for argument in names:
            for value in (float("nan"), float("inf")):
                entry = {"optimizer": name, "argument": argument, "value": str(value)}
                for side, cls in (("ours", ours), ("stock", stock)):
                    try:
                        cls(**{argument: value})
                        entry[side] = None
                    except ValueError as e:
                        entry[side] = str(e)
                result.append(entry)
    return result


def optimizer_api():
    """minimize, get_updates (graph mode), slots, weights, set_weights and model.fit, each for
    ours next to tf_keras's."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    result = {}
    for name, kwargs in (("Ftrl", CASES["ftrl_regularized"][1]), ("Adagrad", CASES["adagrad"][1])):
        ours, stock = classes(name)
        entry = {}

        # minimize with a callable loss, eagerly and in a tf.function.
        for mode in ("eager", "function"):
            runs = {}
            for side, cls in (("ours", ours), ("stock", stock)):
                optimizer, var = cls(**kwargs), tf.Variable(initial_value("float32"))
                target = tf.constant(initial_value("float32")[::-1].copy())

                def step(optimizer=optimizer, var=var, target=target):
                    optimizer.minimize(lambda: tf.reduce_sum(tf.square(var - target)), [var])

                if mode == "function":
                    step = tf.function(step)
                for _ in range(3):
                    step()
                runs[side] = state(optimizer, var)
            entry[f"minimize/{mode}"] = runs

        # get_updates / get_gradients: the Keras 1 API, in graph mode.
        runs = {}
        for side, cls in (("ours", ours), ("stock", stock)):
            with tf.Graph().as_default(), tf.compat.v1.Session() as session:
                table = tf.Variable(initial_value("float32"))
                ids = tf.constant([1, 4, 4, 6])
                loss = tf.reduce_sum(tf.square(tf.gather(table, ids) - 1.0))
                optimizer = cls(**kwargs)
                gradient_types = [type(g).__name__ for g in optimizer.get_gradients(loss, [table])]
                updates = optimizer.get_updates(loss, [table])
                session.run(tf.compat.v1.global_variables_initializer())
                for _ in range(3):
                    session.run(updates)
                runs[side] = {"var": session.run(table).tolist(),
                              "gradient_types": gradient_types,
                              "iterations": int(session.run(optimizer.iterations))}
        entry["get_updates"] = runs

        # Slots and weights, and set_weights from tf_keras's optimizer into ours.
        grads = gradients("sparse", "float32")
        theirs, their_var = stock(**kwargs), tf.Variable(initial_value("float32"))
        mine, my_var = ours(**kwargs), tf.Variable(initial_value("float32"))
        for optimizer, var in ((theirs, their_var), (mine, my_var)):
            values, indices = grads[0]
            optimizer.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]),
                                        var)])
        their_var.assign_sub(tf.ones_like(their_var) * 0.1)
        for values, indices in grads[1:2]:
            theirs.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]),
                                     their_var)])
        mine.set_weights(theirs.get_weights())
        my_var.assign(their_var)
        for values, indices in grads[2:]:
            for optimizer, var in ((theirs, their_var), (mine, my_var)):
                optimizer.apply_gradients([(tf.IndexedSlices(values, indices, [ROWS, COLUMNS]),
                                            var)])
        weight_names = [w.name for w in mine.weights]
        extra = mine.add_slot(my_var, "extra", initializer="ones")
        entry["slots_and_weights"] = {
            "slot_names": mine.get_slot_names(),
            "stock_slot_names": theirs.get_slot_names(),
            "weight_names": weight_names,
            "stock_weight_names": [w.name for w in theirs.weights],
            "weights_after_add_slot": len(mine.weights) - len(weight_names),
            "variables_is_weights": mine.variables() == mine.weights,
            "extra_slot_is_get_slot": mine.get_slot(my_var, "extra") is extra,
            "after_set_weights": {"ours": state(mine, my_var), "stock": state(theirs, their_var)},
        }

        # tf_keras model.fit: Embedding (sparse gradients with duplicates) + Dense.
        rng = np.random.default_rng(4)
        ids = rng.integers(0, 20, size=(64, 3)).astype("int32")
        targets = rng.normal(size=(64, 1)).astype("float32")
        fitted = {}
        for side, cls in (("ours", ours), ("stock", stock)):
            tf_keras.utils.set_random_seed(0)
            model = tf_keras.Sequential([
                tf_keras.Input((3,), dtype="int32"),
                tf_keras.layers.Embedding(20, 4),
                tf_keras.layers.Flatten(),
                tf_keras.layers.Dense(1)])
            model.compile(optimizer=cls(**kwargs), loss="mse")
            history = model.fit(ids, targets, batch_size=8, epochs=2, shuffle=False, verbose=0)
            fitted[side] = {"weights": [w.tolist() for w in model.get_weights()],
                            "optimizer_weights": [np.asarray(w).tolist()
                                                  for w in model.optimizer.get_weights()],
                            "loss": history.history["loss"],
                            "iterations": int(model.optimizer.iterations.numpy())}
        entry["fit"] = fitted
        result[name] = entry
    return result


def multiply_linear_by_lr():
    """Ftrl(multiply_linear_by_lr=True) next to TensorFlow's ResourceApplyFtrlV2 and
    ResourceSparseApplyFtrlV2 with multiply_linear_by_lr=True, step by step from fresh random
    values (sparse gradients deduplicated for TensorFlow's op); the same without the flag; its
    config."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    ftrl, _ = classes("Ftrl")
    seed = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(seed)
    # Values exact in float32, in which tf_keras keeps hyperparameters whatever the variables'
    # dtype: TensorFlow's op gets the same ones in float64 too.
    kwargs = dict(learning_rate=0.375, learning_rate_power=-0.625, initial_accumulator_value=0.25,
                  l1_regularization_strength=2**-7, l2_regularization_strength=2**-6,
                  l2_shrinkage_regularization_strength=2**-5, beta=0.75)
    result = {"seed": seed}
    for dtype in DTYPES:
        for kind in ("dense", "sparse"):
            start = rng.uniform(-0.5, 0.5, size=(ROWS, COLUMNS)).astype(dtype)
            if kind == "dense":
                grads = [rng.normal(size=(ROWS, COLUMNS)).astype(dtype) for _ in range(STEPS)]
            else:
                grads = [(rng.normal(size=(6, COLUMNS)).astype(dtype),
                          rng.integers(0, ROWS, size=6).astype("int32")) for _ in range(STEPS)]
            runs = {}
            for flag in (True, False):
                optimizer = ftrl(multiply_linear_by_lr=flag, **kwargs)
                var = tf.Variable(start)
                for grad in grads:
                    if kind == "sparse":
                        grad = tf.IndexedSlices(tf.constant(grad[0]), tf.constant(grad[1]),
                                                tf.constant([ROWS, COLUMNS]))
                    optimizer.apply_gradients([(grad, var)])
                runs["ours" if flag else "without"] = state(optimizer, var)

            var = tf.Variable(start)
            accum = tf.Variable(np.full((ROWS, COLUMNS), kwargs["initial_accumulator_value"],
                                        dtype))
            linear = tf.Variable(np.zeros((ROWS, COLUMNS), dtype))
            lr = kwargs["learning_rate"]
            hyper = {name: tf.constant(value, dtype) for name, value in dict(
                lr=lr, l1=kwargs["l1_regularization_strength"],
                l2=kwargs["l2_regularization_strength"] + kwargs["beta"] / (2 * lr),
                l2_shrinkage=kwargs["l2_shrinkage_regularization_strength"],
                lr_power=kwargs["learning_rate_power"]).items()}
            handles = dict(var=var.handle, accum=accum.handle, linear=linear.handle)
            for grad in grads:
                if kind == "dense":
                    tf.raw_ops.ResourceApplyFtrlV2(grad=grad, multiply_linear_by_lr=True,
                                                   **handles, **hyper)
                else:
                    values, indices = deduplicated(*grad)
                    tf.raw_ops.ResourceSparseApplyFtrlV2(grad=values, indices=indices,
                                                         multiply_linear_by_lr=True, **handles,
                                                         **hyper)
            runs["tensorflow"] = {"var": var.numpy().tolist(),
                                  "slots": {"accumulator": accum.numpy().tolist(),
                                            "linear": linear.numpy().tolist()},
                                  "iterations": STEPS}
            result[f"{dtype}/{kind}"] = runs

    optimizer = ftrl(multiply_linear_by_lr=True)
    config = optimizer.get_config()
    deserialized = tf_keras.optimizers.deserialize(
        copy.deepcopy(tf_keras.optimizers.serialize(optimizer)))
    result["config"] = {
        "config": config.get("multiply_linear_by_lr"),
        "round_trip": ftrl.from_config(copy.deepcopy(config)).get_config().get(
            "multiply_linear_by_lr"),
        "deserialized": deserialized.get_config().get("multiply_linear_by_lr"),
        "default_has_it": "multiply_linear_by_lr" in ftrl().get_config(),
        "documented": "multiply_linear_by_lr: If True" in ftrl.__doc__,
    }
    return result


def run_optimizers():
    import os

    import tf_keras

    return {
        "legacy_keras_env": os.environ.get("TF_USE_LEGACY_KERAS"),
        "tf_keras_version": tf_keras.__version__,
        "equivalence": equivalence(),
        "special_cases": special_cases(),
        "update_op_types": update_op_types(),
        "checkpoints": checkpoints(),
        "configs": configs(),
        "learning_rate_kwargs": learning_rate_kwargs(),
        "errors": errors(),
        "non_finite_errors": non_finite_errors(),
        "api": optimizer_api(),
        "multiply_linear_by_lr": multiply_linear_by_lr(),
        "docstrings": {name: classes(name)[0].__doc__ for name in ("Ftrl", "Adagrad")},
    }


def run_imports():
    """`import tf_ftrl` must not import tf_keras; with tf_keras unimportable, `tf_ftrl.legacy`
    raises an ImportError that names the package to install."""
    import tf_ftrl

    result = {"tf_keras_imported_by_tf_ftrl": "tf_keras" in sys.modules,
              "keras_3_optimizer": tf_ftrl.Ftrl.__module__}
    sys.modules["tf_keras"] = None  # what an environment without tf-keras looks like to import
    for how in ("attribute", "import"):
        try:
            if how == "attribute":
                tf_ftrl.legacy  # noqa: B018
            else:
                import tf_ftrl.legacy  # noqa: F401
            result[how] = None
        except ImportError as e:
            result[how] = str(e)
    return result


def main(mode):
    runs = {"optimizers": run_optimizers, "imports": run_imports}
    if mode not in runs:
        raise SystemExit(f"unknown mode {mode!r}; expected one of {sorted(runs)}")
    print_result(runs[mode]())


if __name__ == "__main__":
    main(sys.argv[1])
