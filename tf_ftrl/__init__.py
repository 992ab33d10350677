"""tf_ftrl: fused CPU kernels for dense and sparse FTRL and Adagrad updates in TensorFlow.

`tf_ftrl.ops` holds the fused ops on `tf.Variable`s; the op library is loaded on first use.
"""

from tf_ftrl import ops
from tf_ftrl.ops import apply_adagrad, apply_ftrl, sparse_apply_adagrad, sparse_apply_ftrl

__version__ = "0.1.0"

__all__ = [
    "ops",
    "apply_ftrl",
    "sparse_apply_ftrl",
    "apply_adagrad",
    "sparse_apply_adagrad",
]
