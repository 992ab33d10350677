"""The op library is loaded from the package only, and a missing or mismatched library says
which TensorFlow versions are involved and how to rebuild."""

import os

import pytest
import tensorflow as tf

from tf_ftrl import ops


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    monkeypatch.setattr(ops, "_library", None)
    monkeypatch.setattr(ops, "_package_dir", lambda: str(tmp_path))
    return tmp_path


def test_library_records_the_tensorflow_it_was_built_against():
    path = os.path.join(os.path.dirname(ops.__file__), "_tf_ftrl_ops.so")
    assert ops._built_tensorflow_version(path) == tf.__version__


def test_missing_library_says_how_to_rebuild(fresh_loader):
    with pytest.raises(ImportError, match=r"missing.*_tf_ftrl_ops\.so.*no-build-isolation"):
        ops.load_library()


def test_library_built_for_another_tensorflow_names_both_versions(fresh_loader):
    (fresh_loader / "_tf_ftrl_ops.so").write_bytes(
        b"\x7fELF...tf_ftrl:built_against_tensorflow=2.99.0;...")
    with pytest.raises(ImportError) as error:
        ops.load_library()
    message = str(error.value)
    assert "2.99.0" in message and tf.__version__ in message and "Rebuild" in message


def test_library_that_fails_to_load_names_both_versions(fresh_loader):
    (fresh_loader / "_tf_ftrl_ops.so").write_bytes(
        b"not a shared object tf_ftrl:built_against_tensorflow=" + tf.__version__.encode() +
        b";")
    with pytest.raises(ImportError, match="failed to load"):
        ops.load_library()


def test_library_is_not_taken_from_the_working_directory(tmp_path, monkeypatch):
    # A broken library of the same name in the current directory must not be picked up.
    (tmp_path / "_tf_ftrl_ops.so").write_bytes(b"garbage")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ops, "_library", None)
    assert ops.load_library() is not None
