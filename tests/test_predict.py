"""Scoring with a trained run reproduces the run's test metrics exactly, for a split and for a file of samples."""
import os
import subprocess
import sys

import h5py
import pandas as pd
import pytest

from lainctr import metrics, trained
from lainctr.errors import InputFileError
from lainctr.experiment import run_experiment
from lainctr.predict import cli, main, predict, predict_split

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_reproduces_test_metrics(scores, row):
    y, p, users = scores["label"].to_numpy(float), scores["score"].to_numpy(float), scores["user_index"].to_numpy()
    assert metrics.auc(y, p) == row["test_AUC"] and metrics.gauc(y, p, users) == row["test_gAUC"]
    assert metrics.logloss(y, p) == row["test_logloss"]
    assert (scores["bucket"] == "0-100").sum() == row["test_samples@0-100"]


def test_scores_reproduce_the_runs_test_metrics(tiny_run, data_root, tmp_path):
    row, _ = tiny_run
    scores = predict_split(row["run_dir"], "test", str(data_root))
    assert_reproduces_test_metrics(scores, row)
    out = tmp_path / "scores.parquet"
    done = subprocess.run([sys.executable, "-m", "lainctr.predict", "--run_dir", row["run_dir"], "--out", str(out),
                           "--data_root", str(data_root)], capture_output=True, text=True, cwd=ZOO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out), scores)


def test_twin_scores_with_its_item_cache_reproduce_the_run(data_root, tmp_path):
    row = run_experiment("TWIN_synthetic_tiny", data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                         overrides={"epochs": 1, "max_len": 30, "model_root": str(tmp_path), "verbose": 0})
    assert_reproduces_test_metrics(predict_split(row["run_dir"], "test", str(data_root)), row)


def tiny_test_split(data_root):
    with h5py.File(os.path.join(data_root, "synthetic_tiny", "test.h5")) as f:
        return {name: f[name][()] for name in f}


def write_samples(columns, path):
    if path.suffix == ".h5":
        with h5py.File(path, "w") as f:
            for name, values in columns.items():
                f.create_dataset(name, data=values)
    elif path.suffix == ".csv":
        pd.DataFrame(columns).to_csv(path, index=False)
    else:
        pd.DataFrame(columns).to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".h5"])
def test_the_test_split_as_a_file_gives_the_split_scores(suffix, tiny_run, data_root, tmp_path):
    run = trained.read_run(tiny_run[0]["run_dir"])
    path = write_samples(tiny_test_split(data_root), tmp_path / f"samples{suffix}")
    pd.testing.assert_frame_equal(predict(run, input_file=path, data_root=str(data_root)),
                                  predict(run, "test", data_root=str(data_root)))


def test_samples_without_labels_are_scored(tiny_run, data_root, tmp_path):
    run = trained.read_run(tiny_run[0]["run_dir"])
    columns = {k: v[:50] for k, v in tiny_test_split(data_root).items() if k != "label"}
    columns["request_id"] = list(range(50))                 # a column of the caller's own: ignored
    scores = predict(run, input_file=write_samples(columns, tmp_path / "new.csv"), data_root=str(data_root))
    assert list(scores.columns) == ["user_index", "item_index", "score", "history_length", "bucket"]
    pd.testing.assert_frame_equal(scores, predict(run, "test", data_root=str(data_root)).head(50).drop(columns="label"))


@pytest.mark.parametrize("column,value,message", [
    ("hour", None, "column 'hour': missing"),
    ("seq_len", 10 ** 6, "column 'seq_len' row 7: seq_len 1000000 outside"),
    ("item_index", -1, "column 'item_index' row 7: value -1 outside"),
])
def test_a_bad_sample_file_is_one_error_line_naming_file_column_row(column, value, message, tiny_run, data_root,
                                                                     tmp_path, capsys):
    columns = tiny_test_split(data_root)
    if value is None:
        del columns[column]
    else:
        columns[column][7] = value
    path = write_samples(columns, tmp_path / "bad.csv")
    argv = ["--run_dir", tiny_run[0]["run_dir"], "--input", path, "--out", str(tmp_path / "s.csv"),
            "--data_root", str(data_root)]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: {message}"), err
    assert not (tmp_path / "s.csv").exists()


def test_expid_finds_its_newest_finished_run(tiny_run, data_root, tmp_path):
    row, expids = tiny_run
    assert trained.locate(expid="DIN_LAIN_tiny_run", config_dir=expids).run_dir == row["run_dir"]
    assert trained.locate(checkpoint=row["checkpoint"]).run_dir == row["run_dir"]
    assert main(["--expid", "DIN_LAIN_tiny_run", "--config", expids, "--data_root", str(data_root),
                 "--out", str(tmp_path / "s.parquet")]) == 0
    assert_reproduces_test_metrics(pd.read_parquet(tmp_path / "s.parquet"), row)
    with pytest.raises(InputFileError, match="not 'DIN_synthetic_tiny'"):
        trained.locate(expid="DIN_synthetic_tiny", checkpoint=row["checkpoint"])
    with pytest.raises(InputFileError, match="no finished run of expid 'DIN_tiny_none'"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "e.yaml").write_text(f"DIN_tiny_none: {{base_expid: DIN_synthetic_tiny, model_root: "
                                               f"'{tmp_path}'}}\n")
        trained.locate(expid="DIN_tiny_none", config_dir=str(tmp_path / "x"))


def test_a_directory_that_is_no_run_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lainctr.predict", "--run_dir", str(tmp_path), "--out",
                           str(tmp_path / "s.csv")], capture_output=True, text=True, cwd=ZOO, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "params.json: missing" in done.stderr
