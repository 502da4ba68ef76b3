"""The table a run prints at its end: valid and test, overall and per length bucket, next to its backbone."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..metrics import DEFAULT_METRICS as METRICS
from ..metrics import bucket_edges, bucket_label


def backbone_row(rows: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The latest row of ``row``'s backbone (same dataset, seed and max_len, plain expid) among ``rows``, or
    None (also for a row that is not a LAIN variant's)."""
    if str(row.get("lain")) not in ("True", "true", "1"):
        return None
    matches = [r for r in rows if r.get("model") == row["backbone"] and not r.get("tag")
               and str(r.get("dataset_id")) == str(row["dataset_id"]) and str(r.get("seed")) == str(row["seed"])
               and str(r.get("max_len")) == str(row["max_len"])]
    return matches[-1] if matches else None


def _number(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def summary_table(row: Mapping[str, Any], buckets: Sequence[int],
                  backbone: Optional[Mapping[str, Any]] = None) -> str:
    """Fixed-width text: one line per split and bucket (``all`` first) with samples, users, AUC, gAUC, logloss,
    and the backbone's AUC, gAUC, logloss beside them when ``backbone`` is given."""
    header = f"{'split':<6}{'bucket':<10}{'samples':>9}{'users':>7}" + "".join(f"{m:>9}" for m in METRICS)
    if backbone is not None:
        header += "  | " + "".join(f"{'base ' + m:>14}" for m in METRICS)
    lines: List[str] = [header]
    labels = ["all"] + [bucket_label(low, high) for low, high in bucket_edges(buckets)]
    for split in ("valid", "test"):
        total = sum(int(row.get(f"{split}_samples@{label}", 0) or 0) for label in labels[1:])
        for label in labels:
            suffix = "" if label == "all" else f"@{label}"
            samples = row.get(f"{split}_samples{suffix}", "") if suffix else total
            users = row.get(f"{split}_users{suffix}", "") if suffix else ""
            line = f"{split:<6}{label:<10}{str(samples):>9}{str(users):>7}"
            line += "".join(f"{_number(row.get(f'{split}_{m}{suffix}')):>9}" for m in METRICS)
            if backbone is not None:
                line += "  | " + "".join(f"{_number(backbone.get(f'{split}_{m}{suffix}')):>14}" for m in METRICS)
            lines.append(line)
    return "\n".join(lines)


def run_summary(row: Dict[str, Any], buckets: Sequence[int], previous_rows: Sequence[Mapping[str, Any]]) -> str:
    """The end-of-run report: a title line and :func:`summary_table` (with the backbone when found)."""
    base = backbone_row(previous_rows, row)
    title = (f"{row['expid']} seed {row['seed']} (run {row['run_id']}, {row['train_seconds']} s training, "
             f"{row['epochs_run']} epochs)" + (f"; backbone: {base['expid']} run {base['run_id']}" if base else ""))
    return title + "\n" + summary_table(row, buckets, base)
