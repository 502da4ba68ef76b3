"""Summary statistics over seeds."""
from __future__ import annotations

import math
from typing import Iterable, Tuple

import numpy as np


def mean_std(values: Iterable[float]) -> Tuple[float, float]:
    """(mean, sample std with ddof 1) over the values that are not NaN; NaN where undefined (no value; std of one)."""
    finite = np.asarray([float(v) for v in values if not math.isnan(float(v))], np.float64)
    if len(finite) == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
