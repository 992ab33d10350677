"""tf_ftrl.huge_pages.advise_huge_pages: transparent huge pages for a variable's buffer, values
unchanged, updates unchanged."""

import os

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import workers
from tests.support.reference import buffer_address

MIB = 1 << 20


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "never"


def kernel_at_least(major, minor):
    release = os.uname().release.split("-", 1)[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


# Buffers above glibc's largest mmap threshold (32 MiB) get mappings of their own, never memory
# recycled from an earlier (perhaps advised) buffer: the tables here are larger than that.
ROWS, DIM = 1_100_000, 8  # 35.2 MB of float32


def huge_pages_of(variable):
    """(whether every mapping inside the variable's buffer carries the huge-page advice, how many
    of its bytes sit in huge pages), from /proc/self/smaps. Advising a buffer's aligned interior
    splits that interior into mappings of its own."""
    value = variable.value() if isinstance(variable, tf.Variable) else variable.value.value()
    begin = buffer_address(value)
    end = begin + value.shape.num_elements() * value.dtype.size
    advised, huge, inside, mappings = True, 0, False, 0
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                start, stop = (int(x, 16) for x in fields[0].split("-"))
                inside = begin <= start and stop <= end
                mappings += inside
            elif inside and fields[0] == "AnonHugePages:":
                huge += int(fields[1]) * 1024
            elif inside and fields[0] == "VmFlags:":
                advised = advised and "hg" in fields[1:]
    return advised and mappings > 0, huge


def advised_bytes_in_process():
    """The bytes of this process's mappings that carry the huge-page advice."""
    advised, size = 0, 0
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                start, stop = (int(x, 16) for x in fields[0].split("-"))
                size = stop - start
            elif fields[0] == "VmFlags:" and "hg" in fields[1:]:
                advised += size
    return advised


def test_buffer_moves_to_huge_pages_and_keeps_its_values():
    rows, dim = ROWS, DIM
    var = tf.Variable(tf.random.stateless_uniform((rows, dim), seed=(1, 2)))
    assert huge_pages_of(var) == (False, 0)
    before = var.numpy()
    advised, collapsed = tf_ftrl.ops.load_library().fused_advise_huge_pages(var=var.handle)
    advised, collapsed = int(advised), bool(collapsed)
    np.testing.assert_array_equal(var.numpy(), before)
    if thp_mode() == "never":
        assert advised == 0 and not collapsed
        return
    # The 2 MiB-aligned part of the buffer: all of it but at most one page at either end.
    assert rows * dim * 4 - 4 * MIB <= advised <= rows * dim * 4
    assert advised % (2 * MIB) == 0
    is_advised, huge = huge_pages_of(var)
    assert is_advised
    if kernel_at_least(6, 1):
        assert collapsed
        assert huge == advised


def test_once_advises_each_buffer_once_and_the_plain_call_every_time():
    # What the optimizers run in every step (`once`): each buffer's first call advises it, later
    # ones leave it alone; a new buffer of the same variable is advised in turn.
    advise = tf_ftrl.ops.load_library().fused_advise_huge_pages
    var = tf.Variable(tf.random.stateless_uniform((ROWS, DIM), seed=(3, 4)))
    before = var.numpy()
    first = [int(advise(var=var.handle, once=True)[0]) for _ in range(3)]
    again = int(advise(var=var.handle)[0])
    other = tf.Variable(tf.zeros((ROWS, DIM)))
    np.testing.assert_array_equal(var.numpy(), before)
    if thp_mode() == "never":
        assert first == [0, 0, 0] and again == 0
        return
    assert first[0] >= ROWS * DIM * 4 - 4 * MIB and first[1:] == [0, 0]
    assert again == first[0]  # without `once`: every call, as advise_huge_pages documents
    # The other buffer's 2 MiB-aligned part: its size depends on where the buffer starts.
    advised_other = int(advise(var=other.handle, once=True)[0])
    assert advised_other >= ROWS * DIM * 4 - 4 * MIB and advised_other % (2 * MIB) == 0
    assert int(advise(var=other.handle, once=True)[0]) == 0
    assert huge_pages_of(var)[0] and huge_pages_of(other)[0]


def test_once_stops_after_eight_buffers_of_one_variable():
    # A variable whose buffer kept changing would be collapsed at every step: `once` advises at
    # most eight of its buffers.
    advise = tf_ftrl.ops.load_library().fused_advise_huge_pages
    var = tf.Variable(tf.zeros((300_000, 8)))  # 9.6 MB: whole 2 MiB pages inside
    values = [tf.fill((300_000, 8), float(k)) for k in range(11)]  # held: no address reused
    # The first buffer held too: freed, its address could come back for a later buffer, which
    # `once` would then take for the first (seen once: a 0 among the first eight).
    first = var.value()
    advised, addresses = [int(advise(var=var.handle, once=True)[0])], {buffer_address(first)}
    for value in values:
        var.assign(value)
        addresses.add(buffer_address(var.value()))
        advised.append(int(advise(var=var.handle, once=True)[0]))
    np.testing.assert_array_equal(var.numpy(), values[-1].numpy())
    assert len(addresses) == len(values) + 1  # every assignment gave var a new buffer
    if thp_mode() == "never":
        assert advised == [0] * 12
        return
    assert all(a > 0 for a in advised[:8]) and advised[8:] == [0] * 4, advised
    assert int(advise(var=var.handle)[0]) > 0  # the plain call still advises


def test_updates_of_an_advised_table_are_unchanged():
    rows, dim, n = 300_000, 16, 5_000
    rng = np.random.default_rng(7)
    init = rng.uniform(-1, 1, (rows, dim)).astype(np.float32)
    grad = tf.constant(rng.uniform(-1, 1, (n, dim)).astype(np.float32))
    ids = tf.constant(rng.integers(0, rows, n))
    states = []
    for advise in (False, True):
        state = [tf.Variable(init), tf.Variable(tf.fill((rows, dim), 0.1)),
                 tf.Variable(tf.zeros((rows, dim)))]
        if advise:
            advised = tf_ftrl.huge_pages.advise_huge_pages(state)
            assert (advised == 0) == (thp_mode() == "never"), advised
        for _ in range(3):
            tf_ftrl.ops.sparse_apply_ftrl(*state, grad, ids, lr=0.1, l1=0.01, l2=0.01)
            tf_ftrl.ops.apply_adagrad(state[0], state[1], tf.ones((rows, dim)) * 0.01, lr=0.1)
        states.append([v.numpy() for v in state])
    for plain, advised in zip(*states):
        np.testing.assert_array_equal(plain, advised)


def test_the_name_tf_ftrl_0_1_documented_is_the_same_function():
    from tf_ftrl.ops import advise_huge_pages

    assert advise_huge_pages is tf_ftrl.ops.advise_huge_pages is tf_ftrl.huge_pages.advise_huge_pages


def test_lists_distributed_variables_and_small_buffers():
    assert tf_ftrl.huge_pages.advise_huge_pages(tf.Variable([1.0, 2.0])) == 0
    assert tf_ftrl.huge_pages.advise_huge_pages([]) == 0
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = tf.Variable(tf.zeros((4 * MIB,)))  # 16 MB
    table = tf.Variable(tf.zeros((4 * MIB,)))
    one = tf_ftrl.huge_pages.advise_huge_pages(table)
    if thp_mode() == "never":
        pytest.skip("this kernel has no transparent huge pages: nothing more to check")
    assert one >= 12 * MIB
    assert tf_ftrl.huge_pages.advise_huge_pages(mirrored) >= 12 * MIB
    assert tf_ftrl.huge_pages.advise_huge_pages([table, (table,)]) == 2 * one


def test_keras_model_tables_and_optimizer_slots():
    # The README's recipe: Keras 3 variables and the optimizer's slots, then training as usual.
    import keras

    inputs = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(500_000, 8)(inputs)  # 16 MB
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    optimizer = tf_ftrl.Ftrl(learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    table = model.trainable_variables[0]
    before = [v.numpy() for v in [table] + optimizer.variables]
    advised = tf_ftrl.huge_pages.advise_huge_pages(model.trainable_variables + optimizer.variables)
    if thp_mode() != "never":
        # The table and its two slots, less at most 4 MiB of unaligned edges each.
        assert advised >= 3 * (500_000 * 8 * 4 - 4 * MIB)
    for value, variable in zip(before, [table] + optimizer.variables):
        np.testing.assert_array_equal(variable.numpy(), value)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.arange(64 * 4).reshape(64, 4) % 500_000, np.ones((64, 1)), batch_size=16,
              verbose=0)
    assert np.isfinite(table.numpy()).all()
    assert not np.array_equal(table.numpy(), before[0])


FIRST_STEP_CHECK = """
import contextlib, sys
import numpy as np, tensorflow as tf, tf_ftrl
from tests.support.workers import print_result
sys.path.insert(0, "tests")
from test_huge_pages import ROWS, DIM, advised_bytes_in_process, huge_pages_of
flavour, name, mirrored = sys.argv[1], sys.argv[2], sys.argv[3] == "mirrored"
if flavour == "legacy":
    import tf_keras as keras, tf_ftrl.legacy
    optimizer_class = getattr(tf_ftrl.legacy, name)
else:
    import keras
    optimizer_class = getattr(tf_ftrl, name)
x = np.arange(64 * 4).reshape(64, 4) % ROWS
y = np.ones((64, 1))
out = []
# "auto" before True: the advice stays with memory that TensorFlow frees and reuses.
for huge_pages in (False, "auto", True):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mirrored else None
    with strategy.scope() if mirrored else contextlib.nullcontext():
        keras.utils.set_random_seed(3)
        inputs = keras.Input((4,), dtype="int32")
        embedded = keras.layers.Embedding(ROWS, DIM)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
        optimizer = optimizer_class(learning_rate=0.1, huge_pages=huge_pages)
        model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    table = model.trainable_variables[0]
    slots = [optimizer.get_slot(table, slot) for slot in optimizer.get_slot_names()]
    config = optimizer.get_config()
    out.append({"advised_bytes": advised_bytes_in_process(), "slots": len(slots),
                # tf_keras's Embedding gathers with TensorFlow's ResourceGather, which puts the
                # table in copy-on-read mode: reading it then gives a copy, not the buffer.
                "pages": [huge_pages_of(v) for v in [table, *slots]]
                         if flavour == "keras" else None,
                "config_huge_pages": config.get("huge_pages", "absent"),
                "round_trip": type(optimizer).from_config(config).huge_pages,
                "iterations": int(optimizer.iterations.numpy()),
                "checksum": [float(np.sum(np.abs(v.numpy().astype(np.float64))))
                             for v in model.trainable_variables],
                "table": table.numpy()[:64].tolist()})
print_result(out)
"""


@pytest.mark.parametrize("optimizer_class", ["Ftrl", "Adagrad"])
@pytest.mark.parametrize("mirrored", ["default", "mirrored"])
@pytest.mark.parametrize("flavour", ["keras", "legacy"])
def test_optimizer_option_advises_tables_and_slots_on_the_first_step(flavour, optimizer_class,
                                                                      mirrored):
    # In a fresh process, where no memory carries advice yet (advice stays with memory that
    # TensorFlow frees and reuses): training without and then with huge_pages=True, with
    # tf_ftrl's Keras 3 optimizers or its tf_keras ones (tf_ftrl.legacy, TF_USE_LEGACY_KERAS=1).
    # Keras creates the slots while tracing the first step; the advice runs in that step.
    plain, auto, advised = workers.run_for_result(
        "-c", FIRST_STEP_CHECK, flavour, optimizer_class, mirrored, timeout=300,
        env=workers.environment(TF_USE_LEGACY_KERAS="1" if flavour == "legacy" else "0"))
    assert plain["checksum"] == advised["checksum"] == auto["checksum"]
    assert plain["table"] == advised["table"] == auto["table"]
    assert plain["iterations"] == advised["iterations"] == auto["iterations"] == 8
    assert plain["config_huge_pages"] is False and plain["round_trip"] is False
    assert advised["config_huge_pages"] is True and advised["round_trip"] is True
    # "auto", the default, stays out of tf_keras's config (which then is tf_keras's own).
    assert auto["config_huge_pages"] == ("absent" if flavour == "legacy" else "auto")
    assert auto["round_trip"] == "auto"
    assert advised["slots"] == (2 if optimizer_class == "Ftrl" else 1)
    assert plain["advised_bytes"] == 0
    if flavour == "keras":
        assert plain["pages"] == [[False, 0]] * (1 + advised["slots"])
    if thp_mode() == "never":
        return
    table_bytes = ROWS * DIM * 4
    assert advised["advised_bytes"] >= (1 + advised["slots"]) * (table_bytes - 4 * MIB)
    # "auto": the table and its slots are over AUTO_MIN_BYTES, the Dense layer's are not.
    assert table_bytes > tf_ftrl.huge_pages.AUTO_MIN_BYTES
    assert auto["advised_bytes"] >= (1 + advised["slots"]) * (table_bytes - 4 * MIB)
    if flavour == "keras":
        assert all(is_advised for is_advised, _ in advised["pages"]), advised["pages"]
        assert all(is_advised for is_advised, _ in auto["pages"]), auto["pages"]


def test_auto_chooses_variables_of_at_least_the_threshold_and_bad_options_are_named():
    small = tf.Variable(tf.zeros([1000, 8]))
    large = tf.Variable(tf.zeros([tf_ftrl.huge_pages.AUTO_MIN_BYTES // 4 // 8, 8]))
    half = tf.Variable(tf.zeros([tf_ftrl.huge_pages.AUTO_MIN_BYTES // 2 // 8, 8], tf.float16))
    chosen = tf_ftrl.huge_pages.chosen
    assert chosen([small, large, half], "auto") == [large, half]
    assert chosen([small, large], True) == [small, large]
    assert chosen([small, large], False) == []
    assert tf_ftrl.Ftrl().huge_pages == "auto" and tf_ftrl.Adagrad().huge_pages == "auto"
    with pytest.raises(ValueError, match=r'`huge_pages` must be True, False or "auto". '
                                         r"Received: huge_pages='yes'"):
        tf_ftrl.Adagrad(huge_pages="yes")


def test_auto_chooses_the_slots_of_a_chosen_variable_whatever_their_size():
    # A row-wise accumulator (4 bytes a row) is far below the threshold, and read at every row
    # its table is: "auto" advises it with the table, and nothing of a small table.
    rows = tf_ftrl.huge_pages.AUTO_MIN_BYTES // 4 // 8
    table, accum = tf.Variable(tf.zeros([rows, 8])), tf.Variable(tf.zeros([rows]))
    small, small_accum = tf.Variable(tf.zeros([1000, 8])), tf.Variable(tf.zeros([1000]))
    chosen_for = tf_ftrl.huge_pages.chosen_for
    assert chosen_for(table, [accum], "auto") == [table, accum]
    assert chosen_for(small, [small_accum], "auto") == []
    assert chosen_for(small, [small_accum], True) == [small, small_accum]
    assert chosen_for(table, [accum], False) == []


@pytest.mark.parametrize("flavour", ["keras", "legacy"])
def test_rowwise_accumulator_of_a_large_table_is_advised_by_default(flavour):
    # In a fresh process: model.fit of an Embedding(4M, 4) (64 MB) with row-wise Adagrad, first
    # with huge_pages=False, then with the default "auto", which advises its 16 MB accumulator
    # (below the threshold by itself) with the table.
    plain, auto = workers.run_for_result(
        "-c", ROWWISE_ADVICE_CHECK, flavour, timeout=300,
        env=workers.environment(TF_USE_LEGACY_KERAS="1" if flavour == "legacy" else "0"))
    rows = 4_000_000
    assert plain["accum_shape"] == auto["accum_shape"] == [rows]
    assert rows * 4 < tf_ftrl.huge_pages.AUTO_MIN_BYTES < rows * 4 * 4
    assert plain["advised_bytes"] == 0
    if flavour == "keras":  # (tf_keras's first steps may replace the table's buffer)
        assert plain["pages"] == [False, False]
    if thp_mode() == "never":
        return
    # The table alone would be at most 64 MB.
    assert auto["advised_bytes"] >= rows * 4 * 4 + rows * 4 - 8 * MIB > rows * 4 * 4
    if flavour == "keras":
        assert auto["pages"] == [True, True]


ROWWISE_ADVICE_CHECK = """
import sys
import numpy as np, tensorflow as tf, tf_ftrl
from tests.support.workers import print_result
sys.path.insert(0, "tests")
from test_huge_pages import advised_bytes_in_process, huge_pages_of
if sys.argv[1] == "legacy":
    import tf_keras as keras, tf_ftrl.legacy
    optimizer_class = tf_ftrl.legacy.Adagrad
else:
    import keras
    optimizer_class = tf_ftrl.Adagrad
out = []
for huge_pages in (False, "auto"):
    inputs = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(4_000_000, 4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    optimizer = optimizer_class(learning_rate=0.1, rowwise=True, huge_pages=huge_pages)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.arange(64 * 4).reshape(64, 4), np.ones((64, 1)), batch_size=16, verbose=0)
    table = model.trainable_variables[0]
    accum = optimizer.get_slot(table, "accumulator")
    out.append({"accum_shape": list(accum.shape), "advised_bytes": advised_bytes_in_process(),
                "pages": [huge_pages_of(table)[0], huge_pages_of(accum)[0]]})
print_result(out)
"""


RESUMED_CHECK = """
import sys
import numpy as np, tensorflow as tf, tf_ftrl
from tests.support.workers import print_result
sys.path.insert(0, "tests")
from test_huge_pages import ROWS, DIM, advised_bytes_in_process, huge_pages_of
flavour, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
if flavour == "legacy":
    import tf_keras as keras, tf_ftrl.legacy
    optimizer_class = tf_ftrl.legacy.Ftrl
else:
    import keras
    optimizer_class = tf_ftrl.Ftrl
x = np.arange(64 * 4).reshape(64, 4) % ROWS
y = np.ones((64, 1))
if mode == "load":
    model = keras.models.load_model(path)
else:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(ROWS, DIM)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    model.compile(optimizer=optimizer_class(learning_rate=0.1), loss="mse",
                  jit_compile=mode == "xla")
iterations = int(model.optimizer.iterations.numpy())
model.fit(x, y, batch_size=16, epochs=2, verbose=0)
if mode == "save":
    model.save(path)
optimizer = model.optimizer
table = model.trainable_variables[0]
slots = [optimizer.get_slot(table, slot) for slot in optimizer.get_slot_names()]
print_result({"iterations": [iterations, int(optimizer.iterations.numpy())],
              "advised_bytes": advised_bytes_in_process(),
              "kernels": sorted(set(optimizer.kernels_used().values())),
              # (tf_keras's Embedding reads its table in copy-on-read mode: a copy, not the
              # buffer; the process's advised bytes count it.)
              "pages": [huge_pages_of(v)[0] for v in [table, *slots]]
                       if flavour == "keras" else None})
"""


@pytest.mark.parametrize("flavour", ["keras", "legacy"])
def test_training_resumed_or_compiled_by_xla_gets_the_advice(tmp_path, flavour):
    # The default huge_pages="auto" advises in the first step of each process: a model loaded
    # to train on (its step count no longer 0; it used to get no advice at all) and a step
    # compiled by XLA (where the advice's op has no kernel: it runs while the step is traced).
    # Each in a fresh process, where no memory carries advice yet.
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if flavour == "legacy" else "0")
    path = str(tmp_path / "model.keras")
    results = {mode: workers.run_for_result("-c", RESUMED_CHECK, flavour, mode, path,
                                            timeout=300, env=env)
               for mode in ("save", "load", "xla")}
    assert results["save"]["iterations"] == [0, 8]
    assert results["load"]["iterations"] == [8, 16]
    assert results["xla"]["iterations"] == [0, 8]
    assert all("XLA custom call" in k for k in results["xla"]["kernels"]), results["xla"]
    assert not any("XLA" in k for k in results["load"]["kernels"]), results["load"]
    if thp_mode() == "never":
        return
    table_bytes = ROWS * DIM * 4
    for mode, result in results.items():
        # The table and its two slots, less at most 4 MiB of unaligned edges each.
        assert result["advised_bytes"] >= 3 * (table_bytes - 4 * MIB), (mode, result)
        if flavour == "keras":
            assert result["pages"] == [True, True, True], (mode, result)
