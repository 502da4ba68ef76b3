"""Length-bucket report, plots and the report command."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from lainctr import leaderboard
from lainctr.analysis import bucket_report

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "results_small.csv")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bucket_report_shares_and_ctr():
    arrays = {"y_true": np.array([1, 0, 0, 1, 1]), "group": np.array([7, 7, 8, 9, 9]),
              "history_length": np.array([10, 120, 50, 250, 260])}
    report = bucket_report(arrays, [100, 200])
    assert list(report) == ["0-100", "100-200", "200-inf"]
    assert [report[b]["samples"] for b in report] == [2, 1, 2]
    assert [report[b]["sample_share"] for b in report] == pytest.approx([0.4, 0.2, 0.4])
    # users by their longest history: 7 -> 120 (medium), 8 -> 50 (short), 9 -> 260 (long)
    assert [report[b]["user_share"] for b in report] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert [report[b]["ctr"] for b in report] == pytest.approx([0.5, 0.0, 1.0])


def test_bucket_report_empty_bucket():
    arrays = {"y_true": np.array([1, 0]), "group": np.array([1, 2]), "history_length": np.array([5, 6])}
    report = bucket_report(arrays, [100])
    assert report["100-inf"]["samples"] == 0 and np.isnan(report["100-inf"]["ctr"])
    assert report["0-100"]["user_share"] == 1.0


def _with_histories(tmp_path):
    """The fixture results with a history file per synthetic run (relative paths, resolved next to the CSV)."""
    runs = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    for i, row in runs.iterrows():
        if row["dataset_id"] != "synthetic":
            continue
        name = f"history_{row['run_id']}.json"
        history = [{"epoch": e, "step": 10 * e, "train_loss": 0.6 - 0.05 * e, "lr": 1e-3,
                    "valid_AUC": 0.65 + 0.01 * e} for e in (1, 2, 3)]
        (tmp_path / name).write_text(json.dumps(history))
        runs.at[i, "history_file"] = name
    path = tmp_path / "results_small.csv"
    runs.to_csv(path, index=False)
    return str(path)


def test_report_writes_plots_and_markdown(tmp_path):
    results = _with_histories(tmp_path)
    out = tmp_path / "reports"
    assert leaderboard.main(["report", "--results", results, "--out", str(out)]) == 0
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["synthetic_bucket_auc.png", "synthetic_training.png"]  # no bucket columns for kuaivideo_x2
    for name in pngs:
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    markdown = (out / "leaderboard.md").read_text()
    assert "![synthetic: test AUC by length bucket](plots/synthetic_bucket_auc.png)" in markdown
    assert (out / "gains.csv").exists() and (out / "leaderboard_synthetic.csv").exists()


def test_gini_plot_when_gini_columns_exist(tmp_path):
    runs = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    runs["test_gini@0-100"] = ["0.30" if r == "False" else "0.25" for r in runs["lain"]]
    runs["test_gini@100-inf"] = ["0.40" if r == "False" else "0.33" for r in runs["lain"]]
    runs["test_gini_bucket_var"] = ["0.0025" if r == "False" else "0.0012" for r in runs["lain"]]
    path = tmp_path / "results_gini.csv"
    runs.to_csv(path, index=False)
    out = tmp_path / "reports"
    assert leaderboard.main(["report", "--results", str(path), "--out", str(out)]) == 0
    data = (out / "plots" / "synthetic_bucket_gini.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    gains = pd.read_csv(out / "gains.csv")
    gini = gains[(gains["metric"] == "gini") & (gains["bucket"] == "0-100")].iloc[0]
    assert gini["gain_pct"] == pytest.approx((0.25 - 0.30) / 0.30 * 100)
    variance = gains[gains["metric"] == "gini_bucket_var"].set_index("dataset_id")
    assert variance.at["synthetic", "gain_pct"] == pytest.approx(-52.0)
    assert pd.isna(variance.at["synthetic", "paper_gain_pct"])
    assert variance.at["kuaivideo_x2", "paper_gain_pct"] == pytest.approx(-50.6)   # doc §2.3, dataset not stated
    markdown = (out / "leaderboard.md").read_text()
    assert "attention Gini per bucket" in markdown and "variance of bucket-mean Gini" in markdown
