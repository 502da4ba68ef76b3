"""A run's kept test predictions: ``test_predictions.npz`` in its run directory, named by the results row's
``predictions_file`` column (not ``test_...``: that prefix marks metric columns), so that paired statistics
(:mod:`.bootstrap`) can be recomputed without the model.

Compressed NumPy arrays, one value per test sample in the loader's order: ``score`` (float32, the model's
click probability exactly as evaluated), ``label`` (int8), ``user_index`` (int64) and ``history_length``
(int64, the untruncated ``seq_len``).
"""
from __future__ import annotations

import zipfile
from typing import Any, Dict, Mapping

import numpy as np

from ..atomic import write_atomically
from ..errors import InputFileError

PREDICTIONS_FILE = "test_predictions.npz"
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
