"""Corrupted dataset files are rejected with an error naming file, column and first bad row."""
import os
import shutil

import h5py
import numpy as np
import pytest

from lainctr.data.dataset import load_dataset
from lainctr.data.validation import DataValidationError


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    target = tmp_path / "ds"
    shutil.copytree(tiny_dir, target)
    return str(target)


def corrupt(path, column, row, value):
    with h5py.File(path, "r+") as f:
        data = f[column][()]
        data[row] = value
        del f[column]
        f.create_dataset(column, data=data)


@pytest.mark.parametrize("file,column,row,value,message", [
    ("train.h5", "user_index", 5, 10_000, "outside"),
    ("valid.h5", "item_index", 3, 0, "outside"),
    ("test.h5", "seq_len", 7, 100_000, "seq_len"),
    ("train.h5", "label", 11, 2, "outside"),
    ("train.h5", "hour", 2, 99, "outside"),
    ("items.h5", "cate_id", 0, 3, "padding item"),
    ("items.h5", "cate_id", 9, 500, "outside"),
    ("sequences.h5", "items", 4, 0, "outside"),
])
def test_bad_value_names_file_column_row(copy_dir, file, column, row, value, message):
    corrupt(os.path.join(copy_dir, file), column, row, value)
    with pytest.raises(DataValidationError) as err:
        load_dataset(copy_dir)
    assert (err.value.file, err.value.column, err.value.row) == (file, column, row)
    assert message in str(err.value) and file in str(err.value) and f"row {row}" in str(err.value)


def test_positive_target_must_be_next_behaviour(copy_dir):
    with h5py.File(os.path.join(copy_dir, "train.h5"), "r") as f:
        row = int(np.flatnonzero(f["label"][()] == 1)[3])
        item = int(f["item_index"][row])
    corrupt(os.path.join(copy_dir, "train.h5"), "item_index", row, item % 1999 + 1)
    with pytest.raises(DataValidationError, match=f"train.h5: column 'item_index' row {row}: positive target"):
        load_dataset(copy_dir)


def test_non_integer_column_and_missing_column(copy_dir):
    path = os.path.join(copy_dir, "valid.h5")
    with h5py.File(path, "r+") as f:
        data = f["seq_len"][()].astype(np.float64)
        del f["seq_len"]
        f.create_dataset("seq_len", data=data)
    with pytest.raises(DataValidationError, match="valid.h5: column 'seq_len': expected an integer dtype"):
        load_dataset(copy_dir)
    with h5py.File(path, "r+") as f:
        del f["seq_len"]
    with pytest.raises(KeyError, match="seq_len"):
        load_dataset(copy_dir)


def test_broken_offsets(copy_dir):
    corrupt(os.path.join(copy_dir, "sequences.h5"), "offsets", 10, 0)
    with pytest.raises(DataValidationError, match="sequences.h5: column 'offsets' row 10"):
        load_dataset(copy_dir)


def test_incomplete_folder_is_not_a_dataset(copy_dir):
    os.remove(os.path.join(copy_dir, "dataset_info.json"))
    with pytest.raises(FileNotFoundError, match="not a complete dataset"):
        load_dataset(copy_dir)


def _rewrite(path, column, change):
    with h5py.File(path, "r+") as f:
        data = change(f[column][()])
        del f[column]
        f.create_dataset(column, data=data)


def test_in_range_corruption_names_file_and_column(copy_dir):
    """500 labels flipped 1 -> 0 stay valid values (and keep the next-behaviour promise, which only positives
    make); the checksum written at conversion catches them."""
    path = os.path.join(copy_dir, "train.h5")

    def flip(label):
        positives = np.flatnonzero(label == 1)
        assert len(positives) >= 500
        label[positives[:500]] = 0
        return label
    _rewrite(path, "label", flip)
    with pytest.raises(DataValidationError, match=f"^{path}: column 'label': content differs from the checksum"):
        load_dataset(copy_dir)


def test_changed_item_id_in_the_history_is_reported(copy_dir):
    path = os.path.join(copy_dir, "sequences.h5")
    _rewrite(path, "items", lambda items: np.where(np.arange(len(items)) == 7, items % 1999 + 1, items))
    with pytest.raises(DataValidationError, match=f"^{path}: column 'items': content differs"):
        load_dataset(copy_dir)


def test_folder_without_checksums_still_loads(copy_dir):
    import json
    info_path = os.path.join(copy_dir, "dataset_info.json")
    with open(info_path) as fd:
        info = json.load(fd)
    assert set(info["checksums"]) == {"train.h5", "valid.h5", "test.h5", "sequences.h5", "items.h5"}
    del info["checksums"]
    with open(info_path, "w") as fd:
        json.dump(info, fd)
    _rewrite(os.path.join(copy_dir, "train.h5"), "label", np.zeros_like)
    load_dataset(copy_dir)
