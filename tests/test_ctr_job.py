"""The CTR job (`python -m tf_ftrl.examples.ctr`) as a user runs it: on gzip-compressed files in
Criteo's format, on bad input, without matplotlib, resumed from a checkpoint, and its model
served without tf_ftrl."""

import gzip
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support import ROOT, workers
from tf_ftrl.examples import criteo_data, ctr

TINY = ["--buckets", "1000", "--embedding-dim", "4", "--hidden-units", "8", "--batch-size", "64",
        "--epochs", "1", "--no-progress"]
SERVE = "tests.support.serve_ctr_without_library"


def criteo_lines(n, seed):
    """n lines as in Criteo's logs: label, 13 integers, 26 8-digit hex values, some empty."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**32, (26, 20))
    lines = []
    for _ in range(n):
        fields = [str(rng.integers(0, 2))]
        fields += ["" if rng.random() < 0.2 else str(rng.integers(-2, 5000)) for _ in range(13)]
        fields += ["" if rng.random() < 0.1 else f"{values[j, rng.integers(0, 20)]:08x}"
                   for j in range(26)]
        lines.append("\t".join(fields))
    return lines


@pytest.fixture(scope="module")
def criteo_files(tmp_path_factory):
    """Two gzip files of 120 and 80 lines, the first with 2 malformed lines (5 and 17), the
    second ending in a blank line (not malformed)."""
    directory = tmp_path_factory.mktemp("criteo")
    lines = criteo_lines(198, seed=1)
    lines[4:4] = ["a line that is no example"]
    lines[16:16] = ["\t".join(lines[20].split("\t")[:-1])]  # a field short
    for name, part, tail in (("day_0.gz", lines[:120], "\n"), ("day_1.gz", lines[120:], "\n\n")):
        with gzip.open(directory / name, "wt") as f:
            f.write("\n".join(part) + tail)
    return directory, lines


def run_job(args, block=None):
    """Runs the job in a new Python, with `block` made unimportable; (status, stdout, stderr)."""
    code = (f"import sys; sys.modules[{block!r}] = None; " if block else "") + \
        "from tf_ftrl.examples import ctr; ctr.main()"
    done = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def criteo_job(criteo_files, tmp_path_factory):
    """The job on the gzip files, by glob, without matplotlib (as after `pip install .`)."""
    directory, _ = criteo_files
    out = tmp_path_factory.mktemp("out")
    status, stdout, stderr = run_job(
        ["--data", str(directory / "*.gz"), "--out", str(out)] + TINY, block="matplotlib")
    assert status == 0, stdout + stderr
    return out, stdout


def test_job_trains_on_gzip_files_without_matplotlib(criteo_job):
    out, stdout = criteo_job
    for name in ("ctr_report.json", "ctr_report.md", "model.keras", "serving/saved_model.pb"):
        assert (out / name).exists(), name
    assert not (out / "ctr_report.png").exists()
    assert "Plot skipped: matplotlib is not installed (pip install 'tf_ftrl[examples]')." in stdout
    report = json.loads((out / "ctr_report.json").read_text())
    # With --data, the comparison with keras.optimizers is opt-in.
    assert list(report["results"]) == ["tf_ftrl"]
    assert "| tf_ftrl |" in (out / "ctr_report.md").read_text()


def test_malformed_lines_are_reported_with_file_and_line(criteo_job, criteo_files):
    directory, _ = criteo_files
    _, stdout = criteo_job
    assert (f"training data: 201 lines in 2 files, 198 examples, 2 malformed lines skipped "
            f"(first: {directory}/day_0.gz:5, {directory}/day_0.gz:17)") in stdout


def test_last_fraction_held_out_and_examples_counted(criteo_job):
    """Without --test-data, the last 10% of the lines are held out; the throughput counts the
    examples really trained (a short last batch by its size, malformed lines not at all)."""
    out, stdout = criteo_job
    assert "held out: the last 21 lines (0.1 of them)" in stdout
    (epoch,) = json.loads((out / "ctr_report.json").read_text())["results"]["tf_ftrl"]
    assert epoch["train_examples"] == 180 - 2  # lines 1-180 but the 2 malformed ones
    assert epoch["train_examples_per_s"] == pytest.approx(
        epoch["train_examples"] / epoch["train_seconds"])


def test_model_serves_raw_lines_without_tf_ftrl(criteo_job, tmp_path):
    """serving/ takes Criteo lines without the label (as in Criteo's test file) in a Python
    that cannot import tf_ftrl, and gives the probabilities of model.keras."""
    out, _ = criteo_job
    lines = [line.split("\t", 1)[1] for line in criteo_lines(50, seed=2)]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    workers.run("-m", SERVE, out / "serving", tmp_path / "lines.txt", tmp_path / "served.npy",
                timeout=120)
    served = np.load(tmp_path / "served.npy")

    model = keras.saving.load_model(out / "model.keras")
    assert type(model.wide_optimizer).__module__.startswith("tf_ftrl.")
    hashing = criteo_data.HashingConfig(buckets=model.buckets)
    features = criteo_data.parse_unlabeled_lines(tf.constant(lines), hashing)
    expected = tf.sigmoid(model(features)).numpy()
    assert served.shape == (50,) and served.std() > 0
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--buckets", "--embedding-dim",
                                  "--hidden-units", "--replicas", "--train-examples",
                                  "--test-examples"])
@pytest.mark.parametrize("value, words", [("0", "must be 1 or more, got 0"),
                                          ("-3", "must be 1 or more, got -3"),
                                          ("2.5", "must be a whole number, got '2.5'")])
def test_counts_below_one_are_one_line_and_status_2(capsys, flag, value, words):
    # Before, --epochs 0 trained nothing and failed in its report, --batch-size 0 and --buckets 0
    # in TensorFlow's ops, --replicas 0 for want of devices: tracebacks.
    with pytest.raises(SystemExit) as exit_info:
        ctr.build_parser().parse_args([flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"python -m tf_ftrl.examples.ctr: error: argument {flag}: {words}\n")


@pytest.mark.parametrize("flag", ["--data", "--test-data"])
def test_missing_file_is_one_line_and_status_2(tmp_path, capsys, flag, criteo_files):
    directory, _ = criteo_files
    missing = str(tmp_path / "day_9.gz")
    args = ["--data", str(directory / "day_0.gz")] if flag == "--test-data" else []
    with pytest.raises(SystemExit) as exit_info:
        ctr.main(args + [flag, missing, "--out", str(tmp_path / "out")] + TINY)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr == f"python -m tf_ftrl.examples.ctr: error: no such file: {missing}\n"


def test_help_lists_only_real_options(capsys):
    parser = ctr.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    mentioned = set(re.findall(r"--[a-z][a-z0-9-]*", text))
    assert mentioned <= set(parser._option_string_actions), mentioned
    for option in ("--data", "--test-data", "--test-fraction", "--compare", "--resume"):
        assert option in mentioned


def weights_of(path):
    model = keras.saving.load_model(path)
    variables = model.weights + model.wide_optimizer.variables + model.deep_optimizer.variables
    return [v.numpy() for v in variables]


def test_resume_continues_after_the_last_epoch(tmp_path, capsys):
    """1 epoch, then --epochs 2 --resume, ends exactly where a straight 2-epoch run does
    (model, both optimizers' state), having trained epoch 2 only."""
    job = ["--train-examples", "600", "--test-examples", "200", "--no-compare"] + TINY[:-3]
    ctr.main(job + ["--epochs", "1", "--out", str(tmp_path / "resumed")])
    first = json.loads((tmp_path / "resumed" / "ctr_report.json").read_text())
    capsys.readouterr()
    ctr.main(job + ["--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")])
    stdout = capsys.readouterr().out
    assert "Resuming after epoch 1" in stdout
    assert "Epoch 2/2" in stdout and "Epoch 1/2" not in stdout
    ctr.main(job + ["--epochs", "2", "--out", str(tmp_path / "straight")])

    resumed = json.loads((tmp_path / "resumed" / "ctr_report.json").read_text())["results"]
    straight = json.loads((tmp_path / "straight" / "ctr_report.json").read_text())["results"]
    assert resumed["tf_ftrl"][0] == first["results"]["tf_ftrl"][0]  # epoch 1 from the checkpoint
    assert [r["test_auc"] for r in resumed["tf_ftrl"]] == [r["test_auc"]
                                                          for r in straight["tf_ftrl"]]
    for a, b in zip(weights_of(tmp_path / "resumed" / "model.keras"),
                    weights_of(tmp_path / "straight" / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)

    # Asked for fewer epochs than the checkpoint has: it says so and trains nothing.
    capsys.readouterr()
    ctr.main(job + ["--epochs", "1", "--resume", "--out", str(tmp_path / "resumed")])
    stdout = capsys.readouterr().out
    assert ("Nothing to train: the checkpoint has 2 epochs and --epochs asks for 1" in stdout
            and "Epoch 1/1" not in stdout)
    for a, b in zip(weights_of(tmp_path / "resumed" / "model.keras"),
                    weights_of(tmp_path / "straight" / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("changed", [["--buckets", "2000"], ["--hidden-units", "16"]],
                         ids=["buckets", "hidden-units"])
def test_resume_with_other_model_flags_is_one_line_and_status_2(tmp_path, capsys, changed):
    job = ["--train-examples", "300", "--test-examples", "100", "--no-compare"] + TINY
    ctr.main(job + ["--out", str(tmp_path / "out")])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        ctr.main(job + changed + ["--epochs", "2", "--resume", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m tf_ftrl.examples.ctr: error: the checkpoint "), error
    assert ("does not fit this model; were --buckets, --embedding-dim or --hidden-units other "
            "when it was written?") in error


def test_each_epoch_has_its_own_order_in_every_run(criteo_files):
    """The shuffle is seeded per epoch: a resumed job sees the order a straight one would."""
    directory, _ = criteo_files
    args = ctr.build_parser().parse_args(["--batch-size", "1000"])
    data = ctr.Data(criteo_data.expand_paths([str(directory / "*.gz")]), [], train_take=180)
    hashing = criteo_data.HashingConfig(buckets=10**6)

    def order(epoch):
        (features, _), = data.training(args, hashing, epoch).as_numpy_iterator()
        return features["wide_ids"].tolist()

    assert order(1) == order(1)
    assert order(0) != order(1)
    assert sorted(order(0)) == sorted(order(1))


def test_plot_dependency_is_an_extra():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras["examples"] == ["matplotlib"]


def test_rowwise_keeps_one_accumulator_value_per_row(tmp_path, capsys):
    """--rowwise: the saved model's optimizers hold per-row accumulators for the tables and
    kernels (element-wise ones for the biases), and the job reports a held-out AUC."""
    job = ["--train-examples", "600", "--test-examples", "200", "--no-compare", "--rowwise",
           "--out", str(tmp_path)] + TINY
    ctr.main(job)
    assert "deep part Adagrad (row-wise state)" in capsys.readouterr().out
    report = json.loads((tmp_path / "ctr_report.json").read_text())["results"]["tf_ftrl"]
    assert 0.0 < report[-1]["test_auc"] <= 1.0
    model = keras.saving.load_model(tmp_path / "model.keras")
    for optimizer in (model.wide_optimizer, model.deep_optimizer):
        assert optimizer.rowwise
        for variable in optimizer._trainable_variables:
            accumulator = optimizer.get_slot(variable, "accumulator")
            expected = variable.shape[:1] if len(variable.shape) >= 2 else variable.shape
            assert tuple(accumulator.shape) == tuple(expected), variable.path


def test_state_dtype_keeps_the_optimizers_state_in_bfloat16(tmp_path, capsys):
    """--rowwise --state-dtype bfloat16: the saved model's optimizers hold bfloat16 state, the
    tables' accumulators one value per row, and the job reports a held-out AUC."""
    job = ["--train-examples", "600", "--test-examples", "200", "--no-compare", "--rowwise",
           "--state-dtype", "bfloat16", "--out", str(tmp_path)] + TINY
    ctr.main(job)
    assert "deep part Adagrad (row-wise bfloat16 state)" in capsys.readouterr().out
    report = json.loads((tmp_path / "ctr_report.json").read_text())["results"]["tf_ftrl"]
    assert 0.0 < report[-1]["test_auc"] <= 1.0
    model = keras.saving.load_model(tmp_path / "model.keras")
    for optimizer in (model.wide_optimizer, model.deep_optimizer):
        assert optimizer.state_dtype == "bfloat16" and optimizer.stochastic_rounding
        for variable in optimizer._trainable_variables:
            accumulator = optimizer.get_slot(variable, "accumulator")
            assert accumulator.dtype == "bfloat16", variable.path


def test_mirrored_resume_continues_after_the_last_epoch(tmp_path):
    """--strategy mirrored (two logical CPUs), with row-wise bfloat16 state: 1 epoch, then
    --epochs 2 --resume, ends exactly where a straight 2-epoch run does (model, both optimizers'
    state)."""
    job = ["-m", "tf_ftrl.examples.ctr", "--strategy", "mirrored", "--train-examples", "600",
           "--test-examples", "200", "--no-compare", "--rowwise", "--state-dtype", "bfloat16",
           "--no-progress"] + TINY[:-3]
    workers.run(*job, "--epochs", "1", "--out", tmp_path / "resumed", timeout=300)
    done = workers.run(*job, "--epochs", "2", "--resume", "--out", tmp_path / "resumed",
                       timeout=300)
    assert "Resuming after epoch 1" in done.stdout
    workers.run(*job, "--epochs", "2", "--out", tmp_path / "straight", timeout=300)

    reports = [json.loads((tmp_path / run / "ctr_report.json").read_text())["results"]["tf_ftrl"]
               for run in ("resumed", "straight")]
    assert [r["test_auc"] for r in reports[0]] == [r["test_auc"] for r in reports[1]]
    assert json.loads((tmp_path / "straight" / "cluster_report.json").read_text())[
        "replicas"] == 2
    for a, b in zip(weights_of(tmp_path / "resumed" / "model.keras"),
                    weights_of(tmp_path / "straight" / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
