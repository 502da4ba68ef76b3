"""The named columns of one H5 file, held in memory or read from the file on demand (``out_of_core``).

Out of core, a column is read with ``pread`` at the byte offset of its contiguous, uncompressed H5 dataset
(how :func:`lainctr.data.store.write_dataset` writes every one) into buffers of the rows asked for: the
process holds those rows and nothing else of the file. :meth:`Columns.take` sorts the rows and reads them in
pieces: rows closer than ``GAP_BYTES`` share a read, no read spans more than ``CHUNK_BYTES``. The loader asks
for the rows of many consecutive batches at once (``loader.ROWS_PER_READ``), which on a shuffled split makes
the read a pass over the file in 16 MB pieces instead of one read call per row (a read call costs ~5 us; per
row that made the loader 4-5x slower than in memory). The kernel's page cache keeps the file's pages: they are
reclaimable and not part of the process's RSS.

A memory map was measured first and dropped: on this machine's kernel (6.18, large page-cache folios) touching
one row mapped up to 2 MB into the RSS, so a shuffled batch mapped most of the file whatever was released
(MADV_DONTNEED) after it.

A column that cannot be read this way (chunked or compressed by a writer other than the store, unallocated,
a dtype without a native fixed-size layout) is held in memory instead; :func:`lainctr.data.store.open_columns`
says so in one warning naming the file and the columns.
"""
from __future__ import annotations

import os
import threading
import weakref
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from .validation import DataValidationError

CHUNK_BYTES = 16 << 20   # the most one read covers: validation and checksum chunks, pieces of take()
GAP_BYTES = 32 << 10     # take() reads through gaps up to this size: ~ what a read call costs (5 us) in copying


@dataclass(frozen=True)
class DiskColumn:
    """Where a column lies in its file: ``shape`` (rows, ...) of ``dtype`` from byte ``offset``, C order."""
    offset: int
    dtype: np.dtype
    shape: Tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.shape[1:], dtype=np.int64))


def crc32_hex(blocks: Iterable[memoryview]) -> str:
    """``crc32:<8 hex>`` of the concatenated blocks (zlib's CRC is incremental: the same as of one buffer)."""
    crc = 0
    for block in blocks:
        crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def array_blocks(values: np.ndarray) -> Iterator[memoryview]:
    """The array's bytes in C order, ``CHUNK_BYTES`` at a time (views, no copy for a contiguous array)."""
    data = np.ascontiguousarray(values).data.cast("B")
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start:start + CHUNK_BYTES]


class Columns(Mapping[str, np.ndarray]):
    """Named columns of one file (a split's sample columns: ``(n,)`` or ``(n, w)`` arrays of n rows each).

    A mapping of column names to whole arrays, as the dict it replaces (``len`` = number of columns); readers
    that must not hold an on-disk column whole use :meth:`take`, :meth:`chunks` and :meth:`checksum`.

    Args:
        path: the file (named in errors).
        in_memory: columns held as arrays.
        on_disk: columns read from ``path`` on demand.
        names: the column order (default: the in-memory ones, then the on-disk ones).
    """

    def __init__(self, path: str, in_memory: Mapping[str, np.ndarray], on_disk: Optional[Mapping[str, DiskColumn]] = None,
                 names: Optional[Sequence[str]] = None):
        self.path = path
        self._arrays = dict(in_memory)
        self._disk = dict(on_disk or {})
        self.names: Tuple[str, ...] = tuple(names or [*self._arrays, *self._disk])
        self._fd: Optional[int] = None
        self._fd_lock = threading.Lock()

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray], path: str = "<memory>") -> "Columns":
        """Columns held in memory, e.g. a converter's arrays before they are written."""
        return cls(path, arrays)

    # ----- shape and type --------------------------------------------------------------------
    @property
    def on_disk(self) -> Tuple[str, ...]:
        """The columns read from the file on demand (empty: all in memory)."""
        return tuple(self._disk)

    def __contains__(self, name: object) -> bool:
        return name in self._arrays or name in self._disk

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self._arrays[name].shape) if name in self._arrays else self._column(name).shape

    def dtype(self, name: str) -> np.dtype:
        return self._arrays[name].dtype if name in self._arrays else self._column(name).dtype

    def rows_of(self, name: str) -> int:
        return int(self.shape(name)[0])

    @property
    def num_rows(self) -> int:
        """Rows of the ``user_index`` column (of the first one in a file without it)."""
        return self.rows_of("user_index" if "user_index" in self else self.names[0])

    def nbytes(self, name: str) -> int:
        return int(self.dtype(name).itemsize * np.prod(self.shape(name), dtype=np.int64))

    def _column(self, name: str) -> DiskColumn:
        if name not in self._disk:
            raise KeyError(f"{self.path}: no column '{name}'; columns: {list(self.names)}")
        return self._disk[name]

    # ----- reading ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        """The whole column (read from the file for an on-disk column: for callers that need it whole)."""
        if name in self._arrays:
            return self._arrays[name]
        return self._read_range(name, 0, self.rows_of(name))

    def take(self, names: Iterable[str], rows: np.ndarray) -> Dict[str, np.ndarray]:
        """``{name: values[rows]}`` for (B,) int row indices: copies, in the order of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        return {name: self._arrays[name][rows] if name in self._arrays else self._read_rows(name, rows)
                for name in names}

    def chunks(self, names: Sequence[str]) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """``(first row, {name: rows first ... first + k - 1})`` over the whole file, k rows at a time with k
        such that no column's chunk exceeds ``CHUNK_BYTES``: bounded memory for a pass over every row."""
        widest = max([self.nbytes(n) // max(self.rows_of(n), 1) for n in names] + [1])
        step = max(1, CHUNK_BYTES // widest)
        for first in range(0, self.num_rows, step):
            end = min(first + step, self.num_rows)
            yield first, {name: self._arrays[name][first:end] if name in self._arrays
                          else self._read_range(name, first, end) for name in names}

    def checksum(self, name: str) -> str:
        """:func:`crc32_hex` of the column's bytes in C order, read ``CHUNK_BYTES`` at a time."""
        if name in self._arrays:
            return crc32_hex(array_blocks(self._arrays[name]))
        column = self._column(name)
        step = max(1, CHUNK_BYTES // max(column.row_bytes, 1))
        return crc32_hex(self._read_range(name, first, min(first + step, column.shape[0])).data.cast("B")
                         for first in range(0, column.shape[0], step))

    def _read_range(self, name: str, first: int, end: int) -> np.ndarray:
        column = self._column(name)
        out = np.empty((end - first,) + column.shape[1:], dtype=column.dtype)
        self._pread(name, out.data.cast("B"), column.offset + first * column.row_bytes, first)
        return out

    def _read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The rows in ascending order, read in pieces, then put back in ``rows``' order. Rows less than
        ``GAP_BYTES`` apart share a piece (reading through the gap is cheaper than another read), and no piece
        spans more than ``CHUNK_BYTES``: sparse rows cost a read each, dense ones a pass over the column."""
        column = self._column(name)
        if len(rows) and (rows.min() < 0 or rows.max() >= column.shape[0]):
            raise IndexError(f"{self.path}: rows outside column '{name}' of {column.shape[0]} rows")
        order = np.argsort(rows, kind="stable")
        ascending = rows[order]
        size = column.row_bytes
        gap_rows, chunk_rows = max(1, GAP_BYTES // size), max(1, CHUNK_BYTES // size)
        new_piece = (np.diff(ascending) > gap_rows) | (np.diff(ascending // chunk_rows) != 0)
        starts = np.concatenate([[0], np.flatnonzero(new_piece) + 1]).astype(np.int64)
        ends = np.append(starts[1:], len(ascending))
        block = np.empty((len(rows),) + column.shape[1:], dtype=column.dtype)
        for start, end in zip(starts.tolist(), ends.tolist()):
            low, high = int(ascending[start]), int(ascending[end - 1]) + 1
            if high - low == end - start:       # consecutive rows: read straight into place
                self._pread(name, block[start:end].data.cast("B"), column.offset + low * size, low)
            else:
                block[start:end] = self._read_range(name, low, high)[ascending[start:end] - low]
        out = np.empty_like(block)
        out[order] = block
        return out

    def _pread(self, name: str, buffer: memoryview, offset: int, row: int) -> None:
        if not len(buffer):
            return
        done = os.preadv(self._descriptor(), [buffer], offset)
        if done != len(buffer):
            raise DataValidationError(self.path, name, row, "the file ends inside the column (truncated or changed "
                                      "since it was opened); rebuild or re-download the dataset folder")

    def _descriptor(self) -> int:
        """The file, opened once per object (``pread`` needs no shared position: threads may read at once)."""
        with self._fd_lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
                weakref.finalize(self, os.close, self._fd)
            return self._fd
