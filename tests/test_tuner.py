"""Grid expansion, validation-only selection and the ablation runner, with a fake run_experiment."""
import json
import math
import os
import re

import pandas as pd
import pytest
import yaml

from lainctr import config as config_lib
from lainctr import tuner
from lainctr.analysis import ablation_overrides, infer_variant
from lainctr.analysis.ablation import ablation_tag, variant_of_tag
from lainctr.config import ConfigError
from lainctr.layers.lain import LAINConfig
from lainctr.results import append_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "config", "tuner", "DIN_LAIN_example.yaml")
BASE = {"model": "DIN_LAIN", "dataset_id": "synthetic", "learning_rate": 1e-3, "num_prompts": 4, "seed": 2026,
        "monitor": "AUC", "monitor_mode": "max", "_config_file": "x.yaml", "expid": "DIN_LAIN_synthetic"}


def _tuner(**extra):
    return {"base_expid": "DIN_LAIN_synthetic",
            "tuner_space": {"learning_rate": [1.e-3, 5.e-4], "num_prompts": [2, 4]}, "seeds": [2026], **extra}


# ----- expansion --------------------------------------------------------------------------------
def test_expansion_names_count_values():
    points = tuner.expand_grid(_tuner(), BASE, check_keys=False)
    assert len(points) == 4
    assert [p.index for p in points] == [1, 2, 3, 4]
    for point in points:
        assert re.fullmatch(r"DIN_LAIN_synthetic_\d{3}_[0-9a-f]{8}", point.name)
        assert point.name.startswith(f"DIN_LAIN_synthetic_{point.index:03d}_")
        assert point.name.endswith(tuner.point_hash(point.block))
        assert "expid" not in point.block and "_config_file" not in point.block
        assert point.block["model"] == "DIN_LAIN" and point.block["seed"] == 2026
    # itertools.product order, last key fastest
    assert [p.params for p in points] == [{"learning_rate": 1e-3, "num_prompts": 2},
                                          {"learning_rate": 1e-3, "num_prompts": 4},
                                          {"learning_rate": 5e-4, "num_prompts": 2},
                                          {"learning_rate": 5e-4, "num_prompts": 4}]
    assert [p.block["num_prompts"] for p in points] == [2, 4, 2, 4]
    assert len({p.name[-8:] for p in points}) == 4
    again = tuner.expand_grid(_tuner(), dict(BASE), check_keys=False)
    assert [p.name for p in again] == [p.name for p in points]            # deterministic
    changed = tuner.expand_grid(_tuner(), dict(BASE, embedding_dim=32), check_keys=False)
    assert changed[0].name != points[0].name                               # hash covers the whole block


def test_scalar_values_and_key_checks():
    points = tuner.expand_grid({"base_expid": "X", "tuner_space": {"num_prompts": 2}}, BASE, check_keys=False)
    assert len(points) == 1 and points[0].params == {"num_prompts": 2}
    with pytest.raises(config_lib.ConfigError, match="nmu_prompts"):
        tuner.expand_grid({"base_expid": "X", "tuner_space": {"nmu_prompts": [2]}}, BASE)


def test_tuner_yaml_checks(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(_tuner(tuner_spce={})))
    with pytest.raises(config_lib.ConfigError, match="tuner_spce"):
        tuner.load_tuner_config(str(path))
    path.write_text(yaml.safe_dump({"base_expid": "X", "tuner_space": {"seed": [1, 2]}}))
    with pytest.raises(config_lib.ConfigError, match="seeds"):
        tuner.load_tuner_config(str(path))


def test_example_config_expands_against_the_zoo(tmp_path):
    result = tuner.run_grid(EXAMPLE, out_dir=str(tmp_path), dry_run=True)
    points = result["points"]
    assert len(points) == 4 and all(p.name.startswith("DIN_LAIN_synthetic_00") for p in points)
    # the generated config dir is a valid --config for run_experiment
    params = config_lib.load_config(points[3].name, str(tmp_path / "configs"))
    assert params["learning_rate"] == 5e-4 and params["num_prompts"] == 4 and params["model"] == "DIN_LAIN"


# ----- selection on validation only -------------------------------------------------------------
# point -> (valid AUC, test AUC) per seed: the best test point (B) is not the best valid point (A)
OUTCOMES = {1: {2026: (0.80, 0.70), 2027: (0.78, 0.71)},
            2: {2026: (0.79, 0.76), 2027: (0.77, 0.77)},
            3: {2026: (0.75, 0.60), 2027: (0.75, 0.61)},
            4: {2026: (0.81, 0.65), 2027: (0.70, 0.66)}}


def test_select_best_ignores_test():
    rows = {f"p{i}": [{"seed": s, "valid_AUC": v, "test_AUC": t, "valid_logloss": 1 - v}
                      for s, (v, t) in seeds.items()] for i, seeds in OUTCOMES.items()}
    best, table = tuner.select_best(rows, "AUC", "max")
    assert best == "p1"                                             # valid mean 0.79 beats p2 (0.78), p4 (0.755)
    assert table.set_index("point")["test_AUC"].idxmax() == "p2"    # what a test-based pick would have chosen
    assert table["selected"].sum() == 1
    assert tuner.select_best(rows, "logloss", "min")[0] == "p1"
    weighted, _ = tuner.select_best(rows, {"AUC": 1, "logloss": -1}, "max")
    assert weighted == "p1"
    with pytest.raises(ValueError):
        tuner.select_best(rows, "AUC", "best")


def test_run_grid_with_fake_runner(tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"base_expid": "DIN_LAIN_synthetic_tiny",
                                      "tuner_space": {"learning_rate": [1.e-3, 5.e-4], "num_prompts": [2, 4]},
                                      "seeds": [2026, 2027]}))
    calls = []

    def fake_run_experiment(expid, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None, tag=None):
        params = config_lib.load_config(expid, config_dir)     # the point is a real expid of the generated dir
        index = int(expid.split("_")[-2])
        seed = overrides["seed"]
        valid, test = OUTCOMES[index][seed]
        calls.append((expid, seed, params["num_prompts"], results_file))
        return {"run_id": f"{index}-{seed}", "expid": expid, "seed": seed, "valid_AUC": valid, "test_AUC": test,
                "valid_gAUC": valid, "test_gAUC": test, "valid_logloss": 0.5, "test_logloss": 0.5}

    result = tuner.run_grid(str(config), runner=fake_run_experiment, out_dir=str(tmp_path / "out"))
    assert len(calls) == 8 and {c[1] for c in calls} == {2026, 2027}
    assert [c[2] for c in calls[::2]] == [2, 4, 2, 4]
    assert calls[0][3] == str(tmp_path / "out" / "results.csv")
    names = [p.name for p in result["points"]]
    assert result["best"] == names[0]
    selection = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    assert selection["selected_expid"] == names[0]
    assert selection["test"]["AUC"] == pytest.approx(0.705)
    assert selection["config"][names[0]]["num_prompts"] == 2
    assert "valid AUC" in selection["selected_by"]
    summary = pd.read_csv(tmp_path / "out" / "grid_summary.csv")
    assert summary["selected"].tolist() == [True, False, False, False]
    assert len(pd.read_csv(tmp_path / "out" / "grid_runs.csv")) == 8
    assert "Selected: `" + names[0] in (tmp_path / "out" / "grid_summary.md").read_text()


# ----- ablation ---------------------------------------------------------------------------------
def test_ablation_overrides_match_the_spec():
    variants = ablation_overrides()
    assert list(variants) == ["full", "wo_sle", "wo_prompts", "wo_qk", "wo_temperature", "wo_lma",
                              "wo_short_branch", "backbone"]
    off = {name: sorted(k for k, v in o.items() if v is False) for name, o in variants.items()}
    assert off == {"full": [], "wo_sle": ["use_sle"], "wo_prompts": ["use_prompts"],
                   "wo_qk": ["use_qk_conditioning"], "wo_temperature": ["use_temperature"],
                   "wo_lma": ["use_qk_conditioning", "use_temperature"],
                   "wo_short_branch": ["lain_on_short_branch"],
                   "backbone": ["use_prompts", "use_qk_conditioning", "use_temperature"]}
    for name, overrides in variants.items():
        assert set(overrides) <= set(LAINConfig.keys())
        assert LAINConfig(**overrides).active == (name != "backbone")
        assert infer_variant(json.dumps(overrides)) == name
    assert "backbone" not in ablation_overrides(include_backbone=False)
    assert infer_variant("{}") == "full"
    assert infer_variant({"use_sle": False, "use_prompts": False}).startswith("custom")


def test_ablation_tags_round_trip_and_reject_other_tags():
    for name in ablation_overrides():
        assert variant_of_tag(ablation_tag(name)) == name
    for bad in (None, "", "sweep:max_len=50", "wo_sle"):
        with pytest.raises(ValueError, match="not an ablation run tag"):
            variant_of_tag(bad)


def _fake_ablation_runner(results_file_log):
    # variant -> (AUC, logloss) at seed 1; seed 2 adds +0.002 / -0.001 to everything
    values = {"full": (0.7233, 0.4097), "wo_sle": (0.7220, 0.4100), "wo_prompts": (0.7228, 0.4107),
              "wo_qk": (0.7195, 0.4148), "wo_temperature": (0.7212, 0.4111), "wo_lma": (0.7189, 0.4157),
              "wo_short_branch": (0.7226, 0.4137), "backbone": (0.7158, 0.4164)}

    def run_experiment(expid, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None, tag=None):
        overrides = dict(overrides)
        seed = overrides.pop("seed")
        variant = infer_variant(overrides)
        assert tag == f"ablation:{variant}"
        auc, logloss = values[variant]
        shift = 0.0 if seed == 1 else 1.0
        row = {"run_id": f"{variant}-{seed}", "timestamp": "2026-01-01T00:00:00", "expid": expid, "seed": seed,
               "params": json.dumps(overrides), "test_AUC": auc + 0.002 * shift,
               "test_logloss": logloss - 0.001 * shift, "test_gAUC": auc, "valid_AUC": auc, "valid_gAUC": auc,
               "valid_logloss": logloss}
        append_result(results_file, row)
        results_file_log.append(results_file)
        return row

    return run_experiment


def test_run_ablation_with_fake_runner(tmp_path):
    log = []
    results = str(tmp_path / "ablation.csv")
    table = tuner.run_ablation("DIN_LAIN_synthetic_tiny", seeds=[1, 2], runner=_fake_ablation_runner(log),
                               results_file=results, out=str(tmp_path / "reports"))
    assert len(log) == 16 and set(log) == {results}
    table = table.set_index("variant")
    assert table.loc["full", "n"] == 2 and table.loc["full", "delta_AUC"] == 0
    assert table.loc["full", "AUC_mean"] == pytest.approx(0.7243)
    assert table.loc["wo_lma", "delta_AUC"] == pytest.approx(0.7189 - 0.7233)
    assert table.loc["wo_lma", "delta_logloss"] == pytest.approx(0.4157 - 0.4097)
    assert table.loc["wo_lma", "paired"] and table.loc["wo_lma", "delta_AUC_std"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["wo_qk", "paper_AUC"] == pytest.approx(0.7195)
    assert table.loc["wo_qk", "paper_delta_AUC"] == pytest.approx(-0.0038)
    assert math.isnan(table.loc["wo_sle", "paper_AUC"])           # no "w/o SLE" row is known
    stem = tmp_path / "reports" / "ablation_DIN_LAIN_synthetic_tiny"
    markdown = (tmp_path / "reports" / "ablation_DIN_LAIN_synthetic_tiny.md").read_text()
    assert "w/o LMA (both parts)" in markdown and "No intervals: no test predictions of DIN_LAIN_synthetic_tiny" in markdown
    assert len(pd.read_csv(str(stem) + "_runs.csv")) == 16
    # the table can be rebuilt from the results file alone (variant inferred from the params)
    rebuilt = tuner.run_ablation("DIN_LAIN_synthetic_tiny", seeds=[1, 2], results_file=results,
                                 out=str(tmp_path / "again"), rebuild=True).set_index("variant")
    pd.testing.assert_series_equal(rebuilt["delta_AUC"], table["delta_AUC"])


def test_ablation_changes_have_paired_bootstrap_intervals(tmp_path):
    """w/o LMA blurs every score (worse, significantly); w/o SLE predicts exactly as the full model (no change)."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    from lainctr.analysis.predictions import write_predictions
    users = np.repeat(np.arange(300), 8)
    labels = np.random.default_rng(0).random(len(users)) < 0.3

    def run_experiment(expid, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None, tag=None):
        overrides = dict(overrides)
        seed = overrides.pop("seed")
        variant = infer_variant(overrides)
        noise = np.random.default_rng(seed).normal(size=len(users))
        score = 1 / (1 + np.exp(-(2.0 * labels - 1 + (2.0 if variant == "wo_lma" else 1.0) * noise)))
        path = str(tmp_path / f"{variant}-{seed}.npz")
        write_predictions(path, {"y_pred": score, "y_true": labels, "group": users,
                                 "history_length": np.full(len(users), 50)})
        row = {"run_id": f"{variant}-{seed}", "expid": expid, "seed": seed, "params": json.dumps(overrides),
               "predictions_file": path, "test_AUC": roc_auc_score(labels, score),
               "test_logloss": log_loss(labels, score), "test_gAUC": 0.7}
        append_result(results_file, row)
        return row

    table = tuner.run_ablation("DIN_LAIN_synthetic_tiny", [1, 2], ["full", "wo_sle", "wo_lma"], runner=run_experiment,
                               results_file=str(tmp_path / "ablation.csv"), out=str(tmp_path)).set_index("variant")
    assert table.loc["wo_lma", "delta_AUC_ci_high"] < 0 and table.loc["wo_lma", "delta_AUC_significant"]
    assert table.loc["wo_lma", "delta_logloss_ci_low"] > 0 and table.loc["wo_lma", "delta_logloss_significant"]
    assert table.loc["wo_lma", "delta_AUC_pct"] == pytest.approx(
        100 * table.loc["wo_lma", "delta_AUC"] / table.loc["full", "AUC_mean"], rel=1e-3)   # same per seed here
    assert (table.loc["wo_sle", "delta_AUC_ci_low"], table.loc["wo_sle", "delta_AUC_ci_high"]) == (0.0, 0.0)
    assert not table.loc["wo_sle", "delta_AUC_significant"]
    markdown = (tmp_path / "ablation_DIN_LAIN_synthetic_tiny.md").read_text()
    assert re.search(r"\| w/o LMA \(both parts\) \| 2 \| [^|]+ \| -[\d.]+ ± [\d.]+ \| -[\d.]+% \[-[\d.]+, -[\d.]+\]% \* \|",
                     markdown), markdown
    assert "No intervals" not in markdown


def test_ablation_resume_and_checks(tmp_path):
    log = []
    results = str(tmp_path / "ablation.csv")
    runner = _fake_ablation_runner(log)
    tuner.run_ablation("DIN_LAIN_synthetic_tiny", [1], ["full", "wo_sle"], runner=runner, results_file=results,
                       out=str(tmp_path))
    tuner.run_ablation("DIN_LAIN_synthetic_tiny", [1, 2], ["full", "wo_sle"], runner=runner, results_file=results,
                       out=str(tmp_path), resume=True)
    assert len(log) == 4                                             # seed 1 runs were not repeated
    with pytest.raises(config_lib.ConfigError, match="_LAIN"):
        tuner.run_ablation("DIN_synthetic_tiny", [1], runner=runner, results_file=results, out=str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="unknown ablation"):
        tuner.run_ablation("DIN_LAIN_synthetic_tiny", [1], ["wo_everything"], runner=runner,
                           results_file=results, out=str(tmp_path))


def test_malformed_results_file_is_one_error_line(tmp_path, capsys):
    results = tmp_path / "ablation.csv"
    results.write_text("run_id,expid,seed\nr1,DIN_LAIN_synthetic_tiny,1\nr2,\"unterminated\n")
    assert tuner.main(["ablation", "--expid", "DIN_LAIN_synthetic_tiny", "--results", str(results), "--rebuild",
                       "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {results}: line ") and "not readable as CSV" in err and err.count("\n") == 1


# ----- max_len sweep and the study --------------------------------------------------------------
def _fake_trainer(calls):
    """A run_experiment stand-in whose backbone shows the paper's O1 (short-history AUC falls with max_len,
    long-history AUC rises) and whose paper preset gains more on validation than lean; appends its row."""
    def run_experiment(expid, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None, tag=None):
        params = {**config_lib.load_config(expid, config_dir), **overrides}
        model, max_len, seed = str(params["model"]), int(params["max_len"]), int(params["seed"])
        lain = model.endswith("_LAIN")
        preset = params.get("lain_preset", "lean") if lain else ""
        calls.append((expid, max_len, seed, preset, tag))
        step = math.log10(max_len / 50)
        bonus = {"": 0.0, "lean": 0.001, "paper": 0.003}[preset] + 0.0001 * seed
        row = {"run_id": f"{len(calls)}", "timestamp": f"2026-01-01T00:{len(calls) // 60:02d}:{len(calls) % 60:02d}",
               "expid": expid, "dataset_id": params["dataset_id"], "model": model,
               "backbone": model.replace("_LAIN", ""), "lain": lain, "seed": seed, "max_len": max_len, "tag": tag or "",
               "params": json.dumps({k: v for k, v in params.items() if not k.startswith("_")}, default=str),
               "valid_AUC": 0.76 + bonus, "test_AUC": 0.77 + bonus, "test_gAUC": 0.775 + bonus,
               "test_logloss": 0.45 - bonus, "valid_gAUC": 0.76, "valid_logloss": 0.45,
               "test_AUC@0-100": 0.75 - 0.01 * step + (0.005 if lain else 0), "test_AUC@200-inf": 0.78 + 0.01 * step,
               "test_gAUC@0-100": 0.74, "test_gAUC@200-inf": 0.79, "test_gini@0-100": 0.2, "test_gini@200-inf": 0.3 + 0.01 * step}
        append_result(results_file, row)
        return row
    return run_experiment


def test_sweep_trains_both_models_at_every_max_len_and_skips_what_is_there(tmp_path):
    calls = []
    results, out = str(tmp_path / "sweep.csv"), str(tmp_path / "out")
    table = tuner.run_sweep("DIN_LAIN_synthetic", [50, 200, 1000], [1, 2], "paper", runner=_fake_trainer(calls),
                            results_file=results, out=out)
    assert len(calls) == 12
    assert {(c[0], c[3]) for c in calls} == {("DIN_synthetic", ""), ("DIN_LAIN_synthetic", "paper")}
    assert {c[1] for c in calls} == {50, 200, 1000} and {c[2] for c in calls} == {1, 2}
    assert list(table["max_len"]) == [50, 50, 200, 200, 1000, 1000] and list(table["n"]) == [2] * 6
    assert list(table["role"]) == ["backbone", "LAIN"] * 3
    markdown = (tmp_path / "out" / "sweep_DIN_synthetic_paper.md").read_text()
    # short users from max_len 200 (the first >= 100 that holds their histories), long ones from 50
    assert "backbone: short-history (0-100) test AUC 0.7440 at max_len 200 -> 0.7370 at 1000 (-0.94%); long-history " \
        "(200-inf) 0.7800 at 50 -> 0.7930 (+1.67%)" in markdown
    assert "observation (short falls, long rises) appears in the seed means (no intervals: no test predictions of " \
        "DIN_synthetic (seed 1, 2))" in markdown and "## attention Gini per length bucket" in markdown
    assert (tmp_path / "out" / "sweep_DIN_synthetic_paper.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "out" / "sweep_DIN_synthetic_paper.csv")) == 6
    tuner.run_sweep("DIN_synthetic", [50, 200, 1000, 500], [1, 2], "paper", runner=_fake_trainer(calls),
                    results_file=results, out=out)
    assert len(calls) == 16 and {c[1] for c in calls[12:]} == {500}       # only the new max_len ran
    tuner.run_sweep("DIN_synthetic", [50, 100], [3], backbone_only=True, runner=_fake_trainer(calls),
                    results_file=results, out=out)
    assert [(c[0], c[1]) for c in calls[16:]] == [("DIN_synthetic", 50), ("DIN_synthetic", 100)]


def _trainer_with_predictions(calls, folder, short_blur: float, short_jitter: float = 0.0):
    """A run_experiment stand-in that writes test predictions: 150 short (history 50) and 150 long (history 500)
    users, 8 samples each, the same labels in every run; the long users' scores sharpen with max_len, the short
    users' blur by ``short_blur`` per decade of max_len, plus noise of std ``short_jitter`` drawn anew for each
    run (both 0: the same at every max_len). Its bucket AUCs are computed from those predictions."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from lainctr.analysis.predictions import write_predictions

    users = np.repeat(np.arange(300), 8)
    history = np.where(users < 150, 50, 500)
    labels = np.random.default_rng(0).random(len(users)) < 0.3

    def run_experiment(expid, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None, tag=None):
        params = {**config_lib.load_config(expid, config_dir), **overrides}
        max_len, seed = int(params["max_len"]), int(params["seed"])
        calls.append((expid, max_len, seed))
        step = math.log10(max_len / 50)
        noise = np.random.default_rng(seed).normal(size=len(users))
        blur = np.where(history < 100, 1.0 + short_blur * step, 2.0 - 0.6 * step)
        jitter = np.where(history < 100, short_jitter, 0.0) * np.random.default_rng([seed, max_len]).normal(size=len(users))
        score = 1 / (1 + np.exp(-(2.0 * labels - 1 + blur * noise + jitter)))
        path = os.path.join(folder, f"{expid}_{max_len}_{seed}.npz")
        write_predictions(path, {"y_pred": score, "y_true": labels, "group": users, "history_length": history})
        row = {"run_id": f"r{len(calls)}", "expid": expid, "dataset_id": params["dataset_id"], "model": params["model"],
               "backbone": params["model"], "lain": False, "seed": seed, "max_len": max_len, "tag": tag or "",
               "predictions_file": path, "test_AUC": roc_auc_score(labels, score)}
        for bucket, rows in (("0-100", history < 100), ("200-inf", history >= 200)):
            row[f"test_AUC@{bucket}"] = roc_auc_score(labels[rows], score[rows])
        append_result(results_file, row)
        return row
    return run_experiment


@pytest.mark.parametrize("short_blur, short_jitter", [(1.5, 0.0), (0.02, 1.0), (0.0, 0.0)])
def test_sweep_observation_has_paired_bootstrap_intervals(tmp_path, short_blur, short_jitter):
    calls = []
    tuner.run_sweep("DIN_synthetic", [100, 1000], [1, 2], backbone_only=True,
                    runner=_trainer_with_predictions(calls, str(tmp_path), short_blur, short_jitter),
                    results_file=str(tmp_path / "sweep.csv"), out=str(tmp_path / "out"))
    markdown = (tmp_path / "out" / "sweep_DIN_synthetic.md").read_text()
    line = next(x for x in markdown.splitlines() if x.startswith("backbone: "))
    short, long = re.findall(r"\(([+-]\d+\.\d\d)% \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]%( \*)?\)", line)
    assert float(long[1]) > 0 and long[3] == " *"                  # long users' AUC rises, significantly
    if short_blur == 1.5:
        assert float(short[2]) < 0 and short[3] == " *"
        assert line.endswith("appears, both changes significant.")
    elif short_jitter:                                              # a fall within the runs' noise
        assert float(short[0]) < 0 < float(short[2]) and short[3] == ""
        assert line.endswith("appears in the seed means, but not significantly (the interval of the short fall "
                             "includes 0).")
    else:                                                           # the same short predictions: no change at all
        assert short[:3] == ("+0.00", "+0.00", "+0.00") and short[3] == ""
        assert line.endswith("does not appear.")
    assert "paired bootstrap interval over test users (1000 replicates" in markdown
    assert f"Runs: `{tmp_path / 'sweep.csv'}`" in markdown                     # outside the zoo: as given


def test_reports_name_files_inside_the_zoo_relative_to_it(tmp_path, monkeypatch):
    from lainctr.paths import zoo_relative
    monkeypatch.setenv("LAINCTR_ZOO_ROOT", str(tmp_path / "zoo"))
    assert zoo_relative(str(tmp_path / "zoo" / "docs" / "demo" / "sweep.csv")) == os.path.join("docs", "demo", "sweep.csv")
    assert zoo_relative(str(tmp_path / "elsewhere.csv")) == str(tmp_path / "elsewhere.csv")


def test_sweep_on_another_dataset_and_its_errors(tmp_path, capsys):
    calls = []
    tuner.run_sweep("TWIN_synthetic", [50], [1], runner=_fake_trainer(calls), dataset_id="synthetic_lengthshift",
                    results_file=str(tmp_path / "s.csv"), out=str(tmp_path))
    assert [c[0] for c in calls] == ["TWIN_synthetic_lengthshift", "TWIN_LAIN_synthetic_lengthshift"]
    params = config_lib.load_config("TWIN_LAIN_synthetic_lengthshift", str(tmp_path / "configs"))
    assert params["dataset_id"] == "synthetic_lengthshift" and params["topk"] == 50
    with pytest.raises(SystemExit):
        tuner.main(["sweep", "--expid", "DIN_synthetic", "--lain_preset", "huge"])
    capsys.readouterr()
    assert tuner.main(["sweep", "--expid", "DIN_synthetc", "--dry-run"]) == 2
    assert "unknown expid 'DIN_synthetc'" in capsys.readouterr().err


def test_ablation_and_grid_take_a_preset(tmp_path):
    log = []
    runner = _fake_ablation_runner(log)
    seen = []

    def recording(expid, overrides=None, **kwargs):
        seen.append(overrides.get("lain_preset"))
        return runner(expid, overrides={k: v for k, v in overrides.items() if k != "lain_preset"}, **kwargs)
    tuner.run_ablation("DIN_LAIN_synthetic_tiny", [1], ["full", "wo_qk"], runner=recording, out=str(tmp_path),
                       results_file=str(tmp_path / "a.csv"), lain_preset="paper")
    assert seen == ["paper", "paper"] and (tmp_path / "ablation_DIN_LAIN_synthetic_tiny_paper.md").exists()
    result = tuner.run_grid(EXAMPLE, out_dir=str(tmp_path / "grid"), dry_run=True, lain_preset="paper")
    assert all(p.block["lain_preset"] == "paper" for p in result["points"])
    grid = tmp_path / "din.yaml"
    grid.write_text(yaml.safe_dump({"base_expid": "DIN_synthetic", "tuner_space": {"learning_rate": [1.e-3]}}))
    with pytest.raises(config_lib.ConfigError, match="--lain_preset needs a _LAIN expid; 'DIN_synthetic' is model DIN"):
        tuner.run_grid(str(grid), out_dir=str(tmp_path / "grid2"), dry_run=True, lain_preset="paper")


def test_study_dry_run_lists_every_run(capsys):
    from lainctr.study import StudyConfig, dry_run, lain_backbones
    lines = dry_run(StudyConfig())
    models = len(lain_backbones())
    assert models >= 7 and {"DIN", "TWIN", "DiffuMIN"} <= set(lain_backbones())
    assert lines[0] == (f"study on synthetic: {models * 15 + 60 + models * 8 * 3} runs "
                        f"({models * 15} grid, 60 sweeps, {models * 8 * 3} ablations)")
    runs = [line for line in lines if line.startswith("  ")]
    grid = [line for line in runs if line.endswith("study/synthetic/results.csv")]
    assert len(grid) == models * 15
    assert sum("DIN_LAIN_synthetic seed=2030 lain_preset=paper" in line for line in grid) == 1
    assert sum(" DIN_synthetic seed=2026 max_len=1000" in " " + line.strip() for line in runs) == 1
    assert sum("tag=ablation:wo_sle" in line for line in runs) == models * 3
    assert all("lain_preset=<better preset>" in line for line in runs if "ablation:" in line)
    assert tuner.main(["study", "--dry-run", "--models", "DIN"]) == 2
    assert "study: sweep backbone(s) ['TWIN'] are not among the study's models ['DIN']" in capsys.readouterr().err
    assert tuner.main(["study", "--dry-run", "--models", "DIN", "--sweep_backbones", "DIN", "--seeds", "1", "--sweep_seeds", "1",
                       "--ablation_seeds", "1", "--max_len", "50", "200"]) == 0
    assert capsys.readouterr().out.startswith("study on synthetic: 15 runs (3 grid, 4 sweeps, 8 ablations)")
    assert tuner.main(["study", "--dry-run", "--models", "DIN", "TWIN", "--ablation_backbones", "TWIN", "--seeds", "1",
                       "--sweep_seeds", "1", "--ablation_seeds", "1", "--max_len", "50", "200"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("study on synthetic: 22 runs (6 grid, 8 sweeps, 8 ablations)")
    ablated = {line.split()[0] for line in listing.splitlines() if "tag=ablation:" in line}
    assert ablated == {"TWIN_LAIN_synthetic"}
    assert tuner.main(["study", "--dry-run", "--models", "DIN", "TWIN", "--ablation_backbones", "SIM"]) == 2
    assert "study: ablation backbone(s) ['SIM'] are not among the study's models ['DIN', 'TWIN']" in capsys.readouterr().err


def test_study_runs_its_stages_and_picks_the_preset_on_validation(tmp_path):
    from lainctr.study import StudyConfig, run_study
    calls = []
    config = StudyConfig(seeds=(1, 2), sweep_seeds=(1,), ablation_seeds=(1,), sweep_max_lens=(50, 200),
                         sweep_backbones=("DIN",), out=str(tmp_path / "docs"), work=str(tmp_path / "work"),
                         models=("DIN",))
    result = run_study(config, runner=_fake_trainer(calls))
    assert result["preset"] == "paper"                                   # +0.3 % vs +0.1 % on validation
    assert len(calls) == 3 * 2 + 4 + 8
    assert {c[3] for c in calls if c[4] and c[4].startswith("ablation:")} == {"paper"}
    assert {c[3] for c in calls[6:10] if c[0].startswith("DIN_LAIN")} == {"paper"}
    docs = tmp_path / "docs"
    assert (docs / "results_demo.csv").exists() and (docs / "sweep_DIN_synthetic_paper.md").exists()
    assert (docs / "ablation_DIN_LAIN_synthetic_paper.md").exists()
    markdown = (docs / "leaderboard.md").read_text()
    assert "DIN_LAIN_synthetic (paper)" in markdown and "No interval for DIN_LAIN_synthetic @200" in markdown
    assert run_study(config, runner=_fake_trainer(calls))["preset"] == "paper" and len(calls) == 18   # all skipped


def test_study_records_its_preset_choice_and_keeps_it_when_continued(tmp_path):
    """Stage 2 chooses once: a continued study (here with a second model) reads preset.json back instead of
    choosing again, so the sweeps and ablations keep one preset; a broken record is a clear error."""
    from lainctr.study import StudyConfig, dry_run, run_study
    calls = []
    base = dict(seeds=(1,), sweep_seeds=(1,), ablation_seeds=(1,), sweep_max_lens=(50,), sweep_backbones=("DIN",),
                out=str(tmp_path / "docs"), work=str(tmp_path / "work"))
    run_study(StudyConfig(**base, models=("DIN",)), runner=_fake_trainer(calls))
    record_file = tmp_path / "work" / "preset.json"
    record = json.loads(record_file.read_text())
    assert record["preset"] == "paper" and record["backbones"] == ["DIN"] and record["valid_auc_gain_pct"]["paper"] > 0
    record_file.write_text(json.dumps({**record, "preset": "lean"}))     # as if lean had been chosen back then
    two = StudyConfig(**base, models=("DIN", "TWIN"))
    assert "2. preset lean, recorded in" in "\n".join(dry_run(two))
    before = len(calls)
    assert run_study(two, runner=_fake_trainer(calls))["preset"] == "lean"
    new = calls[before:]
    assert {c[0] for c in new[:3]} == {"TWIN_synthetic", "TWIN_LAIN_synthetic"}          # TWIN's grid first
    assert {c[3] for c in new[3:] if c[0].endswith("_LAIN_synthetic")} == {"lean"}       # then lean everywhere
    record_file.write_text("{not json")
    with pytest.raises(ConfigError, match="preset.json: not a preset record"):
        run_study(two, runner=_fake_trainer(calls))
    record_file.write_text(json.dumps({"preset": "huge"}))
    with pytest.raises(ConfigError, match="preset 'huge' is not among the study's presets"):
        dry_run(two)
