"""The `rng` fixture's run seed holds under pytest-xdist (`make test` runs `pytest -n`): every
worker draws the inputs that the seed printed in the header gives again, with or without -n.

Runs pytest in a subprocess on a small test file beside a copy of tests/conftest.py; each case
writes the first number its `rng` draws to a file named after it.
"""

import os
import re
import shutil
import subprocess
import sys

from tests.support import ROOT

CASES = """
import os
import pytest

@pytest.mark.parametrize("case", range(8))
def test_draw(rng, case):
    with open(os.path.join(os.environ["DRAWS_DIR"], f"{case}.txt"), "w") as f:
        f.write(str(int(rng.integers(2**62))))
"""


def run_cases(directory, draws, *args):
    """Runs the cases (args: pytest's options); returns the header's seed and case -> draw."""
    draws.mkdir()
    env = dict(os.environ, DRAWS_DIR=str(draws))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_cases.py", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    seed = int(re.search(r"rng: --rng-seed (\d+) gives", result.stdout).group(1))
    values = {p.stem: p.read_text() for p in draws.iterdir()}
    assert len(values) == 8, values
    return seed, values


def test_workers_draw_what_the_seed_in_the_header_gives_again(tmp_path):
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)

    seed, in_workers = run_cases(tmp_path, tmp_path / "workers", "-n", "2")
    _, again = run_cases(tmp_path, tmp_path / "again", "-n", "2", "--rng-seed", str(seed))
    _, in_one_process = run_cases(tmp_path, tmp_path / "one", "--rng-seed", str(seed))
    assert in_workers == again == in_one_process
    # Another seed gives other inputs (the seed reached the workers at all).
    _, other = run_cases(tmp_path, tmp_path / "other", "-n", "2", "--rng-seed", str(seed ^ 1))
    assert all(other[case] != in_workers[case] for case in in_workers)
