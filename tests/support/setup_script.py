"""Runs the repository's setup.py in a fresh process where TensorFlow looks installed at a given
version, or not at all (as in pip's isolated build environment)."""

import subprocess
import sys

from tests.support import ROOT


def run_setup_seeing_tensorflow(version, env=None):
    """Runs `setup.py --version` where the installed TensorFlow looks like `version` (None: no
    TensorFlow at all), in env (None: this process's environment); returns the
    subprocess.CompletedProcess, its output captured as text."""
    script = (
        "import importlib.metadata as metadata, runpy, sys\n"
        "real_version = metadata.version\n"
        "def version(name):\n"
        "    if name.startswith(('tensorflow', 'tf-nightly')):\n"
        f"        if {version!r} is None or name != 'tensorflow-cpu':\n"
        "            raise metadata.PackageNotFoundError(name)\n"
        f"        return {version!r}\n"
        "    return real_version(name)\n"
        "metadata.version = version\n"
        "sys.argv = ['setup.py', '--version']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
