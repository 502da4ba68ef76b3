"""The results file: one CSV row per run, read by the leaderboard tooling.

Columns: run identity (``run_id``, ``timestamp``, ``expid``, ``dataset_id``, ``model``, ``backbone``,
``lain``, ``seed``, ``max_len``), ``params`` and ``versions`` as JSON, parameter counts, timings, then
``{split}_{metric}`` (split in valid/test, metric in AUC/gAUC/logloss) and per length bucket
``{split}_{metric}@{low}-{high}`` plus ``{split}_samples@..``, ``{split}_users@..``, ``{split}_ctr@..``.
A row with columns the file lacks widens the file (old rows get empty cells). Writers hold the file's lock
(``<file>.lock``, see :mod:`lainctr.atomic`) while they read, rewrite to a temporary name and rename, so
concurrent runs lose no row and a crash never leaves the file half-written.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List

from . import atomic
from .errors import InputFileError

LEGACY_TEMP_MAX_AGE_S = 24 * 3600  # ``.results-*.csv`` temporaries of writers before the lock: surely dead by then


@dataclass
class ResultsTable:
    """A results CSV as read: header, rows (``{column: text}``) and each row's 1-based line in the file."""
    columns: List[str]
    rows: List[Dict[str, str]]
    lines: List[int]


def read_table(path: str) -> ResultsTable:
    """Read a results CSV (a missing or empty file has no rows); blank lines are skipped.

    Raises:
        InputFileError: a line whose field count differs from the header's, or unreadable CSV (path and line).
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return ResultsTable([], [], [])
    table = ResultsTable([], [], [])
    with open(path, newline="") as fd:
        reader = csv.reader(fd, strict=True)
        try:
            for fields in reader:
                if fields:
                    _add_line(path, table, fields, reader.line_num)
        except csv.Error as error:
            raise InputFileError(f"{path}: line {reader.line_num}: not readable as CSV ({error})") from error
    return table


def _add_line(path: str, table: ResultsTable, fields: List[str], line: int) -> None:
    if not table.columns:
        table.columns = fields
    elif len(fields) != len(table.columns):
        raise InputFileError(f"{path}: line {line}: {len(fields)} fields, the header has {len(table.columns)}; "
                             "repair or remove that line")
    else:
        table.rows.append(dict(zip(table.columns, fields)))
        table.lines.append(line)


def read_results(path: str) -> List[Dict[str, str]]:
    return read_table(path).rows


def append_result(path: str, row: Dict[str, Any]) -> None:
    """Append ``row`` to the CSV at ``path`` under its lock, atomically, widening the header if needed."""
    with atomic.locked(path):
        _remove_leftovers(path)
        table = read_table(path)
        columns = table.columns + [c for c in row if c not in table.columns]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(table.rows + [row])
        atomic.write_atomically(path, write)


def _remove_leftovers(path: str) -> None:
    """Temporaries of killed writers: this file's (we hold its lock) and old-style ones over a day old."""
    atomic.remove_stale_temps(path)
    for legacy in glob.glob(os.path.join(os.path.dirname(os.path.abspath(path)), ".results-*.csv")):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.path.getmtime(legacy) > LEGACY_TEMP_MAX_AGE_S:
                os.unlink(legacy)
