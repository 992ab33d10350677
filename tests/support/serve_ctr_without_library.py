"""Serves the CTR job's SavedModel in a process that cannot import tf_ftrl (nor, therefore, load
its op library), as TensorFlow Serving would: raw Criteo lines without the label in, click
probabilities out.

    python -m tests.support.serve_ctr_without_library SERVING_DIR LINES_TXT OUT_NPY
"""

import sys

sys.modules["tf_ftrl"] = None  # any `import tf_ftrl` now fails

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(serving_dir, lines_path, out):
    with open(lines_path) as f:
        lines = tf.constant(f.read().splitlines())
    serve = tf.saved_model.load(serving_dir).signatures["serving_default"]
    np.save(out, serve(lines=lines)["click_probability"].numpy())


if __name__ == "__main__":
    main(*sys.argv[1:])
