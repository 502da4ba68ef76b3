"""Length-bucket statistics of an evaluation split (spec section 7, "imbalance statistics")."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping, Sequence

import numpy as np

from ..metrics import bucket_edges, bucket_label


def bucket_report(arrays: Mapping[str, np.ndarray], boundaries: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """Per length bucket [low, high): samples, sample share, users, user share, CTR.

    A sample is bucketed by its own ``history_length`` (the untruncated ``seq_len``). A user is bucketed
    once, by the longest history among their samples in ``arrays`` (their full history length in the
    split), so user shares sum to 1 as in the paper's "57 % of users / 14.3 % of samples".

    Args:
        arrays: ``y_true``, ``group`` (user) and ``history_length``, each (N,), e.g. from
            ``Trainer.predict_arrays(loader)``.
        boundaries: bucket boundaries, e.g. [100, 200].
    Returns:
        ``{"0-100": {"samples", "sample_share", "users", "user_share", "ctr"}, ...}`` in bucket order.
    """
    y_true = np.asarray(arrays["y_true"], np.float64).reshape(-1)
    group = np.asarray(arrays["group"]).reshape(-1)
    length = np.asarray(arrays["history_length"]).reshape(-1)
    total = len(y_true)
    users, user_index = np.unique(group, return_inverse=True)
    user_length = np.full(len(users), -1, dtype=np.int64)
    np.maximum.at(user_length, user_index, length.astype(np.int64))
    report: Dict[str, Dict[str, float]] = OrderedDict()
    for low, high in bucket_edges(boundaries):
        rows = (length >= low) & (length < high)
        in_bucket = (user_length >= low) & (user_length < high)
        report[bucket_label(low, high)] = {
            "samples": int(rows.sum()),
            "sample_share": float(rows.sum() / total) if total else float("nan"),
            "users": int(in_bucket.sum()),
            "user_share": float(in_bucket.sum() / len(users)) if len(users) else float("nan"),
            "ctr": float(y_true[rows].mean()) if rows.any() else float("nan"),
        }
    return report
