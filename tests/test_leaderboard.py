"""Leaderboard aggregation on a hand-made results file, and the reference table's cells."""
import csv
import os
import subprocess
import sys

import pandas as pd
import pytest

from lainctr import leaderboard
from lainctr.analysis import aggregate, reference

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "results_small.csv")
REFERENCE_DOC = os.path.join(HERE, "..", "..", "shared", "docs", "REFERENCE_RESULTS.md")


@pytest.fixture(scope="module")
def runs():
    return aggregate.load_results([FIXTURE])


@pytest.fixture(scope="module")
def ref():
    return reference.load_reference()


def _group(summary, expid, variant=None):
    rows = summary[summary["expid"] == expid]
    if variant is not None:
        rows = rows[rows["variant"] == variant]
    assert len(rows) == 1
    return rows.iloc[0]


# ----- aggregation ------------------------------------------------------------------------------
def test_latest_run_per_seed_and_variants(runs):
    din = runs[runs["expid"] == "DIN_synthetic"]
    assert sorted(din["seed"]) == [2026, 2027, 2028]
    assert "stale" not in set(din["run_id"])                    # older re-run of seed 2026 dropped
    assert set(runs[runs["expid"] == "DIN_LAIN_synthetic"]["variant"]) == {"full", "wo_prompts"}
    assert set(din["variant"]) == {""}
    everything = aggregate.load_results([FIXTURE], latest_per_seed=False)
    assert len(everything) == len(runs) + 1


def test_tagged_runs_are_their_own_variant():
    assert aggregate.variant_of("ablation:wo_sle", "{}", True) == "wo_sle"
    assert aggregate.variant_of("", '{"use_temperature": false}', True) == "wo_temperature"
    assert aggregate.variant_of("softmax_off", "{}", False) == "softmax_off"
    assert aggregate.variant_of("", "{}", False) == ""


def test_plots_show_only_the_plain_expids(runs):
    """Ablation variants have their own tables; in the bar and curve plots they would bury the comparison."""
    summary = aggregate.summarize(runs)
    for frame in (runs, summary):
        kept = leaderboard.headline_runs(frame)
        assert set(kept["variant"]) == {"", "full"}
        assert len(frame) > len(kept) and "wo_prompts" in set(frame["variant"])


def test_mean_and_std_over_seeds(runs):
    summary = aggregate.summarize(runs)
    base = _group(summary, "DIN_synthetic")
    assert base["n"] == 3 and base["seeds"] == "2026 2027 2028"
    assert base["test_AUC_mean"] == pytest.approx(0.71)
    assert base["test_AUC_std"] == pytest.approx(0.01)          # sample std of 0.70, 0.72, 0.71
    assert base["test_logloss_mean"] == pytest.approx(0.49)
    assert base["test_AUC@100-inf_mean"] == pytest.approx(0.76)
    lain = _group(summary, "DIN_LAIN_synthetic", "full")
    assert lain["n"] == 3                                         # the ablation row is its own group
    assert lain["test_AUC_mean"] == pytest.approx((0.714 + 0.7272 + 0.7171) / 3)
    ablated = _group(summary, "DIN_LAIN_synthetic", "wo_prompts")
    assert ablated["n"] == 1 and pd.isna(ablated["test_AUC_std"])


def test_paired_relative_gains(runs):
    gains = aggregate.gains(runs)
    synthetic = gains[gains["dataset_id"] == "synthetic"].set_index(["metric", "bucket"])
    auc = synthetic.loc[("AUC", "")]
    # per-seed gains +2 %, +1 %, +1 % -> mean 4/3, sample std 0.57735
    assert auc["paired"] and auc["n"] == 3
    assert auc["gain_pct"] == pytest.approx(4 / 3)
    assert auc["gain_pct_std"] == pytest.approx(0.5773503, rel=1e-6)
    assert synthetic.loc[("logloss", ""), "gain_pct"] == pytest.approx(-2.0)    # negative = better
    assert synthetic.loc[("gAUC", ""), "gain_pct"] == pytest.approx(1.0)
    assert synthetic.loc[("AUC", "0-100"), "gain_pct"] == pytest.approx(1.0)
    assert synthetic.loc[("AUC", "100-inf"), "gain_pct"] == pytest.approx(2 / 3)
    assert synthetic.loc[("logloss", "0-100"), "gain_pct"] == pytest.approx(-2.0)
    assert set(synthetic["base_expid"]) == {"DIN_synthetic"}


def test_unpaired_gain_when_seeds_differ(runs):
    gains = aggregate.gains(runs)
    twin = gains[gains["dataset_id"] == "kuaivideo_x2"].set_index("metric")
    assert not twin.loc["AUC", "paired"] and twin.loc["AUC", "n"] == 1
    assert twin.loc["AUC", "gain_pct"] == pytest.approx(1.0)      # 0.6969 vs 0.69
    assert pd.isna(twin.loc["AUC", "gain_pct_std"])
    assert aggregate.relative_gain(0.4514, 0.456) == pytest.approx(-1.0087719, rel=1e-6)


def test_bucket_table(runs):
    table = aggregate.bucket_table(aggregate.summarize(runs), "AUC")
    assert [c for c in table.columns if c.endswith("_mean")] == ["test_AUC@0-100_mean", "test_AUC@100-inf_mean"]
    assert _group(table, "DIN_synthetic")["test_AUC@0-100_mean"] == pytest.approx(0.61)


def test_reference_columns_and_paper_gains(runs, ref):
    boards, gains = leaderboard.build_leaderboard(runs, ref)
    assert set(boards) == {"synthetic", "kuaivideo_x2"}
    twin = boards["kuaivideo_x2"].set_index("expid")
    assert twin.at["TWIN_kuaivideo_x2", "paper_AUC"] == pytest.approx(0.6918)
    assert twin.at["TWIN_LAIN_kuaivideo_x2", "paper_AUC"] == pytest.approx(0.6976)
    assert twin.at["TWIN_kuaivideo_x2", "longctr_AUC"] == pytest.approx(0.6909)        # README 69.09 @100
    assert twin.at["TWIN_kuaivideo_x2", "longctr_gAUC"] == pytest.approx(0.6686)
    assert twin.at["TWIN_kuaivideo_x2", "longctr_logloss"] == pytest.approx(0.4552)    # doc §3.1
    assert twin.at["TWIN_kuaivideo_x2", "longctr_valsel_AUC"] == pytest.approx(0.6927)  # doc §3.2
    assert pd.isna(twin.at["TWIN_LAIN_kuaivideo_x2", "longctr_AUC"])
    assert boards["synthetic"]["paper_AUC"].isna().all()
    paper = gains[gains["dataset_id"] == "kuaivideo_x2"].set_index("metric")["paper_gain_pct"]
    assert paper["AUC"] == pytest.approx(0.84) and paper["logloss"] == pytest.approx(-0.48)


def test_markdown_and_files(tmp_path):
    assert leaderboard.main(["--results", FIXTURE, "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| DIN_LAIN_synthetic | DIN_LAIN | 200 | 3 | 0.7194 ± 0.0069 |" in markdown
    assert "DIN_LAIN_synthetic [wo_prompts]" in markdown
    assert "+1.33 ± 0.58%" in markdown and "paired, n=3" in markdown
    synthetic = markdown.split("## synthetic")[1]
    assert "paper" not in synthetic and "LongCTR" not in synthetic     # no reference for our synthetic data
    assert "0.6918 / 0.6729 / 0.4530" in markdown.split("## synthetic")[0]
    assert "| 0-100 | 300 | 30.0% | 60 |" in synthetic                   # the split's length buckets
    table = pd.read_csv(tmp_path / "leaderboard_synthetic.csv")
    assert set(table["expid"]) == {"DIN_synthetic", "DIN_LAIN_synthetic"}
    assert not (tmp_path / "plots").exists()                           # plots only with `report`


def test_missing_results_file_is_an_error(tmp_path, capsys):
    assert leaderboard.main(["--results", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- the reference table ----------------------------------------------------------------------
def _cell(ref, **where):
    rows = ref
    for key, value in where.items():
        rows = rows[rows[key] == str(value)]
    assert len(rows) == 1, where
    return rows.iloc[0]["value"]


def test_reference_cells(ref):
    main = dict(source="LAIN paper", source_detail=reference.MAIN_TABLE)
    assert _cell(ref, **main, dataset="ebnerd", model="DIN", variant="base", metric="gAUC") == "0.7053"
    assert _cell(ref, **main, dataset="microvideo", model="TWIN", variant="LAIN", metric="AUC") == "0.7233"
    assert _cell(ref, **main, dataset="ebnerd", model="DIEN", variant="rel_gain", metric="logloss") == "-2.25"
    assert _cell(ref, **main, dataset="kuaivideo", model="SDIM", variant="LAIN", metric="logloss") == "0.4525"
    readme = dict(source="LongCTR", source_detail=reference.LONGCTR_README)
    assert _cell(ref, **readme, dataset="microvideo", model="DIEN", max_len=1000, metric="AUC") == "72.20"
    assert _cell(ref, **readme, dataset="kuaivideo", model="SDIM", max_len=1000, metric="gAUC") == "67.40"
    assert _cell(ref, **readme, dataset="ebnerd", model="MIRRN", max_len=50, metric="AUC") == "69.46"
    valsel = dict(source="LongCTR", source_detail=reference.LONGCTR_VALSEL)
    assert _cell(ref, **valsel, dataset="ebnerd", model="TWIN", max_len=500, metric="logloss") == "0.2705"
    assert _cell(ref, source="BARS", dataset="kuaivideo", model="DIN", metric="AUC") == "0.749537"
    assert _cell(ref, source="BARS", dataset="microvideo", model="DIEN", metric="logloss") == "0.412213"
    assert _cell(ref, source_detail=reference.ABLATION_TABLE, variant="ablation:wo_qk", metric="AUC") == "0.7195"
    assert _cell(ref, source_detail=reference.BUCKET_TABLE, metric="AUC@200-inf") == "+1.58"
    counts = ref.groupby("source_detail").size()
    assert counts[reference.MAIN_TABLE] == 5 * 3 * 3 * 3          # 5 backbones x (base, LAIN, gain) x 9 cells
    assert counts[reference.LONGCTR_README] == 3 * 10 * 2 * 5      # datasets x models x metrics x max_len
    assert set(ref["provenance"]) == {"exact (repo)", "unverified against the paper PDF", "derived"}
    assert set(ref["dataset"]) - {""} == {"ebnerd", "kuaivideo", "microvideo"}


def test_lookups(ref):
    assert reference.canonical_dataset("MicroVideo1.7M_x2") == "microvideo"
    assert reference.canonical_dataset("Ebnerd_small_x1") == "ebnerd"
    assert reference.canonical_dataset("synthetic_tiny") is None
    assert reference.longctr_value(ref, "microvideo", "TWIN", 100, "logloss") != reference.longctr_value(
        ref, "microvideo", "TWIN", 500, "logloss")
    assert pd.isna(reference.longctr_value(ref, "microvideo", "TWIN", 100, "logloss"))   # "—" in doc §3.1
    assert pd.isna(reference.longctr_value(ref, "microvideo", "DIN", 300, "AUC"))
    ablation = reference.paper_ablation(ref)
    assert ablation.loc["wo_lma", "logloss"] == pytest.approx(0.4157)


def test_every_paper_gain_recomputes_within_rounding(ref):
    main = ref[ref["source_detail"] == reference.MAIN_TABLE]
    cells = main.pivot_table(index=["dataset", "model", "metric"], columns="variant", values="value",
                             aggfunc="first")
    assert len(cells) == 45
    for (dataset, model, metric), row in cells.iterrows():
        base, lain, published = float(row["base"]), float(row["LAIN"]), float(row["rel_gain"])
        # the 4-decimal cells are rounded (±0.00005 each), the gain to 2 decimals (±0.005)
        bounds = [(lain + dl - (base + db)) / (base + db) * 100 for dl in (-5e-5, 5e-5) for db in (-5e-5, 5e-5)]
        assert min(bounds) - 0.005 <= published <= max(bounds) + 0.005, (dataset, model, metric)


@pytest.mark.skipif(not os.path.exists(REFERENCE_DOC), reason="shared/docs/REFERENCE_RESULTS.md not present")
def test_reference_csv_is_regenerated_from_the_document(tmp_path):
    script = os.path.join(HERE, "..", "reference", "build_published_results.py")
    out = tmp_path / "published.csv"
    subprocess.run([sys.executable, script, "--doc", REFERENCE_DOC, "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == open(reference.reference_file(), "rb").read()


def test_unreadable_metric_is_named_and_not_counted_as_a_seed(tmp_path, caplog):
    with open(FIXTURE, newline="") as fd:
        rows = list(csv.reader(fd))
    rows[2][rows[0].index("test_AUC")] = "abc"                       # b2027, a DIN_synthetic seed, line 3
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as fd:
        csv.writer(fd).writerows(rows)
    runs = aggregate.load_results([str(path)])
    assert "b2027" not in set(runs["run_id"])
    din = _group(aggregate.summarize(runs), "DIN_synthetic")
    assert din["n"] == _group(aggregate.summarize(aggregate.load_results([FIXTURE])), "DIN_synthetic")["n"] - 1
    assert f"{path} line 3 (run_id 'b2027', expid 'DIN_synthetic'): test_AUC='abc' not a number; row left out" \
        in caplog.text


def test_malformed_results_line_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "results.csv"
    path.write_text(open(FIXTURE).read() + "x,y\n")
    assert leaderboard.main(["--results", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: line 12: 2 fields, the header has 25; repair or remove that line\n"


def test_online_figures_are_marked_not_comparable_offline():
    rows = list(csv.DictReader(open(os.path.join(HERE, "..", "reference", "online_results.csv"))))
    assert {row["model"] for row in rows} == {"SparseCTR", "DiffuMIN"}
    assert all(row["comparable_offline"] == "no" and float(row["value"]) > 0 for row in rows)
