"""What the tests share and are not tests themselves: the float64 references, the kernel driver's
loader, and the workers that run in processes of their own (with the one helper that runs them).

Nothing here imports TensorFlow at import time but reference.py and the workers' own code: the
GPU tests (tests/gpu/) import numpy_reference and kernel_driver where TensorFlow is absent.
"""

import pathlib

# The repository's root: the workers run from it (`python -m tests.support.NAME`).
ROOT = pathlib.Path(__file__).resolve().parents[2]
