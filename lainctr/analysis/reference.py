"""The published numbers (``reference/published_results.csv``) and lookups the leaderboard needs.

The file is long format, one number per row, transcribed from ``shared/docs/REFERENCE_RESULTS.md`` by
``reference/build_published_results.py``. ``value`` is the text as published; ``number`` (added here)
is it as a float on the results file's scale: ``x100`` cells are divided by 100, ``percent`` stays percent.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import pandas as pd

PAPER, LONGCTR, BARS = "LAIN paper", "LongCTR", "BARS"
MAIN_TABLE = "main table (doc §1)"
BUCKET_TABLE = "length buckets, TWIN on MicroVideo1.7M (doc §2.1)"
ABLATION_TABLE = "ablation, MicroVideo1.7M (doc §2.2)"
LONGCTR_README = "README Benchmarking Results (doc §3)"
LONGCTR_LOGLOSS = "result CSVs, run matching the README cell (doc §3.1)"
LONGCTR_VALSEL = "result CSVs, best validation gAUC + AUC (doc §3.2)"
STATISTICS_TABLE = "polarization and imbalance statistics (doc §2.3)"


def reference_file() -> str:
    """``<zoo>/reference/published_results.csv``."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidate = os.path.join(here, "reference", "published_results.csv")
    if os.path.exists(candidate):
        return candidate
    from ..paths import zoo_root
    return os.path.join(zoo_root(), "reference", "published_results.csv")


def load_reference(path: Optional[str] = None) -> pd.DataFrame:
    """The reference table with a float column ``number`` (x100 cells rescaled to fractions)."""
    table = pd.read_csv(path or reference_file(), dtype=str, keep_default_na=False)
    number = pd.to_numeric(table["value"], errors="coerce")
    table["number"] = number.where(table["unit"] != "x100", number / 100.0)
    return table


def canonical_dataset(dataset_id: object) -> Optional[str]:
    """``ebnerd`` / ``kuaivideo`` / ``microvideo`` for a dataset id of ours (any release suffix), else
    None (e.g. ``synthetic``: no published reference)."""
    name = str(dataset_id).lower()
    for key, canonical in (("ebnerd", "ebnerd"), ("kuai", "kuaivideo"), ("microvideo", "microvideo")):
        if key in name:
            return canonical
    return None


def _lookup(reference: pd.DataFrame, **where) -> float:
    rows = reference
    for column, value in where.items():
        rows = rows[rows[column] == str(value)]
    if len(rows) > 1:
        raise ValueError(f"reference lookup {where} matches {len(rows)} rows")
    return float(rows["number"].iloc[0]) if len(rows) else math.nan


def paper_value(reference: pd.DataFrame, dataset: Optional[str], model: str, variant: str, metric: str) -> float:
    """Main-table cell of the LAIN paper: ``variant`` base / LAIN / rel_gain (percent); NaN if absent."""
    if dataset is None:
        return math.nan
    return _lookup(reference, source=PAPER, source_detail=MAIN_TABLE, dataset=dataset, model=model,
                   variant=variant, metric=metric)


def paper_statistic(reference: pd.DataFrame, variant: str, metric: str) -> float:
    """A number of the paper's polarization / imbalance statistics (dataset not stated), e.g.
    ("rel_gain", "gini_bucket_variance") = -50.6 (%), ("base", "attention_gini_min") = 0.346."""
    return _lookup(reference, source=PAPER, source_detail=STATISTICS_TABLE, variant=variant, metric=metric)


def paper_bucket_gain(reference: pd.DataFrame, dataset: Optional[str], model: str, metric: str,
                      bucket: str) -> float:
    """The paper's relative change (percent) from adding LAIN in one length bucket (TWIN/MicroVideo only)."""
    if dataset is None:
        return math.nan
    return _lookup(reference, source=PAPER, source_detail=BUCKET_TABLE, dataset=dataset, model=model,
                   variant="rel_gain", metric=f"{metric}@{bucket}")


def longctr_value(reference: pd.DataFrame, dataset: Optional[str], model: str, max_len: object, metric: str,
                  selection: str = "readme") -> float:
    """LongCTR test metric at ``max_len``: ``readme`` (README cell; logloss from the matching run) or
    ``valsel`` (best-validation run, doc §3.2). NaN when the length or model is not benchmarked."""
    if dataset is None or max_len in (None, ""):
        return math.nan
    try:
        max_len = int(float(str(max_len)))
    except ValueError:
        return math.nan
    if selection == "valsel":
        detail, variant = LONGCTR_VALSEL, "base_valsel"
    else:
        detail, variant = (LONGCTR_LOGLOSS if metric == "logloss" else LONGCTR_README), "base"
    return _lookup(reference, source=LONGCTR, source_detail=detail, dataset=dataset, model=model,
                   variant=variant, max_len=max_len, metric=metric)


def paper_ablation(reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's ablation (TWIN, MicroVideo1.7M): index = variant name, columns AUC and logloss."""
    rows = reference[reference["source_detail"] == ABLATION_TABLE]
    table = rows.assign(variant=rows["variant"].str.replace("ablation:", "", regex=False)).pivot(
        index="variant", columns="metric", values="number")
    return table
