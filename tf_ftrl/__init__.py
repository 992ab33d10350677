"""tf_ftrl: fused kernels for dense and sparse FTRL and Adagrad updates in TensorFlow.

`tf_ftrl.Ftrl` and `tf_ftrl.Adagrad` are drop-in Keras 3 optimizers; `tf_ftrl.ops` holds the
fused ops on `tf.Variable`s. The op library is loaded on first use.
"""

from tf_ftrl import ops, optimizers
from tf_ftrl.ops import apply_adagrad, apply_ftrl, sparse_apply_adagrad, sparse_apply_ftrl
from tf_ftrl.optimizers import Adagrad, Ftrl

__version__ = "0.1.0"

__all__ = [
    "Adagrad",
    "Ftrl",
    "ops",
    "optimizers",
    "apply_ftrl",
    "sparse_apply_ftrl",
    "apply_adagrad",
    "sparse_apply_adagrad",
]
