"""Trains a wide & deep click-through-rate model on Criteo-format data with tf_ftrl's optimizers,
then the same model with keras.optimizers for comparison.

The wide part (one weight per hashed feature, 1,000,000+ rows) learns with `tf_ftrl.Ftrl` and
l1/l2 (the classic FTRL-Proximal setting); the deep part (a hashed embedding table and an MLP)
learns with `tf_ftrl.Adagrad`: two optimizers on two sets of variables. Without `--data`, a
synthetic file in Criteo's format is generated from a hidden logistic model, so the best
achievable AUC is known.

    python -m tf_ftrl.examples.ctr                   # synthetic data, a few minutes on 2 cores
    python -m tf_ftrl.examples.ctr --data train.txt --test-data test.txt
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from tf_ftrl.examples import criteo_data  # noqa: E402


class WideAndDeep(keras.Model):
    """logit = wide (sum of one weight per hashed feature) + deep (MLP over embeddings and the
    integer features), each part with its own optimizer."""

    def __init__(self, buckets, embedding_dim, wide_optimizer, deep_optimizer, **kwargs):
        super().__init__(**kwargs)
        self.wide_weights = keras.layers.Embedding(buckets, 1, embeddings_initializer="zeros",
                                                   name="wide_weights")
        self.wide_bias = self.add_weight(shape=(), initializer="zeros", name="wide_bias")
        self.deep_embedding = keras.layers.Embedding(
            buckets, embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="deep_embedding")
        self.hidden = [keras.layers.Dense(64, activation="relu"),
                       keras.layers.Dense(32, activation="relu")]
        self.deep_output = keras.layers.Dense(1)
        self.wide_optimizer = wide_optimizer
        self.deep_optimizer = deep_optimizer

    def call(self, features):
        wide = tf.reduce_sum(self.wide_weights(features["wide_ids"]), axis=[1, 2]) + self.wide_bias
        embedded = self.deep_embedding(features["categorical_ids"])
        x = tf.concat([keras.ops.reshape(embedded, (tf.shape(embedded)[0], -1)),
                       features["dense"]], axis=1)
        for layer in self.hidden:
            x = layer(x)
        return wide + self.deep_output(x)[:, 0]

    @property
    def wide_variables(self):
        return [self.wide_weights.embeddings, self.wide_bias]

    @property
    def deep_variables(self):
        wide = {id(v) for v in self.wide_variables}
        return [v for v in self.trainable_variables if id(v) not in wide]

    def build_optimizers(self, features):
        self(features)
        self.wide_optimizer.build(self.wide_variables)
        self.deep_optimizer.build(self.deep_variables)

    def train_step(self, data):
        features, labels = data
        wide, deep = self.wide_variables, self.deep_variables
        with tf.GradientTape() as tape:
            logits = self(features, training=True)
            loss = self.compute_loss(x=features, y=labels, y_pred=logits)
        grads = tape.gradient(loss, wide + deep)
        self.wide_optimizer.apply(grads[:len(wide)], wide)
        self.deep_optimizer.apply(grads[len(wide):], deep)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}


class HeldOutEvaluation(keras.callbacks.Callback):
    """After each epoch: log-loss and AUC on held-out data, and training examples/s."""

    def __init__(self, test_dataset, test_labels):
        super().__init__()
        self.test_dataset = test_dataset
        self.test_labels = test_labels
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.examples = 0

    def on_train_batch_end(self, batch, logs=None):
        self.examples += self.batch_size  # batches lose only the rare malformed line

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        logits = self.model.predict(self.test_dataset, verbose=0)
        probabilities = 1 / (1 + np.exp(-logits))
        row = {
            "epoch": epoch + 1,
            "test_log_loss": criteo_data.log_loss(self.test_labels, probabilities),
            "test_auc": criteo_data.auc(self.test_labels, probabilities),
            "train_examples_per_s": self.examples / seconds,
        }
        self.history.append(row)
        print(f"  held-out: log-loss {row['test_log_loss']:.4f}, AUC {row['test_auc']:.4f}, "
              f"{row['train_examples_per_s']:,.0f} training examples/s")


def make_optimizers(kind, args):
    if kind == "tf_ftrl":
        ftrl, adagrad = tf_ftrl.Ftrl, tf_ftrl.Adagrad
    else:
        ftrl, adagrad = keras.optimizers.Ftrl, keras.optimizers.Adagrad
    wide = ftrl(learning_rate=args.wide_learning_rate, l1_regularization_strength=args.l1,
                l2_regularization_strength=args.l2, beta=1.0)
    deep = adagrad(learning_rate=args.deep_learning_rate)
    return wide, deep


def train(kind, args, hashing, train_paths, test_dataset, test_labels):
    print(f"\n== {kind}: wide part {type(make_optimizers(kind, args)[0]).__module__}.Ftrl, "
          f"deep part Adagrad, {args.buckets:,} hashed rows per table")
    keras.utils.set_random_seed(args.seed)
    wide_optimizer, deep_optimizer = make_optimizers(kind, args)
    model = WideAndDeep(args.buckets, args.embedding_dim, wide_optimizer, deep_optimizer)
    train_dataset = criteo_data.read_dataset(train_paths, hashing, args.batch_size,
                                             shuffle_buffer=args.shuffle_buffer, seed=args.seed)
    first_features, _ = next(iter(train_dataset))
    model.build_optimizers(first_features)
    model.compile(optimizer=wide_optimizer,
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    evaluation = HeldOutEvaluation(test_dataset, test_labels)
    evaluation.batch_size = args.batch_size
    model.fit(train_dataset, epochs=args.epochs, callbacks=[evaluation], shuffle=False,
              verbose=1 if args.progress else 2)
    return evaluation.history


def labels_of(dataset):
    return np.concatenate([y for _, y in dataset.as_numpy_iterator()])


def write_plot(results, bayes_auc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, speed) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, history in results.items():
        epochs = [r["epoch"] for r in history]
        curve.plot(epochs, [r["test_auc"] for r in history], marker="o", label=kind)
    if bayes_auc is not None:
        curve.axhline(bayes_auc, color="gray", linestyle="--", label="best achievable")
    curve.set_xticks(epochs)
    curve.set_xlabel("epoch")
    curve.set_ylabel("held-out AUC")
    curve.set_title("Training curve")
    curve.legend()
    kinds = list(results)
    speed.bar(kinds, [np.mean([r["train_examples_per_s"] for r in results[k]]) for k in kinds],
              color=["tab:blue", "tab:orange"][:len(kinds)])
    speed.set_ylabel("training examples / s")
    speed.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", help="Criteo-format training file(s)")
    parser.add_argument("--test-data", nargs="+",
                        help="held-out file(s) (default with --data: none, see --test-fraction)")
    parser.add_argument("--out", default="ctr_output", help="directory for data and reports")
    parser.add_argument("--train-examples", type=int, default=200_000)
    parser.add_argument("--test-examples", type=int, default=50_000)
    parser.add_argument("--buckets", type=int, default=1_000_000)
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shuffle-buffer", type=int, default=20_000)
    # The loss is a batch mean, so per-feature gradients are small: FTRL wants a large rate.
    parser.add_argument("--wide-learning-rate", type=float, default=2.0)
    parser.add_argument("--deep-learning-rate", type=float, default=0.1)
    parser.add_argument("--l1", type=float, default=1e-4)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the comparison run with keras.optimizers")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="one line per epoch instead of Keras's progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # A filtered tf.data pipeline has no known length; Keras warns about that at every epoch end.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    os.makedirs(args.out, exist_ok=True)
    hashing = criteo_data.HashingConfig(buckets=args.buckets)
    bayes_auc = None
    if args.data:
        train_paths, test_paths = args.data, args.test_data
        if not test_paths:
            raise SystemExit("--data needs --test-data (held-out Criteo-format file(s)).")
    else:
        generator = criteo_data.SyntheticCriteo(seed=args.seed)
        train_paths = [os.path.join(args.out, "train.txt")]
        test_paths = [os.path.join(args.out, "test.txt")]
        print(f"Generating {args.train_examples:,} + {args.test_examples:,} synthetic examples "
              f"in Criteo format under {args.out}/ ...")
        generator.write(train_paths[0], args.train_examples, seed=args.seed + 1)
        probabilities = generator.write(test_paths[0], args.test_examples, seed=args.seed + 2)
        test_truth = criteo_data.labels_from_file(test_paths[0])
        bayes_auc = criteo_data.auc(test_truth, probabilities)
        print(f"Best achievable held-out AUC (the hidden model's own): {bayes_auc:.4f}")

    for name, paths in (("training", train_paths), ("held-out", test_paths)):
        total, malformed = criteo_data.count_lines(paths)
        print(f"{name} data: {total:,} lines, {malformed:,} malformed (skipped)")
        if total == malformed:
            raise SystemExit(f"No usable line in the {name} data {paths}.")

    test_dataset = criteo_data.read_dataset(test_paths, hashing, 4096)
    test_labels = labels_of(test_dataset)
    kinds = ["tf_ftrl"] + ([] if args.no_baseline else ["keras"])
    results = {kind: train(kind, args, hashing, train_paths, test_dataset, test_labels)
               for kind in kinds}

    print("\n| optimizers | held-out log-loss | held-out AUC | training examples/s |")
    print("|---|---|---|---|")
    for kind, history in results.items():
        last = history[-1]
        speed = np.mean([r["train_examples_per_s"] for r in history])
        print(f"| {kind} | {last['test_log_loss']:.4f} | {last['test_auc']:.4f} | {speed:,.0f} |")
    if bayes_auc is not None:
        print(f"| (best achievable) | | {bayes_auc:.4f} | |")
    plot_path = os.path.abspath(os.path.join(args.out, "ctr_report.png"))
    write_plot(results, bayes_auc, plot_path)
    with open(os.path.join(args.out, "ctr_report.json"), "w") as f:
        json.dump({"results": results, "best_achievable_auc": bayes_auc}, f, indent=2)
    print(f"\nPlot: {plot_path}")
    return results


if __name__ == "__main__":
    main()
