"""Vectorised CTR metrics: AUC, gAUC (grouped by user), logloss, and the same per length bucket.

gAUC = sum_u n_u * AUC_u / sum_u n_u over users having both classes (FuxiCTR / DIN definition). All group
AUCs come from one sort: no per-user Python loop, no process pool.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Sequence, Tuple

import numpy as np

EPS = 1e-7  # probability clip of logloss, as FuxiCTR
DEFAULT_METRICS = ("AUC", "gAUC", "logloss")   # what every run reports, overall and per length bucket
DEFAULT_LENGTH_BUCKETS = (100, 200)            # buckets [0, 100), [100, 200), [200, inf) of the untruncated seq_len


def grouped_auc(group: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mann-Whitney AUC of every group at once (ties get average ranks).

    Args:
        group, y_true, y_pred: (n,) arrays.
    Returns:
        (auc, count, defined), each (G,) over the sorted unique groups; ``defined`` is False for groups
        with a single class (their ``auc`` is NaN).
    """
    order = np.lexsort((y_pred, group))
    g, s, y = group[order], y_pred[order], y_true[order].astype(np.float64)
    n = len(g)
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_id = np.cumsum(new_group) - 1
    position = np.arange(n) - np.flatnonzero(new_group)[group_id]
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    tie_id = np.cumsum(new_tie) - 1
    tie_count = np.bincount(tie_id)
    average_rank = position[new_tie][tie_id] + (tie_count[tie_id] + 1) / 2.0
    count = np.bincount(group_id)
    positives = np.bincount(group_id, weights=y)
    negatives = count - positives
    rank_sum = np.bincount(group_id, weights=average_rank * y)
    defined = (positives > 0) & (negatives > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(defined, (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives), np.nan)
    return auc, count, defined


def auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """ROC AUC (NaN when only one class is present)."""
    value, _, _ = grouped_auc(np.zeros(len(y_true), np.int64), y_true, y_pred)
    return float(value[0]) if len(value) else float("nan")


def gauc(y_true: np.ndarray, y_pred: np.ndarray, group: np.ndarray) -> float:
    """Sample-weighted mean of per-group AUC over groups with both classes."""
    value, count, defined = grouped_auc(group, y_true, y_pred)
    weight = count[defined]
    return float(np.sum(value[defined] * weight) / weight.sum()) if weight.sum() > 0 else float("nan")


def logloss(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean binary cross-entropy (NaN for no samples)."""
    if len(y_true) == 0:
        return float("nan")
    p = np.clip(y_pred, EPS, 1 - EPS)
    return float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))


METRICS = {"AUC": lambda y, p, g: auc(y, p), "gAUC": lambda y, p, g: gauc(y, p, g),
           "logloss": lambda y, p, g: logloss(y, p)}


def evaluate_metrics(y_true: np.ndarray, y_pred: np.ndarray, metrics: Sequence[str],
                     group: np.ndarray) -> Dict[str, float]:
    """The named metrics (``AUC``, ``gAUC``, ``logloss``) in the given order."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; supported: {sorted(METRICS)}")
    return OrderedDict((m, METRICS[m](y_true, y_pred, group)) for m in metrics)


def bucket_label(low: float, high: float) -> str:
    """``0-100``, ``100-200``, ``200-inf``: the suffix of per-bucket result columns."""
    return f"{int(low)}-{'inf' if np.isinf(high) else int(high)}"


def bucket_edges(boundaries: Sequence[int]) -> list:
    """[(0, b1), (b1, b2), ..., (bk, inf)]: half-open buckets [low, high)."""
    edges = [0] + [int(b) for b in boundaries] + [np.inf]
    return list(zip(edges[:-1], edges[1:]))


def bucket_metrics(y_true: np.ndarray, y_pred: np.ndarray, group: np.ndarray, history_length: np.ndarray,
                   boundaries: Sequence[int], metrics: Sequence[str]) -> Dict[str, float]:
    """Per length bucket [low, high) of the untruncated history length: samples, users, CTR and metrics.

    Returns:
        ``{"AUC@0-100": ..., "samples@0-100": ..., "users@0-100": ..., "ctr@0-100": ...}``.
    """
    out: Dict[str, float] = OrderedDict()
    for low, high in bucket_edges(boundaries):
        label = bucket_label(low, high)
        rows = (history_length >= low) & (history_length < high)
        out[f"samples@{label}"] = int(rows.sum())
        out[f"users@{label}"] = int(len(np.unique(group[rows])))
        out[f"ctr@{label}"] = float(y_true[rows].mean()) if rows.any() else float("nan")
        for name, value in evaluate_metrics(y_true[rows], y_pred[rows], metrics, group[rows]).items():
            out[f"{name}@{label}"] = value
    return out
