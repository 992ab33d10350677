"""The install as a new user meets it: setup.py's messages when pip isolates the build or Bazel is
missing, how it runs Bazel, the package metadata (no TensorFlow distribution pinned, SPDX
license, one version, one Keras minimum). The full wheel build is in test_packaging.py."""

import importlib.metadata
import os
import runpy
import stat
import subprocess
import sys
import tomllib

import pytest

import tf_ftrl
import tf_ftrl._version
import tf_ftrl.optimizers
from tests.support import ROOT
from tests.support.setup_script import run_setup_seeing_tensorflow

SETUP = runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="tf_ftrl_setup_under_test")


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pips_isolated_environment_is_recognised():
    isolated = SETUP["_isolated_build_environment"]
    env = "/tmp/pip-build-env-k2j4x9"
    assert isolated(path=["/usr/lib/python311.zip", f"{env}/overlay/lib/python3.11/site-packages"],
                    prefix="/home/u/venv", environ={}) == env
    assert isolated(path=[], prefix="/home/u/venv",
                    environ={"PYTHONPATH": f"{env}/site"}) == env
    # `python -m build` makes a temporary virtual environment instead.
    assert isolated(path=[], prefix="/tmp/build-env-abc123", environ={}) == "/tmp/build-env-abc123"
    assert isolated(path=["/home/u/venv/lib/python3.11/site-packages"], prefix="/home/u/venv",
                    environ={"PYTHONPATH": "/home/u/src"}) is None


def test_build_in_pips_isolated_environment_says_so():
    # What pip's build isolation looks like to setup.py: its temporary directory on PYTHONPATH,
    # and no TensorFlow to be found.
    done = run_setup_seeing_tensorflow(
        None, env=dict(os.environ, PYTHONPATH="/tmp/pip-build-env-test1234/site"))
    assert done.returncode != 0
    assert ("pip built tf_ftrl in an isolated build environment (/tmp/pip-build-env-test1234), "
            "which has no TensorFlow") in done.stderr, done.stderr
    assert "Rerun with `pip install --no-build-isolation .`" in done.stderr, done.stderr
    assert "has none. Install TensorFlow first" not in done.stderr, done.stderr


def test_missing_bazel_is_named_with_how_to_install_it(tmp_path):
    with pytest.raises(SystemExit) as stop:
        SETUP["_find_bazel"]({"PATH": str(tmp_path)})
    message = str(stop.value.code)
    assert "builds its op library with Bazel" in message, message
    assert "apt-get install bazel-bootstrap" in message and "Bazelisk" in message, message
    assert "set BAZEL" in message, message

    with pytest.raises(SystemExit) as stop:
        SETUP["_find_bazel"]({"PATH": str(tmp_path), "BAZEL": "/nowhere/bazel"})
    assert "BAZEL is set to '/nowhere/bazel'" in str(stop.value.code)


def test_bazel_is_found_on_path_as_bazelisk_or_through_BAZEL(tmp_path):
    def executable(name):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    bazelisk = executable("bazelisk")
    assert SETUP["_find_bazel"]({"PATH": str(tmp_path)}) == bazelisk
    bazel = executable("bazel")
    assert SETUP["_find_bazel"]({"PATH": str(tmp_path)}) == bazel
    mine = executable("my-bazel")
    assert SETUP["_find_bazel"]({"PATH": "", "BAZEL": mine}) == mine


def test_a_wheel_build_runs_bazel_in_batch_mode_out_of_the_source_tree():
    build, info = SETUP["_bazel_commands"]("bazel", editable=False, output_root="/cache/root")
    for command in (build, info):
        # Startup options come before the command: no server left behind, own output root.
        assert command[1:3] == ["--batch", "--output_user_root=/cache/root"], command
    assert "--symlink_prefix=/" in build  # no bazel-* links in the source tree
    assert info[-2:] == ["info", "bazel-bin"]
    # An editable install shares the development server (make test) and its output base.
    build, info = SETUP["_bazel_commands"]("bazel", editable=True, output_root="/cache/root")
    assert "--batch" not in build and "--symlink_prefix=/" in build
    assert not any(flag.startswith("--disk_cache") for flag in build)
    # The development flow's disk cache, shared by clones, when asked for.
    build, _ = SETUP["_bazel_commands"]("bazel", editable=True, disk_cache="/cache/disk")
    assert build[2:4] == ["--symlink_prefix=/", "--disk_cache=/cache/disk"], build
    assert SETUP["_bazel_output_root"]({"TF_FTRL_BAZEL_OUTPUT_ROOT": "/x"}) == "/x"
    assert SETUP["_bazel_output_root"]({"XDG_CACHE_HOME": "/c"}) == "/c/tf_ftrl/bazel"


def test_installed_metadata_names_no_tensorflow_distribution():
    # A wheel built with tensorflow-cpu must install beside `tensorflow` of the same version (and
    # vice versa): the version is checked when the op library loads, not by the resolver.
    requirements = importlib.metadata.requires("tf_ftrl")
    runtime = [r for r in requirements if "extra ==" not in r]
    assert not [r for r in runtime if r.lower().startswith(("tensorflow", "tf-nightly", "tf_"))], \
        runtime
    oldest = ".".join(map(str, tf_ftrl._version.OLDEST_KERAS))
    assert runtime == [f"keras>={oldest}"], runtime


def test_license_is_an_spdx_expression_with_the_apache_text():
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text
    assert len(text.splitlines()) > 190  # the full text, not a notice
    # setuptools >= 77 reads it (PEP 639); the table form it replaces warns on every build.
    requires = pyproject()["build-system"]["requires"]
    assert "setuptools>=77" in requires, requires
    metadata = importlib.metadata.metadata("tf_ftrl")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in metadata.get_all("License-File")
    assert "CUDA" in project["description"], project["description"]


def test_setup_runs_without_setuptools_deprecation_warnings():
    done = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == tf_ftrl.__version__
    assert "SetuptoolsDeprecationWarning" not in done.stderr, done.stderr
    assert "project.license" not in done.stderr, done.stderr


def test_version_and_keras_minimum_are_written_once():
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tf_ftrl._version.__version__"}
    assert tf_ftrl.__version__ == tf_ftrl._version.__version__
    assert importlib.metadata.version("tf_ftrl") == tf_ftrl.__version__
    assert SETUP["_versions"]() == (tf_ftrl._version.__version__, tf_ftrl._version.OLDEST_KERAS)
    assert tf_ftrl.optimizers.OLDEST_KERAS is tf_ftrl._version.OLDEST_KERAS
    # No second literal left behind.
    for path in ("tf_ftrl/__init__.py", "tf_ftrl/optimizers/__init__.py", "setup.py"):
        with open(os.path.join(ROOT, path)) as f:
            source = f.read()
        assert "__version__ =" not in source and "OLDEST_KERAS =" not in source, path
        assert tf_ftrl.__version__ not in source and "3.8" not in source, path
