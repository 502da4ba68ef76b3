"""Aggregation of results files: runs -> per-expid mean/std over seeds -> LAIN-vs-backbone gains.

Group key of a run: (dataset_id, expid, model, backbone, lain, lain_preset, variant, max_len). ``variant`` is
the results file's ``tag`` column when present, else for LAIN models the ablation variant inferred from the
run's params (``full`` for the default switches), else "" — so ablation runs written to the main results
file never mix with the full model, and only untagged backbone runs serve as the base of a gain.
``lain_preset`` is a LAIN run's size preset (``lean`` when its params name none), "" for a backbone: a
``paper`` run of an expid is its own group, paired with the same backbone.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..lain_presets import DEFAULT_PRESET
from ..paths import find_file
from ..results import read_table
from ..run_plan import preset_of
from .ablation import infer_variant
from .bootstrap import BOOTSTRAP_METRICS, BootstrapSettings, paired_intervals
from .predictions import RUN_ID, kept_predictions_path, read_predictions
from .stats import mean_std

GROUP_KEYS = ["dataset_id", "expid", "model", "backbone", "lain", "lain_preset", "variant", "max_len"]
METRIC_COLUMN = re.compile(r"^(valid|test)_([A-Za-z_]+?)(?:@(\d+-(?:\d+|inf)))?$")
GAIN_METRICS = ("AUC", "gAUC", "logloss", "gini", "gini_bucket_var")
COUNT_METRICS = ("samples", "users")


def parse_metric_column(column: str) -> Optional[Tuple[str, str, str]]:
    """``test_AUC@0-100`` -> ("test", "AUC", "0-100"); ``valid_logloss`` -> ("valid", "logloss", "")."""
    match = METRIC_COLUMN.match(column)
    return (match.group(1), match.group(2), match.group(3) or "") if match else None


def metric_parts(column: str) -> Tuple[str, str, str]:
    """(split, metric, bucket) of a column known to be a metric column (see :func:`parse_metric_column`)."""
    parts = parse_metric_column(column)
    if parts is None:
        raise ValueError(f"'{column}' is not a metric column")
    return parts


def bucket_order(bucket: str) -> float:
    return float(bucket.split("-")[0]) if bucket else -1.0


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def variant_of(tag: str, params: str, lain: bool) -> str:
    """``ablation:wo_sle`` -> ``wo_sle``; another tag as is; untagged LAIN rows from their switches."""
    if tag:
        return tag.split(":", 1)[1] if tag.startswith("ablation:") else tag
    return infer_variant(params or "{}") if lain else ""


def load_results(paths: Sequence[str], latest_per_seed: bool = True) -> pd.DataFrame:
    """All rows of the results CSVs, metrics as floats, plus ``variant``, ``source_file`` and ``source_line``.

    A run_id seen twice is kept once. A row with a metric, seed or max_len cell that is not a number is left
    out with a warning naming file, line, run_id and expid (it must not count as a seed). With
    ``latest_per_seed``, a seed re-run under the same group keeps only its latest row, so ``n`` counts
    seeds, not re-runs.

    Raises:
        FileNotFoundError: a results file does not exist.
        InputFileError: a results file has a malformed line (see :func:`lainctr.results.read_table`).
    """
    frames = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"results file {path} does not exist")
        table = read_table(path)
        if table.columns:
            frames.append(pd.DataFrame(table.rows, columns=table.columns, dtype=str)
                          .assign(source_file=os.path.abspath(path), source_line=table.lines))
    if not frames:
        return pd.DataFrame(columns=GROUP_KEYS + ["seed"])
    runs = pd.concat(frames, ignore_index=True, sort=False).fillna("")
    if "run_id" in runs:
        runs = runs[~(runs["run_id"].duplicated() & (runs["run_id"] != ""))]
    runs = _drop_unreadable(runs, [c for c in runs.columns if parse_metric_column(c)] +
                            [c for c in ("seed", "max_len") if c in runs])
    for column in runs.columns:
        if parse_metric_column(column):
            runs[column] = pd.to_numeric(runs[column].replace("", np.nan), errors="coerce")
    runs["lain"] = runs["lain"].map(_truthy) if "lain" in runs else False
    for column in ("seed", "max_len"):
        runs[column] = pd.to_numeric(runs.get(column, pd.Series(dtype=str)), errors="coerce").astype("Int64")
    if "backbone" not in runs:
        runs["backbone"] = runs["model"].str.replace("_LAIN", "", regex=False)
    tags = runs["tag"] if "tag" in runs else pd.Series([""] * len(runs), index=runs.index)
    params = runs["params"] if "params" in runs else pd.Series(["{}"] * len(runs), index=runs.index)
    runs["variant"] = [variant_of(tag, p, lain) for tag, p, lain in zip(tags, params, runs["lain"])]
    runs["lain_preset"] = [preset_of(model, json.loads(p or "{}")) if lain else ""
                           for model, p, lain in zip(runs["model"], params, runs["lain"])]
    if latest_per_seed and len(runs):
        order = runs["timestamp"] if "timestamp" in runs else pd.Series(range(len(runs)), index=runs.index)
        runs = (runs.assign(_order=order).sort_values("_order", kind="stable")
                .drop_duplicates(GROUP_KEYS + ["seed"], keep="last").drop(columns="_order"))
    return runs.reset_index(drop=True)


def _unreadable(text: pd.Series) -> pd.Series:
    """True where a cell holds text that is not a number (empty cells and ``nan`` are missing values)."""
    stripped = text.str.strip()
    return pd.to_numeric(stripped.replace("", np.nan), errors="coerce").isna() & \
        (stripped != "") & (stripped.str.lower() != "nan")


def _drop_unreadable(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``runs`` without the rows that have an unreadable cell in ``columns``; one warning per such row."""
    bad = pd.DataFrame({c: _unreadable(runs[c]) for c in columns}, index=runs.index)
    for index in bad.index[bad.any(axis=1)]:
        row = runs.loc[index]
        cells = ", ".join(f"{c}={row[c]!r}" for c in bad.columns[bad.loc[index]])
        logging.warning("%s line %s (run_id %r, expid %r): %s not a number; row left out", row["source_file"],
                        row["source_line"], row.get("run_id", ""), row.get("expid", ""), cells)
    return runs[~bad.any(axis=1)]


def metric_columns(runs: pd.DataFrame, split: Optional[str] = None) -> List[str]:
    """Metric columns present in ``runs`` (optionally of one split), overall first, then per bucket."""
    found = [c for c in runs.columns if parse_metric_column(c) and (split is None or c.startswith(split + "_"))]
    return sorted(found, key=lambda c: (metric_parts(c)[0] != "valid", bucket_order(metric_parts(c)[2]),
                                        found.index(c)))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group: the keys, ``n`` (seeds), ``seeds``, ``n_runs`` and ``{column}_mean`` /
    ``{column}_std`` (sample std, NaN for one seed) of every metric column."""
    columns = metric_columns(runs)
    rows = []
    for key, part in runs.groupby(GROUP_KEYS, dropna=False, sort=True):
        row = dict(zip(GROUP_KEYS, key))
        seeds = sorted(int(s) for s in part["seed"].dropna().unique())
        row.update(n=len(seeds) or len(part), seeds=" ".join(map(str, seeds)), n_runs=len(part))
        for column in columns:
            row[f"{column}_mean"] = float(part[column].mean()) if part[column].notna().any() else math.nan
            row[f"{column}_std"] = mean_std(part[column])[1]
        rows.append(row)
    return pd.DataFrame(rows, columns=GROUP_KEYS + ["n", "seeds", "n_runs"] +
                        [f"{c}_{s}" for c in columns for s in ("mean", "std")])


def group_label(row: pd.Series) -> str:
    """``expid``, `` (<preset>)`` for a LAIN size preset other than the default, `` [<variant>]`` for a
    tagged or ablation group."""
    label = str(row["expid"])
    preset = row.get("lain_preset", "")
    if preset not in ("", DEFAULT_PRESET, None) and not pd.isna(preset):
        label += f" ({preset})"
    if row.get("variant") not in ("", "full", None) and not pd.isna(row.get("variant")):
        label += f" [{row['variant']}]"
    return label


def base_expid_of(expid: str) -> str:
    """``TWIN_LAIN_kuaivideo`` -> ``TWIN_kuaivideo``."""
    return expid.replace("_LAIN", "", 1)


def find_pairs(summary: pd.DataFrame) -> List[Tuple[int, int]]:
    """(LAIN row, backbone row) index pairs of ``summary``: a full LAIN group and the non-LAIN group of its
    backbone on the same dataset and max_len (the expid without ``_LAIN`` preferred)."""
    pairs = []
    for i, lain in summary[summary["lain"] & (summary["variant"] == "full")].iterrows():
        candidates = summary[(~summary["lain"]) & (summary["variant"] == "") &
                             (summary["dataset_id"] == lain["dataset_id"]) &
                             (summary["model"] == lain["backbone"]) & (summary["max_len"] == lain["max_len"])]
        if candidates.empty:
            continue
        preferred = candidates[candidates["expid"] == base_expid_of(lain["expid"])]
        if preferred.empty and len(candidates) > 1:
            logging.warning("%s: %d backbone expids match, using %s", lain["expid"], len(candidates),
                            candidates.iloc[0]["expid"])
        pairs.append((i, (preferred if not preferred.empty else candidates).index[0]))
    return pairs


def relative_gain(lain: float, base: float) -> float:
    """(LAIN - base) / base in %, the paper's format (for logloss negative = better)."""
    return (lain - base) / base * 100.0 if base not in (0, None) and not math.isnan(base) else math.nan


def paired_relative_changes(treated_runs: pd.DataFrame, reference_runs: pd.DataFrame, seeds: Sequence[int],
                            column: str) -> pd.Series:
    """Per seed of ``seeds`` (run by both), the :func:`relative_gain` in % of ``column`` from the seed's latest
    ``reference_runs`` row to its latest ``treated_runs`` row: the rows :func:`paired_run_intervals` pairs.
    Index: seed; seeds whose change is NaN are left out."""
    treated, reference = (runs.drop_duplicates("seed", keep="last").set_index("seed")[column]
                          for runs in (treated_runs, reference_runs))
    return pd.Series({seed: relative_gain(treated[seed], reference[seed]) for seed in seeds}, dtype=float).dropna()


def group_runs(runs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The rows of ``runs`` in the group of the :func:`summarize` row ``row``."""
    mask = np.ones(len(runs), bool)
    for key in GROUP_KEYS:
        same = runs[key].isna() if pd.isna(row[key]) else (runs[key] == row[key]).fillna(False)
        mask &= same.to_numpy()
    return runs[mask]


GAIN_COLUMNS = ["dataset_id", "backbone", "lain_expid", "lain_preset", "base_expid", "max_len", "split", "metric",
                "bucket", "base_mean", "lain_mean", "gain_pct", "gain_pct_std", "n", "paired", "ci_low", "ci_high",
                "significant", "ci_note"]


def gains(runs: pd.DataFrame, summary: Optional[pd.DataFrame] = None, split: str = "test",
          metrics: Sequence[str] = GAIN_METRICS, intervals: Optional[BootstrapSettings] = None,
          search_dirs: Sequence[str] = ()) -> pd.DataFrame:
    """Relative gain of every full ``_LAIN`` group over its backbone, overall and per length bucket.

    Paired over seeds when both groups ran a common seed (mean and sample std of the per-seed gains over
    the common seeds, ``paired`` True); otherwise the gain of the means (``paired`` False, no std).
    With ``intervals`` (test split only), AUC, gAUC and logloss gains get the 95 % interval of the paired
    user bootstrap (:mod:`.bootstrap`) from the runs' kept predictions (:func:`find_predictions`: the row's
    ``predictions_file``, relative paths tried against ``search_dirs``, or its copy under a search dir):
    ``ci_low``, ``ci_high``, ``significant`` (the interval excludes 0); where it cannot be computed,
    ``ci_note`` says why.

    Returns:
        long table with the columns :data:`GAIN_COLUMNS`.
    """
    summary = summarize(runs) if summary is None else summary
    rows = []
    for lain_index, base_index in find_pairs(summary):
        lain_row, base_row = summary.loc[lain_index], summary.loc[base_index]
        lain_runs, base_runs = group_runs(runs, lain_row), group_runs(runs, base_row)
        common = sorted(set(lain_runs["seed"].dropna()) & set(base_runs["seed"].dropna()))
        columns = [c for c in metric_columns(runs, split) if metric_parts(c)[1] in metrics
                   and not pd.isna(lain_row[f"{c}_mean"]) and not pd.isna(base_row[f"{c}_mean"])]
        bounds, note = ({}, "") if intervals is None else paired_run_intervals(
            lain_runs, base_runs, common, split, sorted({metric_parts(c)[2] for c in columns}), intervals, search_dirs)
        for column in columns:
            _, metric, bucket = metric_parts(column)
            out = {"dataset_id": lain_row["dataset_id"], "backbone": lain_row["backbone"],
                   "lain_expid": lain_row["expid"], "lain_preset": lain_row["lain_preset"],
                   "base_expid": base_row["expid"], "max_len": lain_row["max_len"],
                   "split": split, "metric": metric, "bucket": bucket,
                   "base_mean": base_row[f"{column}_mean"], "lain_mean": lain_row[f"{column}_mean"]}
            if common:
                per_seed = paired_relative_changes(lain_runs, base_runs, common, column)
                out.update(gain_pct=float(per_seed.mean()) if len(per_seed) else math.nan,
                           gain_pct_std=mean_std(per_seed)[1], n=len(per_seed), paired=True)
            else:
                out.update(gain_pct=relative_gain(out["lain_mean"], out["base_mean"]), gain_pct_std=math.nan,
                           n=int(min(lain_row["n"], base_row["n"])), paired=False)
            low, high = bounds.get((metric, bucket), (math.nan, math.nan))
            out.update(ci_low=low, ci_high=high, significant=bool(low > 0 or high < 0),
                       ci_note=note if intervals is not None and metric in BOOTSTRAP_METRICS else "")
            rows.append(out)
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


def paired_run_intervals(treated_runs: pd.DataFrame, reference_runs: pd.DataFrame, seeds: Sequence[int], split: str,
                         buckets: Sequence[str], settings: BootstrapSettings,
                         search_dirs: Sequence[str]) -> Tuple[Dict[Tuple[str, str], Tuple[float, float]], str]:
    """(bootstrap intervals by (metric, bucket), "") of the relative gain of ``treated_runs`` over
    ``reference_runs`` (a LAIN variant over its backbone, a model at one max_len over itself at another), paired
    by ``seeds`` (the latest row of each), or ({}, why there are none)."""
    if split != "test":
        return {}, "intervals on the test split only (the runs keep their test predictions)"
    if not seeds:
        return {}, "no seed run by both: unpaired"
    pairs: List[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]] = []
    missing: Dict[str, List[str]] = {}
    for seed in seeds:
        files: List[Optional[str]] = []
        for group in (treated_runs, reference_runs):
            row = group[group["seed"] == seed].iloc[-1]
            files.append(find_predictions(row, search_dirs))
            if files[-1] is None and str(seed) not in missing.setdefault(str(row["expid"]), []):
                missing[str(row["expid"])].append(str(seed))
        treated_file, reference_file = files
        if treated_file is not None and reference_file is not None:
            pairs.append((read_predictions(treated_file), read_predictions(reference_file)))
    if missing:
        return {}, "no test predictions of " + "; ".join(f"{e} (seed {', '.join(s)})" for e, s in missing.items())
    try:
        return paired_intervals(pairs, buckets, settings), ""
    except ValueError as error:
        return {}, str(error)


def bucket_table(summary: pd.DataFrame, metric: str = "AUC", split: str = "test") -> pd.DataFrame:
    """Per group, ``{split}_{metric}@{bucket}`` mean and std in bucket order (wide)."""
    columns = [c for c in summary.columns if c.endswith("_mean") and (p := parse_metric_column(c[:-5]))
               and p[0] == split and p[1] == metric and p[2]]
    columns.sort(key=lambda c: bucket_order(metric_parts(c[:-5])[2]))
    keep = GROUP_KEYS + ["n"] + [x for c in columns for x in (c, c[:-5] + "_std")]
    return summary[keep].copy()


def find_predictions(row: pd.Series, search_dirs: Sequence[str] = ()) -> Optional[str]:
    """The predictions file of a results row: its ``predictions_file`` (:func:`find_file`), else the copy
    ``keep-predictions`` made in one of ``search_dirs`` (``predictions/<run_id>.npz``); None if neither exists."""
    found = find_file(str(row.get("predictions_file", "") or ""), search_dirs)
    run_id = str(row.get("run_id", "") or "")
    if found is not None or not RUN_ID.match(run_id):
        return found
    return next((p for d in search_dirs if os.path.exists(p := kept_predictions_path(d, run_id))), None)


def history_curves(runs: pd.DataFrame, search_dirs: Iterable[str] = ()) -> Dict[str, List[dict]]:
    """``{label: history entries}`` for every run whose ``history_file`` can be read (others skipped).

    Relative paths are tried against each of ``search_dirs`` (e.g. the zoo root and the results file's
    folder)."""
    curves: Dict[str, List[dict]] = {}
    for _, run in runs.iterrows():
        path = str(run.get("history_file", "") or "")
        if not path:
            continue
        found = find_file(path, search_dirs)
        if found is None:
            logging.info("history file %s not found; skipped", path)
            continue
        with open(found) as fd:
            history = json.load(fd)
        label = f"{run['expid']}" + (f" [{run['variant']}]" if run.get("variant") not in ("", "full", None) else "")
        label += f" seed {run['seed']}" if not pd.isna(run.get("seed")) else ""
        curves[label] = history
    return curves
