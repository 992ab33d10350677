"""tf_ftrl's version and the oldest Keras 3 it supports: the one place each is written.

pyproject.toml reads `__version__` (`[tool.setuptools.dynamic]`), setup.py reads both from this
file without importing the package (that would import TensorFlow), and tf_ftrl.optimizers checks
the installed Keras against `OLDEST_KERAS` at import. Keep this file free of imports.
"""

__version__ = "0.1.0"

# The oldest Keras 3 release the optimizers are tested with (tools/compat_check.sh;
# docs/reliability.md, "Supported releases"): older ones lack parts of the optimizer API they
# build on.
OLDEST_KERAS = (3, 8)
