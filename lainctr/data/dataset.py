"""Load a dataset folder (see :mod:`lainctr.data.store`), validated, ready for the loader: the per-user sequences
and the item table in memory, the splits' sample columns in memory or (``in_memory=False``) read from their
files batch by batch."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import InputFileError
from . import store
from .columns import Columns
from .feature_map_check import check_feature_map
from .validation import validate_item_table, validate_sequences, validate_split


@dataclass
class SequenceDataset:
    """Everything the loader needs: the sequences and the item table as arrays in memory, the sample columns as
    :class:`~lainctr.data.columns.Columns` (in memory, or read from the split files on demand).

    Attributes:
        data_dir: the dataset folder.
        info: content of ``dataset_info.json``.
        feature_map_json: content of ``feature_map.json``.
        label: name of the label column.
        offsets: (U+1,) int64 CSR offsets of the per-user sequences.
        behaviours: (N,) int64 tensor of item indices, all users concatenated.
        behaviour_time: (N,) int64 tensor of the behaviours' times (the store's ``side/timestamp``, in the
            unit ``info["time_unit"]`` says), or None for a dataset without times (``info["time_source"]``
            is then ``position``: models time behaviours by their position).
        item_table: ``{feature: (num_items, ...) tensor}``, row 0 = padding item.
        splits: ``{split: Columns}``, each column (n,) or (n, w).
    """
    data_dir: str
    info: Dict[str, Any]
    feature_map_json: Dict[str, Any]
    label: str
    offsets: np.ndarray
    behaviours: torch.Tensor
    item_table: Dict[str, torch.Tensor]
    splits: Dict[str, Columns]
    behaviour_time: Optional[torch.Tensor] = None

    @property
    def num_items(self) -> int:
        return int(next(iter(self.item_table.values())).shape[0])

    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sizes(self) -> Dict[str, int]:
        """Bytes of the per-user store (offsets, behaviours, their times), of the item table, and of every
        split's sample columns (``<split>_columns``, wherever they are) and the part of them held in memory
        (``<split>_in_memory``)."""
        times = 0 if self.behaviour_time is None else self.behaviour_time.nbytes
        sizes = {"sequences": int(self.offsets.nbytes + self.behaviours.nbytes + times),
                 "item_table": int(sum(t.nbytes for t in self.item_table.values()))}
        for split, columns in self.splits.items():
            sizes[f"{split}_columns"] = sum(columns.nbytes(n) for n in columns.names)
            sizes[f"{split}_in_memory"] = sum(columns.nbytes(n) for n in columns.names if n not in columns.on_disk)
        return sizes


def vocabulary(feature_map_json: Dict[str, Any], source_item: bool) -> Dict[str, int]:
    """``{feature: vocab_size}`` of the categorical and sequence features of the items (``source_item``) or of the
    samples."""
    vocab = {}
    for entry in feature_map_json["features"]:
        (name, spec), = entry.items()
        if spec["type"] in ("categorical", "sequence") and (spec.get("source") == "item") == source_item:
            vocab[name] = int(spec["vocab_size"])
    return vocab


def _label(feature_map_json: Dict[str, Any], path: str) -> str:
    labels, features = feature_map_json.get("labels"), feature_map_json.get("features")
    if not (isinstance(labels, list) and labels and isinstance(features, list)):
        raise InputFileError(f"{path}: not a feature map: needs a non-empty 'labels' list and a 'features' list")
    return str(labels[0])


def _verify_checksums(data_dir: str, info: Dict[str, Any], sequences: store.UserSequences,
                      table: Dict[str, np.ndarray], split_columns: Dict[str, Columns]) -> None:
    store.verify_checksums(data_dir, info, store.SEQUENCES_FILE, Columns.of(store.sequence_columns(sequences)))
    store.verify_checksums(data_dir, info, store.ITEMS_FILE, Columns.of(table))
    for split, columns in split_columns.items():
        store.verify_checksums(data_dir, info, f"{split}.h5", columns)


def load_dataset(data_dir: str, splits=store.SPLITS, validate: bool = True, in_memory: bool = True) -> SequenceDataset:
    """Read and validate a dataset folder.

    ``in_memory=False`` (``out_of_core``) leaves the splits' sample columns in their files: the loader reads
    each batch's rows, validation and checksums stream over them in bounded chunks, with the same errors.
    With ``validate``, the values are checked (ranges, shapes, promises) and then the columns are compared
    with the checksums written at conversion (:func:`lainctr.data.store.verify_checksums`; older folders
    without checksums get the value checks only).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        DataValidationError: a file is corrupted (the message names file, column and row, or for a column
            whose checksum differs, file and column).
        FeatureEncoderError: a ``feature_encoder`` in ``feature_map.json`` is not of the allowed form
            (:mod:`lainctr.data.feature_map_check`).
    """
    if not store.is_complete(data_dir):
        raise FileNotFoundError(f"{data_dir}: not a complete dataset folder ({store.INFO_FILE} missing)")
    info = store.read_info(data_dir)
    feature_map_path = os.path.join(data_dir, store.FEATURE_MAP_FILE)
    feature_map_json = store.read_json(feature_map_path)
    label = _label(feature_map_json, feature_map_path)
    check_feature_map(feature_map_json, feature_map_path)  # before FuxiCTR evals the encoders
    sequences = store.read_sequences(data_dir)
    table = store.read_h5(os.path.join(data_dir, store.ITEMS_FILE))
    split_columns = {s: store.open_columns(os.path.join(data_dir, f"{s}.h5"), in_memory) for s in splits}
    if validate:
        num_items = validate_item_table(store.ITEMS_FILE, table, vocabulary(feature_map_json, source_item=True))
        validate_sequences(store.SEQUENCES_FILE, sequences.offsets, sequences.items, num_items, sequences.side)
        promise_next = bool(info.get("target_is_next_behaviour", False))
        for split, columns in split_columns.items():
            validate_split(f"{split}.h5", columns, label, sequences.lengths(), num_items,
                           vocabulary(feature_map_json, source_item=False),
                           sequences.items if promise_next else None,
                           sequences.offsets if promise_next else None)
        _verify_checksums(data_dir, info, sequences, table, split_columns)
    item_table = {name: torch.from_numpy(np.ascontiguousarray(
        values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values.astype(np.int64)))
        for name, values in table.items()}
    info.setdefault("time_source", store.time_source(sequences))     # folders written before it was recorded
    times = sequences.side.get(store.TIME_COLUMN)
    return SequenceDataset(data_dir=data_dir, info=info, feature_map_json=feature_map_json, label=label,
                           offsets=sequences.offsets.astype(np.int64, copy=False),
                           behaviours=torch.from_numpy(sequences.items.astype(np.int64, copy=False)),
                           item_table=item_table, splits=split_columns,
                           behaviour_time=None if times is None else torch.from_numpy(times.astype(np.int64, copy=False)))
