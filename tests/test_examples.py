"""The Criteo-format data generator and reader, and a tiny end-to-end CTR training run."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from tf_ftrl.examples import criteo_data, ctr

HASHING = criteo_data.HashingConfig(buckets=1000)


@pytest.fixture(scope="module")
def generator():
    return criteo_data.SyntheticCriteo(seed=3, vocabulary_size=500)


def read_all(paths, hashing=HASHING, batch_size=64):
    paths = [str(p) for p in paths] if isinstance(paths, list) else [str(paths)]
    features, labels = [], []
    for x, y in criteo_data.read_dataset(paths, hashing, batch_size).as_numpy_iterator():
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
        "\t".join(["0", "-"] + good[4].split("\t")[2:]),  # a lone minus sign, no integer
        "",                                         # empty line
    ]
    # Blank lines at the end of a file are no malformed example.
    path.write_text("\n".join(good[:10] + bad + good[10:]) + "\n\n \n")
    count = criteo_data.count_lines([str(path)])
    assert (count.lines, count.examples, count.malformed) == (58, 50, 6)
    assert count.first_malformed == [f"{path}:{n}" for n in (11, 12, 13, 14, 15)]
    _, labels = read_all(path)
    assert len(labels) == 50


def test_malformed_lines_are_named_across_files(tmp_path, generator):
    generator.write(tmp_path / "a.txt", 5, seed=5)
    generator.write(tmp_path / "b.txt", 5, seed=6)
    (tmp_path / "a.txt").write_text((tmp_path / "a.txt").read_text() + "junk\n")
    (tmp_path / "b.txt").write_text("junk\n" + (tmp_path / "b.txt").read_text() + "junk\n")
    count = criteo_data.count_lines([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
                                    report=2)
    assert (count.lines, count.examples, count.malformed) == (13, 10, 3)
    assert count.first_malformed == [f"{tmp_path}/a.txt:6", f"{tmp_path}/b.txt:1"]


def write_gzip(path, text):
    with gzip.open(path, "wt") as f:
        f.write(text)


def test_gzip_and_plain_files_read_alike(tmp_path, generator):
    generator.write(tmp_path / "day_0.txt", 30, seed=7)
    generator.write(tmp_path / "day_1.txt", 20, seed=8)
    text = [(tmp_path / f"day_{i}.txt").read_text() for i in range(2)]
    write_gzip(tmp_path / "day_0.txt.gz", text[0])
    write_gzip(tmp_path / "day_1.bin", text[1])  # gzip told by its first bytes, not its name
    plain, plain_labels = read_all([tmp_path / "day_0.txt", tmp_path / "day_1.txt"])
    paths = criteo_data.expand_paths([str(tmp_path / "day_0.*.gz"), str(tmp_path / "*.bin")])
    assert paths == [str(tmp_path / "day_0.txt.gz"), str(tmp_path / "day_1.bin")]
    assert [criteo_data.compression_of(p) for p in paths] == ["GZIP", "GZIP"]
    assert criteo_data.compression_of(str(tmp_path / "day_0.txt")) == ""
    compressed, labels = read_all(paths)
    np.testing.assert_array_equal(labels, plain_labels)
    np.testing.assert_array_equal(compressed["wide_ids"], plain["wide_ids"])
    count = criteo_data.count_lines(paths)
    assert (count.lines, count.examples, count.malformed) == (50, 50, 0)
    # A plain file between gzip ones keeps its place.
    mixed = [str(tmp_path / "day_0.txt.gz"), str(tmp_path / "day_1.txt"), paths[0]]
    _, mixed_labels = read_all(mixed)
    np.testing.assert_array_equal(mixed_labels, np.concatenate([plain_labels, labels[:30]]))


def test_expand_paths_names_what_is_missing(tmp_path):
    (tmp_path / "b.txt").write_text("")
    (tmp_path / "a.txt").write_text("")
    assert criteo_data.expand_paths([str(tmp_path / "*.txt")]) == [
        str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    with pytest.raises(FileNotFoundError, match=f"no such file: {tmp_path}/c.txt$"):
        criteo_data.expand_paths([str(tmp_path / "a.txt"), str(tmp_path / "c.txt")])
    with pytest.raises(FileNotFoundError, match="no file matches: .*/d\\*.gz$"):
        criteo_data.expand_paths([str(tmp_path / "d*.gz")])


def test_served_lines_hash_as_training_lines(tmp_path, generator):
    """Serving parses lines without the label with the training's own feature code."""
    path = tmp_path / "data.txt"
    generator.write(path, 100, seed=9)
    training, _ = read_all(path, batch_size=128)
    unlabeled = [line.split("\t", 1)[1] for line in path.read_text().splitlines()]
    served = criteo_data.parse_unlabeled_lines(tf.constant(unlabeled), HASHING)
    for name in training:
        np.testing.assert_array_equal(served[name].numpy(), training[name])
    # A field that is no integer is served as missing rather than failing the request.
    fields = unlabeled[0].split("\t")
    odd = criteo_data.parse_unlabeled_lines(
        tf.constant(["\t".join(["x", "-"] + fields[2:])]), HASHING)
    np.testing.assert_array_equal(odd["dense"].numpy()[0, [0, 1, 13, 14]], [0, 0, 0, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="39 tab-separated fields"):
        criteo_data.parse_unlabeled_lines(tf.constant(["1\t2"]), HASHING)


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
