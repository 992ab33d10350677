"""tf_ftrl.convert_checkpoint: checkpoints written by each stock optimizer (TF1's FtrlOptimizer and
AdagradOptimizer here, in a tf.Graph; tf_keras's legacy and default, and Keras 3's, in processes
of their own, tests/support/convert_checkpoint_worker.py) are converted to each other format,
training resumes there with the stock optimizer and with tf_ftrl's, and the next steps equal the
stock source optimizer's own next steps. Then the report of what was not mapped, the command
line, and bad input.

Tolerance: every run is float32, and the two optimizers that continue from one state run the
same math in another order (TF's fused kernels, Keras's Python formulas, ours): a few roundings
per step, two steps: well inside rtol=1e-5. A slot restored to the wrong variable, or not at all,
moves the next steps by far more (the accumulators have grown from 0.1 by then).
"""

import json
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tests.support import convert_checkpoint_worker as worker
from tests.support import workers
from tf_ftrl import convert_checkpoint

RTOL, ATOL = 1e-5, 1e-6
LEGACY = workers.environment(TF_USE_LEGACY_KERAS="1")


def _tf1_graph(kind, values, names=worker.NAMES, extra=False, global_step=True):
    """The worker's model in TF1 graph mode: (graph, train op, saver, ids, labels)."""
    graph = tf.Graph()
    with graph.as_default():
        table = tf.compat.v1.get_variable(names[0], initializer=values["embedding/embeddings"],
                                          use_resource=True)
        kernel = tf.compat.v1.get_variable(names[1], initializer=values["dense/kernel"],
                                           use_resource=True)
        bias = tf.compat.v1.get_variable(names[2], initializer=values["dense/bias"],
                                         use_resource=True)
        ids = tf.compat.v1.placeholder(tf.int32, [worker.BATCH, 2])
        labels = tf.compat.v1.placeholder(tf.float32, [worker.BATCH, 1])
        rows = tf.reshape(tf.nn.embedding_lookup(table, ids), [worker.BATCH, 2 * worker.DIM])
        loss = tf.reduce_mean(tf.square(tf.matmul(rows, kernel) + bias - labels))
        variables = [table, kernel, bias]
        if extra:
            counter = tf.compat.v1.get_variable("extra/w", initializer=np.ones(5, np.float32),
                                                use_resource=True)
            loss += tf.reduce_sum(counter)
            variables.append(counter)
        arguments = worker.optimizer_arguments(kind, "tf1")
        optimizer = (tf.compat.v1.train.FtrlOptimizer(**arguments) if kind == "ftrl"
                     else tf.compat.v1.train.AdagradOptimizer(**arguments))
        step = tf.compat.v1.train.get_or_create_global_step() if global_step else None
        train = optimizer.minimize(loss, global_step=step, var_list=variables)
        saver = tf.compat.v1.train.Saver()
    return graph, train, saver, ids, labels


def _tf1_values(session, graph):
    with graph.as_default():
        return {v.op.name: session.run(v) for v in tf.compat.v1.trainable_variables()}


def _write_tf1(kind, prefix, seed):
    data = worker.batches(seed)
    graph, train, saver, ids, labels = _tf1_graph(kind, worker.initial_values(seed))
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.initializers.global_variables())
        for x, y in data[:worker.FIRST]:
            session.run(train, {ids: x, labels: y})
        path = saver.save(session, prefix)
        for x, y in data[worker.FIRST:]:
            session.run(train, {ids: x, labels: y})
        return {"path": path, "optimizer": kind, "weights": _tf1_values(session, graph)}


def _resume_tf1(kind, prefix, seed):
    """The weights after TF1's optimizer resumed from `prefix` for the THEN steps, and its
    global_step."""
    data = worker.batches(seed)
    graph, train, saver, ids, labels = _tf1_graph(kind, worker.initial_values(seed + 7))
    with tf.compat.v1.Session(graph=graph) as session:
        saver.restore(session, prefix)
        for x, y in data[worker.FIRST:]:
            session.run(train, {ids: x, labels: y})
        with graph.as_default():
            step = session.run(tf.compat.v1.train.get_global_step())
        return _tf1_values(session, graph), int(step)


def _assert_same_weights(actual, expected):
    assert sorted(actual) == sorted(worker.NAMES)
    for name in worker.NAMES:
        np.testing.assert_allclose(np.asarray(actual[name]), np.asarray(expected[name]),
                                   rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    """Every source checkpoint with its stock continuation, and what each Keras front end resumed
    from the others' (three processes: tf_keras writes; Keras 3 writes and resumes; tf_keras
    resumes)."""
    seed = zlib.crc32(b"convert_checkpoint", request.config.rng_run_seed)
    directory = tmp_path_factory.mktemp("convert_checkpoint")
    sources = {f"tf1_{kind}": dict(_write_tf1(kind, str(directory / f"tf1_{kind}"), seed),
                                   **{"from": "tf1"})
               for kind in ("ftrl", "adagrad")}
    _write_odd_tf1(str(directory / "tf1_odd"), seed)
    tf_keras = workers.run_for_result("-m", "tests.support.convert_checkpoint_worker", "write",
                                      "tf_keras", directory, seed, env=LEGACY, timeout=300)
    sources |= {f"tf_keras_{name}": dict(s, **{"from": "tf_keras"})
                for name, s in tf_keras.items()}
    keras3 = workers.run_for_result("-m", "tests.support.convert_checkpoint_worker", "write",
                                    "keras3", directory, seed, timeout=300)
    sources |= {f"keras3_{name}": dict(s, **{"from": "keras3"}) for name, s in keras3.items()}

    def listed(front_end):
        return json.dumps([[name, s["path"], s["from"], s["optimizer"]]
                           for name, s in sources.items() if s["from"] != front_end
                           or name.startswith("tf_keras_default")])
    resumed = workers.run_for_result("-m", "tests.support.convert_checkpoint_worker", "resume",
                                     "keras3", directory, seed, listed("keras3"), timeout=400)
    resumed |= workers.run_for_result("-m", "tests.support.convert_checkpoint_worker",
                                      "resume", "tf_keras", directory, seed, listed("tf_keras"),
                                      env=LEGACY, timeout=400)
    return {"sources": sources, "resumed": resumed, "seed": seed, "directory": directory}


KERAS_CASES = [(source, target) for target in ("keras3", "tf_keras")
               for source in ("tf1_ftrl", "tf1_adagrad", "tf_keras_legacy_ftrl",
                              "tf_keras_legacy_adagrad", "tf_keras_default_ftrl",
                              "tf_keras_default_adagrad", "keras3_ftrl", "keras3_adagrad")
               if not source.startswith(target) or source.startswith("tf_keras_default")]


@pytest.mark.parametrize("which", ["stock", "tf_ftrl"])
@pytest.mark.parametrize("source,target", KERAS_CASES)
def test_keras_targets_resume_as_the_stock_source_continues(run, source, target, which):
    resumed = run["resumed"][f"{source}->{target}:{which}"]
    report = resumed["report"]
    assert report["target_format"] == target
    assert report["complete"], report["not_mapped"]
    slots = ["accumulator", "linear"] if source.endswith("ftrl") else ["accumulator"]
    assert report["slots"] == {name: slots for name in worker.NAMES}
    assert report["iterations"] == worker.FIRST
    # The step count went on from the source's.
    assert resumed["iterations"] == worker.FIRST + worker.THEN
    _assert_same_weights(resumed["weights"], run["sources"][source]["weights"])


@pytest.mark.parametrize("source", ["tf_keras_legacy_ftrl", "tf_keras_legacy_adagrad",
                                    "tf_keras_default_ftrl", "keras3_ftrl", "keras3_adagrad"])
def test_tf1_target_resumes_as_the_stock_source_continues(run, source, tmp_path):
    saved = run["sources"][source]
    dst = str(tmp_path / "tf1")
    report = convert_checkpoint.convert(saved["path"], dst, from_=saved["from"], to="tf1")
    assert report.complete and report.iterations == worker.FIRST
    suffixes = ["Ftrl", "Ftrl_1"] if saved["optimizer"] == "ftrl" else ["Adagrad"]
    expected_keys = {"global_step"} | {f"{n}{s}" for n in worker.NAMES
                                       for s in ["", *("/" + x for x in suffixes)]}
    assert {name for name, _ in tf.train.list_variables(dst)} == expected_keys
    weights, step = _resume_tf1(saved["optimizer"], dst, run["seed"])
    assert step == worker.FIRST + worker.THEN
    _assert_same_weights(weights, saved["weights"])


def test_converted_slots_are_the_saved_ones(run, tmp_path):
    # The values themselves, bit for bit: TF1's slots into Keras 3's layout and back.
    saved = run["sources"]["tf1_ftrl"]
    keras3 = run["directory"] / "keras3_tf_ftrl_from_tf1_ftrl"
    state = convert_checkpoint.read(str(keras3), "keras3")
    for name in worker.NAMES:
        np.testing.assert_array_equal(state.slots[name]["accumulator"],
                                      tf.train.load_variable(saved["path"], f"{name}/Ftrl"))
        np.testing.assert_array_equal(state.slots[name]["linear"],
                                      tf.train.load_variable(saved["path"], f"{name}/Ftrl_1"))
    back = str(tmp_path / "tf1")
    convert_checkpoint.convert(str(keras3), back, from_="keras3", to="tf1")
    for name, _ in tf.train.list_variables(saved["path"]):
        np.testing.assert_array_equal(tf.train.load_variable(back, name),
                                      tf.train.load_variable(saved["path"], name), err_msg=name)


def _write_odd_tf1(prefix, seed):
    """A TF1 Ftrl checkpoint whose table is named emb/table, with an extra variable extra/w and
    no global_step."""
    names = ("emb/table", "dense/kernel", "dense/bias")
    graph, train, saver, ids, labels = _tf1_graph("ftrl", worker.initial_values(seed), names,
                                                  extra=True, global_step=False)
    x, y = worker.batches(seed)[0]
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.initializers.global_variables())
        session.run(train, {ids: x, labels: y})
        saver.save(session, prefix)


def test_report_says_what_was_not_mapped(run):
    unmapped = run["resumed"]["unmapped"]
    assert not unmapped["complete"]
    assert set(unmapped["variables"]) == {"dense/kernel", "dense/bias"}
    not_mapped = unmapped["not_mapped"]
    assert set(not_mapped) == {"emb/table", "extra/w", "embedding/embeddings", "iterations"}
    assert "no variable of this name" in not_mapped["emb/table"]
    assert "not in the checkpoint" in not_mapped["embedding/embeddings"]
    assert "global_step" in not_mapped["iterations"]

    mapped = run["resumed"]["mapped"]
    assert mapped["variables"]["emb/table"] == "embedding/embeddings"
    assert mapped["slots"]["embedding/embeddings"] == ["accumulator", "linear"]
    assert set(mapped["not_mapped"]) == {"extra/w", "iterations"}
    # TF1 holds no hyperparameters: the report says to pass the TF1 run's.
    assert any("hold no hyperparameters" in line for line in mapped["advice"])


def test_wrong_optimizer_is_named(run):
    message = run["resumed"]["wrong optimizer"]
    assert "ftrl state" in message and "Adagrad" in message and "pass a Ftrl" in message


def test_reports_hyperparameters_and_differences(run, tmp_path):
    # tf_keras's OptimizerV2 saves its hyperparameters; the report names them.
    saved = run["sources"]["tf_keras_legacy_ftrl"]
    report = convert_checkpoint.convert(saved["path"], str(tmp_path / "t"), from_="tf_keras",
                                        to="tf1")
    assert report.hyperparameters["learning_rate"] == pytest.approx(worker.LR)
    assert report.hyperparameters["l1_regularization_strength"] == pytest.approx(worker.L1)
    adagrad = convert_checkpoint.convert(run["sources"]["tf1_adagrad"]["path"],
                                         str(tmp_path / "a"), from_="tf1", to="tf1")
    assert adagrad.optimizer == "adagrad" and adagrad.complete
    # Its note on TF1's missing hyperparameters speaks of Adagrad only.
    assert any("hold no hyperparameters" in line for line in adagrad.advice)
    assert not any("Ftrl" in line or "beta" in line for line in adagrad.advice), adagrad.advice


def test_tf1_target_with_named_slots(run, tmp_path):
    # FtrlOptimizer(accum_name="acc", linear_name="lin") saves <variable>/acc and <variable>/lin.
    saved = run["sources"]["tf_keras_legacy_ftrl"]
    dst = str(tmp_path / "tf1")
    report = convert_checkpoint.convert(saved["path"], dst, from_="tf_keras", to="tf1",
                                        tf1_name="acc,lin")
    assert report.complete
    keys = {name for name, _ in tf.train.list_variables(dst)}
    assert keys == {"global_step"} | {f"{name}{suffix}" for name in worker.NAMES
                                      for suffix in ("", "/acc", "/lin")}
    source = convert_checkpoint.read(saved["path"], "tf_keras")
    back = convert_checkpoint.read(dst, "tf1", tf1_name="acc,lin")
    for name in worker.NAMES:
        for slot in ("accumulator", "linear"):
            np.testing.assert_array_equal(back.slots[name][slot], source.slots[name][slot])
    with pytest.raises(ValueError, match="needs both slots' names"):
        convert_checkpoint.convert(saved["path"], str(tmp_path / "x"), from_="tf_keras",
                                   to="tf1", tf1_name=("acc",))


def test_command_line_end_to_end(run, tmp_path):
    odd = str(run["directory"] / "tf1_odd")
    dst = str(tmp_path / "keras3")
    done = workers.run("-m", "tf_ftrl.convert_checkpoint", odd, dst, "--from", "tf1", "--to",
                       "keras3", "--model",
                       "tests.support.convert_checkpoint_worker:keras3_ftrl_model",
                       "--map", "emb/table=embedding/embeddings", "--iterations", "7", "--json",
                       "--strict", timeout=120, status=1)  # --strict: extra/w was not mapped
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["variables"]["emb/table"] == "embedding/embeddings"
    assert set(report["not_mapped"]) == {"extra/w"}
    assert report["iterations"] == 7 and report["iterations_from"] == "argument"
    # What it wrote, read back as a Keras 3 checkpoint.
    state = convert_checkpoint.read(dst, "keras3")
    assert state.iterations == 7
    np.testing.assert_array_equal(state.slots["embedding/embeddings"]["linear"],
                                  tf.train.load_variable(odd, "emb/table/Ftrl_1"))
    np.testing.assert_array_equal(state.variables["embedding/embeddings"],
                                  tf.train.load_variable(odd, "emb/table"))

    # The text report, to tf1 with a rename.
    assert convert_checkpoint.main([odd, str(tmp_path / "tf1"), "--from", "tf1", "--to", "tf1",
                                    "--map", r"emb/(\w+)=embedding/\1"]) == 0
    assert tf.train.load_variable(str(tmp_path / "tf1"), "embedding/table/Ftrl").shape == (
        worker.ROWS, worker.DIM)


def _write_partitioned_tf1(prefix, **slot_names):
    """A TF1 Ftrl checkpoint whose table is a PartitionedVariable in 3 parts (Saver writes each
    variable and slot whole, from its slices), the optimizer given `slot_names` (accum_name,
    linear_name); returns {checkpoint name: {"value", "accumulator", "linear"}}."""
    graph = tf.Graph()
    with graph.as_default():
        table = tf.compat.v1.get_variable(
            "emb/table", shape=[10, 4], use_resource=True,
            partitioner=tf.compat.v1.fixed_size_partitioner(3),
            initializer=tf.compat.v1.random_normal_initializer(seed=3))
        kernel = tf.compat.v1.get_variable("dense/kernel", shape=[4, 1], use_resource=True)
        rows = tf.nn.embedding_lookup(table, tf.constant([1, 5, 5, 9]))
        loss = tf.reduce_sum(tf.square(tf.matmul(rows, kernel) - 1.0))
        optimizer = tf.compat.v1.train.FtrlOptimizer(0.1, l1_regularization_strength=0.01,
                                                     **slot_names)
        train = optimizer.minimize(loss, tf.compat.v1.train.get_or_create_global_step())
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.initializers.global_variables())
            for _ in range(3):
                session.run(train)
            saver.save(session, prefix)

            def whole(parts, slot=None):
                values = [session.run(optimizer.get_slot(p, slot) if slot else p) for p in parts]
                return np.concatenate(values)

            parts = list(table)
            return {"emb/table": {"value": whole(parts), "accumulator": whole(parts, "accum"),
                                  "linear": whole(parts, "linear")},
                    "dense/kernel": {"value": whole([kernel]),
                                     "accumulator": whole([kernel], "accum"),
                                     "linear": whole([kernel], "linear")}}


@pytest.mark.parametrize("slot_names", [{}, {"accum_name": "acc", "linear_name": "lin"}],
                         ids=["default", "accum_name+linear_name"])
def test_tf1_partitioned_variables_and_renamed_slots(tmp_path, slot_names):
    prefix = str(tmp_path / "tf1")
    expected = _write_partitioned_tf1(prefix, **slot_names)
    tf1_name = "acc,lin" if slot_names else None
    state = convert_checkpoint.read(prefix, "tf1", tf1_name=tf1_name)
    assert state.optimizer == "ftrl" and state.iterations == 3
    assert sorted(state.variables) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(state.variables[name], values["value"])
        for slot in ("accumulator", "linear"):
            np.testing.assert_array_equal(state.slots[name][slot], values[slot])
    assert np.any(expected["emb/table"]["linear"] != 0)
    # Written back whole, with the default slot names (a Saver with PartitionedVariables reads
    # whole tensors as slices), and read again.
    report = convert_checkpoint.convert(prefix, str(tmp_path / "out"), from_="tf1", to="tf1",
                                        tf1_name=tf1_name)
    assert report.complete
    out = convert_checkpoint.read(str(tmp_path / "out"), "tf1")
    for name, values in expected.items():
        np.testing.assert_array_equal(out.slots[name]["linear"], values["linear"])
    if slot_names:
        with pytest.raises(ValueError, match="no TF1 FTRL or Adagrad slots"):
            convert_checkpoint.read(prefix, "tf1")
        with pytest.raises(ValueError, match="no TF1 slots named `<variable>/lin2`"):
            convert_checkpoint.read(prefix, "tf1", tf1_name="acc,lin2")
        with pytest.raises(ValueError, match="'ACCUM,LINEAR'"):
            convert_checkpoint.read(prefix, "tf1", tf1_name=("acc", "lin", "x"))
        renamed = str(tmp_path / "renamed")
        convert_checkpoint.convert(str(tmp_path / "out"), renamed, from_="tf1", to="tf1")
        assert {n for n, _ in tf.train.list_variables(renamed)} >= {"emb/table/Ftrl",
                                                                    "emb/table/Ftrl_1"}


@pytest.mark.parametrize("argv,message", [
    (["missing", "dst", "--from", "tf1", "--to", "tf1"], "No checkpoint found at"),
    (["SOURCE", "dst", "--from", "keras3", "--to", "tf1"],
     "holds TensorFlow 1 (tf.compat.v1.train, a Saver's name-based checkpoint) state "
     "(name-based), not Keras 3: pass --from tf1"),
    (["SOURCE", "dst", "--from", "tf2", "--to", "tf1"], "invalid choice: 'tf2'"),
    (["SOURCE", "dst", "--from", "tf1", "--to", "keras3"], "--to keras3 needs --model"),
    (["SOURCE", "dst", "--from", "tf1", "--to", "keras3", "--model", "no_such_module:build"],
     "--model no_such_module:build: No module named 'no_such_module'"),
    (["SOURCE", "dst", "--from", "tf1", "--to", "tf1", "--map", "nothing"],
     "A mapping must read OLD=NEW. Received: 'nothing'"),
    (["SOURCE", "dst", "--from", "tf1", "--to", "tf1", "--tf1-name", "Other"],
     "none named `<variable>/Other`"),
])
def test_bad_input_is_named(run, tmp_path, capsys, argv, message):
    source = run["sources"]["tf1_ftrl"]["path"]
    argv = [source if a == "SOURCE" else str(tmp_path / a) if a in ("missing", "dst") else a
            for a in argv]
    with pytest.raises(SystemExit) as raised:
        convert_checkpoint.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_object_based_checkpoint_named_as_tf1_is_refused(run):
    with pytest.raises(ValueError, match="holds Keras 3 state .*pass --from keras3"):
        convert_checkpoint.read(run["sources"]["keras3_ftrl"]["path"], "tf1")
    with pytest.raises(ValueError, match="holds tf_keras .*OptimizerV2.*pass --from tf_keras"):
        convert_checkpoint.read(run["sources"]["tf_keras_legacy_adagrad"]["path"], "keras3")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "float16"])
def test_tf1_target_takes_row_wise_and_narrow_state_element_wise(tmp_path, state_dtype):
    """TF1's optimizers keep each slot in its variable's shape and dtype: tf_ftrl's row-wise
    accumulators (one value per row) repeat each row's value, and 16-bit state widens exactly;
    the report says so, and TF1's FtrlOptimizer restores the result and trains on."""
    import tf_ftrl
    seed = 11
    model = worker.build_model("keras3", seed)
    optimizer = tf_ftrl.Ftrl(rowwise=True, state_dtype=state_dtype,
                             **worker.optimizer_arguments("ftrl", "keras3"))
    worker.train(model, optimizer, worker.batches(seed)[:worker.FIRST])
    source = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "k3"))
    saved = convert_checkpoint.read(source, "keras3")
    dst = str(tmp_path / "tf1")

    report = convert_checkpoint.convert(source, dst, from_="keras3", to="tf1")

    assert report.complete
    for name in worker.NAMES:
        variable = tf.train.load_variable(dst, name)
        accumulator = tf.train.load_variable(dst, f"{name}/Ftrl")
        linear = tf.train.load_variable(dst, f"{name}/Ftrl_1")
        assert accumulator.dtype == linear.dtype == variable.dtype == np.float32
        row_wise = saved.slots[name]["accumulator"].astype(np.float32)
        expected = (np.broadcast_to(row_wise[:, None], variable.shape) if variable.ndim == 2
                    else row_wise)
        np.testing.assert_array_equal(accumulator, expected, err_msg=name)
        np.testing.assert_array_equal(
            linear, saved.slots[name]["linear"].astype(np.float32), err_msg=name)
        assert f"{name} (linear): {state_dtype} -> float32" in report.converted
    assert sum("other layout" in line for line in report.converted) == 2  # table and kernel
    # The file cannot tell tf_ftrl's Keras 3 optimizers from keras.optimizers: the report names
    # both rather than one it cannot know.
    assert str(report).splitlines()[0].endswith(
        "(keras3, keras.optimizers or tf_ftrl) -> " + dst + " (tf1): ftrl state")
    _, step = _resume_tf1("ftrl", dst, seed)
    assert step == worker.FIRST + worker.THEN


def test_the_save_count_of_checkpoint_save_is_no_model_variable(tmp_path):
    """tf.train.Checkpoint.save and CheckpointManager (not .write) also save their count of
    saves, `save_counter`: it was read as a model variable, left unmapped in every Keras target
    (a --strict conversion failed) and written into TF1 checkpoints."""
    import keras
    seed = 5
    model = worker.build_model("keras3", seed)
    optimizer = keras.optimizers.Ftrl(**worker.optimizer_arguments("ftrl", "keras3"))
    worker.train(model, optimizer, worker.batches(seed)[:worker.FIRST])
    source = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer),
                                        str(tmp_path / "k3"), max_to_keep=1).save()
    assert "save_counter" in {name.split("/")[0] for name, _ in tf.train.list_variables(source)}

    assert sorted(convert_checkpoint.read(source, "keras3").variables) == sorted(worker.NAMES)
    dst = str(tmp_path / "tf1")
    report = convert_checkpoint.convert(source, dst, from_="keras3", to="tf1")
    assert report.complete, report.not_mapped
    assert "save_counter" not in {name for name, _ in tf.train.list_variables(dst)}
    target = worker.build_model("keras3")
    target_optimizer = keras.optimizers.Ftrl(**worker.optimizer_arguments("ftrl", "keras3"))
    assert convert_checkpoint.restore(source, target, target_optimizer, from_="keras3").complete
