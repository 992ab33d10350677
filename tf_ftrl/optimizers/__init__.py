"""Keras 3 optimizers on tf_ftrl's fused kernels."""

from tf_ftrl.optimizers.adagrad import Adagrad
from tf_ftrl.optimizers.ftrl import Ftrl

__all__ = ["Adagrad", "Ftrl"]
