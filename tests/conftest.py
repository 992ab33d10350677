"""Fixtures shared by the test files. TensorFlow-free: tests/gpu/ runs where TensorFlow is absent."""

import zlib

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--rng-seed", type=int, default=0, metavar="N",
                     help="mixed into every test's `rng` seed: other random inputs, each "
                          "reproducible with the same N (default: 0)")


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id (and --rng-seed): each test and each
    parameter case gets random inputs of its own, the same on every run whatever else runs.

    The seed is printed, so a failure's report shows it under "Captured stdout setup", and kept
    in the test's user_properties (JUnit XML): np.random.default_rng(SEED) gives the same inputs.
    """
    seed = zlib.crc32(request.node.nodeid.encode(), request.config.getoption("rng_seed"))
    request.node.user_properties.append(("seed", seed))
    print(f"rng: np.random.default_rng({seed})")
    return np.random.default_rng(seed)
