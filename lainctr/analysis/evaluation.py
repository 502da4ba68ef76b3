"""Evaluation columns beyond the metrics (``Trainer.evaluate_split``): length shares and attention Gini."""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

from .gini import gini_by_bucket
from .length import bucket_report


def extra_evaluation_columns(arrays: Mapping[str, np.ndarray], split: str, boundaries: Sequence[int]) -> Dict[str, float]:
    """``{split}_sample_share@..``, ``{split}_user_share@..`` and, when ``arrays`` has ``gini`` (see
    ``Trainer.predict_arrays(loader, attention_branch="long")``), ``{split}_gini@..``,
    ``{split}_gini``, ``{split}_gini_bucket_var``, ``{split}_gini_row_var``.
    """
    columns: Dict[str, float] = {}
    for label, stats in bucket_report(arrays, boundaries).items():
        columns[f"{split}_sample_share@{label}"] = stats["sample_share"]
        columns[f"{split}_user_share@{label}"] = stats["user_share"]
    if "gini" in arrays:
        for key, value in gini_by_bucket(arrays["gini"], arrays["history_length"], boundaries).items():
            if not key.startswith("gini_rows"):
                columns[f"{split}_{key}"] = value
    return columns
