"""The README's quick start stays true: every Python block marked `<!-- quickstart: NAME -->`
runs, in README order, each in a fresh process in one temporary working directory (later blocks
use what earlier ones saved). The serving block runs where tf_ftrl cannot be imported; the
tf_keras blocks run with TF_USE_LEGACY_KERAS=1."""

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, workers

README = os.path.join(ROOT, "README.md")
BLOCK = re.compile(r"<!-- quickstart: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)
# Put before a block's code: any import of tf_ftrl (or its op library) then fails.
WITHOUT_TF_FTRL = "import sys\nsys.modules['tf_ftrl'] = None\n"


def quickstart_blocks():
    with open(README) as f:
        return BLOCK.findall(f.read())


def run_block(name, code, cwd, legacy=False, without_tf_ftrl=False):
    env = workers.environment(TF_USE_LEGACY_KERAS="1" if legacy else None)
    script = cwd / f"{name}.py"
    script.write_text((WITHOUT_TF_FTRL if without_tf_ftrl else "") + code)
    result = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, timeout=300,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"README block {name!r} failed:\n{result.stderr[-4000:]}"
    return result.stdout


def test_readme_marks_the_quick_start_blocks():
    names = [name for name, _ in quickstart_blocks()]
    assert names == ["keras-train", "keras-load", "serve", "legacy-train"]
    blocks = dict(quickstart_blocks())
    assert "tf_ftrl" not in blocks["serve"]


def test_keras_quick_start(tmp_path):
    blocks = dict(quickstart_blocks())
    run_block("keras-train", blocks["keras-train"], tmp_path)
    assert (tmp_path / "clicks.keras").exists() and (tmp_path / "serving").is_dir()
    out = run_block("keras-load", blocks["keras-load"], tmp_path)
    assert "Ftrl 160" in out
    out = run_block("serve", blocks["serve"], tmp_path, without_tf_ftrl=True)
    probability = float(re.search(r"\[\[([-\d.e]+)\]\]", out).group(1))
    assert 0.0 < probability < 1.0


def test_tf_keras_quick_start(tmp_path):
    pytest.importorskip("tf_keras")
    blocks = dict(quickstart_blocks())
    run_block("legacy-train", blocks["legacy-train"], tmp_path, legacy=True)
    # What the block's comments promise: the .keras file loads after `import tf_ftrl.legacy`,
    # and the SavedModel serves where tf_ftrl cannot be imported.
    out = run_block("legacy-load", "import tensorflow as tf\nimport tf_ftrl.legacy\n"
                    "model = tf.keras.models.load_model('clicks_legacy.keras')\n"
                    "print(type(model.optimizer).__module__)\n",
                    tmp_path, legacy=True)
    assert "tf_ftrl.legacy.ftrl" in out
    out = run_block("legacy-serve", "import tensorflow as tf\n"
                    "serve = tf.saved_model.load('serving_legacy').signatures['serving_default']\n"
                    "print(list(serve(tf.constant([[1, 2, 3, 4, 5, 6, 7, 8]])).values())[0])\n",
                    tmp_path, without_tf_ftrl=True)
    probability = float(re.search(r"\[\[([-\d.e]+)\]\]", out).group(1))
    assert 0.0 < probability < 1.0
