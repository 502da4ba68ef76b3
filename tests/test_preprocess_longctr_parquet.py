"""LongCTR parquet import: identical samples, histories and ids; errors name file, column and row."""
import json
import os
import re

import fixtures_formats as ff
import numpy as np
import pyarrow as pa
import pytest

from data_preprocess import longctr_parquet
from data_preprocess.common import DataValidationError
from lainctr.data import store


def convert(tmp_path, *extra, source=None, dataset_id="kuaivideo"):
    source = source or ff.write_longctr(str(tmp_path / "in"))
    return longctr_parquet.main(["--input", source, "--output", str(tmp_path / "out"), "--dataset_id", dataset_id,
                                 "--no_progress", "--batch_rows", "2", *extra])


def feature_specs(folder):
    with open(os.path.join(folder, store.FEATURE_MAP_FILE)) as fd:
        return {name: spec for entry in json.load(fd)["features"] for name, spec in entry.items()}


def test_import_keeps_samples_histories_and_ids(tmp_path):
    out = convert(tmp_path)
    seqs = store.read_sequences(out)
    assert np.diff(seqs.offsets).tolist() == [4, 2, 0]
    assert seqs.items.tolist() == [1, 2, 3, 4, 5, 1]
    for split, rows in ff.LONGCTR_SPLITS.items():
        columns = store.read_h5(os.path.join(out, f"{split}.h5"))
        user, item, seq_len, click = (list(c) for c in zip(*rows))
        assert columns["user_index"].tolist() == user and columns["item_index"].tolist() == item
        assert columns["seq_len"].tolist() == seq_len
        assert columns["is_click"].dtype == np.int8 and columns["is_click"].tolist() == click
    # history of train row 2 (user 0, seq_len 2) = full_item_seq[:2]
    assert seqs.items[seqs.offsets[0]:seqs.offsets[0] + 2].tolist() == [1, 2]
    items = store.read_h5(os.path.join(out, store.ITEMS_FILE))
    assert sorted(items) == ["image_emb_dim64", "item_id"]          # the published KuaiVideo_x2 features
    assert items["item_id"].tolist() == ff.LONGCTR_ITEM_ID
    assert items["image_emb_dim64"].dtype == np.float32 and items["image_emb_dim64"].shape == (7, 64)
    np.testing.assert_allclose(items["image_emb_dim64"][3], ff.item_vector(13), rtol=1e-6)
    specs = feature_specs(out)
    assert specs["item_id"]["vocab_size"] == 101_790
    assert specs["image_emb_dim64"] == {"source": "item", "type": "embedding", "pretrain_dim": 64,
                                        "embedding_dim": 64, "feature_encoder": "nn.Identity()"}
    info = store.read_info(out)
    assert info["num_samples"] == {"train": 5, "valid": 1, "test": 2}
    assert info["ignored_columns"] == {"train.parquet": [], "item_info.parquet": ["cate_id"]}
    assert info["target_is_next_behaviour"] is False and info["positive_target_is_next_share"] == 1.0
    assert info["length_statistics"]["sample_share"] == [1.0, 0.0, 0.0]


def test_published_microvideo_features(tmp_path):
    specs = feature_specs(convert(tmp_path, dataset_id="microvideo"))
    assert specs["item_id"]["vocab_size"] == 24_323 and specs["cate_id"]["vocab_size"] == 514


def test_published_ebnerd_layout(tmp_path):
    out = convert(tmp_path, source=ff.write_longctr_ebnerd(str(tmp_path / "in")), dataset_id="ebnerd")
    specs = feature_specs(out)
    assert specs["subcategory"] == {"source": "item", "type": "sequence", "vocab_size": 91, "padding_idx": 0,
                                    "max_len": 5, "feature_encoder": "layers.MaskedAveragePooling()"}
    assert specs["ner_clusters"]["vocab_size"] == 10_618 and specs["impression_weekday"]["vocab_size"] == 9
    test = store.read_h5(os.path.join(out, "test.h5"))
    assert test["topics"].tolist() == [[3, 1, 0, 0, 0], [5, 1, 0, 0, 0]] and test["click"].tolist() == [0, 0]
    assert len(test) == 3 + 1 + 17


def test_schema_data_imports_every_column(tmp_path):
    source = ff.write_longctr(str(tmp_path / "in"), label="click", with_context=True)
    out = convert(tmp_path, source=source, dataset_id="kuaivideo_feb2025")   # unknown id: --schema data
    specs = feature_specs(out)
    assert specs["user_id"] == {"source": "user", "type": "categorical", "vocab_size": 4, "padding_idx": 0}
    assert specs["topics"]["type"] == "sequence" and specs["topics"]["max_len"] == 5
    assert specs["item_id"]["vocab_size"] == 17 and specs["cate_id"]["vocab_size"] == 4
    train = store.read_h5(os.path.join(out, "train.h5"))
    assert train["topics"].shape == (5, 5) and train["topics"][:, 0].tolist() == [2, 6, 3, 1, 4]
    assert train["click"].tolist() == [1, 0, 1, 1, 0]


def test_published_schema_needs_its_features(tmp_path):
    source = ff.write_longctr(str(tmp_path / "in"), label="click", with_context=True)
    with pytest.raises(DataValidationError, match=r"^item_info\.parquet: column 'article_id': missing column"):
        convert(tmp_path, source=source, dataset_id="ebnerd")


def test_output_loads_in_the_library(tmp_path):
    from lainctr.data.dataset import load_dataset
    dataset = load_dataset(convert(tmp_path))
    assert dataset.num_items == 7 and dataset.label == "is_click"


def test_rerun_is_byte_identical_and_skip_existing_keeps_the_folder(tmp_path, capsys):
    source = ff.write_longctr(str(tmp_path / "in"))
    first = ff.folder_bytes(convert(tmp_path, source=source))
    second = ff.folder_bytes(convert(tmp_path, source=source))
    assert first == second and len(first) == 7
    stamp = os.stat(tmp_path / "out" / store.INFO_FILE).st_mtime_ns
    convert(tmp_path, "--skip_existing", source=source)
    assert "skipped" in capsys.readouterr().out
    assert os.stat(tmp_path / "out" / store.INFO_FILE).st_mtime_ns == stamp
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]  # no temporary folders left


def _set(file, column, values):
    return lambda folder: ff.rewrite_parquet_column(os.path.join(folder, file), column, values)


CORRUPTIONS = {
    "seq_len beyond the sequence": (
        _set("train.parquet", "seq_len", pa.array([1, 1, 9, 1, 0], pa.int64())),
        "train.parquet: column 'seq_len' row 2: seq_len 9 exceeds len(full_item_seq)=4 of user_index 0"),
    "missing column": (
        lambda folder: ff.drop_parquet_column(os.path.join(folder, "test.parquet"), "seq_len"),
        "test.parquet: column 'seq_len': missing column"),
    "wrong dtype": (
        _set("train.parquet", "seq_len", pa.array([1.0, 1.0, 2.0, 1.0, 0.0])),
        "train.parquet: column 'seq_len': expected integer ids, got dtype double"),
    "target out of range": (
        _set("valid.parquet", "item_index", pa.array([7], pa.int64())),
        "valid.parquet: column 'item_index' row 0: item_index 7 outside [1, 7)"),
    "user out of range": (
        _set("test.parquet", "user_index", pa.array([1, 3], pa.int64())),
        "test.parquet: column 'user_index' row 1: user_index 3 outside [0, 3)"),
    "id beyond the published vocab": (
        _set("item_info.parquet", "item_id", pa.array([0, 11, 12, 200_000, 14, 15, 16], pa.int64())),
        "item_info.parquet: column 'item_id' row 3: id 200000 outside [0, 101790)"),
    "padding item in a history": (
        _set("user_info.parquet", "full_item_seq", pa.array([[1, 2, 3, 4], [5, 0], []], pa.list_(pa.int64()))),
        "user_info.parquet: column 'full_item_seq' row 1: item index 0 < 1"),
    "history item beyond item_info": (
        _set("user_info.parquet", "full_item_seq", pa.array([[1], [5, 1], [9]], pa.list_(pa.int64()))),
        "user_info.parquet: column 'full_item_seq' row 2: item index 9 outside [1, 7)"),
    "label not 0/1": (
        _set("train.parquet", "is_click", pa.array([1, 2, 1, 1, 0], pa.int64())),
        "train.parquet: column 'is_click' row 1: label 2 is not 0 or 1"),
    "ragged vector": (
        _set("item_info.parquet", "image_emb_dim64",
             pa.array([[0.0] * 64] * 2 + [[1.0] * 63] + [[1.0] * 64] * 4, pa.list_(pa.float32()))),
        "item_info.parquet: column 'image_emb_dim64' row 2: list of 63 values; every row must hold 64"),
    "padding row not zero": (
        _set("item_info.parquet", "item_id", pa.array([5, 11, 12, 13, 14, 15, 16], pa.int64())),
        "item_info.parquet: column 'item_id' row 0: row 0 is the padding item and must be all zeros"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_input_names_file_column_and_row(tmp_path, case):
    corrupt, message = CORRUPTIONS[case]
    source = ff.write_longctr(str(tmp_path / "in"))
    corrupt(source)
    with pytest.raises(DataValidationError, match="^" + re.escape(message)):
        convert(tmp_path, source=source)
    assert not os.path.exists(tmp_path / "out")


def test_missing_file(tmp_path):
    source = ff.write_longctr(str(tmp_path / "in"))
    os.remove(os.path.join(source, "valid.parquet"))
    with pytest.raises(FileNotFoundError, match=r"^valid\.parquet: file not found"):
        convert(tmp_path, source=source)
