"""DeepFM with regularized 1M-row embeddings: stock Adagrad against tf_ftrl's, both front ends.

Each variant trains in its own process (the Keras front end is chosen per process) on the same
synthetic Criteo examples, one epoch at batch 256, and is scored on the same held-out examples:

  keras3/stock          Keras 3 DeepFM (tf_ftrl.examples.deepfm), keras.optimizers.Adagrad
  keras3/tf_ftrl        the same model, tf_ftrl.Adagrad + tf_ftrl.sparse_regularizers(model)
  tf_keras/stock        tf_keras DeepFM, tf_keras.optimizers.Adagrad (DeepCTR's "adagrad")
  tf_keras/stock-noreg  the same with the embedding regularizers removed (l2_reg = 0 is not
                        enough: DeepCTR attaches l2(0) too; here they are not attached)
  tf_keras/tf_ftrl      tf_ftrl.legacy.Adagrad + tf_ftrl.sparse_regularizers(model)
  tf_keras/tf_ftrl-noreg  tf_ftrl.legacy.Adagrad, the embedding regularizers removed (what the
                        sparse penalty costs)

With --deepctr the tf_keras variants use DeepCTR's own DeepFM (`pip install deepctr==0.9.4`).
Steps/s is timed over the epoch's steps after the first 20.

    python tools/benchmark_deepfm.py [--fields 26] [--vocabulary 1000000] [--values 10000] [--deepctr]
"""

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("keras3/stock", "keras3/tf_ftrl", "tf_keras/stock", "tf_keras/stock-noreg",
            "tf_keras/tf_ftrl", "tf_keras/tf_ftrl-noreg")
WARM_STEPS = 20


def _deepctr_model(args, l2_reg):
    from deepctr.feature_column import SparseFeat
    from deepctr.models import DeepFM
    columns = [SparseFeat(f"C{i + 1}", vocabulary_size=args.vocabulary,
                          embedding_dim=args.embedding_dim, dtype="int32")
               for i in range(args.fields)]
    return DeepFM(columns, columns, l2_reg_linear=l2_reg, l2_reg_embedding=l2_reg)


def _strip_regularizers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "embeddings_regularizer", None) is not None:
            layer.embeddings_regularizer = None
            layer._callable_losses[:] = []


def worker(args):
    front_end, kind = args.worker.split("/")
    if front_end == "tf_keras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tf_ftrl
    from tf_ftrl.examples import deepfm
    from tf_ftrl.examples.criteo_data import auc
    if front_end == "tf_keras":
        import tf_keras as keras
    else:
        import keras
    tf.keras.utils.set_random_seed(1)
    l2_reg = 1e-5
    if args.deepctr and front_end == "tf_keras":
        model = _deepctr_model(args, l2_reg)
    else:
        model = deepfm.build(keras, args.fields, args.vocabulary, args.embedding_dim,
                             l2_reg_embedding=l2_reg, l2_reg_linear=l2_reg)
    if kind.endswith("-noreg"):
        _strip_regularizers(model)
    done = tf_ftrl.sparse_regularizers(model) if kind == "tf_ftrl" else {}
    if kind.startswith("tf_ftrl"):
        optimizer = (tf_ftrl.legacy.Adagrad if front_end == "tf_keras" else tf_ftrl.Adagrad)(
            args.learning_rate)
    else:
        optimizer = keras.optimizers.Adagrad(args.learning_rate)
    model.compile(optimizer, "binary_crossentropy")
    examples = args.train_examples + args.test_examples
    inputs, labels = deepfm.synthetic_examples(examples, args.fields, args.vocabulary,
                                               args.values)
    train = {k: v[:args.train_examples] for k, v in inputs.items()}
    test = {k: v[args.train_examples:] for k, v in inputs.items()}

    class Timer(keras.callbacks.Callback):
        times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    timer = Timer()
    model.fit(train, labels[:args.train_examples], batch_size=args.batch_size, epochs=1,
              shuffle=False, verbose=0, callbacks=[timer])
    steps = len(timer.times) - WARM_STEPS
    steps_per_second = steps / (timer.times[-1] - timer.times[WARM_STEPS - 1])
    scores = model.predict(test, batch_size=4096, verbose=0).ravel()
    kernels = optimizer.kernels_used() if kind.startswith("tf_ftrl") else {}
    tables = [name for name in kernels if "emb" in name or "linear" in name]
    print(json.dumps({
        "variant": args.worker, "steps_per_second": steps_per_second,
        "auc": auc(labels[args.train_examples:].ravel(), scores),
        "sparse_tables": sum(kernels[t].startswith("sparse_") for t in tables),
        "tables": len(tables), "rewritten": len(done),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=26)
    parser.add_argument("--vocabulary", type=int, default=1_000_000)
    parser.add_argument("--embedding-dim", type=int, default=4)
    parser.add_argument("--values", type=int, default=10_000,
                        help="distinct values per field in the synthetic data")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--train-examples", type=int, default=200_000)
    parser.add_argument("--test-examples", type=int, default=50_000)
    parser.add_argument("--deepctr", action="store_true",
                        help="the tf_keras variants use DeepCTR's DeepFM")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = {}
    for variant in args.variants:
        command = [sys.executable, __file__, "--worker", variant] + [
            a for a in sys.argv[1:] if a not in args.variants and a != "--variants"]
        out = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
        results[variant] = json.loads(lines[-1])
        print(json.dumps(results[variant]), flush=True)
    print(f"\n| variant | steps/s | held-out AUC | tables on the sparse kernel |")
    print("|---|---|---|---|")
    for variant, r in results.items():
        sparse = f"{r['sparse_tables']} of {r['tables']}" if r["tables"] else "-"
        print(f"| {variant} | {r['steps_per_second']:.1f} | {r['auc']:.4f} | {sparse} |")
    for front_end in ("keras3", "tf_keras"):
        ours = results.get(f"{front_end}/tf_ftrl")
        for stock in (f"{front_end}/stock", f"{front_end}/stock-noreg"):
            if ours and stock in results:
                print(f"{front_end}: tf_ftrl / {stock.split('/')[1]} = "
                      f"{ours['steps_per_second'] / results[stock]['steps_per_second']:.1f}x")


if __name__ == "__main__":
    main()
