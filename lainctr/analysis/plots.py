"""PNG plots of a leaderboard (matplotlib, Agg backend): per-bucket metric bars, attention Gini per
bucket, training curves from the runs' history files."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..atomic import write_atomically  # noqa: E402
from .aggregate import bucket_order, group_label, parse_metric_column  # noqa: E402


def _run_label(row: pd.Series) -> str:
    label = group_label(row)
    if len(str(row.get("max_len", ""))):
        label += f" @{row['max_len']}"
    return label + f" (n={row['n']})"


def plot_bucket_bars(summary: pd.DataFrame, path: str, metric: str = "AUC", split: str = "test",
                     title: Optional[str] = None) -> Optional[str]:
    """Grouped bars: x = length bucket, one bar per run group (each backbone next to its LAIN variant),
    height = mean of ``{split}_{metric}@bucket``, error bar = std over seeds. None if no such columns."""
    buckets = sorted({p[2] for c in summary.columns if c.endswith("_mean") and (p := parse_metric_column(c[:-5]))
                      and p[0] == split and p[1] == metric and p[2]}, key=bucket_order)
    if not buckets or summary.empty:
        return None
    groups = summary.sort_values(["backbone", "max_len", "lain", "variant", "expid"], kind="stable")
    groups = groups[groups[[f"{split}_{metric}@{b}_mean" for b in buckets]].notna().any(axis=1)]
    if groups.empty:
        return None
    count = len(groups)
    width = 0.8 / count
    x = np.arange(len(buckets))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.8 * len(buckets) + 0.5 * count), 4.2))
    cmap = plt.get_cmap("tab20")
    backbones = list(dict.fromkeys(groups["backbone"]))
    lows = []
    for i, (_, row) in enumerate(groups.iterrows()):
        means = np.array([row[f"{split}_{metric}@{b}_mean"] for b in buckets], dtype=float)
        stds = np.array([row.get(f"{split}_{metric}@{b}_std", math.nan) for b in buckets], dtype=float)
        color = cmap(2 * (backbones.index(row["backbone"]) % 10) + (0 if row["lain"] else 1))
        axis.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=np.nan_to_num(stds), capsize=3,
                 color=color, edgecolor="black", linewidth=0.5, hatch="//" if row["lain"] else None,
                 label=_run_label(row))
        lows.append(np.nanmin(means - np.nan_to_num(stds)))
    axis.set_xticks(x)
    axis.set_xticklabels([f"L in [{b.replace('-', ', ')})" for b in buckets])
    axis.set_xlabel("history length bucket (untruncated seq_len)")
    axis.set_ylabel(f"{split} {metric}")
    if metric in ("AUC", "gAUC") and lows and np.isfinite(np.nanmin(lows)):
        axis.set_ylim(max(0.0, np.nanmin(lows) - 0.02), None)  # differences are small: do not start at 0
    axis.set_title(title or f"{split} {metric} by length bucket")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)   # beside: never on a bar
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(figure)
    return path


def plot_training_curves(curves: Dict[str, List[dict]], path: str, title: Optional[str] = None) -> Optional[str]:
    """Train loss and every ``valid_*`` entry against the training step, one line per run."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    keys = ["train_loss"] + sorted({k for history in curves.values() for entry in history for k in entry
                                    if k.startswith("valid_")})
    figure, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, key in zip(axes[0], keys):
        groups: List[str] = []
        for label, history in curves.items():
            points = [(e.get("step", e.get("epoch")), e[key]) for e in history if key in e and e[key] is not None]
            if points:
                xs, ys = zip(*points)
                group = label.rsplit(" seed ", 1)[0]  # one colour per run group, one line style per seed
                seen = [g for g in groups if g == group]
                groups.append(group)
                axis.plot(xs, ys, marker="o", markersize=3, label=label, color=colors(list(dict.fromkeys(
                    groups)).index(group) % 10), linestyle=("-", "--", ":", "-.")[len(seen) % 4])
        axis.set_xlabel("step (one point per evaluation)")
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title or "training curves")
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
    return path


def plot_length_sweep(table: pd.DataFrame, path: str, title: Optional[str] = None,
                      metrics: Sequence[str] = ("AUC", "gAUC", "gini"), split: str = "test") -> Optional[str]:
    """One panel per metric: x = max_len (log scale), one colour per length bucket, the backbone solid and the
    LAIN variant dashed, error bars = std over seeds (``table``: :func:`lainctr.sweep.sweep_table`). None when
    the table has no bucket columns."""
    panels = [(m, sorted({p[2] for c in table.columns if c.endswith("_mean") and (p := parse_metric_column(c[:-5]))
                          and p[0] == split and p[1] == m and p[2]}, key=bucket_order)) for m in metrics]
    panels = [(m, buckets) for m, buckets in panels if buckets]
    if not panels or table.empty:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.9), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, (metric, buckets) in zip(axes[0], panels):
        for role, style in (("backbone", "-"), ("LAIN", "--")):
            rows = table[table["role"] == role].sort_values("max_len")
            if rows.empty:
                continue
            for index, bucket in enumerate(buckets):
                column = f"{split}_{metric}@{bucket}"
                axis.errorbar(rows["max_len"].astype(float), rows[f"{column}_mean"],
                              yerr=np.nan_to_num(rows[f"{column}_std"].to_numpy(float)), color=colors(index),
                              linestyle=style, marker="o", markersize=3, capsize=2,
                              label=f"{role} L in [{bucket.replace('-', ', ')})")
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(sorted(table["max_len"].astype(float).unique()))
        axis.set_xticklabels([str(int(m)) for m in sorted(table["max_len"].unique())])
        axis.set_xlabel("max_len")
        axis.set_ylabel(f"{split} {metric}" if metric != "gini" else "attention Gini")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title or "max_len sweep")
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
    return path
