"""The CTR job as a cluster task whose parameter servers fail to load tf_ftrl's op library (as a
server with a library built for another TensorFlow would), for local_cluster's tests.

    python -m tf_ftrl.examples.local_cluster --strategy ps \\
        --module tests.support.ctr_ps_without_library -- CTR ARGUMENTS
"""

import json
import os

from tf_ftrl import ops
from tf_ftrl.examples import ctr


def refuse():
    raise RuntimeError("undefined symbol: _ZN10tensorflow8OpKernelD2Ev (a stand-in for a "
                       "library built against another TensorFlow)")


if __name__ == "__main__":
    if json.loads(os.environ["TF_CONFIG"])["task"]["type"] == "ps":
        ops.load_library = refuse
    ctr.main()
