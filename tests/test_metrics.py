"""Vectorised metrics against scikit-learn and a per-group reference loop."""
import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from lainctr import metrics


def reference_gauc(y, p, g):
    num = den = 0.0
    for group in np.unique(g):
        rows = g == group
        if 0 < y[rows].sum() < rows.sum():
            num += roc_auc_score(y[rows], p[rows]) * rows.sum()
            den += rows.sum()
    return num / den


@pytest.mark.parametrize("seed", range(3))
def test_against_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    y = rng.integers(0, 2, n).astype(float)
    p = np.round(rng.random(n) * 0.5 + 0.3 * y, 2)          # many ties
    g = rng.integers(0, 300, n)
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.gauc(y, p, g) == pytest.approx(reference_gauc(y, p, g), abs=1e-12)
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-12)


def test_single_class_groups_are_skipped_and_all_single_class_is_nan():
    y = np.array([1, 0, 1, 1, 0, 0.])
    p = np.array([.9, .1, .4, .6, .3, .2])
    g = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.gauc(y, p, g) == pytest.approx(1.0)
    assert np.isnan(metrics.auc(np.ones(4), np.arange(4.)))


def test_bucket_metrics():
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.integers(0, 2, n).astype(float)
    p = rng.random(n)
    g = rng.integers(0, 50, n)
    length = rng.integers(0, 400, n)
    out = metrics.bucket_metrics(y, p, g, length, [100, 200], ["AUC", "gAUC", "logloss"])
    rows = (length >= 100) & (length < 200)
    assert out["samples@100-200"] == rows.sum()
    assert out["users@100-200"] == len(np.unique(g[rows]))
    assert out["AUC@100-200"] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    assert out["ctr@200-inf"] == pytest.approx(y[length >= 200].mean())
    assert sum(out[f"samples@{b}"] for b in ("0-100", "100-200", "200-inf")) == n


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.evaluate_metrics(np.ones(2), np.ones(2), ["AUCC"], np.zeros(2))
