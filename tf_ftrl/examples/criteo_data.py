"""Criteo display-advertising data: a synthetic generator in the exact file format and a
`tf.data` reader with feature hashing.

The format: one example per line, tab-separated: the label (0/1), 13 integer features, then 26
categorical features written as 8-digit hexadecimal strings; any feature may be empty.

The generator draws categorical values from a Zipf distribution per column and labels from a
hidden logistic model over the features, so the best achievable AUC (that of the true
probabilities) is known and printed next to what a model reaches.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

NUM_INTEGER = 13
NUM_CATEGORICAL = 26
NUM_FIELDS = 1 + NUM_INTEGER + NUM_CATEGORICAL
MISSING = "<missing>"


@dataclasses.dataclass
class SyntheticCriteo:
    """A hidden ground-truth model and the generator of examples from it."""

    seed: int = 0
    vocabulary_size: int = 100_000  # distinct values per categorical column
    zipf_exponent: float = 1.1
    missing_rate: float = 0.05
    bias: float = -1.2

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.integer_weights = rng.normal(0, 0.25, NUM_INTEGER)
        self.value_weights = rng.normal(0, 0.7, (NUM_CATEGORICAL, self.vocabulary_size))
        # Each column's values are distinct hex ids (stable across calls).
        self.value_ids = rng.integers(0, 2**32, (NUM_CATEGORICAL, self.vocabulary_size),
                                      dtype=np.uint64)
        ranks = np.arange(1, self.vocabulary_size + 1, dtype=np.float64)
        probabilities = ranks ** -self.zipf_exponent
        self.value_cdf = np.cumsum(probabilities / probabilities.sum())

    def sample(self, n, rng):
        """(labels, true click probabilities, integer features, categorical value indices,
        missing masks) of n examples."""
        integers = rng.poisson(rng.gamma(1.0, 8.0, (n, NUM_INTEGER)))
        categorical = np.minimum(np.searchsorted(self.value_cdf, rng.random((n, NUM_CATEGORICAL))),
                                 self.vocabulary_size - 1)
        integer_missing = rng.random((n, NUM_INTEGER)) < self.missing_rate
        categorical_missing = rng.random((n, NUM_CATEGORICAL)) < self.missing_rate
        logit = np.full(n, self.bias)
        logit += np.where(integer_missing, 0.0, np.log1p(integers)) @ self.integer_weights * 0.3
        picked = self.value_weights[np.arange(NUM_CATEGORICAL), categorical]
        logit += np.where(categorical_missing, 0.0, picked).sum(axis=1) * 0.35
        probability = 1 / (1 + np.exp(-logit))
        labels = (rng.random(n) < probability).astype(np.int64)
        return labels, probability, integers, categorical, integer_missing, categorical_missing

    def write(self, path, n, seed, chunk=50_000):
        """Writes n examples to path in Criteo format; returns their true click probabilities."""
        rng = np.random.default_rng(seed)
        probabilities = []
        with open(path, "w") as f:
            for start in range(0, n, chunk):
                labels, probability, ints, cats, int_missing, cat_missing = self.sample(
                    min(chunk, n - start), rng)
                probabilities.append(probability)
                hex_ids = self.value_ids[np.arange(NUM_CATEGORICAL), cats]
                for i in range(len(labels)):
                    fields = [str(labels[i])]
                    fields += ["" if int_missing[i, j] else str(ints[i, j])
                               for j in range(NUM_INTEGER)]
                    fields += ["" if cat_missing[i, j] else f"{hex_ids[i, j]:08x}"
                               for j in range(NUM_CATEGORICAL)]
                    f.write("\t".join(fields) + "\n")
        return np.concatenate(probabilities)


def auc(labels, scores):
    """Area under the ROC curve (ties counted as half), without scikit-learn."""
    labels = np.asarray(labels, np.float64)
    order = np.argsort(scores, kind="mergesort")
    scores = np.asarray(scores)[order]
    labels = labels[order]
    # Average ranks over ties.
    _, first, counts = np.unique(scores, return_index=True, return_counts=True)
    ranks = np.repeat(first + (counts + 1) / 2.0, counts)
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) /
                 (positives * negatives))


@dataclasses.dataclass(frozen=True)
class HashingConfig:
    """How raw fields become ids: every feature is hashed into one shared table of `buckets`
    rows, with its column name as a prefix so equal values in different columns differ."""

    buckets: int = 1_000_000

    @property
    def num_wide_features(self):
        return NUM_INTEGER + NUM_CATEGORICAL


def _split_lines(lines):
    """A batch of lines -> [batch, NUM_FIELDS] fields, and whether each line is well formed
    (every field present, a 0/1 label, integers, hexadecimal categorical values)."""
    ragged = tf.strings.split(lines, "\t")
    right_count = ragged.row_lengths() == NUM_FIELDS
    fields = ragged.to_tensor(default_value="", shape=[None, NUM_FIELDS])
    label_ok = tf.strings.regex_full_match(fields[:, 0], "[01]")
    ints_ok = tf.reduce_all(
        tf.strings.regex_full_match(fields[:, 1:1 + NUM_INTEGER], r"-?[0-9]*"), axis=1)
    cats_ok = tf.reduce_all(
        tf.strings.regex_full_match(fields[:, 1 + NUM_INTEGER:], r"[0-9a-fA-F]*"), axis=1)
    return fields, right_count & label_ok & ints_ok & cats_ok


def parse_fields(fields, hashing):
    """[batch, NUM_FIELDS] well-formed fields -> ({"wide_ids", "categorical_ids", "dense"},
    label): every feature hashed (missing values to a per-column "missing" id), the integers
    also log-scaled as dense inputs."""
    label = tf.strings.to_number(fields[:, 0], tf.float32)
    raw_ints = fields[:, 1:1 + NUM_INTEGER]
    int_present = tf.strings.length(raw_ints) > 0
    ints = tf.strings.to_number(tf.where(int_present, raw_ints, "0"), tf.float32)
    # Criteo's integers are counts with a few negatives: log-scale them, clamp at 0.
    dense = tf.where(int_present, tf.math.log1p(tf.maximum(ints, 0.0)), 0.0)
    int_buckets = tf.where(int_present,
                           tf.strings.as_string(tf.cast(tf.floor(dense * 2), tf.int32)), MISSING)
    cats = fields[:, 1 + NUM_INTEGER:]
    cats = tf.where(tf.strings.length(cats) > 0, tf.strings.lower(cats), MISSING)
    int_names = tf.constant([f"I{j + 1}:" for j in range(NUM_INTEGER)])
    cat_names = tf.constant([f"C{j + 1}:" for j in range(NUM_CATEGORICAL)])
    categorical_ids = tf.strings.to_hash_bucket_fast(cat_names + cats, hashing.buckets)
    integer_ids = tf.strings.to_hash_bucket_fast(int_names + int_buckets, hashing.buckets)
    features = {
        "wide_ids": tf.concat([integer_ids, categorical_ids], 1),
        "categorical_ids": categorical_ids,
        "dense": tf.concat([dense / 5.0, tf.cast(int_present, tf.float32)], 1),
    }
    return features, label


def _parse_lines(lines, hashing):
    fields, valid = _split_lines(lines)
    return parse_fields(tf.boolean_mask(fields, valid), hashing)


def read_dataset(paths, hashing, batch_size, shuffle_buffer=0, seed=0):
    """A batched dataset of (features, label) from Criteo-format files. Lines are parsed a batch
    at a time (vectorised string ops); malformed lines are dropped from their batch, so a batch
    may be smaller than batch_size (count them with `count_lines`)."""
    dataset = tf.data.TextLineDataset(paths)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda lines: _parse_lines(lines, hashing),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_lines(paths):
    """(total lines, malformed lines) of Criteo-format files."""
    dataset = tf.data.TextLineDataset(paths).batch(65536)
    dataset = dataset.map(lambda lines: _split_lines(lines)[1],
                          num_parallel_calls=tf.data.AUTOTUNE)
    total = malformed = 0
    for valid in dataset.as_numpy_iterator():
        total += len(valid)
        malformed += int((~valid).sum())
    return total, malformed


def log_loss(labels, probabilities):
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def entropy_of_rate(rate):
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def labels_from_file(path):
    """The label column of a Criteo-format file (every line assumed well-formed)."""
    with open(path) as f:
        return np.array([int(line.split("\t", 1)[0]) for line in f])
