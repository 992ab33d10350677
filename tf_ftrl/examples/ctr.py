"""Trains a wide & deep click-through-rate model on Criteo-format data with tf_ftrl's optimizers
and keeps it; on the synthetic default data (or with --compare) then trains the same model with
keras.optimizers for comparison.

The wide part (one weight per hashed feature, 1,000,000+ rows) learns with `tf_ftrl.Ftrl` and
l1/l2 (the classic FTRL-Proximal setting); the deep part (a hashed embedding table and an MLP)
learns with `tf_ftrl.Adagrad`: two optimizers on two sets of variables. Without `--data`, a
synthetic file in Criteo's format is generated from a hidden logistic model, so the best
achievable AUC is known.

    python -m tf_ftrl.examples.ctr                         # synthetic data, ours vs Keras's
    python -m tf_ftrl.examples.ctr --data 'day_*.gz' --test-data day_23.gz
    python -m tf_ftrl.examples.ctr --data train.txt.gz     # the last 10% of its lines held out
    python -m tf_ftrl.examples.local_cluster --strategy ps --workers 2 --ps 2 -- --epochs 1

`--strategy mirrored|multiworker|ps` trains on the cluster of TF_CONFIG (see
tf_ftrl.examples.ctr_cluster; tf_ftrl.examples.local_cluster starts one on this machine).

Under --out it writes ctr_report.json and ctr_report.md, ctr_report.png (with matplotlib), the
model as model.keras and as a SavedModel, serving/, whose `serving_default` takes raw Criteo
lines without the label and returns click probabilities (it needs TensorFlow only, not
tf_ftrl), and a checkpoint at every epoch end under checkpoints/, which --resume continues from.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ftrl  # noqa: E402
from tf_ftrl.examples import criteo_data  # noqa: E402


@keras.saving.register_keras_serializable(package="tf_ftrl_examples")
class WideAndDeep(keras.Model):
    """logit = wide (sum of one weight per hashed feature) + deep (MLP over embeddings and the
    integer features), each part with its own optimizer."""

    def __init__(self, buckets, embedding_dim, wide_optimizer, deep_optimizer,
                 hidden_units=(64, 32), **kwargs):
        super().__init__(**kwargs)
        self.buckets = buckets
        self.embedding_dim = embedding_dim
        self.hidden_units = tuple(hidden_units)
        self.wide_weights = keras.layers.Embedding(buckets, 1, embeddings_initializer="zeros",
                                                   name="wide_weights")
        self.wide_bias = self.add_weight(shape=(), initializer="zeros", name="wide_bias")
        self.deep_embedding = keras.layers.Embedding(
            buckets, embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="deep_embedding")
        self.hidden = [keras.layers.Dense(units, activation="relu") for units in hidden_units]
        self.deep_output = keras.layers.Dense(1)
        self.wide_optimizer = wide_optimizer
        self.deep_optimizer = deep_optimizer
        # Counted in the training step, so a short last batch counts its real size; summed
        # over the replicas under a strategy.
        self.examples_trained = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="examples_trained",
                                            aggregation=tf.VariableAggregation.SUM)

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

    def build_optimizers(self):
        self({name: tf.zeros([1] + spec.shape[1:], spec.dtype)
              for name, spec in criteo_data.feature_specs().items()})
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
        self.examples_trained.assign_add(tf.shape(labels, out_type=tf.int64)[0])
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    # Saving and loading (model.keras): the constructor's arguments, both optimizers included.
    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets,
                "embedding_dim": self.embedding_dim, "hidden_units": list(self.hidden_units),
                "wide_optimizer": keras.optimizers.serialize(self.wide_optimizer),
                "deep_optimizer": keras.optimizers.serialize(self.deep_optimizer)}

    @classmethod
    def from_config(cls, config):
        optimizers = {key: keras.optimizers.deserialize(config[key])
                      for key in ("wide_optimizer", "deep_optimizer")}
        return cls(**{**config, **optimizers})

    def get_build_config(self):
        return {"feature_specs": "criteo_data.feature_specs()"}  # all build needs to know

    def build_from_config(self, config):
        self.build_optimizers()

    def compile_from_config(self, config):
        # Keras's default would build the compiled optimizer (the wide one) again, over every
        # variable of the model.
        config = {key: value for key, value in config.items() if key != "optimizer"}
        self.compile(optimizer=self.wide_optimizer,
                     **keras.saving.deserialize_keras_object(config))


class HeldOutEvaluation(keras.callbacks.Callback):
    """After each epoch: log-loss and AUC on held-out data, and the examples trained per
    second (timed without the evaluation)."""

    def __init__(self, test_dataset, test_labels):
        super().__init__()
        self.test_dataset = test_dataset
        self.test_labels = test_labels
        self.row = None

    def on_epoch_begin(self, epoch, logs=None):
        self.examples_before = int(self.model.examples_trained.numpy())
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        examples = int(self.model.examples_trained.numpy()) - self.examples_before
        logits = self.model.predict(self.test_dataset, verbose=0)
        probabilities = 1 / (1 + np.exp(-logits))
        self.row = {
            "epoch": epoch + 1,
            "test_log_loss": criteo_data.log_loss(self.test_labels, probabilities),
            "test_auc": criteo_data.auc(self.test_labels, probabilities),
            "train_examples": examples,
            "train_seconds": seconds,
            "train_examples_per_s": examples / seconds,
        }
        print(f"  held-out: log-loss {self.row['test_log_loss']:.4f}, "
              f"AUC {self.row['test_auc']:.4f}, {examples:,} examples trained at "
              f"{self.row['train_examples_per_s']:,.0f}/s")


class EpochProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, numbering epochs out of the whole job's (the job calls fit once
    per epoch)."""

    def __init__(self, epochs):
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs})


class ResumeMismatch(Exception):
    """--resume from a checkpoint of a model with other shapes."""


class EpochCheckpoint:
    """A checkpoint at every epoch end: the model's weights, both optimizers' state, the number
    of epochs done and their held-out results (a JSON string variable, so that they are written
    together with the weights)."""

    def __init__(self, directory, model):
        self.epochs_done = tf.Variable(0, dtype=tf.int64)
        self.history = tf.Variable("[]")
        checkpoint = tf.train.Checkpoint(
            model=model, wide_optimizer=model.wide_optimizer,
            deep_optimizer=model.deep_optimizer, epochs_done=self.epochs_done,
            history=self.history)
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)

    def save(self, history):
        self.epochs_done.assign(len(history))
        self.history.assign(json.dumps(history))
        self.manager.save(checkpoint_number=len(history))

    def restore(self, path=None):
        """The history of the epochs done in the checkpoint at path (default: the latest in this
        one's directory), [] where there is none."""
        path = path or self.manager.latest_checkpoint
        if path is None:
            return []
        try:
            self.manager.checkpoint.restore(path).assert_consumed()
        except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as error:
            raise ResumeMismatch(
                f"the checkpoint {path} does not fit this model; were --buckets, "
                f"--embedding-dim or --hidden-units other when it was written? "
                f"({' '.join(str(error).split())[:300]})") from None
        history = json.loads(self.history.numpy())
        assert len(history) == self.epochs_done.numpy()
        return history


@dataclasses.dataclass
class Data:
    """Where the training and held-out examples are: lines [skip, skip + take) of the files'
    concatenation (take -1: to the end)."""

    train_paths: list
    test_paths: list
    train_take: int = -1
    test_skip: int = 0
    best_auc: float = None  # the hidden model's own, on synthetic data

    def training(self, args, hashing, epoch):
        # Shuffled with a seed per epoch, so that a resumed job sees the same order.
        return criteo_data.read_dataset(self.train_paths, hashing, args.batch_size,
                                        shuffle_buffer=args.shuffle_buffer,
                                        seed=args.seed + epoch, take=self.train_take)

    def held_out(self, hashing):
        return criteo_data.read_dataset(self.test_paths, hashing, 4096, skip=self.test_skip)


def make_optimizers(kind, args):
    if kind == "tf_ftrl":
        ftrl, adagrad = (functools.partial(cls, rowwise=args.rowwise,
                                           state_dtype=args.state_dtype,
                                           stochastic_rounding=args.stochastic_rounding)
                         for cls in (tf_ftrl.Ftrl, tf_ftrl.Adagrad))
    else:
        ftrl, adagrad = keras.optimizers.Ftrl, keras.optimizers.Adagrad
    # The loss is a batch mean, so gradients are small (~1/batch): Keras's default initial
    # accumulator (0.1) would outweigh their squares for a long time and make both optimizers
    # plain SGD with a tiny step. A small one lets each coordinate's steps scale with its own
    # gradients, as FTRL-Proximal and Adagrad intend.
    wide = ftrl(learning_rate=args.wide_learning_rate, l1_regularization_strength=args.l1,
                l2_regularization_strength=args.l2, initial_accumulator_value=1e-6)
    deep = adagrad(learning_rate=args.deep_learning_rate, initial_accumulator_value=1e-6)
    return wide, deep


def compile_for_fit(model):
    """Compiles a WideAndDeep for fit, whose train_step applies both of its optimizers (Keras
    takes one: the wide one)."""
    model.compile(optimizer=model.wide_optimizer,
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))


def train(kind, args, hashing, data, test_dataset, test_labels, strategy=None):
    """Trains the model with one kind of optimizers (under strategy's scope, if any); returns it
    and its per-epoch results."""
    state = [what for what, chosen in (("row-wise", args.rowwise),
                                        (args.state_dtype, args.state_dtype)) if chosen]
    rowwise = f" ({' '.join(state)} state)" if kind == "tf_ftrl" and state else ""
    print(f"\n== {kind}: wide part {type(make_optimizers(kind, args)[0]).__module__}.Ftrl, "
          f"deep part Adagrad{rowwise}, {args.buckets:,} hashed rows per table")
    keras.utils.set_random_seed(args.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        wide_optimizer, deep_optimizer = make_optimizers(kind, args)
        model = WideAndDeep(args.buckets, args.embedding_dim, wide_optimizer, deep_optimizer,
                            hidden_units=args.hidden_units)
        model.build_optimizers()
        compile_for_fit(model)
    checkpoint = EpochCheckpoint(os.path.join(args.out, "checkpoints", kind), model)
    history = checkpoint.restore() if args.resume else []
    if args.resume:
        print(f"Resuming after epoch {len(history)} ({checkpoint.manager.latest_checkpoint})"
              if history else "No checkpoint to resume from: starting at epoch 1.")
        if len(history) >= args.epochs:
            print(f"Nothing to train: the checkpoint has {len(history)} epochs and --epochs "
                  f"asks for {args.epochs}; the report and the model are the checkpoint's.")
    evaluation = HeldOutEvaluation(test_dataset, test_labels)
    callbacks = [EpochProgress(args.epochs), evaluation]
    for epoch in range(len(history), args.epochs):
        model.fit(data.training(args, hashing, epoch), initial_epoch=epoch, epochs=epoch + 1,
                  callbacks=callbacks, shuffle=False, verbose=1 if args.progress else 2)
        history.append(evaluation.row)
        checkpoint.save(history)
    return model, history


def export_serving(model, hashing, path):
    """A SavedModel whose serving_default takes a 1-D batch of raw Criteo lines without the
    label and returns their click probabilities; plain TensorFlow ops only."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(lines):
        logits = model(criteo_data.parse_unlabeled_lines(lines, hashing))
        return {"click_probability": tf.sigmoid(logits)}

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec([None], tf.string, name="lines")])
    archive.write_out(path, verbose=False)


def summarize(history):
    last = history[-1]
    examples = sum(r["train_examples"] for r in history)
    seconds = sum(r["train_seconds"] for r in history)
    return {"test_log_loss": last["test_log_loss"], "test_auc": last["test_auc"],
            "train_examples": examples, "train_seconds": seconds,
            "train_examples_per_s": examples / seconds}


def report_table(results, best_auc):
    """The comparison table (Markdown)."""
    best = "" if best_auc is None else " best achievable AUC |"
    lines = [f"| optimizers | held-out log-loss | held-out AUC |{best} training examples/s "
             "| training time |", "|---|---|---|" + ("---|" if best else "") + "---|---|"]
    for kind, history in results.items():
        s = summarize(history)
        best = "" if best_auc is None else f" {best_auc:.4f} |"
        lines.append(f"| {kind} | {s['test_log_loss']:.4f} | {s['test_auc']:.4f} |{best} "
                     f"{s['train_examples_per_s']:,.0f} | {s['train_seconds']:.0f} s |")
    return "\n".join(lines)


def write_reports(results, data, args, argv):
    """ctr_report.json and ctr_report.md under args.out; returns the table."""
    table = report_table(results, data.best_auc)
    with open(os.path.join(args.out, "ctr_report.json"), "w") as f:
        json.dump({"results": results,
                   "summary": {kind: summarize(h) for kind, h in results.items()},
                   "best_achievable_auc": data.best_auc, "arguments": vars(args)}, f, indent=2)
    with open(os.path.join(args.out, "ctr_report.md"), "w") as f:
        f.write(f"# CTR training\n\n`python -m tf_ftrl.examples.ctr {' '.join(argv)}`\n\n"
                f"{table}\n")
    return table


def write_plot(results, best_auc, path):
    """The training curves and throughputs as a PNG; False where matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, speed) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, history in results.items():
        epochs = [r["epoch"] for r in history]
        curve.plot(epochs, [r["test_auc"] for r in history], marker="o", label=kind)
    if best_auc is not None:
        curve.axhline(best_auc, color="gray", linestyle="--", label="best achievable")
    curve.set_xticks(epochs)
    curve.set_xlabel("epoch")
    curve.set_ylabel("held-out AUC")
    curve.set_title("Training curve")
    curve.legend()
    kinds = list(results)
    speed.bar(kinds, [summarize(results[k])["train_examples_per_s"] for k in kinds],
              color=["tab:blue", "tab:orange"][:len(kinds)])
    speed.set_ylabel("training examples / s")
    speed.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def positive_int(text):
    """argparse's type of counts and sizes: an integer of 1 or more, or a one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tf_ftrl.examples.ctr",
                                     description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--data", nargs="+", metavar="FILE",
                      help="Criteo-format training files or glob patterns, plain or gzip "
                      "(default: synthetic data from a hidden model, written under --out)")
    data.add_argument("--test-data", nargs="+", metavar="FILE",
                      help="held-out files or glob patterns (default with --data: the last "
                      "--test-fraction of --data's lines)")
    data.add_argument("--test-fraction", metavar="F", type=float, default=0.1,
                      help="with --data and no --test-data, the fraction of --data's lines held "
                      "out, from its end (default: %(default)s)")
    data.add_argument("--train-examples", metavar="N", type=positive_int, default=1_000_000,
                      help="synthetic data: training examples (default: %(default)s)")
    data.add_argument("--test-examples", metavar="N", type=positive_int, default=50_000,
                      help="synthetic data: held-out examples (default: %(default)s)")
    model = parser.add_argument_group("model and training")
    model.add_argument("--buckets", metavar="N", type=positive_int, default=1_000_000,
                       help="hashed rows of each table (default: %(default)s)")
    model.add_argument("--embedding-dim", metavar="N", type=positive_int, default=8,
                       help="(default: %(default)s)")
    model.add_argument("--hidden-units", metavar="N", type=positive_int, nargs="+",
                       default=[64, 32], help="the MLP's layer sizes (default: %(default)s)")
    model.add_argument("--batch-size", metavar="N", type=positive_int, default=1024,
                       help="(default: %(default)s)")
    model.add_argument("--epochs", metavar="N", type=positive_int, default=2,
                       help="(default: %(default)s)")
    model.add_argument("--shuffle-buffer", metavar="N", type=int, default=20_000,
                       help="lines shuffled together (default: %(default)s)")
    model.add_argument("--wide-learning-rate", metavar="RATE", type=float, default=0.1,
                       help="Ftrl's, for the wide part (default: %(default)s)")
    model.add_argument("--deep-learning-rate", metavar="RATE", type=float, default=0.02,
                       help="Adagrad's, for the deep part (default: %(default)s)")
    model.add_argument("--l1", type=float, default=1e-4,
                       help="Ftrl's l1 regularization strength (default: %(default)s)")
    model.add_argument("--l2", type=float, default=1e-4,
                       help="Ftrl's l2 regularization strength (default: %(default)s)")
    model.add_argument("--rowwise", action="store_true",
                       help="tf_ftrl's optimizers keep one accumulator value per row of each "
                       "table and kernel (rowwise=True); keras.optimizers stay element-wise")
    model.add_argument("--state-dtype", choices=("bfloat16", "float16"), default=None,
                       help="tf_ftrl's optimizers keep their state (accumulators, linear) in "
                       "this dtype (state_dtype=...); keras.optimizers stay float32")
    model.add_argument("--stochastic-rounding", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="with --state-dtype: round the state stochastically (default: "
                       "%(default)s)")
    model.add_argument("--seed", metavar="N", type=int, default=7,
                       help="(default: %(default)s)")
    job = parser.add_argument_group("job")
    job.add_argument("--out", metavar="DIR", default="ctr_output",
                     help="directory for the data, reports, model and checkpoints "
                     "(default: %(default)s)")
    job.add_argument("--compare", action=argparse.BooleanOptionalAction,
                     help="then train the same model with keras.optimizers, for comparison "
                     "(default: on synthetic data only; it takes several times as long)")
    job.add_argument("--resume", action="store_true",
                     help="continue from the last checkpoint under --out")
    job.add_argument("--checkpoint-steps", metavar="N", type=int, default=0,
                     help="--strategy ps: a checkpoint every N steps too, not only at epoch "
                     "ends (default: epoch ends only)")
    job.add_argument("--strategy", choices=("none", "mirrored", "multiworker", "ps"),
                     default="none",
                     help="none: one device; mirrored: the GPUs, or --replicas logical CPUs; "
                     "multiworker, ps: the cluster of TF_CONFIG (python -m "
                     "tf_ftrl.examples.local_cluster starts one here); see "
                     "tf_ftrl.examples.ctr_cluster (default: %(default)s)")
    job.add_argument("--replicas", metavar="N", type=positive_int, default=2,
                     help="--strategy mirrored without a GPU: logical CPU devices "
                     "(default: %(default)s)")
    job.add_argument("--ps-loop", choices=("coordinator", "fit"), default="coordinator",
                     help="--strategy ps: tf_keras's training loop, a ClusterCoordinator loop "
                     "or model.fit (default: %(default)s)")
    job.add_argument("--no-progress", dest="progress", action="store_false",
                     help="one line per epoch instead of Keras's progress bar")
    return parser


def fail(parser, message):
    """Ends the job as argparse does for a bad argument: one line, exit status 2."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def describe(name, paths, count):
    files = f"{len(paths)} file" + ("s" if len(paths) > 1 else "")
    line = f"{name} data: {count.lines:,} lines in {files}, {count.examples:,} examples"
    if count.malformed:
        line += (f", {count.malformed:,} malformed lines skipped (first: "
                 f"{', '.join(count.first_malformed)})")
    print(line)


def real_data(parser, args):
    """The Data of --data/--test-data, after checking that the files exist and have examples."""
    try:
        train_paths = criteo_data.expand_paths(args.data)
        test_paths = criteo_data.expand_paths(args.test_data) if args.test_data else None
    except FileNotFoundError as e:
        fail(parser, f"{e}")
    count = criteo_data.count_lines(train_paths)
    describe("training", train_paths, count)
    if not count.examples:
        fail(parser, f"no usable line in the training data {' '.join(train_paths)}")
    if test_paths:
        data = Data(train_paths, test_paths)
        describe("held-out", test_paths, criteo_data.count_lines(test_paths))
    else:
        if not 0 < args.test_fraction < 1:
            fail(parser, "--test-fraction must be between 0 and 1 (exclusive). Received: "
                 f"{args.test_fraction}")
        held_out = math.ceil(count.lines * args.test_fraction)
        data = Data(train_paths, train_paths, train_take=count.lines - held_out,
                    test_skip=count.lines - held_out)
        print(f"held out: the last {held_out:,} lines ({args.test_fraction:g} of them)")
    return data


def synthetic_data(args):
    generator = criteo_data.SyntheticCriteo(seed=args.seed)
    data = Data([os.path.join(args.out, "train.txt")], [os.path.join(args.out, "test.txt")])
    print(f"Generating {args.train_examples:,} + {args.test_examples:,} synthetic examples "
          f"in Criteo format under {args.out}/ ...")
    generator.write(data.train_paths[0], args.train_examples, seed=args.seed + 1)
    probabilities = generator.write(data.test_paths[0], args.test_examples, seed=args.seed + 2)
    test_truth = criteo_data.labels_from_file(data.test_paths[0])
    data.best_auc = criteo_data.auc(test_truth, probabilities)
    print(f"Best achievable held-out AUC (the hidden model's own): {data.best_auc:.4f}")
    return data


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # A filtered tf.data pipeline has no known length; Keras warns about that at every epoch end.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    if args.strategy != "none":
        from tf_ftrl.examples import ctr_cluster
        return ctr_cluster.main(parser, args, argv)
    data = real_data(parser, args) if args.data else None
    os.makedirs(args.out, exist_ok=True)
    data = data or synthetic_data(args)
    hashing = criteo_data.HashingConfig(buckets=args.buckets)
    test_dataset = data.held_out(hashing)
    test_labels = np.concatenate([y for _, y in test_dataset.as_numpy_iterator()] + [[]])
    if not len(test_labels):
        fail(parser, f"no usable line in the held-out data {' '.join(data.test_paths)}")

    compare = args.compare if args.compare is not None else not args.data
    results = {}
    for kind in ["tf_ftrl"] + (["keras"] if compare else []):
        try:
            model, results[kind] = train(kind, args, hashing, data, test_dataset, test_labels)
        except ResumeMismatch as error:
            fail(parser, str(error))
        if kind == "tf_ftrl":  # the job's model, kept before the comparison run
            model.save(os.path.join(args.out, "model.keras"))
            export_serving(model, hashing, os.path.join(args.out, "serving"))
            print(f"Model: {args.out}/model.keras, SavedModel for serving: {args.out}/serving/")

    print("\n" + write_reports(results, data, args, argv))
    print(f"Reports: {args.out}/ctr_report.json, {args.out}/ctr_report.md")
    plot_path = os.path.join(args.out, "ctr_report.png")
    if write_plot(results, data.best_auc, plot_path):
        print(f"Plot: {plot_path}")
    else:
        print("Plot skipped: matplotlib is not installed (pip install 'tf_ftrl[examples]').")
    return results


if __name__ == "__main__":
    main()
