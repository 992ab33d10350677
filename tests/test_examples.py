"""The Criteo-format data generator and reader, and a tiny end-to-end CTR training run."""

import numpy as np
import pytest
import tensorflow as tf

from tf_ftrl.examples import criteo_data, ctr

HASHING = criteo_data.HashingConfig(buckets=1000)


@pytest.fixture(scope="module")
def generator():
    return criteo_data.SyntheticCriteo(seed=3, vocabulary_size=500)


def read_all(path, hashing=HASHING, batch_size=64):
    features, labels = [], []
    for x, y in criteo_data.read_dataset([str(path)], hashing, batch_size).as_numpy_iterator():
        features.append(x)
        labels.append(y)
    return ({k: np.concatenate([f[k] for f in features]) for k in features[0]},
            np.concatenate(labels))


def test_generated_file_has_criteo_format(tmp_path, generator):
    path = tmp_path / "data.txt"
    probabilities = generator.write(path, 300, seed=1)
    lines = path.read_text().splitlines()
    assert len(lines) == 300 == len(probabilities)
    empty = 0
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 40
        assert fields[0] in ("0", "1")
        for value in fields[1:14]:
            assert value == "" or value.lstrip("-").isdigit()
        for value in fields[14:]:
            assert value == "" or (len(value) == 8 and int(value, 16) >= 0)
        empty += sum(1 for value in fields[1:] if value == "")
    assert empty > 0  # missing values occur


def test_reader_round_trip(tmp_path, generator):
    path = tmp_path / "data.txt"
    generator.write(path, 200, seed=2)
    features, labels = read_all(path)
    np.testing.assert_array_equal(labels, criteo_data.labels_from_file(path))
    assert features["wide_ids"].shape == (200, 39)
    assert features["categorical_ids"].shape == (200, 26)
    assert features["dense"].shape == (200, 26)
    assert features["wide_ids"].min() >= 0 and features["wide_ids"].max() < HASHING.buckets


def test_malformed_lines_are_counted_and_skipped(tmp_path, generator):
    path = tmp_path / "data.txt"
    generator.write(path, 50, seed=4)
    good = path.read_text().splitlines()
    bad = [
        "2" + good[0][1:],                          # label not 0/1
        "\t".join(good[1].split("\t")[:-1]),        # a field short
        good[2] + "\textra",                        # a field too many
        good[3].replace("\t", "\tx", 1),            # non-integer integer feature
        "",                                         # empty line
    ]
    path.write_text("\n".join(good[:10] + bad + good[10:]) + "\n")
    assert criteo_data.count_lines([str(path)]) == (55, 5)
    _, labels = read_all(path)
    assert len(labels) == 50


def test_empty_fields_hash_to_a_per_column_missing_id(tmp_path):
    line_a = "\t".join(["1"] + [""] * 13 + [""] * 26)
    line_b = "\t".join(["0"] + ["5"] * 13 + ["0000abcd"] * 26)
    path = tmp_path / "data.txt"
    path.write_text(line_a + "\n" + line_b + "\n")
    features, labels = read_all(path)
    np.testing.assert_array_equal(labels, [1, 0])
    missing = features["categorical_ids"][0]
    assert len(set(missing.tolist())) > 1  # "missing" differs by column
    assert not np.array_equal(missing, features["categorical_ids"][1])
    np.testing.assert_array_equal(features["dense"][0], np.zeros(26))


def test_hashing_is_stable(tmp_path):
    line = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)
    path = tmp_path / "data.txt"
    path.write_text(line + "\n")
    first, _ = read_all(path)
    second, _ = read_all(path)
    np.testing.assert_array_equal(first["wide_ids"], second["wide_ids"])
    # Pinned: the same value must map to the same row in every version, or saved models break.
    expected = tf.strings.to_hash_bucket_fast("C1:68fd1e64", HASHING.buckets).numpy()
    assert first["categorical_ids"][0, 0] == expected


def test_auc():
    assert criteo_data.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert criteo_data.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert criteo_data.auc([1, 0], [0.1, 0.9]) == 0.0


def test_tiny_training_run_learns(tmp_path):
    results = ctr.main(["--out", str(tmp_path), "--train-examples", "20000",
                        "--test-examples", "4000", "--buckets", "100000", "--epochs", "2",
                        "--batch-size", "256", "--no-progress"])
    for kind in ("tf_ftrl", "keras"):
        assert results[kind][-1]["test_auc"] > 0.58, results[kind]
    assert (tmp_path / "ctr_report.png").stat().st_size > 10_000
    assert (tmp_path / "ctr_report.json").exists()
