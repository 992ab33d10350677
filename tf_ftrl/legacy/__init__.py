"""tf_ftrl optimizers for Keras 2 (`tf_keras`), with the classic `optimizer_v2` API.

`tf_ftrl.legacy.Ftrl` and `tf_ftrl.legacy.Adagrad` are drop-in replacements for
`tf_keras.optimizers.legacy.Ftrl` and `tf_keras.optimizers.legacy.Adagrad` (`tf.keras` with
`TF_USE_LEGACY_KERAS=1`): the same arguments, slot variables (checkpoints interchange) and math,
with every update done by one of tf_ftrl's fused ops. Sparse gradients are not deduplicated in
Python first: the fused sparse kernels sum duplicate indices themselves. They work under
`tf.distribute` strategies, including `ParameterServerStrategy`, where each update runs on the
parameter server that holds the variable (see `tf_ftrl.examples.parameter_server`).

This module needs the `tf-keras` package. `import tf_ftrl` imports it only when tf_keras is in use
(`TF_USE_LEGACY_KERAS=1`, or tf_keras already imported), so that saved models load.
"""

try:
    import tf_keras
except ImportError as e:
    import tensorflow as _tf

    _major_minor = ".".join(_tf.__version__.split(".")[:2])
    raise ImportError(
        "tf_ftrl.legacy (optimizers for Keras 2) needs the tf-keras package, which is not "
        f"installed or failed to import ({e}). Install the release that matches TensorFlow "
        f"{_tf.__version__}: `pip install \"tf-keras~={_major_minor}.0\"`. For Keras 3, use "
        "tf_ftrl.Ftrl and tf_ftrl.Adagrad instead."
    ) from e

from tf_ftrl.legacy.adagrad import Adagrad
from tf_ftrl.legacy.ftrl import Ftrl

# For load_model(..., custom_objects=...): the registered names (what a saved model holds) and the
# plain class names.
custom_objects = {name: cls for cls in (Adagrad, Ftrl)
                  for name in (tf_keras.saving.get_registered_name(cls), cls.__name__)}

__all__ = ["Adagrad", "Ftrl", "custom_objects"]
