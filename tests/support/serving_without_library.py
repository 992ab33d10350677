"""Serves exported models in a process that cannot import tf_ftrl or find its op library, as
TensorFlow Serving and other inference stacks would.

    python -m tests.support.serving_without_library MODEL_DIR IDS_NPZ OUT_NPZ
"""

import sys

sys.modules["tf_ftrl"] = None  # any `import tf_ftrl` now fails

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(model_dir, ids_path, out):
    ids = tf.constant(np.load(ids_path)["ids"])
    outputs = {}
    for name in ("saved_model", "exported"):
        loaded = tf.saved_model.load(f"{model_dir}/{name}")
        (prediction,) = loaded.signatures["serving_default"](ids).values()
        outputs[name] = prediction.numpy()
    np.savez(out, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
