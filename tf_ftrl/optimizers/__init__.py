"""Keras 3 optimizers on tf_ftrl's fused kernels."""

import keras

# The oldest Keras 3 release the optimizers are tested with; written once, in tf_ftrl/_version.py
# (setup.py's install requirement reads it there too).
from tf_ftrl._version import OLDEST_KERAS  # noqa: E402


def _release(version):
    return tuple(int(part) for part in version.split(".")[:2])


if _release(keras.__version__) < OLDEST_KERAS:
    raise ImportError(
        f"tf_ftrl's Keras optimizers need Keras {'.'.join(map(str, OLDEST_KERAS))} or newer, and "
        f"Keras {keras.__version__} is installed: `pip install -U \"keras>="
        f"{'.'.join(map(str, OLDEST_KERAS))}\"`.")

from tf_ftrl.optimizers.adagrad import Adagrad  # noqa: E402
from tf_ftrl.optimizers.ftrl import Ftrl  # noqa: E402

# For load_model(..., custom_objects=...): the registered names (what a saved model holds) and the
# plain class names.
custom_objects = {name: cls for cls in (Adagrad, Ftrl)
                  for name in (keras.saving.get_registered_name(cls), cls.__name__)}

__all__ = ["Adagrad", "Ftrl", "custom_objects"]
