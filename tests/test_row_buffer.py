"""RowBuffer: batch-by-batch per-sample arrays equal the concatenation of the batches, across regrowths."""
import numpy as np

from lainctr.data import row_buffer
from lainctr.data.row_buffer import RowBuffer


def test_rows_come_back_as_their_concatenation_across_regrowths(monkeypatch):
    monkeypatch.setattr(row_buffer, "INITIAL_ROWS", 4)
    rng = np.random.default_rng(0)
    batches = [rng.random(n).astype(np.float32) for n in (3, 1, 7, 0, 20, 2)]
    labels = [rng.integers(0, 2, len(b)).astype(np.int8) for b in batches]
    buffer = RowBuffer()
    for scores, clicks in zip(batches, labels):
        buffer.add("y_pred", scores)
        buffer.add("y_true", clicks)
    arrays = buffer.arrays()
    assert np.array_equal(arrays["y_pred"], np.concatenate(batches)) and arrays["y_pred"].dtype == np.float32
    assert np.array_equal(arrays["y_true"], np.concatenate(labels)) and arrays["y_true"].dtype == np.int8
    assert buffer.filled("y_pred") == 33 and buffer.filled("gini") == 0 and "gini" not in arrays
