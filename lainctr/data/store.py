"""The on-disk dataset store: one folder of H5 files per dataset.

Layout of ``<data_dir>/``::

    train.h5 / valid.h5 / test.h5   one dataset per sample column: user_index, item_index,
                                    seq_len (number of prior behaviours), the label, context features
    sequences.h5                    per-user behaviour sequences, ragged (CSR): ``offsets`` (U+1,),
                                    ``items`` (N,) item indices in time order, optional side columns (N,)
    items.h5                        the item feature table, one dataset per feature, row 0 = padding item
    feature_map.json                FuxiCTR feature map (vocabularies, sources, label)
    dataset_info.json               format version, label column, promises the files make, statistics,
                                    ``checksums``: per H5 file and column the CRC-32 of the array's bytes

Time: a ``side/timestamp`` column of ``sequences.h5`` holds each behaviour's time, a ``timestamp`` column of a
split the sample's own (impression) time; ``dataset_info.json`` says which (``time_source``: ``timestamp``,
or ``position`` for a dataset without times, whose behaviours are then timed by their position in the
user's sequence) and, where the writer knows it, ``time_unit`` (``s``, ``us``) and ``time_is_wallclock``.

A sample's history is ``items[offsets[u] : offsets[u] + seq_len]``: nothing is duplicated per sample.
Every dataset is written contiguous and uncompressed, so that a split's columns can be read from the file
row by row (:func:`open_columns`, ``out_of_core``).
Writers go through :func:`write_dataset`, which holds the folder's lock (:mod:`lainctr.atomic`), builds the
folder under a temporary name and renames it, so an interrupted run never leaves a folder that looks complete;
the next writer removes a killed writer's temporary folder. It replaces only an empty folder or a dataset
folder of this format, never a folder holding anything else. :func:`build_once` lets concurrent runs share
one build of a missing dataset.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import h5py
import numpy as np

from .. import atomic
from ..errors import InputFileError
from .columns import Columns, DiskColumn, array_blocks, crc32_hex
from .validation import DataValidationError

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
META_COLUMNS = ("user_index", "item_index", "seq_len")
SEQUENCES_FILE = "sequences.h5"
ITEMS_FILE = "items.h5"
FEATURE_MAP_FILE = "feature_map.json"
INFO_FILE = "dataset_info.json"
DATASET_FILES = frozenset([f"{s}.h5" for s in SPLITS] + [SEQUENCES_FILE, ITEMS_FILE, FEATURE_MAP_FILE, INFO_FILE])


def _required(value: Optional[int], feature: str, key: str) -> int:
    if value is None:
        raise ValueError(f"feature spec '{feature}' needs {key}")
    return value


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
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_fuxictr(self) -> Dict[str, Any]:
        spec: Dict[str, Any] = {"source": self.source, "type": self.kind}
        if self.kind in ("categorical", "sequence"):
            spec.update(vocab_size=int(_required(self.vocab_size, self.name, "vocab_size")), padding_idx=0)
        if self.kind == "embedding":
            spec["pretrain_dim"] = int(_required(self.width, self.name, "width"))
        if self.kind == "sequence":
            spec["max_len"] = int(_required(self.width, self.name, "width"))
        spec.update(self.extra)
        return spec


def build_feature_map_json(dataset_id: str, label: str, sample_features: List[FeatureSpec],
                           item_features: List[FeatureSpec]) -> Dict[str, Any]:
    """The FuxiCTR ``feature_map.json`` content: meta columns, sample features, item features."""
    features = [{name: {"type": "meta"}} for name in META_COLUMNS]
    features += [{f.name: f.to_fuxictr()} for f in sample_features + item_features]
    num_fields = len(sample_features) + len(item_features)
    total = sum(int(f.vocab_size or 1) for f in sample_features + item_features)
    return {"dataset_id": dataset_id, "num_fields": num_fields, "total_features": total,
            "input_length": num_fields, "labels": [label], "features": features}


def column_checksum(values: np.ndarray) -> str:
    """``crc32:<8 hex>`` of the array's bytes in C order (~2 GB/s; catches accidental changes, not tampering)."""
    return crc32_hex(array_blocks(values))


def _write_h5(path: str, columns: Mapping[str, np.ndarray]) -> Dict[str, str]:
    """Write one dataset per column, contiguous and uncompressed (h5py's default without ``chunks``, stated
    here because :func:`open_columns` relies on it); returns ``{column: checksum}``."""
    with h5py.File(path, "w") as f:
        for name, values in columns.items():
            f.create_dataset(name, data=np.asarray(values), chunks=None, compression=None)
    return {name: column_checksum(np.asarray(values)) for name, values in columns.items()}


_VERIFIED: set = set()  # (path, inode, size, mtime) of files whose checksums matched in this process


def verify_checksums(data_dir: str, info: Mapping[str, Any], file: str, columns: Columns) -> None:
    """Compare the columns of ``data_dir/file`` with the checksums in ``dataset_info.json`` (on-disk columns are
    read a chunk at a time: :meth:`Columns.checksum`).

    Once per process and file version (inode, size, mtime): a file unchanged since it matched is not summed
    again. A folder written before checksums existed (no ``checksums`` key) is not checked.

    Raises:
        DataValidationError: naming the file's path and the first column that differs or is missing.
    """
    expected = dict(info.get("checksums") or {}).get(file)
    path = os.path.join(data_dir, file)
    if not expected:
        return
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    for column, checksum in expected.items():
        if column not in columns:
            raise DataValidationError(path, column, None, f"missing; {INFO_FILE} lists it")
        if columns.checksum(column) != checksum:
            raise DataValidationError(path, column, None, f"content differs from the checksum written at conversion "
                                      f"({checksum}): the file was changed or corrupted; rebuild or re-download "
                                      "the dataset folder")
    _VERIFIED.add(key)


def sequence_columns(sequences: UserSequences) -> Dict[str, np.ndarray]:
    """The columns of ``sequences.h5``: ``offsets``, ``items`` (int64) and ``side/<name>``."""
    columns = {"offsets": np.asarray(sequences.offsets, dtype=np.int64),
               "items": np.asarray(sequences.items, dtype=np.int64)}
    columns.update({f"side/{k}": v for k, v in sequences.side.items()})
    return columns


def read_h5(path: str, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Read every dataset (or the named ones) of an H5 file into memory."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    with readable_h5(path), h5py.File(path, "r") as f:
        keys = list(f.keys()) if names is None else names
        missing = [k for k in keys if k not in f]
        if missing:
            raise KeyError(f"{path}: missing column(s) {missing}; present: {sorted(f.keys())}")
        return {k: f[k][()] for k in keys}


def open_columns(path: str, in_memory: bool = True) -> Columns:
    """The columns of an H5 file (a split): read into memory, or (``in_memory=False``) left in the file and read
    on demand, each contiguous uncompressed dataset from its byte offset. A dataset the file does not hold that
    way (chunked, compressed, unallocated, or of a dtype without a native fixed-size layout) is read into
    memory, and a warning names the file, the columns and the reason."""
    if in_memory:
        return Columns(path, read_h5(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    arrays: Dict[str, np.ndarray] = {}
    on_disk: Dict[str, DiskColumn] = {}
    fallback: Dict[str, str] = {}
    with readable_h5(path), h5py.File(path, "r") as f:
        names = list(f.keys())
        for name in names:
            dataset = f[name]
            reason = _not_readable_in_place(dataset)
            if reason is None:
                on_disk[name] = DiskColumn(int(dataset.id.get_offset()), np.dtype(dataset.dtype), tuple(dataset.shape))
            else:
                arrays[name] = dataset[()]
                if dataset.size:
                    fallback[name] = reason
    if fallback:
        logging.warning("%s: column(s) %s held in memory, not read from disk (%s); the store's own writer "
                        "(store.write_dataset, every converter) writes columns that can be read from disk",
                        path, sorted(fallback), "; ".join(sorted(set(fallback.values()))))
    return Columns(path, arrays, on_disk, names)


def _not_readable_in_place(dataset: "h5py.Dataset") -> Optional[str]:
    """Why the dataset's values cannot be read from its file at a byte offset, or None when they can."""
    plist = dataset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() or plist.get_external_count():
        return "chunked, compressed or external"
    if dataset.dtype.kind not in "biuf" or not dataset.dtype.isnative:
        return f"dtype {dataset.dtype}"
    if dataset.id.get_offset() is None:
        return "no storage allocated"
    return None


@contextlib.contextmanager
def readable_h5(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:  # h5py's messages ("file signature not found", "Can't read data") omit the path
        raise InputFileError(f"{path}: not a readable HDF5 file ({error}); rebuild or re-download the dataset "
                             "folder") from error


def read_json(path: str) -> Dict[str, Any]:
    """A JSON object from ``path``; a corrupt file raises :class:`InputFileError` naming it."""
    with open(path, "rb") as fd:
        text = fd.read()
    try:
        content = json.loads(text)
    except ValueError as error:  # JSONDecodeError (line and column in its message), UnicodeDecodeError
        raise InputFileError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise InputFileError(f"{path}: expected a JSON object, found a {type(content).__name__}")
    return content


def write_dataset(data_dir: str, splits: Mapping[str, Mapping[str, np.ndarray]], sequences: UserSequences,
                  item_table: Mapping[str, np.ndarray], feature_map: Dict[str, Any],
                  info: Dict[str, Any]) -> str:
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
    with atomic.locked(data_dir):
        atomic.remove_stale_temps(data_dir)
        tmp_dir = atomic.temp_path(data_dir)
        os.makedirs(tmp_dir)
        try:
            _write_files(tmp_dir, splits, sequences, item_table, feature_map, info)
            _replace_dir(tmp_dir, data_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return data_dir


def _write_files(folder: str, splits: Mapping[str, Mapping[str, np.ndarray]], sequences: UserSequences,
                 item_table: Mapping[str, np.ndarray], feature_map: Dict[str, Any], info: Dict[str, Any]) -> None:
    checksums = {f"{split}.h5": _write_h5(os.path.join(folder, f"{split}.h5"), columns)
                 for split, columns in splits.items()}
    checksums[SEQUENCES_FILE] = _write_h5(os.path.join(folder, SEQUENCES_FILE), sequence_columns(sequences))
    checksums[ITEMS_FILE] = _write_h5(os.path.join(folder, ITEMS_FILE), item_table)
    with open(os.path.join(folder, FEATURE_MAP_FILE), "w") as fd:
        json.dump(feature_map, fd, indent=2)
    full_info = {"format_version": FORMAT_VERSION, "dataset_id": feature_map["dataset_id"],
                 "label": feature_map["labels"][0], "splits": sorted(splits),
                 "num_users": sequences.num_users,
                 "num_items": int(len(next(iter(item_table.values())))),
                 "num_behaviours": int(len(sequences.items)), "time_source": time_source(sequences),
                 "num_samples": {s: int(len(c["user_index"])) for s, c in splits.items()}}
    full_info.update(info)
    full_info["checksums"] = checksums
    with open(os.path.join(folder, INFO_FILE), "w") as fd:
        json.dump(full_info, fd, indent=2)


def build_once(data_dir: str, build_fn: Callable[[str], object]) -> str:
    """``data_dir``, first built by ``build_fn(data_dir)`` unless complete; concurrent callers wait for the
    one that builds (the folder's lock) and then use its folder."""
    if not is_complete(data_dir):
        with atomic.locked(data_dir):
            if not is_complete(data_dir):
                build_fn(data_dir)
    return data_dir


def check_replaceable(folder: str) -> None:
    """Raise :class:`InputFileError` unless ``folder`` is absent, empty or a dataset folder of this format
    (only the store's files, ``dataset_info.json`` of this ``format_version``): nothing else is ever replaced."""
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise InputFileError(f"{folder}: refusing to replace it with a dataset folder: it is not a folder")
    names = sorted(os.listdir(folder))
    if not names or (set(names) <= DATASET_FILES and _format_version(folder) == FORMAT_VERSION):
        return
    foreign = [n for n in names if n not in DATASET_FILES] or names
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    raise InputFileError(f"{folder}: refusing to replace a folder that is not a dataset folder of format "
                         f"{FORMAT_VERSION} (it holds {shown}); choose another output folder or empty this one")


def _format_version(folder: str) -> Optional[object]:
    try:
        with open(os.path.join(folder, INFO_FILE)) as fd:
            return json.load(fd).get("format_version")
    except (OSError, ValueError, AttributeError):
        return None


def _replace_dir(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is replaced only once ``src`` is complete, and only if it
    is empty or a dataset folder (:func:`check_replaceable`)."""
    check_replaceable(dst)
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


def read_info(data_dir: str) -> Dict[str, Any]:
    return read_json(os.path.join(data_dir, INFO_FILE))


def read_sequences(data_dir: str) -> UserSequences:
    path = os.path.join(data_dir, SEQUENCES_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    with readable_h5(path), h5py.File(path, "r") as f:
        for name in ("offsets", "items"):
            if name not in f:
                raise KeyError(f"{path}: missing column '{name}'")
        side = {k: f["side"][k][()] for k in f["side"].keys()} if "side" in f else {}
        return UserSequences(offsets=f["offsets"][()], items=f["items"][()], side=side)
