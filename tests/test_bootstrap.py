"""The paired user bootstrap of LAIN's gains, the kept test predictions and the leaderboard's intervals."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lainctr import leaderboard
from lainctr import metrics as metric_lib
from lainctr.analysis import aggregate
from lainctr.analysis.bootstrap import BootstrapSettings, UserStatistics, paired_intervals, weighted_auc
from lainctr.analysis.predictions import read_predictions, write_predictions
from lainctr.errors import InputFileError
from lainctr.results import append_result

BUCKETS = ["", "0-100", "100-200", "200-inf"]
FAST = BootstrapSettings(replicates=200, seed=3)


def test_weighted_auc_is_the_auc_of_the_repeated_samples():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 300)
    y_pred = np.round(rng.random(300), 1)           # many ties
    weights = rng.integers(0, 4, (5, 300)).astype(float)
    expected = [roc_auc_score(np.repeat(y_true, w.astype(int)), np.repeat(y_pred, w.astype(int))) for w in weights]
    np.testing.assert_allclose(weighted_auc(y_true, y_pred, weights), expected, rtol=1e-12)
    assert math.isnan(weighted_auc(np.ones(4), np.arange(4.0), np.ones((1, 4)))[0])   # one class only


def _predictions(rng, quality: float, n_users: int = 120, per_user: int = 20, test_set: int = 0):
    """Predictions on test set ``test_set`` of a model whose scores separate the classes by ``quality``
    (0 = chance); ``rng`` draws the scores."""
    data = np.random.default_rng(test_set)
    users = np.repeat(np.arange(n_users), per_user)
    label = (data.random(len(users)) < 0.3).astype(np.int8)
    length = np.repeat(data.integers(1, 400, n_users), per_user)
    score = 1 / (1 + np.exp(-(quality * (2 * label - 1) + rng.normal(0, 1, len(users)))))
    return {"score": score.astype(np.float32), "label": label, "user_index": users, "history_length": length}


def test_unit_counts_reproduce_the_metrics():
    arrays = _predictions(np.random.default_rng(1), 1.0)
    users = np.unique(arrays["user_index"], return_inverse=True)[1]
    stats = UserStatistics(arrays["label"], arrays["score"], users, users.max() + 1)
    values = stats.metrics(np.ones((1, users.max() + 1)))
    y, p = arrays["label"].astype(float), arrays["score"].astype(float)
    assert values["AUC"][0] == pytest.approx(metric_lib.auc(y, p), abs=1e-12)
    assert values["gAUC"][0] == pytest.approx(metric_lib.gauc(y, p, arrays["user_index"]), abs=1e-12)
    assert values["logloss"][0] == pytest.approx(metric_lib.logloss(y, p), abs=1e-12)


def test_a_model_against_itself_is_zero_and_a_better_one_is_significant():
    rng = np.random.default_rng(2)
    base = [_predictions(np.random.default_rng(seed), 0.3) for seed in (10, 11)]
    same = paired_intervals([(b, b) for b in base], BUCKETS, FAST)
    assert set(same) == {(m, b) for m in ("AUC", "gAUC", "logloss") for b in BUCKETS}
    assert all(interval == (0.0, 0.0) for interval in same.values())
    better = [dict(b, score=(1 / (1 + np.exp(-(2.0 * (2 * b["label"] - 1) + rng.normal(0, 1, len(b["label"]))))))
                   .astype(np.float32)) for b in base]
    gains = paired_intervals(list(zip(better, base)), BUCKETS, FAST)
    assert gains[("AUC", "")][0] > 0 and gains[("gAUC", "")][0] > 0      # AUC and gAUC up
    assert gains[("logloss", "")][1] < 0                                   # logloss down
    assert gains[("AUC", "200-inf")][0] > 0
    assert paired_intervals(list(zip(better, base)), BUCKETS, FAST) == gains   # seeded


def test_predictions_of_other_test_sets_are_refused():
    a, b = _predictions(np.random.default_rng(4), 1.0), _predictions(np.random.default_rng(5), 1.0, test_set=1)
    with pytest.raises(ValueError, match="same test set"):
        paired_intervals([(a, b)], [""], FAST)


def test_predictions_file_round_trip_and_errors(tmp_path):
    arrays = _predictions(np.random.default_rng(6), 1.0)
    path = str(tmp_path / "test_predictions.npz")
    write_predictions(path, {"y_pred": arrays["score"], "y_true": arrays["label"], "group": arrays["user_index"],
                             "history_length": arrays["history_length"]})
    back = read_predictions(path)
    assert back["score"].dtype == np.float32 and back["label"].dtype == np.int8
    for column in arrays:
        np.testing.assert_array_equal(back[column], arrays[column])
    assert [p.name for p in tmp_path.iterdir()] == ["test_predictions.npz"]     # no temporary left
    np.savez(str(tmp_path / "bad.npz"), score=np.zeros(3), label=np.zeros(3))
    with pytest.raises(InputFileError, match="bad.npz: no column 'user_index'"):
        read_predictions(str(tmp_path / "bad.npz"))


def _row(tmp_path, expid, model, seed, arrays, keep=True):
    y, p = arrays["label"].astype(float), arrays["score"].astype(float)
    row = {"run_id": f"{expid}-{seed}", "timestamp": f"2026-01-01T00:00:0{seed % 10}", "expid": expid,
           "dataset_id": "synthetic", "model": model, "backbone": "DIN", "lain": model.endswith("_LAIN"),
           "seed": seed, "max_len": 200, "tag": "", "params": json.dumps({})}
    row.update({f"test_{k}": v for k, v in metric_lib.evaluate_metrics(y, p, ["AUC", "gAUC", "logloss"],
                                                                       arrays["user_index"]).items()})
    row.update({f"test_{k}": v for k, v in metric_lib.bucket_metrics(
        y, p, arrays["user_index"], arrays["history_length"], [100, 200], ["AUC", "gAUC", "logloss"]).items()})
    if keep:
        row["predictions_file"] = str(tmp_path / f"{expid}_{seed}.npz")
        write_predictions(row["predictions_file"], {"y_pred": arrays["score"], "y_true": arrays["label"],
                                                    "group": arrays["user_index"],
                                                    "history_length": arrays["history_length"]})
    return row


def test_leaderboard_reports_intervals_and_says_where_there_are_none(tmp_path):
    results = str(tmp_path / "results.csv")
    for seed in (1, 2, 3):
        base = _predictions(np.random.default_rng(seed), 0.3)
        better = dict(base, score=np.clip(base["score"] + 0.25 * (2 * base["label"] - 1), 0.01, 0.99).astype(np.float32))
        append_result(results, _row(tmp_path, "DIN_synthetic", "DIN", seed, base))
        append_result(results, _row(tmp_path, "DIN_LAIN_synthetic", "DIN_LAIN", seed, better))
        append_result(results, _row(tmp_path, "TWIN_synthetic", "TWIN", seed, base, keep=False))
        append_result(results, _row(tmp_path, "TWIN_LAIN_synthetic", "TWIN_LAIN", seed, better, keep=False))
    runs = aggregate.load_results([results])
    runs.loc[runs["expid"].str.startswith("TWIN"), "backbone"] = "TWIN"
    table = aggregate.gains(runs, intervals=FAST).set_index(["backbone", "metric", "bucket"])
    din = table.loc[("DIN", "AUC", "")]
    assert din["ci_low"] > 0 and din["significant"] and din["ci_note"] == ""
    assert din["ci_low"] < din["gain_pct"] < din["ci_high"]
    assert table.loc[("DIN", "logloss", "0-100"), "ci_high"] < 0
    twin = table.loc[("TWIN", "AUC", "")]
    assert pd.isna(twin["ci_low"]) and not twin["significant"]
    assert twin["ci_note"] == "no test predictions of TWIN_LAIN_synthetic (seed 1, 2, 3); TWIN_synthetic (seed 1, 2, 3)"
    assert table.loc[("TWIN", "gini", ""), "ci_note"] == "" if ("TWIN", "gini", "") in table.index else True

    assert leaderboard.main(["--results", results, "--out", str(tmp_path / "board"), "--bootstrap", "200"]) == 0
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "95 % CI" in markdown and "% *" in markdown
    assert "No interval for TWIN_LAIN_synthetic @200: no test predictions of TWIN_LAIN_synthetic" in markdown
    assert leaderboard.main(["--results", results, "--out", str(tmp_path / "plain"), "--bootstrap", "0"]) == 0
    assert "No interval" not in (tmp_path / "plain" / "leaderboard.md").read_text()


def test_kept_predictions_give_the_same_intervals_after_the_run_folders_are_gone(tmp_path, capsys):
    runs_dir, board = tmp_path / "runs", tmp_path / "board"
    runs_dir.mkdir()
    results = str(board / "results.csv")
    for seed in (1, 2):
        base = _predictions(np.random.default_rng(seed), 0.3)
        better = dict(base, score=np.clip(base["score"] + 0.2 * (2 * base["label"] - 1), 0.01, 0.99).astype(np.float32))
        append_result(results, _row(runs_dir, "DIN_synthetic", "DIN", seed, base))
        append_result(results, _row(runs_dir, "DIN_LAIN_synthetic", "DIN_LAIN", seed, better))
    append_result(results, _row(runs_dir, "SIM_synthetic", "SIM", 1, base, keep=False))
    search = [str(board)]
    before = aggregate.gains(aggregate.load_results([results]), intervals=FAST, search_dirs=search)

    assert leaderboard.main(["keep-predictions", "--results", results]) == 0
    out = capsys.readouterr()
    assert "kept 4 new predictions file(s)" in out.out and "SIM_synthetic seed 1" in out.err
    assert sorted(p.name for p in (board / "predictions").iterdir()) == [
        "DIN_LAIN_synthetic-1.npz", "DIN_LAIN_synthetic-2.npz", "DIN_synthetic-1.npz", "DIN_synthetic-2.npz"]
    for path in runs_dir.iterdir():
        path.unlink()
    after = aggregate.gains(aggregate.load_results([results]), intervals=FAST, search_dirs=search)
    assert before[["ci_low", "ci_high"]].notna().any().all()
    pd.testing.assert_frame_equal(before, after)
    assert leaderboard.main(["keep-predictions", "--results", results]) == 0   # kept already: nothing to do
    assert "kept 0 new" in capsys.readouterr().out

    append_result(results, dict(_row(runs_dir, "DIN_synthetic", "DIN", 3, base, keep=False), run_id="../x"))
    assert leaderboard.main(["keep-predictions", "--results", results]) == 2
    assert f"{results}, line 7: run_id '../x' is not a plain name" in capsys.readouterr().err


def test_keep_predictions_resolves_relative_paths_as_the_leaderboard_does(tmp_path):
    from lainctr.analysis.predictions import keep_predictions
    arrays = _predictions(np.random.default_rng(7), 1.0)
    row = _row(tmp_path, "DIN_synthetic", "DIN", 1, arrays)
    row["predictions_file"] = os.path.basename(row["predictions_file"])   # relative to the results folder
    results = str(tmp_path / "results.csv")
    append_result(results, row)
    written, notes = keep_predictions(results)
    assert notes == [] and written == [str(tmp_path / "predictions" / "DIN_synthetic-1.npz")]


def test_paired_relative_changes_pair_each_seeds_latest_rows_and_leave_out_nan():
    treated = pd.DataFrame({"seed": [1, 1, 2, 3], "test_AUC": [0.50, 0.66, 0.70, math.nan]})
    reference = pd.DataFrame({"seed": [1, 2, 3, 4], "test_AUC": [0.60, 0.80, 0.70, 0.50]})
    changes = aggregate.paired_relative_changes(treated, reference, [1, 2, 3], "test_AUC")
    assert list(changes.index) == [1, 2]
    assert changes[1] == pytest.approx(10.0) and changes[2] == pytest.approx(-12.5)
