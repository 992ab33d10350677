"""tf_ftrl: fused kernels for dense and sparse FTRL and Adagrad updates in TensorFlow.

`tf_ftrl.Ftrl` and `tf_ftrl.Adagrad` are drop-in Keras 3 optimizers; `tf_ftrl.ops` holds the
fused ops on `tf.Variable`s, `tf_ftrl.huge_pages` the transparent-huge-page advice for large
tables, and `tf_ftrl.sparse_regularizers` keeps regularized embedding tables' updates sparse.
The op library is loaded at import, so that SavedModels and graphs whose functions hold its ops
load after `import tf_ftrl` alone; one that cannot load (missing, or built for another
TensorFlow) raises its `ImportError` at first use instead. `tf_ftrl.legacy` (the optimizers for
Keras 2, `tf_keras`) is imported on first access, so that `import tf_ftrl` does not import
tf_keras; when tf_keras is in use (`TF_USE_LEGACY_KERAS=1`, or tf_keras already imported) it is
imported at once, so that models saved with its optimizers load after `import tf_ftrl` alone.
`tf_ftrl.custom_objects` maps the optimizers' saved names to the classes of the Keras in use.
"""

import importlib
import importlib.util
import os
import sys

from tf_ftrl._version import __version__
from tf_ftrl import huge_pages, ops, optimizers
from tf_ftrl.optimizers import Adagrad, Ftrl
from tf_ftrl.regularizers import sparse_regularizers


def _tf_keras_in_use():
    """Whether this process's Keras is tf_keras (Keras 2): tf.keras is tf_keras (TensorFlow's own
    test of TF_USE_LEGACY_KERAS), or tf_keras is already imported."""
    return (os.environ.get("TF_USE_LEGACY_KERAS") in ("true", "True", "1")
            or sys.modules.get("tf_keras") is not None)


def __getattr__(name):
    if name == "legacy":
        return importlib.import_module("tf_ftrl.legacy")
    if name == "custom_objects":
        # Computed on access, not at import: tf_keras may be imported after tf_ftrl.
        front_end = __getattr__("legacy") if _tf_keras_in_use() else optimizers
        return dict(front_end.custom_objects)
    raise AttributeError(f"module 'tf_ftrl' has no attribute {name!r}")


# TensorFlow looks a function's ops up by name when it loads a SavedModel or graph, and finds
# ours only once the library is loaded. A library that cannot load is no error here: its first
# use raises the ImportError that says why (and how to rebuild).
try:
    ops.load_library()
except ImportError:
    pass

# Importing tf_ftrl.legacy registers its classes (as 'tf_ftrl>Ftrl', 'tf_ftrl>Adagrad') with
# tf_keras's serialization, which load_model needs. Where tf-keras is not installed, tf.keras
# fails by itself; tf_ftrl.legacy's ImportError then waits for its first use.
if _tf_keras_in_use() and importlib.util.find_spec("tf_keras") is not None:
    importlib.import_module("tf_ftrl.legacy")

__all__ = ["Adagrad", "Ftrl", "custom_objects", "huge_pages", "ops", "optimizers",
           "sparse_regularizers"]
