"""The results file: one CSV row per run, read by the leaderboard tooling.

Columns: run identity (``run_id``, ``timestamp``, ``expid``, ``dataset_id``, ``model``, ``backbone``,
``lain``, ``seed``, ``max_len``), ``params`` and ``versions`` as JSON, parameter counts, timings, then
``{split}_{metric}`` (split in valid/test, metric in AUC/gAUC/logloss) and per length bucket
``{split}_{metric}@{low}-{high}`` plus ``{split}_samples@..``, ``{split}_users@..``, ``{split}_ctr@..``.
A row with columns the file lacks widens the file (old rows get empty cells); the file is rewritten to a
temporary name and renamed, so a crash never leaves it half-written.
"""
from __future__ import annotations

import csv
import os
import tempfile
from typing import Dict, List


def read_results(path: str) -> List[Dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fd:
        return list(csv.DictReader(fd))


def append_result(path: str, row: Dict[str, object]) -> None:
    """Append ``row`` to the CSV at ``path`` atomically, widening the header if needed."""
    rows = read_results(path)
    columns = list(rows[0].keys()) if rows else []
    columns += [c for c in row if c not in columns]
    rows.append({k: row[k] for k in row})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".results-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
