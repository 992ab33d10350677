"""Criteo display-advertising data: a synthetic generator in the exact file format and a
`tf.data` reader with feature hashing.

The format: one example per line, tab-separated: the label (0/1), 13 integer features, then 26
categorical features written as 8-digit hexadecimal strings; any feature may be empty. Criteo's
test file has no label column (39 fields), and its logs ship gzip-compressed: the reader takes
plain and gzip files alike (told apart by their first bytes).

The generator draws categorical values from a Zipf distribution per column and labels from a
hidden logistic model over the features, so the best achievable AUC (that of the true
probabilities) is known and printed next to what a model reaches.
"""

import dataclasses
import functools
import itertools

import numpy as np
import tensorflow as tf

NUM_INTEGER = 13
NUM_CATEGORICAL = 26
NUM_FEATURES = NUM_INTEGER + NUM_CATEGORICAL
NUM_FIELDS = 1 + NUM_FEATURES
MISSING = "<missing>"


@dataclasses.dataclass
class SyntheticCriteo:
    """A hidden ground-truth model and the generator of examples from it."""

    seed: int = 0
    # Distinct values per categorical column. A value's weight is known only after ~100 sightings,
    # so the vocabulary decides how many examples the hidden model's AUC takes to learn: with
    # 1,000 values the job comes within ~0.015 of it after 1,000,000 examples; with 100,000, even
    # an ideal learner would stay ~0.045 below it after 1,000,000 and ~0.025 after 10,000,000.
    vocabulary_size: int = 1_000
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

    @functools.cached_property
    def hex_values(self):
        """value_ids as the 8-digit hexadecimal strings of the files."""
        return np.array([f"{v:08x}" for v in self.value_ids.ravel().tolist()]).reshape(
            self.value_ids.shape)

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
        # Every value a field can take is formatted once; lines are joined from columns.
        hex_values = self.hex_values
        probabilities = []
        with open(path, "w") as f:
            for start in range(0, n, chunk):
                labels, probability, ints, cats, int_missing, cat_missing = self.sample(
                    min(chunk, n - start), rng)
                probabilities.append(probability)
                int_strings = np.arange(ints.max() + 1).astype(str)
                columns = [labels.astype(str)]
                columns += [np.where(int_missing[:, j], "", int_strings[ints[:, j]])
                            for j in range(NUM_INTEGER)]
                columns += [np.where(cat_missing[:, j], "", hex_values[j, cats[:, j]])
                            for j in range(NUM_CATEGORICAL)]
                columns = [column.tolist() for column in columns]
                f.write("".join("\t".join(fields) + "\n" for fields in zip(*columns)))
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
        return NUM_FEATURES


def split_lines(lines, num_fields=NUM_FIELDS):
    """A batch of lines -> [batch, num_fields] fields (padded with "" or cut), and whether each
    line had exactly num_fields tab-separated fields."""
    ragged = tf.strings.split(lines, "\t")
    fields = ragged.to_tensor(default_value="", shape=[None, num_fields])
    return fields, ragged.row_lengths() == num_fields


def _split_labeled_lines(lines):
    """A batch of lines -> [batch, NUM_FIELDS] fields, and whether each line is well formed
    (every field present, a 0/1 label, integers, hexadecimal categorical values)."""
    fields, right_count = split_lines(lines)
    label_ok = tf.strings.regex_full_match(fields[:, 0], "[01]")
    ints_ok = tf.reduce_all(
        tf.strings.regex_full_match(fields[:, 1:1 + NUM_INTEGER], "(-?[0-9]+)?"), axis=1)
    cats_ok = tf.reduce_all(
        tf.strings.regex_full_match(fields[:, 1 + NUM_INTEGER:], "[0-9a-fA-F]*"), axis=1)
    return fields, right_count & label_ok & ints_ok & cats_ok


def features_from_fields(fields, hashing):
    """[batch, NUM_FEATURES] feature fields (no label) -> {"wide_ids", "categorical_ids",
    "dense"}: every feature hashed (missing values to a per-column "missing" id), the integers
    also log-scaled as dense inputs. Plain TensorFlow ops only, so that a SavedModel serving raw
    lines (`parse_unlabeled_lines`) runs exactly the training's feature code."""
    raw_ints = fields[:, :NUM_INTEGER]
    # Anything but an integer counts as missing: training data is validated before it comes
    # here, and served lines must not fail a whole request for one bad field.
    int_present = tf.strings.regex_full_match(raw_ints, "-?[0-9]+")
    ints = tf.strings.to_number(tf.where(int_present, raw_ints, "0"), tf.float32)
    # Criteo's integers are counts with a few negatives: log-scale them, clamp at 0 (and below
    # float32's infinity, which a 40-digit field would parse to).
    dense = tf.where(int_present, tf.math.log1p(tf.clip_by_value(ints, 0.0, 1e30)), 0.0)
    int_buckets = tf.where(int_present,
                           tf.strings.as_string(tf.cast(tf.floor(dense * 2), tf.int32)), MISSING)
    cats = fields[:, NUM_INTEGER:]
    cats = tf.where(tf.strings.length(cats) > 0, tf.strings.lower(cats), MISSING)
    int_names = tf.constant([f"I{j + 1}:" for j in range(NUM_INTEGER)])
    cat_names = tf.constant([f"C{j + 1}:" for j in range(NUM_CATEGORICAL)])
    categorical_ids = tf.strings.to_hash_bucket_fast(cat_names + cats, hashing.buckets)
    integer_ids = tf.strings.to_hash_bucket_fast(int_names + int_buckets, hashing.buckets)
    return {
        "wide_ids": tf.concat([integer_ids, categorical_ids], 1),
        "categorical_ids": categorical_ids,
        "dense": tf.concat([dense / 5.0, tf.cast(int_present, tf.float32)], 1),
    }


def feature_specs():
    """The tf.TensorSpec of each feature of `features_from_fields`, batch dimension None."""
    return {"wide_ids": tf.TensorSpec([None, NUM_FEATURES], tf.int64),
            "categorical_ids": tf.TensorSpec([None, NUM_CATEGORICAL], tf.int64),
            "dense": tf.TensorSpec([None, 2 * NUM_INTEGER], tf.float32)}


def parse_fields(fields, hashing):
    """[batch, NUM_FIELDS] well-formed fields -> (features, label)."""
    label = tf.strings.to_number(fields[:, 0], tf.float32)
    return features_from_fields(fields[:, 1:], hashing), label


def parse_unlabeled_lines(lines, hashing):
    """A 1-D batch of lines without the label, as in Criteo's test file (NUM_FEATURES fields)
    -> features. A line with another number of fields is an InvalidArgument error."""
    fields, right_count = split_lines(lines, NUM_FEATURES)
    check = tf.debugging.Assert(
        tf.reduce_all(right_count),
        [f"Each line must have {NUM_FEATURES} tab-separated fields (13 integer, 26 "
         "categorical; no label). Field counts received:",
         tf.strings.split(lines, "\t").row_lengths()], summarize=20)
    with tf.control_dependencies([check]):
        return features_from_fields(tf.identity(fields), hashing)


def _parse_lines(lines, hashing):
    fields, valid = _split_labeled_lines(lines)
    return parse_fields(tf.boolean_mask(fields, valid), hashing)


def expand_paths(patterns):
    """The files named by paths or glob patterns, in order (each pattern's matches sorted).
    FileNotFoundError names the first that matches no file."""
    paths = []
    for pattern in patterns:
        matches = [path for path in sorted(tf.io.gfile.glob(pattern))
                   if not tf.io.gfile.isdir(path)]
        if not matches:
            kind = "no file matches" if any(c in pattern for c in "*?[") else "no such file"
            raise FileNotFoundError(f"{kind}: {pattern}")
        paths += matches
    return paths


def compression_of(path):
    """"GZIP" for a gzip file (by its magic bytes, whatever its name), else ""."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def read_lines(paths):
    """One dataset of the lines of every file in turn, plain or gzip-compressed."""
    runs = [tf.data.TextLineDataset(list(group), compression_type=compression)
            for compression, group in itertools.groupby(paths, key=compression_of)]
    dataset = runs[0]
    for run in runs[1:]:
        dataset = dataset.concatenate(run)
    return dataset


def read_dataset(paths, hashing, batch_size, shuffle_buffer=0, seed=0, skip=0, take=-1):
    """A batched dataset of (features, label) from Criteo-format files, lines [skip, skip + take)
    of their concatenation. Lines are parsed a batch at a time (vectorised string ops);
    malformed lines are dropped from their batch, so a batch may be smaller than batch_size
    (count them with `count_lines`)."""
    dataset = read_lines(paths).skip(skip).take(take)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda lines: _parse_lines(lines, hashing),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class LineCount:
    """What `count_lines` found: the lines read, the well-formed ones, the malformed ones (blank
    lines at the end of a file are neither) and the first malformed ones as "path:line"."""

    lines: int = 0
    examples: int = 0
    malformed: int = 0
    first_malformed: list = dataclasses.field(default_factory=list)


def _count_file(path, report):
    """(lines, well-formed lines, malformed lines, the first `report` malformed line numbers)
    of one file."""
    checked = tf.data.TextLineDataset(path, compression_type=compression_of(path)).batch(65536)
    checked = checked.map(lambda lines: (_split_labeled_lines(lines)[1],
                                         tf.strings.regex_full_match(lines, r"\s*")),
                          num_parallel_calls=tf.data.AUTOTUNE)
    lines = malformed = trailing_blank = 0
    first = []
    for valid, blank in checked.as_numpy_iterator():
        first = (first + (np.flatnonzero(~valid) + lines + 1).tolist())[:report]
        malformed += int((~valid).sum())
        not_blank = np.flatnonzero(~blank)
        trailing_blank = (trailing_blank + len(blank) if len(not_blank) == 0
                          else len(blank) - 1 - int(not_blank[-1]))
        lines += len(valid)
    # Blank lines at the end of a file fail the check too, but are no malformed example.
    last = lines - trailing_blank
    return (lines, lines - malformed, malformed - trailing_blank,
            [number for number in first if number <= last])


def count_lines(paths, report=5):
    """Counts the lines of Criteo-format files; the first `report` malformed lines are named
    by file and line number (from 1)."""
    count = LineCount()
    for path in paths:
        lines, examples, malformed, first = _count_file(path, report)
        count.lines += lines
        count.examples += examples
        count.malformed += malformed
        count.first_malformed += [f"{path}:{number}" for number in first]
    count.first_malformed = count.first_malformed[:report]
    return count


def log_loss(labels, probabilities):
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def labels_from_file(path):
    """The label column of a Criteo-format file (every line assumed well-formed)."""
    with open(path) as f:
        return np.array([int(line.split("\t", 1)[0]) for line in f])
