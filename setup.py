"""Builds the op library with Bazel and packages it with tf_ftrl.

The `.so` is compiled against the TensorFlow importable by the Python running this build (hence
`pip install --no-build-isolation .`). The wheel does not name a TensorFlow distribution
(`tensorflow`, `tensorflow-cpu`, ... all provide the same module): `tf_ftrl.ops` checks at load
time that the installed TensorFlow is the version the library was built against.

A wheel build (`pip install .`, `pip wheel .`) writes nothing into the source tree: Bazel runs in
batch mode (no server left behind) with its own output root (TF_FTRL_BAZEL_OUTPUT_ROOT, default
~/.cache/tf_ftrl/bazel, kept so that a rebuild is quick) and no `bazel-*` symlinks, and
setuptools builds in a temporary directory. An editable install (`pip install -e .`, as
tools/setup.sh does) shares Bazel's default output base and server with `bazel test` and the
Makefile, as development expects. Progress goes to stderr (`pip install -v` shows it).
"""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
_LIBRARY = "_tf_ftrl_ops.so"
_TARGET = "//kernels:_tf_ftrl_ops.so"
# The XLA lowering of the fused ops (kernels/xla_ops.cc), beside the op library. Optional: it uses
# TensorFlow's XLA headers, which change between releases; where it does not build, the package
# works without it (the optimizers then run plain TensorFlow ops under XLA).
_XLA_LIBRARY = "_tf_ftrl_xla_ops.so"
_XLA_TARGET = "//kernels:_tf_ftrl_xla_ops.so"
# The header of XLA's typed FFI, which the custom-call targets are written with
# (kernels/xla_custom_calls.cc). TensorFlow's pip packages ship it from 2.20 on; 2.16-2.19 ship
# only its C API (xla/ffi/api/c_api.h), so the lowering is not built there (docs/reliability.md).
_XLA_FFI_HEADER = os.path.join("xla", "ffi", "api", "ffi.h")
# Keras 3 (tf_ftrl.Ftrl/Adagrad) came with TensorFlow 2.16; tools/compat_check.sh tests each
# release from there on (docs/reliability.md, "Supported releases").
_OLDEST_TENSORFLOW = (2, 16)
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
                     "tf-nightly", "tf-nightly-cpu")
_REBUILD = "pip install --no-build-isolation ."


def _log(message):
    print(f"[tf_ftrl] {message}", file=sys.stderr, flush=True)


def _versions():
    """__version__ and OLDEST_KERAS from tf_ftrl/_version.py, without importing tf_ftrl (which
    would import TensorFlow)."""
    values = {}
    with open(os.path.join(_ROOT, "tf_ftrl", "_version.py")) as f:
        exec(f.read(), values)
    return values["__version__"], values["OLDEST_KERAS"]


def _isolated_build_environment(path=None, prefix=None, environ=None):
    """The temporary build environment this interpreter runs in, or None.

    pip's build isolation keeps the interpreter but puts a temporary `pip-build-env-*` directory
    on sys.path (through PYTHONPATH) and hides the environment's own site-packages; `python -m
    build` and others make a temporary virtual environment (`build-env-*`).
    """
    path = sys.path if path is None else path
    prefix = sys.prefix if prefix is None else prefix
    environ = os.environ if environ is None else environ
    for entry in list(path) + environ.get("PYTHONPATH", "").split(os.pathsep):
        head, marker, tail = entry.partition("pip-build-env-")
        if marker:
            return head + marker + tail.split(os.sep, 1)[0]
    if os.path.basename(os.path.normpath(prefix)).startswith("build-env-"):
        return prefix
    return None


def _no_tensorflow_message(isolated_env, executable=sys.executable):
    if isolated_env:
        return (
            f"pip built tf_ftrl in an isolated build environment ({isolated_env}), which has no "
            "TensorFlow: pip's build isolation hides the TensorFlow you installed, and the op "
            "library must be compiled against that one. Rerun with `" + _REBUILD + "` (the "
            "flag is needed), using the pip of the environment that has TensorFlow."
        )
    return (
        "tf_ftrl builds its op library against the installed TensorFlow, and this Python "
        f"({executable}) has none. Install TensorFlow first (e.g. `pip install tensorflow-cpu`, "
        f"or `tensorflow` for GPUs), then `{_REBUILD}`."
    )


def _installed_tensorflow():
    """(distribution name, version) of the TensorFlow this interpreter runs."""
    for name in _TF_DISTRIBUTIONS:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    sys.exit(_no_tensorflow_message(_isolated_build_environment()))


def _tensorflow_has_xla_ffi_header():
    """Whether the headers of the TensorFlow this interpreter runs (tf.sysconfig.get_include(),
    found without importing TensorFlow) include XLA's typed FFI."""
    spec = importlib.util.find_spec("tensorflow")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any(os.path.isfile(os.path.join(location, "include", _XLA_FFI_HEADER))
               for location in locations)


def _find_bazel(environ=None):
    """The Bazel executable to run: $BAZEL, else `bazel` or `bazelisk` on PATH."""
    environ = os.environ if environ is None else environ
    search = environ.get("PATH", os.defpath)
    if environ.get("BAZEL"):
        found = shutil.which(environ["BAZEL"], path=search)
        if found:
            return found
        sys.exit(f"tf_ftrl: BAZEL is set to {environ['BAZEL']!r}, which is not an executable.")
    for name in ("bazel", "bazelisk"):
        found = shutil.which(name, path=search)
        if found:
            return found
    sys.exit(
        "tf_ftrl builds its op library with Bazel, and no `bazel` (or `bazelisk`) is on PATH "
        f"({search}). Install it (Debian/Ubuntu: `apt-get install bazel-bootstrap`; elsewhere "
        "Bazelisk: https://github.com/bazelbuild/bazelisk), or set BAZEL to its path, then "
        f"`{_REBUILD}` again."
    )


def _bazel_output_root(environ=None):
    environ = os.environ if environ is None else environ
    if environ.get("TF_FTRL_BAZEL_OUTPUT_ROOT"):
        return environ["TF_FTRL_BAZEL_OUTPUT_ROOT"]
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tf_ftrl", "bazel")


def _bazel_commands(bazel, editable, output_root=None, disk_cache=None, target=_TARGET):
    """The `bazel build` and `bazel info bazel-bin` command lines.

    Neither writes into the source tree (--symlink_prefix=/ drops the bazel-* links). A wheel
    build runs Bazel in batch mode, under its own output root: no server is left running, and a
    server of the development flow is not disturbed. `disk_cache` (TF_FTRL_BAZEL_DISK_CACHE, which
    tools/setup.sh sets for the development flow) is a directory of compiled objects shared by
    every clone on the machine.
    """
    startup = [] if editable else ["--batch", f"--output_user_root={output_root}"]
    cache = [f"--disk_cache={disk_cache}"] if disk_cache else []
    build = [bazel, *startup, "build", "--symlink_prefix=/", *cache, target]
    info = [bazel, *startup, "info", "bazel-bin"]
    return build, info


class BazelBuildExt(build_ext):
    """Runs `bazel build` and copies the op library where the extension would go."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split(".")[:-1], _LIBRARY)

    def build_extension(self, ext):
        _, tf_version = _installed_tensorflow()
        bazel = _find_bazel()
        editable = bool(getattr(self, "editable_mode", False) or self.inplace)
        env = dict(os.environ, PYTHON_BIN_PATH=sys.executable, TF_FTRL_TF_VERSION=tf_version)
        build, info = _bazel_commands(bazel, editable, _bazel_output_root(),
                                      os.environ.get("TF_FTRL_BAZEL_DISK_CACHE"))
        _log(f"building the op library against TensorFlow {tf_version} with {bazel} (about 1.5 "
             "minutes on 2 cores the first time; quick when cached): " + " ".join(build))
        started = time.monotonic()
        # Bazel's own progress goes to stderr, which `pip install -v` shows.
        subprocess.run(build, cwd=_ROOT, env=env, check=True, stdout=sys.stderr)
        bazel_bin = subprocess.run(info, cwd=_ROOT, env=env, check=True, text=True,
                                   stdout=subprocess.PIPE).stdout.strip().splitlines()[-1]
        _log(f"built in {time.monotonic() - started:.0f} s")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            os.remove(target)  # Bazel's outputs are read-only; never write through them
        shutil.copyfile(os.path.join(bazel_bin, "kernels", _LIBRARY), target)
        os.chmod(target, 0o755)
        self._build_xla_lowering(bazel, editable, env, bazel_bin, os.path.dirname(target))

    def _build_xla_lowering(self, bazel, editable, env, bazel_bin, directory):
        """Builds the XLA lowering and copies it beside the op library; a failure is reported,
        not raised."""
        # An editable install copies only the extension it declares from the build directory
        # into the tree: the lowering goes into the tree's package directly.
        places = {directory, os.path.join(_ROOT, "tf_ftrl")} if editable else {directory}
        targets = [os.path.join(place, _XLA_LIBRARY) for place in places]
        for target in targets:
            if os.path.exists(target):
                os.remove(target)  # no earlier build's lowering left behind
        if not _tensorflow_has_xla_ffi_header():
            _log(f"the XLA lowering is not built: TensorFlow {env['TF_FTRL_TF_VERSION']} ships no "
                 f"{_XLA_FFI_HEADER} (XLA's typed FFI; TensorFlow 2.20 and newer do): tf_ftrl "
                 "works without it, and its optimizers run plain TensorFlow ops under XLA")
            return
        build, _ = _bazel_commands(bazel, editable, _bazel_output_root(),
                                   os.environ.get("TF_FTRL_BAZEL_DISK_CACHE"), _XLA_TARGET)
        _log("building the XLA lowering of the fused ops (about 2 minutes on 2 cores the first "
             "time): " + " ".join(build))
        started = time.monotonic()
        if subprocess.run(build, cwd=_ROOT, env=env, stdout=sys.stderr).returncode != 0:
            _log("the XLA lowering did not build against this TensorFlow (see above): tf_ftrl "
                 "works without it, and its optimizers run plain TensorFlow ops under XLA")
            return
        _log(f"built in {time.monotonic() - started:.0f} s")
        for target in targets:
            shutil.copyfile(os.path.join(bazel_bin, "kernels", _XLA_LIBRARY), target)
            os.chmod(target, 0o755)


def _out_of_tree_options():
    """setuptools options that keep a wheel build's `build/` and egg-info out of the source tree
    (empty for an editable install, which lives in the tree)."""
    if any(command in sys.argv for command in ("editable_wheel", "develop")):
        return {}
    scratch = tempfile.mkdtemp(prefix="tf_ftrl-build-")
    import atexit

    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return {"build": {"build_base": os.path.join(scratch, "build")},
            "egg_info": {"egg_base": scratch}}


def _check_tensorflow():
    name, version = _installed_tensorflow()
    if tuple(int(part) for part in version.split(".")[:2]) < _OLDEST_TENSORFLOW:
        sys.exit(
            f"tf_ftrl needs TensorFlow {'.'.join(map(str, _OLDEST_TENSORFLOW))} or newer (Keras "
            f"3), and this Python ({sys.executable}) has {name} {version}. Upgrade it (e.g. "
            f"`pip install -U {name}`), then `{_REBUILD}`."
        )


# (Imported as a module, e.g. by tests/test_install.py, it only defines the functions above.)
if __name__ == "__main__":
    _check_tensorflow()
    _oldest_keras = _versions()[1]
    setup(
        # No TensorFlow distribution here: a wheel built with tensorflow-cpu must install beside
        # `tensorflow` (GPU) of the same version, and vice versa. tf_ftrl.ops checks the version.
        install_requires=[f"keras>={'.'.join(map(str, _oldest_keras))}"],
        ext_modules=[Extension("tf_ftrl._tf_ftrl_ops", sources=[])],
        cmdclass={"build_ext": BazelBuildExt},
        options=_out_of_tree_options(),
    )
