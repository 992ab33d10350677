"""The long soak: STEPS (default 20,000) sparse tf_ftrl.Ftrl updates on a 100,000 x 16 table in a
fresh process, printing resident memory along the way and its growth after warm-up.

    python tools/soak.py [STEPS]
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP_STEPS = 1000


def main(argv):
    steps = int(argv[1]) if len(argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "soak.json")
        subprocess.run([sys.executable, "-m", "tests.support.resilience_worker", "soak",
                        str(steps), out], check=True, cwd=ROOT,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        with open(out) as f:
            result = json.load(f)
    for step, kb in result["samples"]:
        print(f"step {step:>6}: resident {kb / 1024:8.1f} MB")
    after = [(s, kb) for s, kb in result["samples"] if s >= WARMUP_STEPS]
    growth = (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0]) * 1000 / 1024
    print(f"growth after step {WARMUP_STEPS}: {growth:.3f} MB per 1,000 steps; "
          f"values finite: {result['finite']}")


if __name__ == "__main__":
    main(sys.argv)
