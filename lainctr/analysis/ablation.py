"""LAIN ablation variants (spec section 6) as config overrides, and the ablation table.

Every variant sets all five switches of :class:`lainctr.layers.lain.LAINConfig`, so a variant means the
same thing whatever the base expid's YAML says. ``backbone`` turns every LAIN component off, which builds
exactly the backbone (``LAINConfig.active`` is False), trained under the same expid.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import pandas as pd

from .bootstrap import BootstrapSettings
from .stats import mean_std

ABLATION_TAG = "ablation:"   # a results row's tag is ablation:<variant>
SWITCHES = ("use_sle", "use_prompts", "use_qk_conditioning", "use_temperature", "lain_on_short_branch")
CHANGES: "OrderedDict[str, Dict[str, bool]]" = OrderedDict([
    ("full", {}),
    ("wo_sle", {"use_sle": False}),
    ("wo_prompts", {"use_prompts": False}),
    ("wo_qk", {"use_qk_conditioning": False}),
    ("wo_temperature", {"use_temperature": False}),
    ("wo_lma", {"use_qk_conditioning": False, "use_temperature": False}),
    ("wo_short_branch", {"lain_on_short_branch": False}),
    ("backbone", {"use_prompts": False, "use_qk_conditioning": False, "use_temperature": False}),
])
LABELS = {"full": "LAIN (full)", "wo_sle": "w/o SLE (bucket length encoder)", "wo_prompts": "w/o LCP (prompts)",
          "wo_qk": "w/o query-key conditioning", "wo_temperature": "w/o temperature scaling",
          "wo_lma": "w/o LMA (both parts)", "wo_short_branch": "w/o LAIN on the short branch",
          "backbone": "backbone (all LAIN components off)"}


def ablation_tag(variant: str) -> str:
    """The results-row tag of an ablation run of ``variant``."""
    return f"{ABLATION_TAG}{variant}"


def variant_of_tag(tag: Optional[str]) -> str:
    """``ablation:wo_sle`` -> ``wo_sle``; raises ``ValueError`` for a tag that is not an ablation tag."""
    if not tag or not tag.startswith(ABLATION_TAG):
        raise ValueError(f"not an ablation run tag: {tag!r} (expected {ABLATION_TAG}<variant>)")
    return tag[len(ABLATION_TAG):]


def ablation_overrides(include_backbone: bool = True) -> "OrderedDict[str, Dict[str, bool]]":
    """``{variant: overrides}`` in the paper's order; each override sets all five LAIN switches."""
    variants = OrderedDict()
    for name, change in CHANGES.items():
        if name == "backbone" and not include_backbone:
            continue
        variants[name] = {**{switch: True for switch in SWITCHES}, **change}
    return variants


def infer_variant(params: Union[str, Mapping[str, Any]]) -> str:
    """The ablation variant a run's ``params`` (dict or the results file's JSON) correspond to.

    Missing switches take their LAINConfig default (True). Returns ``backbone`` whenever prompts, QK
    conditioning and temperature are all off, else the variant whose switches match, else
    ``custom(<switches off>)``.
    """
    if isinstance(params, str):
        params = json.loads(params) if params.strip() else {}
    switches = {s: bool(params.get(s, True)) for s in SWITCHES}
    if not (switches["use_prompts"] or switches["use_qk_conditioning"] or switches["use_temperature"]):
        return "backbone"
    for name, overrides in ablation_overrides().items():
        if overrides == switches:
            return name
    return "custom(" + ",".join(s for s in SWITCHES if not switches[s]) + " off)"


def ablation_table(runs: pd.DataFrame, metrics: Sequence[str] = ("AUC", "logloss"), split: str = "test",
                   paper: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The paper-style ablation table.

    Args:
        runs: one row per run with columns ``variant``, ``seed`` and ``{split}_{metric}``.
        paper: optional ``reference.paper_ablation()`` (index variant, columns metrics) shown alongside.
    Returns:
        one row per variant (order of :data:`CHANGES`, then others): ``n``, ``{m}_mean``, ``{m}_std`` and
        ``delta_{m}`` = variant - full, paired over the seeds both ran (mean of per-seed differences; the
        difference of means when no seed is shared), ``delta_{m}_std``, ``paired``; ``paper_{m}`` and
        ``paper_delta_{m}`` when ``paper`` is given.
    """
    order = [v for v in CHANGES if v in set(runs["variant"])] + sorted(set(runs["variant"]) - set(CHANGES))
    full = runs[runs["variant"] == "full"]
    rows = []
    for variant in order:
        part = runs[runs["variant"] == variant]
        out = {"variant": variant, "label": LABELS.get(variant, variant), "n": int(part["seed"].nunique()),
               "seeds": " ".join(str(s) for s in sorted(part["seed"].unique()))}
        common = sorted(set(part["seed"]) & set(full["seed"]))
        out["paired"] = bool(common) and variant != "full"
        for metric in metrics:
            column = f"{split}_{metric}"
            out[f"{metric}_mean"], out[f"{metric}_std"] = mean_std(part[column].astype(float))
            if variant == "full" or full.empty:
                out[f"delta_{metric}"], out[f"delta_{metric}_std"] = (0.0 if variant == "full" else math.nan), math.nan
            elif common:
                mine = part.groupby("seed")[column].mean()
                base = full.groupby("seed")[column].mean()
                out[f"delta_{metric}"], out[f"delta_{metric}_std"] = mean_std([mine[s] - base[s] for s in common])
            else:
                out[f"delta_{metric}"] = out[f"{metric}_mean"] - mean_std(full[column].astype(float))[0]
                out[f"delta_{metric}_std"] = math.nan
            if paper is not None:
                value = paper[metric].get(variant, math.nan) if metric in paper else math.nan
                out[f"paper_{metric}"] = value
                full_value = paper[metric].get("full", math.nan) if metric in paper else math.nan
                out[f"paper_delta_{metric}"] = value - full_value
        rows.append(out)
    return pd.DataFrame(rows)


def add_ablation_intervals(table: pd.DataFrame, runs: pd.DataFrame, settings: BootstrapSettings,
                           search_dirs: Sequence[str], metrics: Sequence[str] = ("AUC", "logloss")) -> pd.DataFrame:
    """``table`` (:func:`ablation_table`) with, per variant, the 95 % paired bootstrap interval over test users of
    its relative change from the full model in % (:func:`.aggregate.paired_run_intervals`, paired by the seeds
    both ran, from the runs' kept predictions): ``delta_{m}_pct``, ``delta_{m}_ci_low``, ``delta_{m}_ci_high``,
    ``delta_{m}_significant`` (the interval excludes 0) and ``ci_note`` (why there is none)."""
    from .aggregate import paired_relative_changes, paired_run_intervals  # aggregate imports this module
    table = table.copy()
    full = runs[runs["variant"] == "full"]
    for index, row in table.iterrows():
        part = runs[runs["variant"] == row["variant"]]
        seeds = sorted(set(part["seed"]) & set(full["seed"])) if row["variant"] != "full" else []
        bounds, note = (paired_run_intervals(part, full, seeds, "test", [""], settings, search_dirs) if seeds
                        else ({}, "" if row["variant"] == "full" else "no seed shared with the full model"))
        for metric in metrics:
            changes = paired_relative_changes(part, full, seeds, f"test_{metric}")
            low, high = bounds.get((metric, ""), (math.nan, math.nan))
            table.loc[index, f"delta_{metric}_pct"] = float(changes.mean()) if len(changes) else math.nan
            table.loc[index, f"delta_{metric}_ci_low"], table.loc[index, f"delta_{metric}_ci_high"] = low, high
            table.loc[index, f"delta_{metric}_significant"] = bool(low > 0 or high < 0)
        table.loc[index, "ci_note"] = note
    return table
