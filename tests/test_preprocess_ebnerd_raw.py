"""EB-NeRD raw conversion: hand-made release with known output, the real sample, errors, idempotency."""
import datetime as dt
import json
import os
import re

import fixtures_formats as ff
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data_preprocess import ebnerd_raw
from data_preprocess.common import DataValidationError
from lainctr.data import store

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ebnerd_sample")


def convert(source, output, *extra):
    return ebnerd_raw.main(["--input", str(source), "--output", str(output), "--no_progress", *extra])


def specs_of(out):
    with open(os.path.join(out, store.FEATURE_MAP_FILE)) as fd:
        return {k: v for e in json.load(fd)["features"] for k, v in e.items()}


def test_hand_made_release(tmp_path):
    out = convert(ff.write_ebnerd_raw(str(tmp_path / "in")), tmp_path / "out")
    seqs = store.read_sequences(out)
    assert seqs.offsets.tolist() == [0, 5, 8]
    assert seqs.items.tolist() == [1, 2, 4, 7, 6, 3, 1, 5]
    expected = {"train": ([1, 0, 0, 1, 0], [2, 2, 2, 1, 1], [4, 5, 6, 1, 4]),
                "valid": ([0, 1], [3, 3], [5, 7]),
                "test": ([0, 0, 1, 0, 1], [2, 2, 2, 4, 4], [6, 2, 5, 3, 6])}
    for split, (click, seq_len, item) in expected.items():
        columns = store.read_h5(os.path.join(out, f"{split}.h5"))
        assert columns["click"].tolist() == click and columns["seq_len"].tolist() == seq_len
        assert columns["item_index"].tolist() == item
    train = store.read_h5(os.path.join(out, "train.h5"))
    assert train["trigger_id"].tolist() == [0, 0, 0, 1, 1]            # front page, then article 100
    assert train["gender"].tolist() == [0, 0, 0, 1, 1]                # null gender -> 0
    assert train["impression_weekday"].tolist() == [6, 6, 6, 7, 7]    # Saturday 20th, Sunday 21st May 2023
    assert train["impression_hour"].tolist() == [13, 13, 13, 9, 9]
    hours = (train["timestamp"] // 3_600_000_000) % 24 + 1                # the impression time itself, in us
    assert hours.tolist() == train["impression_hour"].tolist()
    assert store.read_info(out)["time_unit"] == "us" and "timestamp" not in specs_of(out)
    assert train["publish_days"].tolist() == [20, 20, 20, 21, 21]     # published 2023-05-01 06:00
    assert train["topics"][0].tolist() == [3, 7, 0, 0, 0]             # article 103: Livsstil, Økonomi
    items = store.read_h5(os.path.join(out, store.ITEMS_FILE))
    assert items["article_id"].tolist() == list(range(8))
    assert items["subcategory"][2].tolist() == [4, 5, 6, 0, 0]        # article 101: 201, 202, 203
    specs = specs_of(out)
    assert specs["article_id"]["vocab_size"] == 8 and specs["category"]["vocab_size"] == 4
    assert specs["user_id"]["source"] == "user" and specs["trigger_id"]["source"] == "context"
    assert specs["ner_clusters"] == {"source": "context", "type": "sequence", "vocab_size": 8, "padding_idx": 0,
                                     "max_len": 5, "feature_encoder": "layers.MaskedAveragePooling()"}
    info = store.read_info(out)
    assert info["num_samples"] == {"train": 5, "valid": 2, "test": 5}
    assert info["positive_target_is_next_share"] == 1.0


def test_rerun_is_byte_identical(tmp_path):
    source = ff.write_ebnerd_raw(str(tmp_path / "in"))
    first = ff.folder_bytes(convert(source, tmp_path / "out"))
    assert ff.folder_bytes(convert(source, tmp_path / "out")) == first


def _rewrite(relative, column, values):
    return lambda folder: ff.rewrite_parquet_column(os.path.join(folder, relative), column, values)


def _articles_without_106(folder):
    pq.write_table(ff.article_rows(range(100, 106)), os.path.join(folder, "articles.parquet"))


def _articles_twice(folder):
    table = ff.article_rows(range(100, 107))
    pq.write_table(pa.concat_tables([table, table.slice(2, 1)]), os.path.join(folder, "articles.parquet"))


CORRUPTIONS = {
    "click outside the in-view list": (
        _rewrite("train/behaviors.parquet", "article_ids_clicked",
                 pa.array([[103], [104], [106]], pa.list_(pa.int32()))),
        "train/behaviors.parquet: column 'article_ids_clicked' row 1: clicked article 104 is not in "
        "article_ids_inview"),
    "history lists of different lengths": (
        _rewrite("validation/history.parquet", "article_id_fixed",
                 pa.array([[101, 103], [102, 100, 101]], pa.list_(pa.int32()))),
        "validation/history.parquet: column 'article_id_fixed' row 1: 3 articles but 2 impression_time_fixed values"),
    "article missing from articles.parquet": (
        _articles_without_106, "train/behaviors.parquet: column 'article_ids_inview' row 2: id 106 is not in "
                               "articles.parquet"),
    "article listed twice": (_articles_twice, "articles.parquet: column 'article_id' row 7: article 102 appears twice"),
    "missing column": (
        lambda folder: ff.drop_parquet_column(os.path.join(folder, "validation", "behaviors.parquet"),
                                              "article_ids_inview"),
        "validation/behaviors.parquet: column 'article_ids_inview': missing column"),
    "wrong dtype": (
        _rewrite("train/behaviors.parquet", "impression_time", pa.array(["2023-05-20", "2023-05-21", "2023-05-24"])),
        "train/behaviors.parquet: column 'impression_time': expected a timestamp, got dtype string"),
    "null user": (
        _rewrite("validation/behaviors.parquet", "user_id", pa.array([9, None], pa.uint32())),
        "validation/behaviors.parquet: column 'user_id' row 1: missing value"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_input_names_file_column_and_row(tmp_path, case):
    corrupt, message = CORRUPTIONS[case]
    source = ff.write_ebnerd_raw(str(tmp_path / "in"))
    corrupt(source)
    with pytest.raises(DataValidationError, match="^" + re.escape(message)):
        convert(source, tmp_path / "out")


def test_missing_articles_file(tmp_path):
    source = ff.write_ebnerd_raw(str(tmp_path / "in"))
    os.remove(os.path.join(source, "articles.parquet"))
    with pytest.raises(FileNotFoundError, match=r"^articles\.parquet: file not found"):
        convert(source, tmp_path / "out")


# ------------------------------------------------------------------------------------------ real sample
def _sample_release(folder):
    """The real sample as a release: impressions before 2023-02-28 = train week, the rest = validation week
    (both with the sample's history.parquet), articles.parquet built for every article it mentions."""
    behaviors = pq.read_table(os.path.join(SAMPLE, "behaviors.parquet"))
    history = pq.read_table(os.path.join(SAMPLE, "history.parquet"))
    week_end = pa.scalar(dt.datetime(2023, 2, 28), pa.timestamp("us"))
    parts = {"train": behaviors.filter(pc.less(behaviors["impression_time"], week_end)),
             "validation": behaviors.filter(pc.greater_equal(behaviors["impression_time"], week_end))}
    for split, table in parts.items():
        os.makedirs(os.path.join(folder, split))
        pq.write_table(table, os.path.join(folder, split, "behaviors.parquet"))
        pq.write_table(history, os.path.join(folder, split, "history.parquet"))
    article_ids = ff.referenced_articles(behaviors, history)
    pq.write_table(ff.article_rows(article_ids), os.path.join(folder, "articles.parquet"))
    return parts, history, article_ids


def _reference_samples(parts, history):
    """Per sample, in output order: (user_id, label, seq_len) computed with plain Python sets."""
    events = {}
    for row in history.to_pylist():
        events.setdefault(row["user_id"], set()).update(zip(row["impression_time_fixed"], row["article_id_fixed"]))
    for table in parts.values():
        for row in table.to_pylist():
            events.setdefault(row["user_id"], set()).update((row["impression_time"], a)
                                                            for a in row["article_ids_clicked"])
    last_day = max(parts["train"]["impression_time"].to_pylist()).replace(hour=0, minute=0, second=0, microsecond=0)
    out = {"train": [], "valid": [], "test": []}
    for split, table in parts.items():
        for row in table.to_pylist():
            name = "test" if split == "validation" else "valid" if row["impression_time"] >= last_day else "train"
            before = sum(t < row["impression_time"] for t, _ in events[row["user_id"]])
            out[name] += [(row["user_id"], int(a in row["article_ids_clicked"]), before)
                          for a in row["article_ids_inview"]]
    return out


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="shared EB-NeRD sample not available")
def test_real_sample(tmp_path):
    parts, history, article_ids = _sample_release(str(tmp_path / "in"))
    out = convert(tmp_path / "in", tmp_path / "out")
    reference = _reference_samples(parts, history)
    users = np.unique(np.concatenate([parts["train"]["user_id"].to_numpy(), history["user_id"].to_numpy()]))
    for split, rows in reference.items():
        columns = store.read_h5(os.path.join(out, f"{split}.h5"))
        assert len(columns["click"]) == len(rows) > 0
        assert users[columns["user_index"]].tolist() == [r[0] for r in rows]
        assert columns["click"].tolist() == [r[1] for r in rows]
        assert columns["seq_len"].tolist() == [r[2] for r in rows]
    # the longest history starts with the user's oldest history.parquet clicks, in time order
    seqs = store.read_sequences(out)
    user = int(np.argmax(seqs.lengths()))
    row = next(r for r in history.to_pylist() if r["user_id"] == users[user])
    oldest = [a for _, a in sorted(zip(row["impression_time_fixed"], row["article_id_fixed"]))][:20]
    assert article_ids[seqs.items[seqs.offsets[user]:seqs.offsets[user] + 20] - 1].tolist() == oldest
    assert all(np.all(np.diff(seqs.side["timestamp"][seqs.offsets[u]:seqs.offsets[u + 1]]) >= 0)
               for u in range(seqs.num_users))
    info = store.read_info(out)
    assert sum(info["num_samples"].values()) == sum(len(t) for t in pc.list_flatten(
        pq.read_table(os.path.join(SAMPLE, "behaviors.parquet"))["article_ids_inview"]).chunks)
    assert info["length_statistics"]["sample_share"][2] > 0.5   # most samples come from long histories
