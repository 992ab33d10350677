"""What the tests share that is not a test: the float64 references (numpy_reference, and
reference for TensorFlow values), the kernel driver's loader, the workers that run in processes
of their own with the one helper that runs them (workers), the model the workers train, and
setup.py run where TensorFlow looks installed at a given version (or not at all).

Only reference.py and the two serving workers import TensorFlow when imported: the GPU tests
(tests/gpu/) import numpy_reference and kernel_driver where TensorFlow is absent.
"""

import pathlib

# The repository's root: the workers run from it (`python -m tests.support.NAME`).
ROOT = pathlib.Path(__file__).resolve().parents[2]
