"""`pip wheel` / `pip install` build the op library with Bazel against the installed TensorFlow;
the wheel carries the library, names no TensorFlow distribution (the version is checked when the
library loads), and the build leaves nothing in the source tree and no Bazel server running."""

import os
import platform
import shutil
import subprocess
import sys
import zipfile

import pytest
import tensorflow as tf

import tf_ftrl
from tests.support import ROOT
from tests.support.setup_script import run_setup_seeing_tensorflow


def source_files(tree):
    """Every file and symlink under `tree` (os.walk lists links to directories as dirs)."""
    found = []
    for directory, dirs, files in os.walk(tree):
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        found += [os.path.relpath(os.path.join(directory, f), tree) for f in files + links]
    return sorted(found)


def bazel_processes(output_root):
    """Process ids whose command line names `output_root` (a Bazel server would)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if output_root.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def test_wheel_carries_the_library_and_names_no_tensorflow_distribution(tmp_path):
    # A copy of the source tree, as a user's checkout: the build must write nothing into it.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "bazel-*", "build", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", "*.so", "dist", "out", "ctr_output", "benchmark_report"))
    before = source_files(source)
    # A fresh Bazel output root (a server and workspace of its own). Its compiled objects come
    # from the disk cache every clone on this machine shares (the Makefile's, as tools/setup.sh
    # sets it), where the set-up's build put them: a full build took ~4 minutes of `make test`.
    output_root = str(tmp_path / "bazel-root")
    env = dict(os.environ, TF_FTRL_BAZEL_OUTPUT_ROOT=output_root)
    env.setdefault("TF_FTRL_BAZEL_DISK_CACHE",
                   os.path.expanduser("~/.cache/tf_ftrl/bazel-disk-cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation",
                           "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(source)],
                          env=env, timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert source_files(source) == before, sorted(set(source_files(source)) - set(before))
    assert not bazel_processes(output_root)  # batch mode: no server idles for hours
    assert "[tf_ftrl] building the op library" in done.stdout + done.stderr  # pip -v shows it
    (wheel,) = (tmp_path / "dist").glob("tf_ftrl-*.whl")
    assert "linux" in wheel.name  # a platform wheel, not py3-none-any
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "tf_ftrl/_tf_ftrl_ops.so" in names
        assert "tf_ftrl/_tf_ftrl_xla_ops.so" in names  # the XLA lowering builds on 2.21
        assert "tf_ftrl/optimizers/ftrl.py" in names and "tf_ftrl/legacy/ftrl.py" in names
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    requirements = [line for line in lines if line.startswith("Requires-Dist:")]
    # Built here with tensorflow-cpu, the wheel must install beside `tensorflow` too.
    assert not [line for line in requirements if "tensorflow" in line or "tf-nightly" in line], \
        requirements
    assert "Requires-Dist: keras>=3.8" in requirements, requirements
    assert "License-Expression: Apache-2.0" in lines

    # Installed from the wheel (elsewhere than the source tree), it loads and runs.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300, capture_output=True)
    check = (
        "import tensorflow as tf, tf_ftrl\n"
        "v = tf.Variable([1.0, 2.0]); a = tf.Variable([1.0, 1.0])\n"
        "tf_ftrl.ops.apply_adagrad(v, a, tf.constant([1.0, 1.0]), lr=0.5, epsilon=0.0)\n"
        "print(tf_ftrl.__file__, v.numpy().tolist())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, timeout=300,
                          capture_output=True, text=True, check=True)
    location, values = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert location.startswith(str(target))
    # accum 1 + 1 = 2, so v -= 0.5 * 1 / sqrt(2).
    expected = [1.0 - 0.5 / 2 ** 0.5, 2.0 - 0.5 / 2 ** 0.5]
    actual = [float(x) for x in values.strip("[]").split(",")]
    assert max(abs(a - e) for a, e in zip(actual, expected)) < 1e-6, values


def test_build_without_tensorflow_says_what_to_do():
    # Under pip's default build isolation no TensorFlow is installed: setup.py must stop and say
    # how to build instead of compiling against nothing (or a second TensorFlow).
    done = run_setup_seeing_tensorflow(None)
    assert done.returncode != 0
    assert "--no-build-isolation" in done.stderr, done.stderr


def test_build_against_tensorflow_before_keras_3_says_what_to_do():
    done = run_setup_seeing_tensorflow("2.15.1")
    assert done.returncode != 0
    assert "TensorFlow 2.16 or newer" in done.stderr and "2.15.1" in done.stderr, done.stderr
    for supported in ("2.16.2", "2.22.0.dev20261120"):
        done = run_setup_seeing_tensorflow(supported)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="checks x86-64 instructions")
def test_sparse_loops_keep_their_row_prefetches():
    # The sparse update is bound by the latency of fetching scattered rows; prefetching rows
    # ahead makes it 2.5x faster. GCC once deleted every prefetch from these loops (a function
    # that only prefetches looks pure to it), silently: the library must keep them, both the
    # prefetches into L1 (PREFETCHT0) and those into L2 (PREFETCHT1), chosen at run time.
    library = os.path.join(os.path.dirname(tf_ftrl.__file__), "_tf_ftrl_ops.so")
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", library],
                             check=True, capture_output=True, text=True, timeout=300).stdout
    loops, name = set(), None
    with_prefetch = {"prefetcht0": set(), "prefetcht1": set()}
    for line in listing.splitlines():
        if line.endswith(">:"):
            name = line.split("<", 1)[1]
            # (@plt entries are jump stubs, not the loops.)
            # ("void tf_ftrl::cpu::internal::RunAvx2<tf_ftrl::cpu::internal::UniqueRowsShard<64l,
            # float, ...> >(...)")
            if ("tf_ftrl::cpu::internal::UniqueRowsShard" in name.split("(", 1)[0]
                    and "@plt>" not in name):
                loops.add(name)
        elif name in loops:
            for instruction, found in with_prefetch.items():
                if instruction in line:
                    found.add(name)
    # One per vector copy (baseline, AVX2, AVX-512), row size compiled in (16, 32, 64, any),
    # dtype (4) and update variant (FTRL's 4 flag combinations, Adagrad's 2).
    assert len(loops) >= 3 * 4 * 4 * 6, len(loops)
    for instruction, found in with_prefetch.items():
        assert loops == found, (instruction, sorted(loops - found)[:3])


def test_keras_before_the_oldest_tested_release_says_what_to_do():
    script = ("import keras\n"
              "keras.__version__ = '3.5.0'\n"
              "import tf_ftrl\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode != 0
    assert ("need Keras 3.8 or newer, and Keras 3.5.0 is installed" in done.stderr
            and 'pip install -U "keras>=3.8"' in done.stderr), done.stderr[-2000:]
