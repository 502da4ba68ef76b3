"""A file of samples to score, in a dataset's converted layout, read and validated like one of its splits.

Accepted files: ``.h5`` (one dataset per column, as ``train.h5``), ``.parquet`` (a ``list`` column of fixed length
gives a 2-D feature, e.g. a LongCTR release's sequence features) and ``.csv`` (scalar columns only). The columns are
those of the dataset's splits: ``user_index`` and ``item_index`` (rows of its ``sequences.h5`` and ``items.h5``),
``seq_len`` (how many of the user's behaviours precede the sample), every context feature, ``timestamp`` where the
splits have one; the label is optional; other columns are ignored. So a sample is a known user and a known item at
any point of the user's history. A LongCTR release's parquet of samples is in this layout already (the conversion
re-encodes nothing); the raw formats whose ids the conversion re-encodes (BARS x1 CSVs, raw EB-NeRD) are not read:
their ids mean nothing without the conversion's mapping, which is not kept.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping

import numpy as np

from ..errors import InputFileError
from . import store
from .columns import Columns
from .dataset import SequenceDataset, vocabulary
from .validation import DataValidationError, validate_split

FORMATS = (".h5", ".parquet", ".csv")


def _read_table(path: str) -> Dict[str, np.ndarray]:
    """Every column of a parquet or CSV file; fixed-length list columns as (n, w) arrays."""
    import pandas as pd  # noqa: PLC0415 (pandas only for these formats)
    try:
        frame = pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise InputFileError(f"{path}: not a readable {os.path.splitext(path)[1][1:]} file ({error})") from error
    columns = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == object and len(values) and isinstance(values[0], (list, np.ndarray)):
            widths = {len(v) for v in values}
            if len(widths) != 1:
                raise DataValidationError(path, str(name), None, f"list lengths {sorted(widths)[:5]} differ; a "
                                          "sequence feature needs one fixed length")
            values = np.stack([np.asarray(v) for v in values])
        columns[str(name)] = values
    return columns


def read_columns(path: str) -> Dict[str, np.ndarray]:
    """The columns of a sample file (see :data:`FORMATS`)."""
    if not path.endswith(FORMATS):
        raise InputFileError(f"{path}: unknown format; --input takes {', '.join(FORMATS)} files in the dataset's "
                             "converted layout")
    if not os.path.exists(path):
        raise InputFileError(f"{path}: file not found")
    return store.read_h5(path) if path.endswith(".h5") else _read_table(path)


def required_columns(dataset: SequenceDataset) -> List[str]:
    """The columns a sample file must have: those of the dataset's splits but the label."""
    split = next(iter(dataset.splits.values()))
    return [name for name in split if name != dataset.label]


def read_samples(path: str, dataset: SequenceDataset) -> Columns:
    """The validated columns of ``path``, cast to the dtypes of the dataset's splits; errors name the file, the column
    and the first bad row (:func:`lainctr.data.validation.validate_split`). Shapes and dtypes of the splits come
    from :class:`Columns` (an out-of-core split's columns are not read)."""
    found = read_columns(path)
    if not found or not len(next(iter(found.values()))):
        raise InputFileError(f"{path}: no samples")
    required = required_columns(dataset)
    missing = [c for c in required if c not in found]
    if missing:
        raise DataValidationError(path, missing[0], None, f"missing; --input takes the dataset's converted layout, "
                                  f"the columns of its splits: {required} (label '{dataset.label}' optional); "
                                  "raw-format files (BARS x1 CSVs, raw EB-NeRD) are not read")
    split = next(iter(dataset.splits.values()))
    wanted = required + ([dataset.label] if dataset.label in found else [])
    columns = {name: found[name] for name in wanted}
    _check_shapes(path, columns, split)
    validate_split(path, Columns.of(columns, path), dataset.label if dataset.label in columns else None,
                   dataset.sequence_lengths(), dataset.num_items, vocabulary(dataset.feature_map_json, source_item=False))
    return Columns.of({name: values.astype(split.dtype(name), copy=False) for name, values in columns.items()}, path)


def _check_shapes(path: str, columns: Mapping[str, np.ndarray], split: Columns) -> None:
    """Each column has the split's width and kind (integer columns integers, numbers numbers)."""
    for name, values in columns.items():
        width, dtype = split.shape(name)[1:], split.dtype(name)
        if values.shape[1:] != width:
            raise DataValidationError(path, name, None, f"shape (n, {', '.join(map(str, values.shape[1:]))}) "
                                      f"where the dataset has (n, {', '.join(map(str, width))})")
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(values.dtype, np.integer):
            raise DataValidationError(path, name, None, f"expected integers, got {values.dtype} (an empty cell?)")
        if not np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.bool_):
            raise DataValidationError(path, name, None, f"expected numbers, got {values.dtype}")
