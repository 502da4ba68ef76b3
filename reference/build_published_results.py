"""Write ``reference/published_results.csv`` from the reference document (tables transcribed verbatim).

    python reference/build_published_results.py --doc ../shared/docs/REFERENCE_RESULTS.md

The numbers are copied as strings from the document's Markdown tables (no rounding, no arithmetic); only
names are normalised: dataset -> canonical id (ebnerd / kuaivideo / microvideo), metric -> the results-file
spelling (AUC / gAUC / logloss), length buckets -> ``@low-high`` labels. Derived tables of the document
(absolute differences, mean gains, ablation deltas) are left out: the leaderboard recomputes them.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
from typing import Dict, Iterator, List

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["source", "source_detail", "commit", "url", "provenance", "dataset", "dataset_version", "model",
           "variant", "max_len", "split", "metric", "value", "unit", "notes"]

PAPER = dict(source="LAIN paper", commit="", url="https://arxiv.org/abs/2601.19142",
             provenance="unverified against the paper PDF",
             dataset_version="not stated (logloss levels match the 2024 LongCTR versions; inferred)")
LONGCTR = dict(source="LongCTR", commit="7e5bea3", url="https://github.com/reczoo/LongCTR", split="test")
BARS = dict(source="BARS", commit="5b5e61f", url="https://github.com/reczoo/BARS", provenance="exact (repo)",
            split="test", max_len="100")

DATASETS = {"ebnerd-small": "ebnerd", "ebnerd": "ebnerd", "kuaivideo": "kuaivideo", "microvideo1.7m": "microvideo",
            "microvideo": "microvideo"}
LONGCTR_VERSIONS = {"microvideo": "MicroVideo1.7M_x2 (2024)", "kuaivideo": "KuaiVideo_x2",
                    "ebnerd": "Ebnerd_small_x1 (2024)"}
BUCKETS = {"0–100": "0-100", "100–200": "100-200", "200+": "200-inf"}
ABLATION_VARIANTS = {"LAIN (full)": "full", "w/o LCP": "wo_prompts", "w/o query–key conditioning": "wo_qk",
                     "w/o temperature scaling": "wo_temperature", "w/o LMA (both parts)": "wo_lma",
                     "w/o short-term branch (LAIN on long branch only)": "wo_short_branch",
                     "TWIN baseline (from §1)": "backbone"}
TWIN_CONFIRMED = {("ebnerd", "gAUC"), ("ebnerd", "AUC"), ("kuaivideo", "AUC"), ("microvideo", "AUC"),
                  ("microvideo", "logloss")}


def canonical_dataset(name: str) -> str:
    key = name.strip().lower().split(" ")[0]
    if key not in DATASETS:
        raise ValueError(f"unknown dataset name in the document: {name!r}")
    return DATASETS[key]


def canonical_metric(name: str) -> str:
    return {"gauc": "gAUC", "auc": "AUC", "logloss": "logloss"}[name.strip().lower()]


def section(text: str, heading: str) -> str:
    """The text from the line starting with ``heading`` to the next heading of the same or higher level."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    level = len(heading) - len(heading.lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start:end])


def tables(text: str) -> List[List[List[str]]]:
    """Every Markdown table in ``text`` as a list of rows of stripped cells (header first, rule dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def bold_table_after(text: str, marker: str) -> List[List[str]]:
    """The first table after the line containing ``marker``."""
    return tables(text[text.index(marker):])[0]


def row(**fields) -> Dict[str, str]:
    return {c: str(fields.get(c, "")) for c in COLUMNS}


def main_table(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "## 1."))[0]
    header = table[0]
    model = None
    for cells in table[1:]:
        label = cells[0]
        if label == "+LAIN":
            variant = "LAIN"
        elif label == "Rel. Gain":
            variant = "rel_gain"
        else:
            model, variant = label, "base"
        for column, value in zip(header[1:], cells[1:]):
            dataset_name, metric_name = column.rsplit(" ", 1)
            dataset, metric = canonical_dataset(dataset_name), canonical_metric(metric_name)
            notes = "(LAIN - base)/base in %; logloss: negative = better" if variant == "rel_gain" else ""
            if model == "TWIN" and variant != "rel_gain" and (dataset, metric) in TWIN_CONFIRMED:
                notes = "TWIN cell also in an independent paper-reading note (doc §1)"
            yield row(**PAPER, source_detail="main table (doc §1)", dataset=dataset, model=model, variant=variant,
                      split="test", metric=metric, value=value.replace("%", ""),
                      unit="percent" if variant == "rel_gain" else "fraction", notes=notes)


def bucket_table(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 2.1"))[0]
    for cells in table[1:]:
        bucket = BUCKETS[cells[0].split(" ")[0]]
        for metric, value in zip(("AUC", "logloss"), cells[1:]):
            yield row(**PAPER, source_detail="length buckets, TWIN on MicroVideo1.7M (doc §2.1)",
                      dataset="microvideo", model="TWIN", variant="rel_gain", split="test",
                      metric=f"{metric}@{bucket}", value=value.replace("%", "").replace("−", "-").replace(" ", ""),
                      unit="percent", notes=f"bucket as written: '{cells[0]}' (paper: long = L > 200)")


def ablation_table(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 2.2"))[0]
    for cells in table[1:]:
        variant = ABLATION_VARIANTS[cells[0]]
        for metric, value in zip(("AUC", "logloss"), cells[1:3]):
            yield row(**PAPER, source_detail="ablation, MicroVideo1.7M (doc §2.2)", dataset="microvideo",
                      model="TWIN", variant=f"ablation:{variant}", split="test", metric=metric, value=value,
                      unit="fraction", notes=f"row '{cells[0]}'; values match TWIN + LAIN of the main table")


def statistics_table(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 2.3"))[0]
    names = {"attention Gini, baselines": [("base", "attention_gini_min"), ("base", "attention_gini_max")],
             "attention Gini, with LAIN": [("LAIN", "attention_gini_min"), ("LAIN", "attention_gini_max")],
             '"variance reduced by"': [("rel_gain", "gini_bucket_variance")],
             "short users (< 100): share of users / of training samples": [("data", "user_share@0-100"),
                                                                           ("data", "sample_share@0-100")],
             "long users (> 200): share of users / of training samples": [("data", "user_share@200-inf"),
                                                                          ("data", "sample_share@200-inf")],
             "CTR short vs long users": [("data", "ctr@0-100"), ("data", "ctr@200-inf")]}
    for cells in table[1:]:
        if cells[0] not in names:
            continue  # derived (medium by subtraction) or descriptive statistics not used by the tools
        written = re.sub(r"\(.*?\)", "", cells[1]).replace("%", "").strip()  # drop "(what variance ...)"
        values = re.split(r"\s*(?:–|/|vs)\s*", written)
        for (variant, metric), value in zip(names[cells[0]], values):
            unit = "percent" if "%" in cells[1] else "fraction"
            notes = f"row '{cells[0]}': '{cells[1]}'"
            if metric == "gini_bucket_variance":
                notes += "; reading (spec A14): variance of the bucket means, reduced by this %"
                value = "-" + value.strip()
            yield row(**dict(PAPER, dataset_version="dataset not stated"), dataset="", model="",
                      source_detail="polarization and imbalance statistics (doc §2.3)", variant=variant, split="",
                      metric=metric,
                      value=value.strip(), unit=unit, notes=notes)


def longctr_readme(doc: str) -> Iterator[Dict[str, str]]:
    text = section(doc, "## 3.")
    for marker, dataset in (("**MicroVideo (", "microvideo"), ("**KuaiVideo (", "kuaivideo"),
                            ("**EBNeRD-Small (", "ebnerd")):
        table = bold_table_after(text, marker)
        header = table[0]
        for cells in table[1:]:
            for column, value in zip(header[1:], cells[1:]):
                metric, max_len = column.split("@")
                yield row(**LONGCTR, source_detail="README Benchmarking Results (doc §3)",
                          provenance="exact (repo)", dataset=dataset, dataset_version=LONGCTR_VERSIONS[dataset],
                          model=cells[0], variant="base", max_len=max_len, metric=canonical_metric(metric),
                          value=value, unit="x100", notes="README selection appears test-based (doc §3 caveats)")


def longctr_logloss(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 3.1"))[0]
    header = table[0]
    for cells in table[1:]:
        dataset = canonical_dataset(cells[0])
        for column, value in zip(header[2:], cells[2:]):
            if value in ("—", "-", ""):
                continue  # no run matches the README cell
            yield row(**LONGCTR, source_detail="result CSVs, run matching the README cell (doc §3.1)",
                      provenance="derived", dataset=dataset, dataset_version=LONGCTR_VERSIONS[dataset],
                      model=cells[1], variant="base", max_len=column.split("@")[1], metric="logloss", value=value,
                      unit="fraction", notes="test logloss of the run whose rounded test AUC and gAUC equal the README")


def longctr_validation_selected(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 3.2"))[0]
    header = table[0]
    for cells in table[1:]:
        dataset = canonical_dataset(cells[0])
        for column, value in zip(header[2:], cells[2:]):
            for metric, number in zip(("gAUC", "AUC", "logloss"), value.split(" / ")):
                yield row(**LONGCTR, source_detail="result CSVs, best validation gAUC + AUC (doc §3.2)",
                          provenance="derived", dataset=dataset, dataset_version=LONGCTR_VERSIONS[dataset],
                          model=cells[1], variant="base_valsel", max_len=column.lstrip("@"), metric=metric,
                          value=number, unit="fraction", notes="validation-selected run, test metrics")


def longctr_other_versions(doc: str) -> Iterator[Dict[str, str]]:
    table = tables(section(doc, "### 3.3"))[0]
    header = table[0]
    for cells in table[1:]:
        dataset = canonical_dataset(cells[0].split("_")[0])
        for column, value in zip(header[1:], cells[1:]):
            if value in ("—", "-", ""):
                continue
            for metric, number in zip(("gAUC", "AUC", "logloss"), value.split(" / ")):
                yield row(**LONGCTR, source_detail="Feb-2025 DIN runs, other data versions (doc §3.3)",
                          provenance="derived", dataset=dataset, dataset_version=cells[0].replace("`", ""),
                          model="DIN", variant="base_valsel_other_version", max_len=column.lstrip("@"),
                          metric=metric, value=number,
                          unit="fraction", notes="different data version: do not compare with the 2024 tables")


def bars(doc: str) -> Iterator[Dict[str, str]]:
    text = section(doc, "## 4.")
    for marker, dataset, version in (("**KuaiVideo_x1**", "kuaivideo", "KuaiVideo_x1"),
                                     ("**MicroVideo1.7M_x1**", "microvideo", "MicroVideo1.7M_x1")):
        table = bold_table_after(text, marker)
        header = table[0]
        for cells in table[1:]:
            if cells[0] not in ("DIN", "DIEN"):
                continue  # only the LAIN backbones (BARS has no SIM, SDIM, TWIN runs)
            for metric in ("AUC", "gAUC", "logloss"):
                yield row(**BARS, source_detail=f"leaderboard {version.lower()}.csv (doc §4)", dataset=dataset,
                          dataset_version=version, model=cells[0], variant="base", metric=metric,
                          value=cells[header.index(metric)], unit="fraction",
                          notes=f"fuxictr {cells[header.index('fuxictr')]}; run {cells[-1].strip('`')}; "
                                "x1 release, test split = validation split: not comparable with the paper/LongCTR")


def build(doc_path: str) -> List[Dict[str, str]]:
    with open(doc_path, encoding="utf-8") as fd:
        doc = fd.read()
    rows: List[Dict[str, str]] = []
    for part in (main_table, bucket_table, ablation_table, statistics_table, longctr_readme, longctr_logloss,
                 longctr_validation_selected, longctr_other_versions, bars):
        rows.extend(part(doc))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", default=os.path.join(HERE, "..", "..", "shared", "docs", "REFERENCE_RESULTS.md"))
    parser.add_argument("--out", default=os.path.join(HERE, "published_results.csv"))
    args = parser.parse_args(argv)
    rows = build(args.doc)
    with open(args.out, "w", newline="", encoding="utf-8") as fd:
        writer = csv.DictWriter(fd, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
