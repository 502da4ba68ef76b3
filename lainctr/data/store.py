"""The on-disk dataset store: one folder of H5 files per dataset.

Layout of ``<data_dir>/``::

    train.h5 / valid.h5 / test.h5   one dataset per sample column: user_index, item_index,
                                    seq_len (number of prior behaviours), the label, context features
    sequences.h5                    per-user behaviour sequences, ragged (CSR): ``offsets`` (U+1,),
                                    ``items`` (N,) item indices in time order, optional side columns (N,)
    items.h5                        the item feature table, one dataset per feature, row 0 = padding item
    feature_map.json                FuxiCTR feature map (vocabularies, sources, label)
    dataset_info.json               format version, label column, promises the files make, statistics

Time: a ``side/timestamp`` column of ``sequences.h5`` holds each behaviour's time, a ``timestamp`` column of a
split the sample's own (impression) time; ``dataset_info.json`` says which (``time_source``: ``timestamp``,
or ``position`` for a dataset without times, whose behaviours are then timed by their position in the
user's sequence) and, where the writer knows it, ``time_unit`` (``s``, ``us``) and ``time_is_wallclock``.

A sample's history is ``items[offsets[u] : offsets[u] + seq_len]``: nothing is duplicated per sample.
Writers go through :func:`write_dataset`, which builds the folder under a temporary name and renames it,
so an interrupted run never leaves a folder that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import h5py
import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
META_COLUMNS = ("user_index", "item_index", "seq_len")
SEQUENCES_FILE = "sequences.h5"
ITEMS_FILE = "items.h5"
FEATURE_MAP_FILE = "feature_map.json"
INFO_FILE = "dataset_info.json"
TIME_COLUMN = "timestamp"      # side column of sequences.h5 and optional split column


def time_source(sequences: "UserSequences") -> str:
    """``timestamp`` when the behaviours carry times, else ``position`` (time = position in the sequence)."""
    return "timestamp" if TIME_COLUMN in sequences.side else "position"


@dataclass
class UserSequences:
    """Per-user behaviour sequences in CSR form.

    Args:
        offsets: (U+1,) int64, ``offsets[u]:offsets[u+1]`` is user u's slice of ``items``.
        items: (N,) item indices (>= 1) in chronological order.
        side: optional per-behaviour columns, each (N,), e.g. ``timestamp``.
    """
    offsets: np.ndarray
    items: np.ndarray
    side: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, sequences: List[np.ndarray], side: Optional[Dict[str, List[np.ndarray]]] = None):
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, np.int64)
        side_flat = {k: np.concatenate(v) for k, v in (side or {}).items()}
        return cls(offsets=offsets, items=items, side=side_flat)


@dataclass
class FeatureSpec:
    """One feature of the feature map (FuxiCTR keys).

    ``source`` is ``item`` for item-table features, ``user``/``context`` for sample columns.
    ``kind`` is the FuxiCTR type: ``categorical``, ``numeric``, ``embedding`` or ``sequence``.
    """
    name: str
    kind: str
    source: str
    vocab_size: Optional[int] = None
    width: Optional[int] = None  # pretrain_dim for embeddings, max_len for sequences
    extra: Dict[str, object] = field(default_factory=dict)

    def to_fuxictr(self) -> Dict[str, object]:
        spec: Dict[str, object] = {"source": self.source, "type": self.kind}
        if self.kind in ("categorical", "sequence"):
            spec.update(vocab_size=int(self.vocab_size), padding_idx=0)
        if self.kind == "embedding":
            spec["pretrain_dim"] = int(self.width)
        if self.kind == "sequence":
            spec["max_len"] = int(self.width)
        spec.update(self.extra)
        return spec


def build_feature_map_json(dataset_id: str, label: str, sample_features: List[FeatureSpec],
                           item_features: List[FeatureSpec]) -> Dict[str, object]:
    """The FuxiCTR ``feature_map.json`` content: meta columns, sample features, item features."""
    features = [{name: {"type": "meta"}} for name in META_COLUMNS]
    features += [{f.name: f.to_fuxictr()} for f in sample_features + item_features]
    num_fields = len(sample_features) + len(item_features)
    total = sum(int(f.vocab_size or 1) for f in sample_features + item_features)
    return {"dataset_id": dataset_id, "num_fields": num_fields, "total_features": total,
            "input_length": num_fields, "labels": [label], "features": features}


def _write_h5(path: str, columns: Mapping[str, np.ndarray]) -> None:
    with h5py.File(path, "w") as f:
        for name, values in columns.items():
            f.create_dataset(name, data=np.asarray(values))


def read_h5(path: str, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Read every dataset (or the named ones) of an H5 file into memory."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    with h5py.File(path, "r") as f:
        keys = list(f.keys()) if names is None else names
        missing = [k for k in keys if k not in f]
        if missing:
            raise KeyError(f"{path}: missing column(s) {missing}; present: {sorted(f.keys())}")
        return {k: f[k][()] for k in keys}


def write_dataset(data_dir: str, splits: Mapping[str, Mapping[str, np.ndarray]], sequences: UserSequences,
                  item_table: Mapping[str, np.ndarray], feature_map: Dict[str, object],
                  info: Dict[str, object]) -> str:
    """Write a complete dataset folder atomically (temporary folder, then rename).

    Args:
        splits: ``{"train"|"valid"|"test": {column: (n,) or (n, w) array}}``.
        sequences: per-user behaviour sequences.
        item_table: ``{feature: (num_items, ...) array}``, row 0 = padding item.
        feature_map: content of ``feature_map.json`` (see :func:`build_feature_map_json`).
        info: extra keys for ``dataset_info.json`` (e.g. ``target_is_next_behaviour``).
    Returns:
        ``data_dir``.
    """
    data_dir = os.path.abspath(data_dir)
    parent = os.path.dirname(data_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(data_dir)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp_dir)
    try:
        for split, columns in splits.items():
            _write_h5(os.path.join(tmp_dir, f"{split}.h5"), columns)
        seq_columns = {"offsets": sequences.offsets.astype(np.int64),
                       "items": sequences.items.astype(np.int64)}
        seq_columns.update({f"side/{k}": v for k, v in sequences.side.items()})
        _write_h5(os.path.join(tmp_dir, SEQUENCES_FILE), seq_columns)
        _write_h5(os.path.join(tmp_dir, ITEMS_FILE), item_table)
        with open(os.path.join(tmp_dir, FEATURE_MAP_FILE), "w") as fd:
            json.dump(feature_map, fd, indent=2)
        full_info = {"format_version": FORMAT_VERSION, "dataset_id": feature_map["dataset_id"],
                     "label": feature_map["labels"][0], "splits": sorted(splits),
                     "num_users": sequences.num_users,
                     "num_items": int(len(next(iter(item_table.values())))),
                     "num_behaviours": int(len(sequences.items)), "time_source": time_source(sequences),
                     "num_samples": {s: int(len(c["user_index"])) for s, c in splits.items()}}
        full_info.update(info)
        with open(os.path.join(tmp_dir, INFO_FILE), "w") as fd:
            json.dump(full_info, fd, indent=2)
        _replace_dir(tmp_dir, data_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return data_dir


def _replace_dir(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is replaced only once ``src`` is complete."""
    if os.path.exists(dst):
        old = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


def is_complete(data_dir: str) -> bool:
    """True when the folder holds a finished dataset (``dataset_info.json`` is written last)."""
    return os.path.exists(os.path.join(data_dir, INFO_FILE))


def read_info(data_dir: str) -> Dict[str, object]:
    with open(os.path.join(data_dir, INFO_FILE)) as fd:
        return json.load(fd)


def read_sequences(data_dir: str) -> UserSequences:
    path = os.path.join(data_dir, SEQUENCES_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    with h5py.File(path, "r") as f:
        for name in ("offsets", "items"):
            if name not in f:
                raise KeyError(f"{path}: missing column '{name}'")
        side = {k: f["side"][k][()] for k in f["side"].keys()} if "side" in f else {}
        return UserSequences(offsets=f["offsets"][()], items=f["items"][()], side=side)
