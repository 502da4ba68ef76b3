"""Attention Gini (spec section 7, A13/A14): how concentrated an attention row is over its support.

G = sum_{i=1..n} (2i - n - 1) a_(i) / (n sum_i a_i), with a_(1) <= ... <= a_(n) the weights of the row's
support positions (real behaviours; prompts and padding excluded). Uniform attention gives 0, all weight
on one of n items gives (n - 1) / n. G is scale-free, so rows need not be renormalised after the
prompts' share is dropped. Rows with fewer than 2 support positions (or zero total weight) are NaN and
left out of every mean.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Sequence

import numpy as np

from ..metrics import bucket_edges, bucket_label


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def gini(weights, support) -> np.ndarray:
    """Gini coefficient of every attention row over its support.

    Args:
        weights: (B, n) non-negative attention weights (numpy array or torch tensor).
        support: (B, n) bool, True = a real behaviour the row attends over.
    Returns:
        (B,) float64; NaN for rows with < 2 support positions or zero weight on the support.
    """
    w, s = _numpy(weights).astype(np.float64), _numpy(support).astype(bool)
    if w.ndim != 2 or w.shape != s.shape:
        raise ValueError(f"weights and support must both be (B, n); got {w.shape} and {s.shape}")
    rows, width = w.shape
    n = s.sum(axis=1)
    # Support values sorted ascending into the first n columns of each row; the rest are zeroed.
    ordered = np.sort(np.where(s, w, np.inf), axis=1)
    position = np.arange(width)[None, :]
    ordered = np.where(position < n[:, None], ordered, 0.0)
    coefficient = 2.0 * (position + 1) - n[:, None] - 1.0
    numerator = (coefficient * ordered).sum(axis=1)
    total = ordered.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = numerator / (n * total)
    return np.where((n >= 2) & (total > 0), value, np.nan)


def gini_by_bucket(values: np.ndarray, history_length: np.ndarray, boundaries: Sequence[int]) -> Dict[str, float]:
    """Mean Gini per length bucket [low, high) of ``history_length`` plus summary statistics.

    Returns:
        ``gini@{bucket}`` (mean over defined rows, NaN for an empty bucket), ``gini`` (mean over all defined
        rows), ``gini_bucket_var`` (population variance of the non-empty bucket means: the spec's A14 reading
        of "variance reduced by 50.6 %"), ``gini_row_var`` (variance over rows) and ``gini_rows@{bucket}``.
    """
    values, history_length = np.asarray(values, np.float64), np.asarray(history_length)
    defined = ~np.isnan(values)
    out: Dict[str, float] = OrderedDict()
    means = []
    for low, high in bucket_edges(boundaries):
        label = bucket_label(low, high)
        rows = defined & (history_length >= low) & (history_length < high)
        out[f"gini@{label}"] = float(values[rows].mean()) if rows.any() else float("nan")
        out[f"gini_rows@{label}"] = int(rows.sum())
        if rows.any():
            means.append(out[f"gini@{label}"])
    out["gini"] = float(values[defined].mean()) if defined.any() else float("nan")
    out["gini_bucket_var"] = float(np.var(means)) if means else float("nan")
    out["gini_row_var"] = float(values[defined].var()) if defined.any() else float("nan")
    return out


def attention_gini_by_bucket(trainer, loader, boundaries: Sequence[int], branch: str = "long") -> Dict[str, float]:
    """Mean attention Gini of ``branch`` per length bucket (see :func:`gini_by_bucket`), from one pass of
    ``trainer`` (a :class:`~lainctr.trainer.Trainer`) over ``loader``. Returns {} when the branch reports
    no attention."""
    arrays = trainer.predict_arrays(loader, attention_branch=branch)
    if "gini" not in arrays:
        return {}
    return gini_by_bucket(arrays["gini"], arrays["history_length"], boundaries)
