"""Checks run on every dataset folder when it is loaded.

Each check raises :class:`DataValidationError` naming the file, the column and the first bad row, so a
corrupted or mis-converted file is caught before training instead of producing silent garbage.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:   # columns.py imports this module for DataValidationError
    from .columns import Columns


class DataValidationError(ValueError):
    """Bad input data: the message names the file, the column and the first offending row."""

    def __init__(self, file: str, column: str, row: Optional[int], problem: str):
        where = f"{file}: column '{column}'" + (f" row {row}" if row is not None else "")
        super().__init__(f"{where}: {problem}")
        self.file, self.column, self.row = file, column, row


def first_bad_row(bad: np.ndarray) -> Optional[int]:
    """Index of the first True in a boolean (n,) or (n, ...) array, or None."""
    bad = np.asarray(bad)
    hits = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1) if bad.ndim > 1 else bad)
    return int(hits[0]) if len(hits) else None


def check_range(file: str, column: str, values: np.ndarray, low: int, high: int, first_row: int = 0) -> None:
    """Every value must lie in ``[low, high)``; ``values`` are rows ``first_row ...`` of the column."""
    row = first_bad_row((values < low) | (values >= high))
    if row is not None:
        bad = np.asarray(values)[row]
        raise DataValidationError(file, column, first_row + row, f"value {bad.tolist()} outside [{low}, {high})")


def check_integer(file: str, column: str, dtype: np.dtype) -> None:
    if not np.issubdtype(dtype, np.integer):
        raise DataValidationError(file, column, None, f"expected an integer dtype, got {dtype}")


def validate_sequences(file: str, offsets: np.ndarray, items: np.ndarray, num_items: int,
                       side: Mapping[str, np.ndarray]) -> None:
    """CSR sanity: offsets start at 0, never decrease, end at len(items); items are real (>= 1)."""
    check_integer(file, "offsets", offsets.dtype)
    check_integer(file, "items", items.dtype)
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
            check_integer(file, name, values.dtype)
            check_range(file, name, values, 0, vocab[name])
    if not num_items:
        raise DataValidationError(file, "*", None, "item table is empty")
    return num_items


RowCheck = Callable[[int, Dict[str, np.ndarray]], None]   # (first row, the chunk's columns) -> raises or not


def validate_split(file: str, columns: "Columns", label: Optional[str], seq_lengths: np.ndarray, num_items: int,
                   vocab: Dict[str, int], sequences_items: Optional[np.ndarray] = None,
                   offsets: Optional[np.ndarray] = None) -> None:
    """Sample columns: ids in range, ``seq_len`` within the user's sequence, binary labels (``label`` None: samples
    without labels, e.g. new ones to score).

    When ``sequences_items``/``offsets`` are given (the format promises that a positive sample's target is
    the next behaviour), every positive sample's ``item_index`` must equal ``items[offsets[u] + seq_len]``.
    Every check is one pass over the rows in bounded chunks (:meth:`Columns.chunks`: columns read from disk are
    never held whole), checks in a fixed order, so the error names the same first bad row as a check of the
    whole column would.
    """
    n = columns.rows_of("user_index")
    for name in columns.names:
        if columns.rows_of(name) != n:
            raise DataValidationError(file, name, None, f"{columns.rows_of(name)} rows, 'user_index' has {n}")
    for name in ("user_index", "item_index", "seq_len") + ((label,) if label is not None else ()):
        check_integer(file, name, columns.dtype(name))

    def each_chunk(names: Sequence[str], check: RowCheck) -> None:
        for first, chunk in columns.chunks(names):
            check(first, chunk)

    def in_range(name: str, low: int, high: int) -> RowCheck:
        return lambda first, chunk: check_range(file, name, chunk[name], low, high, first)

    each_chunk(["user_index"], in_range("user_index", 0, len(seq_lengths)))
    each_chunk(["item_index"], in_range("item_index", 1, num_items))
    each_chunk(["user_index", "seq_len"], lambda first, chunk: _check_seq_len(file, chunk, seq_lengths, first))
    if label is not None:
        each_chunk([label], in_range(label, 0, 2))
    for name, size in vocab.items():
        if name in columns:
            check_integer(file, name, columns.dtype(name))
            each_chunk([name], in_range(name, 0, size))
    if sequences_items is not None and label is not None:
        clicked: str = label   # narrowed for the closures below
        assert offsets is not None, "the target-is-next check needs the sequence offsets"
        names = ["user_index", "item_index", "seq_len", clicked]
        each_chunk(names, lambda first, chunk: _check_has_next(file, chunk, clicked, seq_lengths, first))
        each_chunk(names, lambda first, chunk: _check_target_is_next(file, chunk, clicked, seq_lengths, sequences_items,
                                                                     offsets, first))


def _check_seq_len(file: str, chunk: Mapping[str, np.ndarray], seq_lengths: np.ndarray, first: int) -> None:
    user, seq_len = chunk["user_index"], chunk["seq_len"]
    row = first_bad_row((seq_len < 0) | (seq_len > seq_lengths[user]))
    if row is not None:
        raise DataValidationError(file, "seq_len", first + row,
                                  f"seq_len {seq_len[row]} outside [0, {seq_lengths[user[row]]}] "
                                  f"(length of the sequence of user_index {user[row]})")


def _check_has_next(file: str, chunk: Mapping[str, np.ndarray], label: str, seq_lengths: np.ndarray,
                    first: int) -> None:
    row = first_bad_row((chunk[label] == 1) & ~(chunk["seq_len"] < seq_lengths[chunk["user_index"]]))
    if row is not None:
        raise DataValidationError(file, "seq_len", first + row, "positive sample has no next behaviour to match")


def _check_target_is_next(file: str, chunk: Mapping[str, np.ndarray], label: str, seq_lengths: np.ndarray,
                          sequences_items: np.ndarray, offsets: np.ndarray, first: int) -> None:
    user, seq_len, target = chunk["user_index"], chunk["seq_len"], chunk["item_index"]
    has_next = seq_len < seq_lengths[user]
    nxt = np.where(has_next, sequences_items[np.minimum(offsets[user] + seq_len, len(sequences_items) - 1)], -1)
    row = first_bad_row((chunk[label] == 1) & (nxt != target))
    if row is not None:
        raise DataValidationError(file, "item_index", first + row,
                                  f"positive target {target[row]} != next behaviour "
                                  f"{nxt[row]} of user_index {user[row]} at seq_len {seq_len[row]}")
