"""Sparse updates of a table with more than 2**31 elements reach the right rows (64-bit offsets).

The table is (2**25 + 8) x 64 bfloat16: 2**31 + 512 elements, 4.3 GB per variable, 8.6 GB for
sparse Adagrad's var and accumulator. It runs in a subprocess, so the memory goes back to the
system when it ends, and is skipped (with the reason) where that much memory is not available.
"""

import textwrap

import pytest

from tests.support import workers

ROWS = 2**25 + 8
ROW_SIZE = 64
# Element offsets 2**31 + 448 and 2**31 + 320: with the offset truncated to 31 bits (or wrapped
# in 32-bit arithmetic) these updates would land on rows 7 and 5, or outside the buffer.
LAST_ROW = 2**25 + 7
OTHER_ROW = 2**25 + 5
# Two tables, the subprocess's TensorFlow, and headroom.
NEEDED_BYTES = 11 * 2**30


def available_memory_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


CHILD = textwrap.dedent(f"""
    import resource
    import numpy as np
    import tensorflow as tf
    import tf_ftrl
    from tests.support.workers import print_result

    rows, row_size = {ROWS}, {ROW_SIZE}

    def table(value):
        # Filled inside a tf.function, so the assignment adopts the filled buffer instead of
        # copying it (an eager tf.zeros held by Python would be copied: twice the memory).
        var = tf.Variable(tf.zeros([0, row_size], tf.bfloat16), shape=[None, row_size])

        @tf.function
        def fill():
            var.assign(tf.fill([rows, row_size], tf.constant(value, tf.bfloat16)))

        fill()
        return var

    var, accum = table(1.0), table(1.0)

    def rows_of(variable, wanted):
        # A gather, not var.numpy(): a full read would copy 4.3 GB.
        return tf.raw_ops.ResourceGather(resource=variable.handle, indices=wanted,
                                         dtype=tf.bfloat16).numpy().astype(np.float64).tolist()

    grad = tf.fill([1, row_size], tf.constant(0.5, tf.bfloat16))
    tf_ftrl.ops.sparse_apply_adagrad(var, accum, grad, tf.constant([{LAST_ROW}], tf.int32),
                                     lr=0.1, epsilon=0.0)
    tf_ftrl.ops.sparse_apply_adagrad(var, accum, -grad, tf.constant([{OTHER_ROW}], tf.int64),
                                     lr=0.1, epsilon=0.0)
    wanted = [{LAST_ROW}, {OTHER_ROW}, 7, 5, {LAST_ROW} - 1, 0]
    print_result({{
        "var": rows_of(var, wanted),
        "accum": rows_of(accum, wanted),
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }})
""")


@pytest.mark.skipif(available_memory_bytes() < NEEDED_BYTES,
                    reason=f"needs {NEEDED_BYTES / 2**30:.0f} GiB of available memory")
def test_sparse_update_beyond_2_to_the_31_elements_touches_only_its_row():
    values = workers.run_for_result("-c", CHILD, timeout=600)
    print(f"child max RSS {values['max_rss_gib']:.1f} GiB")
    var, accum = values["var"], values["accum"]
    # accum = 1 + 0.25; var = 1 -+ 0.1 * 0.5 / sqrt(1.25), rounded to bfloat16.
    step = 0.1 * 0.5 / 1.25**0.5
    for row, expected_var in ((0, 1.0 - step), (1, 1.0 + step)):
        assert accum[row] == [1.25] * ROW_SIZE
        assert var[row] == pytest.approx([expected_var] * ROW_SIZE, abs=4e-3)
        assert var[row] != [1.0] * ROW_SIZE
    # Rows 7 and 5 (where truncated offsets would land), the neighbour and row 0: untouched.
    for row in (2, 3, 4, 5):
        assert var[row] == [1.0] * ROW_SIZE
        assert accum[row] == [1.0] * ROW_SIZE
