"""Leaderboard of our runs next to the published numbers, per dataset.

    python -m lainctr.leaderboard --results results/results.csv [more.csv ...] --out reports/
    python -m lainctr.leaderboard report --results results/results.csv --out reports/
    python -m lainctr.leaderboard keep-predictions --results docs/demo/results_x.csv

Per dataset: our runs (mean ± std over seeds, n seeds) beside the LAIN paper's base / +LAIN cells and
LongCTR's backbone at the same max_len (README cell and the validation-selected run; BARS for the ``_x1``
releases); the relative gain of each ``_LAIN`` expid over its backbone in the paper's format
((LAIN - base)/base in %, logloss negative = better), paired over seeds when they match; the same gain
per length bucket, with the 95 % interval of a paired bootstrap over test users from the runs' kept test
predictions (:mod:`lainctr.analysis.bootstrap`; ``--bootstrap N`` replicates, 0 = none; `*` marks an interval
that excludes 0). Datasets without a reference (``synthetic``) show our runs only.

Writes ``leaderboard.md`` (also printed), ``leaderboard_<dataset>.csv`` (wide, numeric) and ``gains.csv``
(long: every metric, overall and per bucket). ``report`` adds PNG plots under ``plots/`` (metric and
attention Gini by length bucket, training curves) and links them from the Markdown. ``keep-predictions``
copies the rows' predictions beside their results file (:func:`lainctr.analysis.predictions.keep_predictions`),
so that the intervals can be recomputed on another machine than the one that made the runs.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from .analysis import aggregate
from .analysis import reference as ref_lib
from .analysis.bootstrap import BootstrapSettings
from .analysis.predictions import keep_predictions
from .atomic import write_atomically, write_text_atomically
from .errors import USER_ERRORS, CommandLineParser
from .metrics import DEFAULT_METRICS

METRICS = DEFAULT_METRICS
METRIC_LABELS = {"gini": "attention Gini", "gini_bucket_var": "variance of bucket-mean Gini"}


# ----- formatting --------------------------------------------------------------------------------
def format_mean_std(mean: float, std: float = math.nan, digits: int = 4) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and not pd.isna(std) else "")


def format_gain(gain: float, std: float = math.nan, digits: int = 2) -> str:
    """``+1.07%`` or ``+1.07 ± 0.30%``."""
    if gain is None or pd.isna(gain):
        return ""
    return f"{gain:+.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and not pd.isna(std) else "") + "%"


def format_interval(low: float, high: float, significant: bool = False, digits: int = 2) -> str:
    """``[+0.05, +0.31]%``, with `` *`` when the interval excludes 0; "" without one."""
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return ""
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]%" + (" *" if significant else "")


def _number(value: float) -> str:
    """4 decimals, or 3 significant digits for small values (variances)."""
    return "" if pd.isna(value) else (f"{value:.4f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], drop_empty: bool = True) -> str:
    """A GitHub Markdown table; columns empty in every row are dropped (the first column never)."""
    cells = [["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in r] for r in rows]
    keep = [i for i in range(len(headers)) if i == 0 or not drop_empty or any(r[i] for r in cells)]
    lines = ["| " + " | ".join(headers[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(r[i].replace("|", "\\|") for i in keep) + " |" for r in cells]
    return "\n".join(lines)


run_label = aggregate.group_label


# ----- tables ------------------------------------------------------------------------------------
def reference_columns(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``summary`` plus numeric reference columns per group: ``paper_{m}`` (the paper's base cell for a
    backbone row, its +LAIN cell for a full LAIN row), ``longctr_{m}`` / ``longctr_valsel_{m}`` (backbone
    rows, same max_len) and ``bars_{m}`` (backbone rows of the ``_x1`` releases)."""
    out = summary.copy()
    for metric in METRICS:
        for prefix in ("paper", "longctr", "longctr_valsel", "bars"):
            out[f"{prefix}_{metric}"] = math.nan
    for index, row in out.iterrows():
        dataset = ref_lib.canonical_dataset(row["dataset_id"])
        if dataset is None:
            continue
        x1 = "x1" in str(row["dataset_id"]).lower() and dataset in ("kuaivideo", "microvideo")
        variant = "base" if not row["lain"] else ("LAIN" if row["variant"] == "full" else None)
        for metric in METRICS:
            if variant:
                out.at[index, f"paper_{metric}"] = ref_lib.paper_value(reference, dataset, row["backbone"],
                                                                       variant, metric)
            if row["lain"]:
                continue
            if x1:
                bars = reference[(reference["source"] == ref_lib.BARS) & (reference["dataset"] == dataset) &
                                 (reference["model"] == row["model"]) & (reference["metric"] == metric)]
                if len(bars):
                    out.at[index, f"bars_{metric}"] = float(bars["number"].iloc[0])
            else:
                out.at[index, f"longctr_{metric}"] = ref_lib.longctr_value(reference, dataset, row["model"],
                                                                           row["max_len"], metric, "readme")
                out.at[index, f"longctr_valsel_{metric}"] = ref_lib.longctr_value(
                    reference, dataset, row["model"], row["max_len"], metric, "valsel")
    return out


def add_paper_gains(gain_table: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``paper_gain_pct``: the paper's relative gain for the same backbone, dataset, metric (and bucket)."""
    out = gain_table.copy()
    values = []
    for _, row in out.iterrows():
        dataset = ref_lib.canonical_dataset(row["dataset_id"])
        if row["metric"] == "gini_bucket_var":
            # "variance reduced by 50.6 %", dataset not stated: shown next to every real dataset
            values.append(ref_lib.paper_statistic(reference, "rel_gain", "gini_bucket_variance")
                          if dataset and not row["bucket"] else math.nan)
        elif row["metric"] == "gini":
            values.append(math.nan)  # the paper gives Gini ranges, not a relative change
        elif row["bucket"]:
            values.append(ref_lib.paper_bucket_gain(reference, dataset, row["backbone"], row["metric"], row["bucket"]))
        else:
            values.append(ref_lib.paper_value(reference, dataset, row["backbone"], "rel_gain", row["metric"]))
    out["paper_gain_pct"] = values
    return out


def build_leaderboard(runs: pd.DataFrame, reference: pd.DataFrame, split: str = "test",
                      intervals: Optional[BootstrapSettings] = None,
                      search_dirs: Sequence[str] = ()) -> Tuple[Dict[str, pd.DataFrame], pd.DataFrame]:
    """(per dataset wide table, long gains table over all datasets); ``intervals``: the paired user bootstrap
    of the gains (:func:`lainctr.analysis.aggregate.gains`)."""
    summary = aggregate.summarize(runs)
    gain_table = add_paper_gains(aggregate.gains(runs, summary, split, intervals=intervals, search_dirs=search_dirs),
                                 reference)
    board = reference_columns(summary, reference)
    board = board.sort_values(["dataset_id", "backbone", "max_len", "lain", "lain_preset", "variant", "expid"],
                              kind="stable")
    return {d: part.reset_index(drop=True) for d, part in board.groupby("dataset_id", sort=True)}, gain_table


def _cell(row: pd.Series, column: str, digits: int = 4) -> str:
    return format_mean_std(row.get(f"{column}_mean", math.nan), row.get(f"{column}_std", math.nan), digits)


def _triple(row: pd.Series, prefix: str) -> str:
    values = [row.get(f"{prefix}_{m}", math.nan) for m in METRICS]
    return "" if all(pd.isna(v) for v in values) else " / ".join("—" if pd.isna(v) else f"{v:.4f}" for v in values)


def render_dataset(dataset_id: str, table: pd.DataFrame, gain_table: pd.DataFrame, split: str = "test",
                   plots: Optional[List[Tuple[str, str]]] = None) -> str:
    canonical = ref_lib.canonical_dataset(dataset_id)
    parts = [f"## {dataset_id}", ""]
    parts.append(f"Reference dataset: **{canonical}**. Paper cells are unverified against the paper PDF; "
                 "LongCTR README cells were picked on test (see reference/README.md)." if canonical else
                 "No published reference for this dataset: our runs only.")
    parts += ["", f"### Overall ({split}; mean ± std over seeds)", ""]
    headers = ["run", "model", "max_len", "n", *METRICS]
    if canonical:
        headers += ["paper AUC / gAUC / logloss", "LongCTR README @max_len", "LongCTR val-selected @max_len",
                    "BARS x1"]
    rows = []
    for _, row in table.iterrows():
        cells = [run_label(row), row["model"], row["max_len"], row["n"], *[_cell(row, f"{split}_{m}") for m in METRICS]]
        if canonical:
            cells += [_triple(row, "paper"), _triple(row, "longctr"), _triple(row, "longctr_valsel"),
                      _triple(row, "bars")]
        rows.append(cells)
    parts.append(markdown_table(headers, rows))

    gains_here = gain_table[gain_table["dataset_id"] == dataset_id]
    overall = gains_here[gains_here["bucket"] == ""]
    overall = overall.assign(_o=overall["metric"].map(
        {m: i for i, m in enumerate(aggregate.GAIN_METRICS)})).sort_values(["lain_expid", "lain_preset", "max_len", "_o"])
    if not overall.empty:
        parts += ["", f"### Relative gain of LAIN over its backbone ({split}, (LAIN − base)/base; "
                  "logloss: negative = better)", ""]
        rows = [[g["backbone"], _lain_label(g), g["base_expid"], g["max_len"],
                 METRIC_LABELS.get(g["metric"], g["metric"]), _number(g["base_mean"]), _number(g["lain_mean"]),
                 format_gain(g["gain_pct"], g["gain_pct_std"]), format_interval(g["ci_low"], g["ci_high"], g["significant"]),
                 f"{'paired' if g['paired'] else 'unpaired'}, n={g['n']}", format_gain(g["paper_gain_pct"])]
                for _, g in overall.iterrows()]
        parts.append(markdown_table(["backbone", "LAIN run", "base run", "max_len", "metric", "base", "LAIN",
                                     "gain (ours)", "95 % CI", "seeds", "gain (paper)"], rows))
    bucketed = gains_here[gains_here["bucket"] != ""]
    if not bucketed.empty:
        parts += ["", f"### Gain per length bucket ({split}; [95 % CI])", ""]
        rows = []
        keys = bucketed[["lain_expid", "lain_preset", "max_len", "bucket"]].drop_duplicates()
        keys = keys.assign(_o=keys["bucket"].map(aggregate.bucket_order)).sort_values(
            ["lain_expid", "lain_preset", "max_len", "_o"])
        for _, key in keys.iterrows():
            part = bucketed[(bucketed["lain_expid"] == key["lain_expid"]) & (bucketed["lain_preset"] == key["lain_preset"])
                            & (bucketed["max_len"] == key["max_len"]) & (bucketed["bucket"] == key["bucket"])]
            part = part.set_index("metric")
            first = part.iloc[0]
            share = _bucket_share(table, first["lain_expid"], first["max_len"], key["bucket"], split)
            cells = [first["backbone"], _lain_label(first), first["max_len"], key["bucket"], share]
            for metric in (*METRICS, "gini"):
                cells.append(_gain_with_interval(part.loc[metric]) if metric in part.index else "")
            cells += [format_gain(part.at[m, "paper_gain_pct"]) if m in part.index else "" for m in ("AUC", "logloss")]
            rows.append(cells)
        parts.append(markdown_table(["backbone", "LAIN run", "max_len", "bucket", "sample share", "AUC gain",
                                     "gAUC gain", "logloss gain", "Gini change", "paper AUC gain",
                                     "paper logloss gain"], rows))
    parts += _interval_notes(gains_here)
    for metric, title in (("AUC", f"{split} AUC per length bucket"), ("gini", "long-branch attention Gini per bucket")):
        buckets = aggregate.bucket_table(table, metric, split)
        columns = [c for c in buckets.columns if c.endswith("_mean")]
        if not columns or buckets[columns].isna().all().all():
            continue
        parts += ["", f"### {title}", ""]
        if metric == "gini" and canonical:
            parts += [_paper_gini_line(), ""]
        labels = [aggregate.metric_parts(c[:-5])[2] for c in columns]
        rows = [[run_label(row), row["max_len"], row["n"], *[format_mean_std(row[c], row[c[:-5] + "_std"])
                                                             for c in columns]] for _, row in buckets.iterrows()]
        headers = ["run", "max_len", "n", *labels]
        if metric == "gini":  # overall mean and the spec's A14 variance of the bucket means
            headers += ["all", "variance of bucket means"]
            rows = [r + [_cell(row, f"{split}_gini"), _cell(row, f"{split}_gini_bucket_var", 6)]
                    for r, (_, row) in zip(rows, table.loc[buckets.index].iterrows())]
        parts.append(markdown_table(headers, rows))
    length = _length_table(table, split, canonical)
    if length:
        parts += ["", length]
    if plots:
        parts += ["", "### Plots", ""] + [f"![{title}]({path})" for title, path in plots]
    return "\n".join(parts) + "\n"


def _lain_label(gain: pd.Series) -> str:
    return aggregate.group_label(pd.Series({"expid": gain["lain_expid"], "lain_preset": gain["lain_preset"]}))


def _gain_with_interval(gain: pd.Series) -> str:
    text = format_gain(gain["gain_pct"], gain["gain_pct_std"])
    interval = format_interval(gain["ci_low"], gain["ci_high"], gain["significant"])
    return f"{text} {interval}" if text and interval else text


def _interval_notes(gains_here: pd.DataFrame) -> List[str]:
    """The legend of the intervals and, per LAIN run without them, why."""
    if gains_here.empty or gains_here["ci_low"].isna().all() and not (gains_here["ci_note"] != "").any():
        return []
    lines = ["", "Intervals: 95 % paired bootstrap over test users (both models' predictions of the resampled users "
             "together, per-seed gains averaged over seeds within each replicate; README, Leaderboard); "
             "`*` = the interval excludes 0."]
    notes = gains_here[gains_here["ci_note"] != ""][["lain_expid", "lain_preset", "max_len", "ci_note"]].drop_duplicates()
    for _, note in notes.iterrows():
        lines.append(f"No interval for {_lain_label(note)} @{note['max_len']}: {note['ci_note']}.")
    return lines


def _length_table(table: pd.DataFrame, split: str, canonical: Optional[str]) -> str:
    """The split's length buckets (a data property: taken from the first run that recorded them)."""
    parsed = [aggregate.parse_metric_column(c[:-5]) for c in table.columns if c.endswith("_mean")]
    buckets = sorted({p[2] for p in parsed if p and p[0] == split and p[1] in ("samples", "sample_share") and p[2]},
                     key=aggregate.bucket_order)
    if not buckets:
        return ""
    row = table.iloc[0]
    total = sum(row.get(f"{split}_samples@{b}_mean", math.nan) for b in buckets)
    rows = []
    for bucket in buckets:
        value = {k: row.get(f"{split}_{k}@{bucket}_mean", math.nan)
                 for k in ("samples", "sample_share", "users", "user_share", "ctr")}
        if pd.isna(value["sample_share"]) and total and not pd.isna(total):  # runs without the share columns
            value["sample_share"] = value["samples"] / total
        rows.append([bucket, "" if pd.isna(value["samples"]) else int(value["samples"]),
                     "" if pd.isna(value["sample_share"]) else f"{100 * value['sample_share']:.1f}%",
                     "" if pd.isna(value["users"]) else int(value["users"]),
                     "" if pd.isna(value["user_share"]) else f"{100 * value['user_share']:.1f}%",
                     "" if pd.isna(value["ctr"]) else f"{100 * value['ctr']:.2f}%"])
    text = [f"### Length buckets of the {split} split (from {run_label(row)})", "",
            "Samples by their own history length; user share: users bucketed by their longest history in the "
            "split; users: users with a sample in the bucket.", ""]
    if canonical:
        text += ["Paper (training split, dataset not stated; unverified): users < 100 are 57 % of users and 14.3 % "
                 "of samples, users > 200 are 25 % and 68 %; CTR 8.28 % (short) vs 9.41 % (long).", ""]
    return "\n".join(text + [markdown_table(["bucket", "samples", "sample share", "users", "user share", "CTR"], rows)])


def _paper_gini_line() -> str:
    reference = ref_lib.load_reference()
    value = {(v, m): ref_lib.paper_statistic(reference, v, m) for v in ("base", "LAIN")
             for m in ("attention_gini_min", "attention_gini_max")}
    return (f"Paper (dataset not stated; unverified): baselines {value['base', 'attention_gini_min']:.3f}–"
            f"{value['base', 'attention_gini_max']:.3f}, with LAIN {value['LAIN', 'attention_gini_min']:.3f}–"
            f"{value['LAIN', 'attention_gini_max']:.3f}; variance of the bucket means "
            f"{ref_lib.paper_statistic(reference, 'rel_gain', 'gini_bucket_variance'):+.1f}% (spec A14 reading).")


def _bucket_share(table: pd.DataFrame, expid: str, max_len, bucket: str, split: str) -> str:
    row = table[(table["expid"] == expid) & (table["max_len"] == max_len)]
    if row.empty:
        return ""
    row = row.iloc[0]
    samples = [c for c in row.index if c.startswith(f"{split}_samples@") and c.endswith("_mean")]
    total = sum(row[c] for c in samples if not pd.isna(row[c]))
    mine = row.get(f"{split}_samples@{bucket}_mean", math.nan)
    return f"{100 * mine / total:.1f}%" if total and not pd.isna(mine) else ""


def render(boards: Dict[str, pd.DataFrame], gain_table: pd.DataFrame, split: str = "test",
           plots: Optional[Dict[str, List[Tuple[str, str]]]] = None, sources: Sequence[str] = ()) -> str:
    head = ["# Leaderboard", ""]
    if sources:
        head += ["Results: " + ", ".join(f"`{s}`" for s in sources), ""]
    if not boards:
        head.append("(no runs)")
    return "\n".join(head) + "\n" + "\n".join(render_dataset(d, t, gain_table, split, (plots or {}).get(d))
                                              for d, t in boards.items())


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def headline_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the plain expids only (backbones and full LAIN models): ablation variants and other tagged
    runs have their own tables and would crowd the plots."""
    return frame[frame["variant"].isin(["", "full"])]


def make_plots(runs: pd.DataFrame, boards: Dict[str, pd.DataFrame], out: str, split: str = "test",
               search_dirs: Sequence[str] = ()) -> Dict[str, List[Tuple[str, str]]]:
    """Write the PNGs of every dataset under ``out/plots`` (plain expids only, see :func:`headline_runs`);
    returns ``{dataset: [(title, relative path)]}``."""
    from .analysis import plots as plot_lib

    made: Dict[str, List[Tuple[str, str]]] = {}
    runs = headline_runs(runs)
    for dataset_id, table in boards.items():
        table = headline_runs(table)
        slug = _slug(dataset_id)
        entries = []
        for metric, name, title in (("AUC", "bucket_auc", f"{dataset_id}: {split} AUC by length bucket"),
                                    ("gini", "bucket_gini", f"{dataset_id}: attention Gini by length bucket")):
            path = os.path.join(out, "plots", f"{slug}_{name}.png")
            if plot_lib.plot_bucket_bars(table, path, metric, split, title):
                entries.append((title, os.path.relpath(path, out)))
        curves = aggregate.history_curves(runs[runs["dataset_id"] == dataset_id], search_dirs)
        path = os.path.join(out, "plots", f"{slug}_training.png")
        if plot_lib.plot_training_curves(curves, path, f"{dataset_id}: training curves"):
            entries.append((f"{dataset_id}: training curves", os.path.relpath(path, out)))
        made[dataset_id] = entries
    return made


def write_leaderboard(results: Sequence[str], out: str, report: bool = False, split: str = "test",
                      reference_path: Optional[str] = None, latest_per_seed: bool = True,
                      intervals: Optional[BootstrapSettings] = BootstrapSettings()) -> Tuple[str, List[str]]:
    """Build, write and return (markdown, written files); ``intervals`` None: no bootstrap."""
    from .paths import zoo_root
    runs = aggregate.load_results(results, latest_per_seed)
    reference = ref_lib.load_reference(reference_path)
    search = [os.path.dirname(os.path.abspath(r)) for r in results] + [zoo_root()]
    boards, gain_table = build_leaderboard(runs, reference, split, intervals, search)
    os.makedirs(out, exist_ok=True)
    written = []
    plots = None
    if report:
        plots = make_plots(runs, boards, out, split, search)
        written += [os.path.join(out, p) for entries in plots.values() for _, p in entries]
    tables = {f"leaderboard_{_slug(dataset_id)}.csv": table for dataset_id, table in boards.items()}
    for name, frame in {**tables, "gains.csv": gain_table}.items():
        path = os.path.join(out, name)
        write_atomically(path, functools.partial(frame.to_csv, index=False))
        written.append(path)
    markdown = render(boards, gain_table, split, plots, results)
    path = os.path.join(out, "leaderboard.md")
    write_text_atomically(path, markdown)
    written.append(path)
    return markdown, written


def keep_predictions_main(argv: Sequence[str]) -> int:
    """``python -m lainctr.leaderboard keep-predictions --results R.csv ...``"""
    parser = CommandLineParser(prog="python -m lainctr.leaderboard keep-predictions",
                               description="Copy every row's test predictions beside its results file "
                                           "(<folder>/predictions/<run_id>.npz), where the leaderboard's "
                                           "paired intervals find them on any machine.")
    parser.add_argument("--results", nargs="+", required=True, help="results CSV file(s)")
    args = parser.parse_args(argv)
    try:
        for results_file in args.results:
            written, notes = keep_predictions(results_file)
            print(f"{results_file}: kept {len(written)} new predictions file(s)")
            for note in notes:
                print(f"  not kept: {note}", file=sys.stderr)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "keep-predictions":
        return keep_predictions_main(argv[1:])
    report = bool(argv) and argv[0] == "report"
    if report:
        argv = argv[1:]
    parser = CommandLineParser(prog="python -m lainctr.leaderboard" + (" report" if report else ""),
                               description=__doc__)
    parser.add_argument("--results", nargs="+", default=["results/results.csv"],
                        help="results CSV file(s) that run_expid.py appended to (default results/results.csv)")
    parser.add_argument("--out", default="reports",
                        help="output folder: leaderboard.md, leaderboard_<dataset>.csv, gains.csv (report: plots/)")
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--reference", default=None, help="reference CSV (default reference/published_results.csv)")
    parser.add_argument("--all-runs", action="store_true",
                        help="keep re-runs of the same seed (default: the latest run per seed)")
    parser.add_argument("--bootstrap", type=int, default=BootstrapSettings.replicates,
                        help="replicates of the paired user bootstrap of every gain (0: no intervals)")
    parser.add_argument("--bootstrap_seed", type=int, default=BootstrapSettings.seed)
    args = parser.parse_args(argv)
    intervals = BootstrapSettings(args.bootstrap, args.bootstrap_seed) if args.bootstrap > 0 else None
    try:
        markdown, written = write_leaderboard(args.results, args.out, report, args.split, args.reference,
                                              not args.all_runs, intervals)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown)
    print("wrote: " + ", ".join(written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
