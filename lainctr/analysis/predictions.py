"""A run's kept test predictions: ``test_predictions.npz`` in its run directory, named by the results row's
``predictions_file`` column (not ``test_...``: that prefix marks metric columns), so that paired statistics
(:mod:`.bootstrap`) can be recomputed without the model.

Compressed NumPy arrays, one value per test sample in the loader's order: ``score`` (float32, the model's
click probability exactly as evaluated), ``label`` (int8), ``user_index`` (int64) and ``history_length``
(int64, the untruncated ``seq_len``).

Run directories stay on the machine that made them. :func:`keep_predictions` copies the predictions of a
results file's rows next to it, as ``<results folder>/predictions/<run_id>.npz``, so that the file and that
folder (committed together, e.g. under ``docs/demo/``) carry everything the paired intervals need to another
machine; :func:`kept_predictions_path` is where the leaderboard looks when a row's own file is not there.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import zipfile
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..atomic import write_atomically
from ..errors import InputFileError

PREDICTIONS_FILE = "test_predictions.npz"
KEPT_FOLDER = "predictions"   # beside a results file: <run_id>.npz per row
RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")
COLUMNS = {"score": np.float32, "label": np.int8, "user_index": np.int64, "history_length": np.int64}


def write_predictions(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``Trainer.predict_arrays`` output (``y_pred``, ``y_true``, ``group``, ``history_length``) to
    ``path`` (compressed, atomically)."""
    columns = {"score": arrays["y_pred"], "label": arrays["y_true"], "user_index": arrays["group"],
               "history_length": arrays["history_length"]}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fd:   # a file object: np.savez would append .npz to the temporary name
            typed: Dict[str, Any] = {k: np.asarray(v).reshape(-1).astype(COLUMNS[k]) for k, v in columns.items()}
            np.savez_compressed(fd, **typed)   # Any: NumPy 2's stubs type savez_compressed's keywords as bool
    write_atomically(path, write)


def read_predictions(path: str) -> Dict[str, np.ndarray]:
    """The arrays of a predictions file.

    Raises:
        InputFileError: unreadable, a column missing, or columns of different lengths (the message names the
            file and the column).
    """
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {k: content[k] for k in content.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputFileError(f"{path}: not a readable predictions file ({error})") from error
    for column in COLUMNS:
        if column not in arrays:
            raise InputFileError(f"{path}: no column '{column}' (has {sorted(arrays)})")
        if len(arrays[column]) != len(arrays["score"]):
            raise InputFileError(f"{path}: column '{column}' has {len(arrays[column])} values, 'score' "
                                 f"{len(arrays['score'])}")
    return {column: arrays[column] for column in COLUMNS}


def kept_predictions_path(results_dir: str, run_id: str) -> str:
    """``<results_dir>/predictions/<run_id>.npz``: where :func:`keep_predictions` puts a row's predictions."""
    return os.path.join(results_dir, KEPT_FOLDER, f"{run_id}.npz")


def keep_predictions(results_file: str) -> Tuple[List[str], List[str]]:
    """Copy the predictions file of every row of ``results_file`` to :func:`kept_predictions_path` beside it
    (atomically; rows already kept are skipped). Returns (files written, notes on rows with nothing to copy).

    Raises:
        InputFileError: a row whose ``run_id`` is not a plain name (the message names the file and the row),
            or whose predictions file cannot be read.
    """
    from ..paths import find_file, zoo_root
    from ..results import read_results
    results_dir = os.path.dirname(os.path.abspath(results_file))
    written, notes = [], []
    for number, row in enumerate(read_results(results_file), start=2):   # line 1 is the header
        run_id, source = str(row.get("run_id", "") or ""), str(row.get("predictions_file", "") or "")
        if not RUN_ID.match(run_id):
            raise InputFileError(f"{results_file}, line {number}: run_id {run_id!r} is not a plain name "
                                 "([A-Za-z0-9_-]+)")
        target = kept_predictions_path(results_dir, run_id)
        if os.path.exists(target):
            continue
        found = find_file(source, [results_dir, zoo_root()])   # as the leaderboard resolves the column
        if found is None:
            notes.append(f"line {number} ({row.get('expid')} seed {row.get('seed')}, run {run_id}): "
                         + (f"{source} not found" if source else "no predictions_file"))
            continue
        read_predictions(found)   # copy only what reads back
        write_atomically(target, functools.partial(shutil.copyfile, found))
        written.append(target)
    return written, notes
