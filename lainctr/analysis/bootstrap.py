"""Paired bootstrap over test users: a 95 % confidence interval for LAIN's relative gain over its backbone.

One replicate draws the test users with replacement (multinomial counts ``c_u``, sum = number of users) and
recomputes every metric of both models on that resampled test set: both models keep their predictions of the
same users together, and the same draw serves every seed (a replicate is one resampled test population, on
which all seeds' runs are scored). On a replicate, per seed, the relative difference
``(LAIN - base) / base * 100`` is taken, and these are averaged over the seeds; the interval is the 2.5th and
97.5th percentile of that mean over the replicates (percentile bootstrap; seeded, so it repeats exactly).

Metrics of a resampled set, from per-sample weights ``w_i = c_(user of i)`` (a sample's multiplicity):

* AUC: the weighted Mann-Whitney statistic (ties count half), equal to the AUC of the explicitly repeated samples;
* gAUC: ``sum_u c_u n_u AUC_u / sum_u c_u n_u`` over users with both classes (a user's AUC does not change when
  all their samples are repeated together);
* logloss: ``sum_u c_u S_u / sum_u c_u n_u`` with ``S_u`` the user's summed log loss.

Per length bucket the same holds on the bucket's samples (a sample's bucket is its own untruncated history
length). Vectorised over replicates (blocks of ``BLOCK`` replicates), no loop over samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..metrics import EPS, grouped_auc

BOOTSTRAP_METRICS = ("AUC", "gAUC", "logloss")
BLOCK = 100   # replicates per vectorised block: (BLOCK, N) weight matrices


@dataclass(frozen=True)
class BootstrapSettings:
    """``replicates`` resampled test sets drawn from ``seed``; ``level`` the interval's coverage."""
    replicates: int = 1000
    seed: int = 0
    level: float = 0.95


def weighted_auc(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC with sample weights (multiplicities), ties counted half.

    Args:
        y_true, y_pred: (N,); weights: (R, N) non-negative, one row per replicate.
    Returns:
        (R,) AUCs; NaN where a row has no positive or no negative weight.
    """
    return SortedScores(y_true, y_pred).auc(weights)


class SortedScores:
    """Scores sorted once, for the weighted AUC of many weightings (see :func:`weighted_auc`)."""

    def __init__(self, y_true: np.ndarray, y_pred: np.ndarray):
        self.order = np.argsort(y_pred, kind="stable")
        self.positive = y_true[self.order] > 0.5
        sorted_scores = y_pred[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])   # tie groups

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """(R,) AUCs of the weightings ``weights`` (R, N) of the samples in their original order."""
        weights = weights[:, self.order]
        positives = np.add.reduceat(weights * self.positive, self.starts, axis=1)
        negatives = np.add.reduceat(weights * ~self.positive, self.starts, axis=1)
        below = np.cumsum(negatives, axis=1) - negatives
        total = positives.sum(1) * negatives.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (positives * (below + 0.5 * negatives)).sum(1) / total, np.nan)


class UserStatistics:
    """What the replicate metrics of one model's predictions on one sample subset need.

    Args:
        y_true, y_pred: (N,) labels and scores of the subset; users: (N,) their users as 0..U-1 (the index
            into a replicate's user counts).
    """

    def __init__(self, y_true: np.ndarray, y_pred: np.ndarray, users: np.ndarray, num_users: int):
        y_true, y_pred = y_true.astype(np.float64), y_pred.astype(np.float64)
        self.users, self.sorted = users, SortedScores(y_true, y_pred)
        p = np.clip(y_pred, EPS, 1 - EPS)
        loss = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
        self.samples = np.bincount(users, minlength=num_users).astype(np.float64)
        self.loss = np.bincount(users, weights=loss, minlength=num_users)
        auc, count, defined = grouped_auc(users, y_true, y_pred)
        self.gauc_weight = np.zeros(num_users)
        self.gauc_term = np.zeros(num_users)
        present = np.unique(users)   # grouped_auc's groups, in sorted order
        self.gauc_weight[present[defined]] = count[defined]
        self.gauc_term[present[defined]] = count[defined] * auc[defined]

    def metrics(self, counts: np.ndarray) -> Dict[str, np.ndarray]:
        """``{metric: (R,)}`` on the resampled sets of user ``counts`` (R, U)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"AUC": self.sorted.auc(counts[:, self.users]),
                    "gAUC": (counts @ self.gauc_term) / (counts @ self.gauc_weight),
                    "logloss": (counts @ self.loss) / (counts @ self.samples)}


def bucket_rows(history_length: np.ndarray, bucket: str) -> np.ndarray:
    """Boolean rows of a bucket label (``100-200`` = [100, 200), ``200-inf``; "" = every row)."""
    if not bucket:
        return np.ones(len(history_length), dtype=bool)
    low, high = bucket.split("-")
    return (history_length >= float(low)) & (history_length < (math.inf if high == "inf" else float(high)))


def paired_intervals(pairs: Sequence[Tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                     buckets: Sequence[str], settings: BootstrapSettings = BootstrapSettings(),
                     metrics: Sequence[str] = BOOTSTRAP_METRICS) -> Dict[Tuple[str, str], Tuple[float, float]]:
    """The interval of the seed-mean relative gain for every (metric, bucket).

    Args:
        pairs: per seed, (LAIN's, the backbone's) predictions (:func:`~.predictions.read_predictions`), all of
            the same test set (same users and labels in the same order).
        buckets: bucket labels ("" = all samples).
    Returns:
        ``{(metric, bucket): (low, high)}`` in %, NaN where no replicate defines the metric.
    Raises:
        ValueError: the predictions are not all of one test set.
    """
    reference = pairs[0][1]
    for lain, base in pairs:
        for arrays in (lain, base):
            if not (np.array_equal(arrays["user_index"], reference["user_index"]) and
                    np.array_equal(arrays["label"], reference["label"])):
                raise ValueError("the predictions are not of the same test set (users or labels differ)")
    user_ids, users = np.unique(reference["user_index"], return_inverse=True)
    rng = np.random.default_rng(settings.seed)
    cells = [(m, b) for b in buckets for m in metrics]
    stats: List[Dict[str, Tuple[UserStatistics, UserStatistics]]] = []
    for lain, base in pairs:
        per_bucket = {}
        for bucket in buckets:
            rows = bucket_rows(reference["history_length"], bucket)
            lain_stats, base_stats = (UserStatistics(a["label"][rows], a["score"][rows], users[rows], len(user_ids))
                                      for a in (lain, base))
            per_bucket[bucket] = (lain_stats, base_stats)
        stats.append(per_bucket)
    draws: Dict[Tuple[str, str], List[np.ndarray]] = {cell: [] for cell in cells}
    for start in range(0, settings.replicates, BLOCK):
        counts = rng.multinomial(len(user_ids), np.full(len(user_ids), 1.0 / len(user_ids)),
                                 size=min(BLOCK, settings.replicates - start)).astype(np.float64)
        gains: Dict[Tuple[str, str], List[np.ndarray]] = {cell: [] for cell in cells}
        for per_bucket in stats:
            for bucket, (lain_stats, base_stats) in per_bucket.items():
                lain_values, base_values = lain_stats.metrics(counts), base_stats.metrics(counts)
                for metric in metrics:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        gains[(metric, bucket)].append((lain_values[metric] - base_values[metric]) /
                                                       base_values[metric] * 100.0)
        for cell in cells:
            draws[cell].append(np.mean(gains[cell], axis=0))
    tail = (1.0 - settings.level) / 2 * 100
    out = {}
    for cell in cells:
        values = np.concatenate(draws[cell])
        values = values[np.isfinite(values)]
        out[cell] = ((float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
                     if len(values) else (math.nan, math.nan))
    return out
