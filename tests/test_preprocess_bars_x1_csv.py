"""BARS x1 CSV conversion: histories rebuilt from the rows (uncapped), checked against the CSV columns."""
import os
import re

import fixtures_formats as ff
import h5py
import numpy as np
import pytest

from data_preprocess import bars_x1_csv
from data_preprocess.common import DataValidationError
from lainctr.data import store


def convert(source, output, layout, *extra):
    return bars_x1_csv.main(["--layout", layout, "--input", str(source), "--output", str(output), "--no_progress",
                             "--valid_fraction", "0.25", *extra])


def split_columns(out):
    return {s: {k: v.tolist() for k, v in store.read_h5(os.path.join(out, f"{s}.h5")).items()}
            for s in store.SPLITS}


def test_kuaivideo(tmp_path):
    out = convert(ff.write_bars_kuaivideo(str(tmp_path / "in")), tmp_path / "out", "kuaivideo")
    seqs = store.read_sequences(out)
    assert seqs.offsets.tolist() == [0, 5, 7] and seqs.items.tolist() == [1, 3, 2, 1, 5, 1, 3]
    splits = split_columns(out)
    assert splits["train"] == {"user_index": [0, 1, 0, 1, 0, 0], "item_index": [1, 2, 3, 1, 4, 2],
                               "seq_len": [0, 0, 1, 0, 2, 2], "is_click": [1, 0, 1, 1, 0, 1]}
    assert splits["valid"]["seq_len"] == [1, 3] and splits["valid"]["user_index"] == [1, 0]
    assert splits["test"]["seq_len"] == [4, 2, 5] and splits["test"]["is_click"] == [1, 0, 0]
    items = store.read_h5(os.path.join(out, store.ITEMS_FILE))
    assert items["item_id"].tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(items["image_emb_dim64"][5], ff.item_vector(1004), rtol=1e-6)
    assert not items["image_emb_dim64"][0].any()
    info = store.read_info(out)
    assert info["dataset_id"] == "kuaivideo_x1" and info["target_is_next_behaviour"] is True
    assert "valid = train.csv rows with timestamp >= 7.0" in info["split_protocol"]


def test_kuaivideo_history_is_not_capped_at_100(tmp_path):
    train = [(t, 80, 5000 + t % 37, 1) for t in range(1, 131)]        # one user, 130 clicks
    test = [(200, 80, 5001, 1), (201, 80, 5002, 0)]
    out = convert(ff.write_bars_kuaivideo(str(tmp_path / "in"), train, test), tmp_path / "out", "kuaivideo")
    assert store.read_sequences(out).lengths().tolist() == [131]
    splits = split_columns(out)
    assert splits["test"]["seq_len"] == [130, 131]
    assert max(splits["valid"]["seq_len"]) == 129
    shares = store.read_info(out)["length_statistics"]["sample_share"]
    assert shares[1] > 0                                             # samples beyond the CSV's 100-item cap


def test_microvideo_test_history_is_frozen(tmp_path):
    out = convert(ff.write_bars_microvideo(str(tmp_path / "in")), tmp_path / "out", "microvideo")
    seqs = store.read_sequences(out)
    assert seqs.offsets.tolist() == [0, 2, 3] and seqs.items.tolist() == [1, 2, 1]
    splits = split_columns(out)
    assert splits["train"]["seq_len"] + splits["valid"]["seq_len"] == [0, 0, 1, 1, 0]
    assert splits["test"] == {"user_index": [0, 0, 1], "item_index": [4, 5, 4], "seq_len": [2, 2, 1],
                              "is_click": [1, 0, 0]}
    items = store.read_h5(os.path.join(out, store.ITEMS_FILE))
    assert items["cate_id"].tolist() == [0, 1, 2, 2, 1, 2]
    assert store.read_info(out)["target_is_next_behaviour"] is False


def test_rerun_is_byte_identical(tmp_path):
    source = ff.write_bars_microvideo(str(tmp_path / "in"))
    first = ff.folder_bytes(convert(source, tmp_path / "out", "microvideo"))
    assert ff.folder_bytes(convert(source, tmp_path / "out", "microvideo")) == first


def _edit_line(file, line, old, new):
    def corrupt(folder):
        path = os.path.join(folder, file)
        lines = open(path).read().split("\n")
        assert old in lines[line]
        lines[line] = lines[line].replace(old, new)
        open(path, "w").write("\n".join(lines))
    return corrupt


def _drop_vector(folder):
    path = os.path.join(folder, "item_visual_emb_dim64.h5")
    with h5py.File(path, "r") as h5:
        key, value = h5["key"][()], h5["value"][()]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("key", data=key[key != 1003])
        h5.create_dataset("value", data=value[key != 1003])


CORRUPTIONS = {  # line numbers count the header as line 0, so data row r is line r + 1
    "history item changed": (
        "kuaivideo", _edit_line("train.csv", 6, ",1000^1002,", ",1000^1001,"),
        "train.csv: column 'pos_items' row 5: history does not match the user's earlier clicked rows: "
        "expected item ids ['1000', '1002'], got ['1000', '1001']"),
    "history too short": (
        "kuaivideo", _edit_line("test.csv", 1, ",1000^1002^1001^1000,", ",1000^1002^1001,"),
        "test.csv: column 'pos_items' row 0: history of 3 items, but user_id 50 has 4 earlier clicked rows "
        "(expected the oldest 4)"),
    "not an integer": (
        "kuaivideo", _edit_line("train.csv", 3, "3,50,", "3,5x,"),
        "train.csv: column 'user_id' row 2: value '5x' is not an integer"),
    "label not 0/1": (
        "microvideo", _edit_line("test.csv", 2, "1,101,3,0,", "1,101,3,3,"),
        "test.csv: column 'is_click' row 1: label 3 is not 0 or 1"),
    "item with two categories": (
        "microvideo", _edit_line("train.csv", 4, "1,6,3,1,", "1,6,2,1,"),
        "train.csv: column 'cate_id' row 1: item_id 6 has cate_id 3 here but 2 on another row"),
    "no vector for an item": (
        "kuaivideo", _drop_vector, "item_visual_emb_dim64.h5: column 'key': no vector for item_id 1003"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_input_names_file_column_and_row(tmp_path, case):
    layout, corrupt, message = CORRUPTIONS[case]
    writer = ff.write_bars_kuaivideo if layout == "kuaivideo" else ff.write_bars_microvideo
    source = writer(str(tmp_path / "in"))
    corrupt(source)
    with pytest.raises(DataValidationError, match="^" + re.escape(message)):
        convert(source, tmp_path / "out", layout)


def test_history_check_count_keeps_going_and_reports(tmp_path):
    source = ff.write_bars_kuaivideo(str(tmp_path / "in"))
    _edit_line("train.csv", 6, ",1000^1002,", ",1000^1001,")(source)
    out = convert(source, tmp_path / "out", "kuaivideo", "--history_check", "count")
    check = store.read_info(out)["history_check"]
    assert check["rows_checked"] == 11 and check["rows_mismatched"] == 1
    assert check["first_mismatch"].startswith("train.csv: column 'pos_items' row 5: history does not match")
    assert store.read_sequences(out).items.tolist() == [1, 3, 2, 1, 5, 1, 3]


def test_missing_column_and_file(tmp_path):
    source = ff.write_bars_kuaivideo(str(tmp_path / "in"))
    _edit_line("test.csv", 0, ",pos_items,", ",history,")(source)
    with pytest.raises(DataValidationError, match=r"^test\.csv: column 'pos_items': missing column"):
        convert(source, tmp_path / "out", "kuaivideo")
    os.remove(os.path.join(source, "test.csv"))
    with pytest.raises(FileNotFoundError, match=r"^test\.csv: file not found"):
        convert(source, tmp_path / "out", "kuaivideo")
