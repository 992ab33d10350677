"""The ops applied to one variable from many threads at once, as asynchronous training does.

One tf.compat.v1.Session runs the update ops from several Python threads (session.run releases
the GIL, and the session's inter-op pool runs the calls in parallel). With grad = 1 every call
adds exactly 1 to each accumulator element it updates (integers are exact in float32), so the
final accumulator counts the calls that took effect.
"""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import tf_ftrl

THREADS = 8
FTRL_HYPER = dict(lr=0.05, l1=0.02, l2=0.03)


def session_for(graph):
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=THREADS)
    return tf.compat.v1.Session(graph=graph, config=config)


def run_concurrently(session, fetches, calls, deadline_s=600):
    """Runs session.run(fetches[i]) `calls` times on thread i, all threads started together.

    An exception in any thread fails the test (a thread's exception would otherwise only be
    printed), and so does a thread still running after `deadline_s` (a deadlock).
    """
    errors = []
    start = threading.Barrier(len(fetches))

    def worker(fetch):
        try:
            start.wait()
            for _ in range(calls):
                session.run(fetch)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(fetch,), daemon=True) for fetch in fetches]
    for t in pool:
        t.start()
    deadline = time.monotonic() + deadline_s
    for t in pool:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in pool), f"still running after {deadline_s} s: deadlocked"
    assert not errors, errors


def update(optimizer, sparse, var, slots, grad, indices, use_locking):
    """One update op; slots is (accum, linear) for FTRL, (accum,) for Adagrad."""
    if optimizer == "ftrl":
        if sparse:
            return tf_ftrl.ops.sparse_apply_ftrl(var, *slots, grad, indices,
                                                 use_locking=use_locking, **FTRL_HYPER)
        return tf_ftrl.ops.apply_ftrl(var, *slots, grad, use_locking=use_locking, **FTRL_HYPER)
    if sparse:
        return tf_ftrl.ops.sparse_apply_adagrad(var, *slots, grad, indices, lr=0.01,
                                                use_locking=use_locking)
    return tf_ftrl.ops.apply_adagrad(var, *slots, grad, lr=0.01, use_locking=use_locking)


def slot_variables(optimizer, shape, accum=0.0):
    slots = [tf.Variable(tf.fill(shape, accum))]
    if optimizer == "ftrl":
        slots.append(tf.Variable(tf.zeros(shape)))
    return slots


@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_use_locking_loses_no_update(optimizer, sparse):
    # A small variable hammered from many threads makes overlapping updates likely (without
    # locking, sparse updates here do lose some).
    size, calls = 4096, 1500
    graph = tf.Graph()
    with graph.as_default():
        var = tf.Variable(tf.zeros([size]))
        slots = slot_variables(optimizer, [size])
        apply = update(optimizer, sparse, var, slots, tf.ones([size]), tf.range(size),
                       use_locking=True)
        with session_for(graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            run_concurrently(session, [apply] * THREADS, calls)
            final = session.run(slots[0].read_value())
    np.testing.assert_array_equal(final, np.full([size], THREADS * calls, np.float32))


@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad"])
@pytest.mark.parametrize("use_locking", [False, True], ids=["unlocked", "locked"])
def test_dense_and_sparse_updates_of_one_variable(optimizer, use_locking):
    # Half the threads update every element densely, half update the even rows sparsely, all on
    # the same buffer under the variable's lock: with locking, every update of every element is
    # counted.
    rows, row_size, calls = 4096, 16, 200
    graph = tf.Graph()
    with graph.as_default():
        var = tf.Variable(tf.zeros([rows, row_size]))
        slots = slot_variables(optimizer, [rows, row_size])
        even_rows = tf.range(0, rows, 2)
        dense = update(optimizer, False, var, slots, tf.ones([rows, row_size]), None,
                       use_locking)
        sparse = update(optimizer, True, var, slots, tf.ones([rows // 2, row_size]), even_rows,
                        use_locking)
        with session_for(graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            run_concurrently(session, [dense, sparse] * (THREADS // 2), calls)
            final = session.run([var.read_value()] + [s.read_value() for s in slots])
    var_value, accum = final[0], final[1]
    assert np.all(np.isfinite(var_value))
    for slot in final[1:]:
        assert np.all(np.isfinite(slot))
    dense_calls = sparse_calls = THREADS // 2 * calls
    expected = np.full([rows, row_size], dense_calls, np.float32)
    expected[::2] += sparse_calls
    if use_locking:
        np.testing.assert_array_equal(accum, expected)
    else:
        # Updates may be lost, but each one that lands adds exactly 1 to what it read.
        np.testing.assert_array_equal(accum, np.round(accum))
        assert np.all(accum >= 1) and np.all(accum <= expected)


def test_sparse_ftrl_and_adagrad_on_one_table_without_locking():
    # Four threads apply sparse FTRL and four sparse Adagrad to the same rows of one table (512
    # random indices of 1000 rows per call: duplicates within and across calls), with
    # random gradients and no locking. Torn and lost updates are allowed; crashes, non-finite
    # values and accumulators that shrink are not.
    rows, row_size, n, calls = 1000, 16, 512, 300
    graph = tf.Graph()
    with graph.as_default():
        var = tf.Variable(tf.random.normal([rows, row_size], seed=1))
        ftrl_slots = slot_variables("ftrl", [rows, row_size], accum=0.1)
        adagrad_slots = slot_variables("adagrad", [rows, row_size], accum=0.1)

        def random_update(optimizer, slots):
            indices = tf.random.uniform([n], 0, rows, tf.int64)
            grad = tf.random.normal([n, row_size])
            return update(optimizer, True, var, slots, grad, indices, use_locking=False)

        ftrl = random_update("ftrl", ftrl_slots)
        adagrad = random_update("adagrad", adagrad_slots)
        with session_for(graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            run_concurrently(session, [ftrl, adagrad] * (THREADS // 2), calls)
            var_value, ftrl_accum, linear, adagrad_accum = session.run(
                [var.read_value()] + [s.read_value() for s in ftrl_slots + adagrad_slots])
    for name, value in [("var", var_value), ("linear", linear), ("ftrl accum", ftrl_accum),
                        ("adagrad accum", adagrad_accum)]:
        assert np.all(np.isfinite(value)), name
    for name, accum in [("ftrl", ftrl_accum), ("adagrad", adagrad_accum)]:
        assert np.all(accum >= np.float32(0.1)), name
        # 1200 calls of 512 random rows each touch every row hundreds of times.
        assert np.all(accum > 1.0), name


def test_multi_tensor_and_built_in_ops_on_shared_variables_lock_in_one_order():
    # The multi-tensor op locks all its variables at once. Threads call it with the variables in
    # opposite orders, while others run TensorFlow's own ResourceApplyAdagradV2 (which locks var
    # and accum by address) on single variables, all with use_locking. Locking in the order of
    # the inputs would deadlock (run_concurrently fails at its deadline); with
    # grad = 1 every update adds exactly 1 to each accumulator element, so every one is counted.
    count, size, calls = 12, 256, 300
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.Variable(tf.zeros([size])) for _ in range(count)]
        accums = [tf.Variable(tf.zeros([size])) for _ in range(count)]
        grads = [tf.ones([size])] * count

        def multi(order):
            return tf_ftrl.ops.multi_apply_adagrad([variables[i] for i in order],
                                                   [accums[i] for i in order], grads, lr=0.01,
                                                   use_locking=True)

        def built_in(i):
            return tf.raw_ops.ResourceApplyAdagradV2(
                var=variables[i].handle, accum=accums[i].handle, lr=0.01, epsilon=1e-7,
                grad=grads[i], use_locking=True)

        forward = multi(range(count))
        backward = multi(list(reversed(range(count))))
        singles = [tf.group(*[built_in(i) for i in range(k, count, 3)]) for k in range(3)]
        fetches = [forward, backward, forward, backward] + singles
        with session_for(graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            run_concurrently(session, fetches, calls, deadline_s=120)
            final = session.run([a.read_value() for a in accums])
    # Four multi-tensor threads update every variable, one built-in thread each variable.
    for accum in final:
        np.testing.assert_array_equal(accum, np.full([size], 5 * calls, np.float32))
