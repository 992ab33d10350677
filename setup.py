"""Builds the op library with Bazel and packages it with tf_ftrl.

The `.so` is compiled against the TensorFlow importable by the Python running this build (hence
`pip install --no-build-isolation .`), and the wheel requires exactly that TensorFlow version.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
_LIBRARY = "_tf_ftrl_ops.so"
# Keras 3 (tf_ftrl.Ftrl/Adagrad) came with TensorFlow 2.16; tools/compat_check.sh tests each
# release from there on (README, "Supported TensorFlow and Keras releases").
_OLDEST_TENSORFLOW = (2, 16)
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
                     "tf-nightly", "tf-nightly-cpu")


def _installed_tensorflow():
    """(distribution name, version) of the TensorFlow this interpreter runs."""
    for name in _TF_DISTRIBUTIONS:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    sys.exit(
        "tf_ftrl builds its op library against the installed TensorFlow, and this Python "
        f"({sys.executable}) has none. Install TensorFlow first (e.g. `pip install "
        "tensorflow-cpu`), then `pip install --no-build-isolation .`."
    )


class BazelBuildExt(build_ext):
    """Runs `bazel build` and copies the op library where the extension would go."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split(".")[:-1], _LIBRARY)

    def build_extension(self, ext):
        _, tf_version = _installed_tensorflow()
        env = dict(os.environ, PYTHON_BIN_PATH=sys.executable, TF_FTRL_TF_VERSION=tf_version)
        bazel = os.environ.get("BAZEL", "bazel")
        subprocess.check_call(
            [bazel, "build", "//kernels:_tf_ftrl_ops.so"],
            cwd=_ROOT, env=env,
        )
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            os.remove(target)  # Bazel's outputs are read-only; never write through them
        shutil.copyfile(os.path.join(_ROOT, "bazel-bin", "kernels", _LIBRARY), target)
        os.chmod(target, 0o755)


_tf_name, _tf_version = _installed_tensorflow()
if tuple(int(part) for part in _tf_version.split(".")[:2]) < _OLDEST_TENSORFLOW:
    sys.exit(
        f"tf_ftrl needs TensorFlow {'.'.join(map(str, _OLDEST_TENSORFLOW))} or newer (Keras 3), "
        f"and this Python ({sys.executable}) has {_tf_name} {_tf_version}. Upgrade it (e.g. "
        "`pip install -U tensorflow-cpu`), then `pip install --no-build-isolation .`."
    )

setup(
    # Keras: the oldest release tf_ftrl.Ftrl/Adagrad are tested with (tf_ftrl/optimizers).
    install_requires=[f"{_tf_name}=={_tf_version}", "keras>=3.8"],
    ext_modules=[Extension("tf_ftrl._tf_ftrl_ops", sources=[])],
    cmdclass={"build_ext": BazelBuildExt},
)
