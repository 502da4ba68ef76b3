"""Scoring with a trained run reproduces the run's test metrics exactly."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from lainctr import metrics
from lainctr.experiment import run_experiment
from lainctr.predict import predict_split

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("expid", ["DIN_LAIN_synthetic_tiny", "TWIN_synthetic_tiny"])
def test_scores_reproduce_the_runs_test_metrics(expid, data_root, tmp_path):
    row = run_experiment(expid, data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                         overrides={"epochs": 1, "max_len": 30, "model_root": str(tmp_path), "verbose": 0})
    scores = predict_split(row["run_dir"], "test", str(data_root))
    y, p, users = scores["label"].to_numpy(float), scores["score"].to_numpy(float), scores["user_index"].to_numpy()
    assert metrics.auc(y, p) == row["test_AUC"] and metrics.gauc(y, p, users) == row["test_gAUC"]
    assert metrics.logloss(y, p) == row["test_logloss"]
    assert (scores["bucket"] == "0-100").sum() == row["test_samples@0-100"]
    out = tmp_path / "scores.parquet"
    done = subprocess.run([sys.executable, "-m", "lainctr.predict", "--run_dir", row["run_dir"], "--out", str(out),
                           "--data_root", str(data_root)], capture_output=True, text=True, cwd=ZOO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out), scores)


def test_a_directory_that_is_no_run_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lainctr.predict", "--run_dir", str(tmp_path), "--out",
                           str(tmp_path / "s.csv")], capture_output=True, text=True, cwd=ZOO, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "params.json: missing" in done.stderr
