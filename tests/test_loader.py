"""The op library is loaded from the package only, at import, and a missing or mismatched
library says which TensorFlow versions are involved and how to rebuild."""

import os
import re

import pytest
import tensorflow as tf

from tests.support import workers
from tf_ftrl import ops


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    monkeypatch.setattr(ops, "_library", None)
    monkeypatch.setattr(ops, "_package_dir", lambda: str(tmp_path))
    return tmp_path


def test_library_records_the_tensorflow_it_was_built_against():
    path = os.path.join(os.path.dirname(ops.__file__), "_tf_ftrl_ops.so")
    assert ops._built_tensorflow_version(path) == tf.__version__


def test_missing_library_says_how_to_rebuild(fresh_loader):
    with pytest.raises(ImportError, match=r"missing.*_tf_ftrl_ops\.so.*no-build-isolation"):
        ops.load_library()


def test_library_built_for_another_tensorflow_names_both_versions(fresh_loader):
    (fresh_loader / "_tf_ftrl_ops.so").write_bytes(
        b"\x7fELF...tf_ftrl:built_against_tensorflow=2.99.0;...")
    with pytest.raises(ImportError) as error:
        ops.load_library()
    message = str(error.value)
    assert "2.99.0" in message and tf.__version__ in message and "Rebuild" in message


def test_library_that_fails_to_load_names_both_versions(fresh_loader):
    (fresh_loader / "_tf_ftrl_ops.so").write_bytes(
        b"not a shared object tf_ftrl:built_against_tensorflow=" + tf.__version__.encode() +
        b";")
    with pytest.raises(ImportError, match="failed to load"):
        ops.load_library()


def test_library_is_not_taken_from_the_working_directory(tmp_path, monkeypatch):
    # A broken library of the same name in the current directory must not be picked up.
    (tmp_path / "_tf_ftrl_ops.so").write_bytes(b"garbage")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ops, "_library", None)
    assert ops.load_library() is not None


SAVE_TRAINER = """
import sys
import numpy as np, tensorflow as tf
import tf_ftrl
from tests.support import workers

class Trainer(tf.Module):
    def __init__(self):
        self.table = tf.Variable(tf.random.stateless_normal([1000, 8], seed=[1, 2]))
        self.optimizer = tf_ftrl.Ftrl(0.1, rowwise=True, state_dtype="bfloat16")
        self.optimizer.build([self.table])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None], tf.float32)])
    def train(self, ids, labels):
        with tf.GradientTape() as tape:
            logits = tf.reduce_sum(tf.gather(self.table, ids), axis=1)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        self.optimizer.apply(tape.gradient(loss, [self.table]), [self.table])
        return loss

trainer = Trainer()
ids = tf.constant(np.random.RandomState(0).randint(0, 1000, 64), tf.int64)
labels = tf.constant(np.random.RandomState(1).randint(0, 2, 64), tf.float32)
trainer.train(ids, labels)
tf.saved_model.save(trainer, sys.argv[1])
# What the loaded function must give: the next step here, from the saved state.
loss = float(trainer.train(ids, labels))
workers.print_result({"loss": loss, "table": trainer.table.numpy().tolist()})
"""

LOAD_TRAINER = """
import sys
import numpy as np, tensorflow as tf
import tf_ftrl  # nothing else of tf_ftrl is used: the import must make its ops known
from tests.support import workers

trainer = tf.saved_model.load(sys.argv[1])
ids = tf.constant(np.random.RandomState(0).randint(0, 1000, 64), tf.int64)
labels = tf.constant(np.random.RandomState(1).randint(0, 2, 64), tf.float32)
loss = float(trainer.train(ids, labels))
workers.print_result({"loss": loss, "table": trainer.table.numpy().tolist()})
"""


def test_saved_training_function_runs_after_import_alone(tmp_path):
    """A SavedModel whose function holds a fused op (row-wise FTRL, bfloat16 state) loads and
    trains in a new process that only imports tf_ftrl, to the bits of the process that saved
    it; without the import TensorFlow does not know the op."""
    path = str(tmp_path / "trainer")
    saved = workers.run_for_result("-c", SAVE_TRAINER, path, timeout=120)
    loaded = workers.run_for_result("-c", LOAD_TRAINER, path, timeout=120)
    assert loaded["loss"] == saved["loss"]
    assert loaded["table"] == saved["table"]
    without = workers.run("-c", LOAD_TRAINER.replace("import tf_ftrl  #", "#"), path,
                          timeout=120, status=1)
    # (TensorFlow names the first op of ours it meets: the step's index check, or the update.)
    assert re.search(r"Op type not registered "
                     r"'(FusedCheckSparseIndices|FusedResourceSparseApplyRowwiseFtrl)'",
                     without.stderr), without.stderr[-2000:]


def test_import_with_a_library_that_cannot_load_defers_the_error(tmp_path):
    """`import tf_ftrl` does not fail where the library cannot load (here: built for another
    TensorFlow); its first use raises the error that names both versions."""
    package = tmp_path / "tf_ftrl"
    package.mkdir()
    source = os.path.dirname(ops.__file__)
    for name in os.listdir(source):
        if name.endswith(".py") or name in ("optimizers", "legacy", "examples"):
            os.symlink(os.path.join(source, name), package / name)
    (package / "_tf_ftrl_ops.so").write_bytes(
        b"\x7fELF...tf_ftrl:built_against_tensorflow=2.99.0;...")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import tf_ftrl\n"
              "assert tf_ftrl.__file__.startswith(sys.argv[1]), tf_ftrl.__file__\n"
              "print('imported')\n"
              "tf_ftrl.ops.load_library()\n")
    done = workers.run("-c", script, tmp_path, timeout=120, status=1)
    assert "imported" in done.stdout
    assert "built against TensorFlow 2.99.0" in done.stderr and tf.__version__ in done.stderr
