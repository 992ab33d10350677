"""tf_ftrl: fused kernels for dense and sparse FTRL and Adagrad updates in TensorFlow.

`tf_ftrl.Ftrl` and `tf_ftrl.Adagrad` are drop-in Keras 3 optimizers; `tf_ftrl.ops` holds the
fused ops on `tf.Variable`s and `tf_ftrl.huge_pages` the transparent-huge-page advice for large
tables. The op library is loaded on first use. `tf_ftrl.legacy` (the optimizers for Keras 2,
`tf_keras`) is imported on first access, so that `import tf_ftrl` does not import tf_keras.
"""

from tf_ftrl._version import __version__
from tf_ftrl import huge_pages, ops, optimizers
from tf_ftrl.optimizers import Adagrad, Ftrl


def __getattr__(name):
    if name == "legacy":
        import importlib

        return importlib.import_module("tf_ftrl.legacy")
    raise AttributeError(f"module 'tf_ftrl' has no attribute {name!r}")


__all__ = ["Adagrad", "Ftrl", "huge_pages", "ops", "optimizers"]
