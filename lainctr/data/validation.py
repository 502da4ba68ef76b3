"""Checks run on every dataset folder when it is loaded.

Each check raises :class:`DataValidationError` naming the file, the column and the first bad row, so a
corrupted or mis-converted file is caught before training instead of producing silent garbage.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np


class DataValidationError(ValueError):
    """Bad input data: the message names the file, the column and the first offending row."""

    def __init__(self, file: str, column: str, row: Optional[int], problem: str):
        where = f"{file}: column '{column}'" + (f" row {row}" if row is not None else "")
        super().__init__(f"{where}: {problem}")
        self.file, self.column, self.row = file, column, row


def first_bad_row(bad: np.ndarray) -> Optional[int]:
    """Index of the first True in a boolean (n,) or (n, ...) array, or None."""
    bad = np.asarray(bad)
    if bad.ndim > 1:
        bad = bad.reshape(len(bad), -1).any(axis=1)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else None


def check_range(file: str, column: str, values: np.ndarray, low: int, high: int) -> None:
    """Every value must lie in ``[low, high)``."""
    row = first_bad_row((values < low) | (values >= high))
    if row is not None:
        bad = np.asarray(values)[row]
        raise DataValidationError(file, column, row, f"value {bad.tolist()} outside [{low}, {high})")


def check_integer(file: str, column: str, values: np.ndarray) -> None:
    if not np.issubdtype(np.asarray(values).dtype, np.integer):
        raise DataValidationError(file, column, None, f"expected an integer dtype, got {values.dtype}")


def validate_sequences(file: str, offsets: np.ndarray, items: np.ndarray, num_items: int,
                       side: Mapping[str, np.ndarray]) -> None:
    """CSR sanity: offsets start at 0, never decrease, end at len(items); items are real (>= 1)."""
    check_integer(file, "offsets", offsets)
    check_integer(file, "items", items)
    if len(offsets) == 0 or offsets[0] != 0:
        raise DataValidationError(file, "offsets", 0, "must start with 0")
    row = first_bad_row(np.diff(offsets) < 0)
    if row is not None:
        raise DataValidationError(file, "offsets", row + 1, "offsets decrease (negative sequence length)")
    if offsets[-1] != len(items):
        raise DataValidationError(file, "offsets", len(offsets) - 1,
                                  f"last offset {offsets[-1]} != number of behaviours {len(items)}")
    check_range(file, "items", items, 1, num_items)
    for name, values in side.items():
        if len(values) != len(items):
            raise DataValidationError(file, f"side/{name}", None,
                                      f"length {len(values)} != number of behaviours {len(items)}")
    if "timestamp" in side:
        decreasing = np.diff(side["timestamp"]) < 0
        user_starts = offsets[1:-1]
        decreasing[user_starts[(user_starts > 0) & (user_starts < len(items))] - 1] = False   # a new user may start earlier
        row = first_bad_row(decreasing)
        if row is not None:
            raise DataValidationError(file, "side/timestamp", row + 1, "timestamps decrease within a user's sequence")


def validate_item_table(file: str, table: Mapping[str, np.ndarray], vocab: Dict[str, int]) -> int:
    """All item features have the same rows, row 0 is all zeros, categorical ids are in vocabulary.

    Returns:
        the number of item rows (padding row included).
    """
    num_items = None
    for name, values in table.items():
        if num_items is None:
            num_items = len(values)
        if len(values) != num_items:
            raise DataValidationError(file, name, None, f"{len(values)} rows, other features have {num_items}")
        if np.any(np.asarray(values[0]) != 0):
            raise DataValidationError(file, name, 0, "row 0 is the padding item and must be all zeros")
        if name in vocab:
            check_integer(file, name, values)
            check_range(file, name, values, 0, vocab[name])
    if not num_items:
        raise DataValidationError(file, "*", None, "item table is empty")
    return num_items


def validate_split(file: str, columns: Mapping[str, np.ndarray], label: Optional[str], seq_lengths: np.ndarray,
                   num_items: int, vocab: Dict[str, int], sequences_items: Optional[np.ndarray] = None,
                   offsets: Optional[np.ndarray] = None) -> None:
    """Sample columns: ids in range, ``seq_len`` within the user's sequence, binary labels (``label`` None: samples
    without labels, e.g. new ones to score).

    When ``sequences_items``/``offsets`` are given (the format promises that a positive sample's target is
    the next behaviour), every positive sample's ``item_index`` must equal ``items[offsets[u] + seq_len]``.
    """
    n = len(columns["user_index"])
    for name, values in columns.items():
        if len(values) != n:
            raise DataValidationError(file, name, None, f"{len(values)} rows, 'user_index' has {n}")
    for name in ("user_index", "item_index", "seq_len") + ((label,) if label is not None else ()):
        check_integer(file, name, columns[name])
    user = columns["user_index"]
    check_range(file, "user_index", user, 0, len(seq_lengths))
    check_range(file, "item_index", columns["item_index"], 1, num_items)
    seq_len = columns["seq_len"]
    row = first_bad_row((seq_len < 0) | (seq_len > seq_lengths[user]))
    if row is not None:
        raise DataValidationError(file, "seq_len", row,
                                  f"seq_len {seq_len[row]} outside [0, {seq_lengths[user[row]]}] "
                                  f"(length of the sequence of user_index {user[row]})")
    if label is not None:
        check_range(file, label, columns[label], 0, 2)
    for name, size in vocab.items():
        if name in columns:
            check_integer(file, name, columns[name])
            check_range(file, name, columns[name], 0, size)
    if sequences_items is not None and label is not None:
        positive = columns[label] == 1
        has_next = seq_len < seq_lengths[user]
        if first_bad_row(positive & ~has_next) is not None:
            row = first_bad_row(positive & ~has_next)
            raise DataValidationError(file, "seq_len", row, "positive sample has no next behaviour to match")
        assert offsets is not None, "the target-is-next check needs the sequence offsets"
        nxt = np.where(has_next, sequences_items[np.minimum(offsets[user] + seq_len, len(sequences_items) - 1)], -1)
        row = first_bad_row(positive & (nxt != columns["item_index"]))
        if row is not None:
            raise DataValidationError(file, "item_index", row,
                                      f"positive target {columns['item_index'][row]} != next behaviour "
                                      f"{nxt[row]} of user_index {user[row]} at seq_len {seq_len[row]}")
