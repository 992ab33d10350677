"""Fixtures shared by the test files. TensorFlow-free: tests/gpu/ runs where TensorFlow is absent."""

import secrets
import zlib

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--rng-seed", type=int, default=None, metavar="N",
                     help="the run's seed, mixed into every test's `rng` seed (default: a fresh "
                          "one each run, printed in the header; pass it to get the same inputs)")


def pytest_configure(config):
    # Under pytest-xdist (`make test` runs `-n`), a worker takes the run's seed from the
    # controller (pytest_configure_node): a seed of its own would give inputs that the seed in
    # the header does not.
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None and "rng_run_seed" in worker_input:
        config.rng_run_seed = worker_input["rng_run_seed"]
        return
    seed = config.getoption("rng_seed")
    config.rng_run_seed = secrets.randbits(32) if seed is None else seed


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist, in the controller: hands each worker the run's seed."""
    node.workerinput["rng_run_seed"] = node.config.rng_run_seed


def pytest_report_header(config):
    return f"rng: --rng-seed {config.rng_run_seed} gives this run's random inputs again"


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the run's seed (fresh each run unless --rng-seed N) and the
    test's node id: each test and each parameter case gets random inputs of its own, new on every
    run, and the same again with --rng-seed N whatever else runs.

    The seed is printed, so a failure's report shows it under "Captured stdout setup", and kept
    in the test's user_properties (JUnit XML): np.random.default_rng(SEED) gives the same inputs.
    """
    seed = zlib.crc32(request.node.nodeid.encode(), request.config.rng_run_seed)
    request.node.user_properties.append(("seed", seed))
    print(f"rng: np.random.default_rng({seed}) (run with --rng-seed {request.config.rng_run_seed})")
    return np.random.default_rng(seed)
