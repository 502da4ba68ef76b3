"""Writers of small input files in each release format the preprocessors read (REFERENCE_RESULTS s.6).

Column names, dtypes, list nesting, id conventions and the h5 embedding layout follow the real releases;
the contents are hand-made so tests can compute the expected output by hand (see each writer's docstring).
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Dict, Iterable, List, Optional

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EMB_DIM = 64


def item_vector(raw_id: int) -> List[float]:
    """The 64-d vector the fixtures give an item: ``raw_id + k / 100`` at position k."""
    return [float(raw_id) + k / 100 for k in range(EMB_DIM)]


# --------------------------------------------------------------------------------- LongCTR parquet
LONGCTR_SEQUENCES = [[1, 2, 3, 4], [5, 1], []]          # full_item_seq of user_index 0, 1, 2
LONGCTR_ITEM_ID = [0, 11, 12, 13, 14, 15, 16]           # item_info.item_id by row (row 0 = padding)
LONGCTR_CATE_ID = [0, 1, 2, 1, 3, 2, 3]
LONGCTR_SPLITS = {                                      # (user_index, item_index, seq_len, label)
    "train": [(0, 2, 1, 1), (0, 6, 1, 0), (0, 3, 2, 1), (1, 1, 1, 1), (2, 4, 0, 0)],
    "valid": [(0, 4, 3, 1)],
    "test": [(1, 3, 2, 0), (0, 5, 4, 0)],
}


def write_longctr(folder: str, label: str = "is_click", with_context: bool = False,
                  splits: Optional[Dict[str, list]] = None) -> str:
    """The LongCTR parquet triplet + user_info + item_info (KuaiVideo_x2 / MicroVideo1.7M_x2 layout).

    Items: ``item_id``, ``cate_id`` and ``image_emb_dim64`` (``item_vector(item_id)``, zeros for row 0).
    With ``with_context`` the sample files also hold ``user_id`` (user_index + 1) and ``topics`` (a
    ``list<int>`` of 5: ``[item_index, 0, 0, 0, 0]``), as in Ebnerd_small_x1.
    """
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.table({"full_item_seq": pa.array(LONGCTR_SEQUENCES, pa.list_(pa.int64()))}),
                   os.path.join(folder, "user_info.parquet"))
    vectors = [[0.0] * EMB_DIM] + [item_vector(i) for i in LONGCTR_ITEM_ID[1:]]
    pq.write_table(pa.table({"item_index": pa.array(range(len(LONGCTR_ITEM_ID)), pa.int64()),
                             "item_id": pa.array(LONGCTR_ITEM_ID, pa.int64()),
                             "cate_id": pa.array(LONGCTR_CATE_ID, pa.int64()),
                             "image_emb_dim64": pa.array(vectors, pa.list_(pa.float32()))}),
                   os.path.join(folder, "item_info.parquet"))
    for split, rows in (splits or LONGCTR_SPLITS).items():
        user, item, seq_len, click = (list(c) for c in zip(*rows))
        columns = {"user_index": pa.array(user, pa.int64()), "item_index": pa.array(item, pa.int64()),
                   "seq_len": pa.array(seq_len, pa.int64()), label: pa.array(click, pa.int64())}
        if with_context:
            columns["user_id"] = pa.array([u + 1 for u in user], pa.int64())
            columns["topics"] = pa.array([[i, 0, 0, 0, 0] for i in item], pa.list_(pa.int64()))
        pq.write_table(pa.table(columns), os.path.join(folder, f"{split}.parquet"))
    return folder


EBNERD_X1_SAMPLE_IDS = ["user_id", "trigger_id", "device_type", "is_sso_user", "gender", "postcode", "age",
                        "is_subscriber", "premium", "article_type", "sentiment_label", "publish_days",
                        "publish_hours", "impression_hour", "impression_weekday"]


def write_longctr_ebnerd(folder: str) -> str:
    """An Ebnerd_small_x1-shaped triplet (label ``click``): the LONGCTR_* samples and sequences with item
    features ``article_id`` (= row), ``category`` and ``subcategory`` (list of 5), and sample columns
    EBNERD_X1_SAMPLE_IDS (value = item_index % 3 + 1) plus ``ner_clusters`` / ``topics`` (lists of 5)."""
    write_longctr(folder, label="click")
    rows = len(LONGCTR_ITEM_ID)
    pq.write_table(pa.table({"item_index": pa.array(range(rows), pa.int64()),
                             "article_id": pa.array(range(rows), pa.int64()),
                             "category": pa.array(LONGCTR_CATE_ID, pa.int64()),
                             "subcategory": pa.array([[c, c + 1 if c else 0, 0, 0, 0] for c in LONGCTR_CATE_ID],
                                                     pa.list_(pa.int64()))}),
                   os.path.join(folder, "item_info.parquet"))
    for split in LONGCTR_SPLITS:
        path = os.path.join(folder, f"{split}.parquet")
        item = pq.read_table(path)["item_index"].to_pylist()
        for name in EBNERD_X1_SAMPLE_IDS:
            rewrite_parquet_column(path, name, pa.array([i % 3 + 1 for i in item], pa.int64()))
        for name in ("ner_clusters", "topics"):
            rewrite_parquet_column(path, name, pa.array([[i, 1, 0, 0, 0] for i in item], pa.list_(pa.int64())))
    return folder


def folder_bytes(folder: str) -> Dict[str, bytes]:
    """Every file of a dataset folder by name (to compare two runs byte for byte)."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def rewrite_parquet_column(path: str, column: str, values: pa.Array) -> None:
    """Replace one column of a parquet file (used to corrupt fixtures in error tests)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    table = table.set_column(index, column, values) if index >= 0 else table.append_column(column, values)
    pq.write_table(table, path)


def drop_parquet_column(path: str, column: str) -> None:
    pq.write_table(pq.read_table(path).drop_columns([column]), path)


# ---------------------------------------------------------------------------------------- EB-NeRD raw
def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


BEHAVIOR_SCHEMA = pa.schema([
    ("impression_id", pa.uint32()), ("article_id", pa.int32()), ("impression_time", pa.timestamp("us")),
    ("read_time", pa.float32()), ("scroll_percentage", pa.float32()), ("device_type", pa.int8()),
    ("article_ids_inview", pa.list_(pa.int32())), ("article_ids_clicked", pa.list_(pa.int32())),
    ("user_id", pa.uint32()), ("is_sso_user", pa.bool_()), ("gender", pa.int8()), ("postcode", pa.int8()),
    ("age", pa.int8()), ("is_subscriber", pa.bool_()), ("session_id", pa.uint32()),
    ("next_read_time", pa.float32()), ("next_scroll_percentage", pa.float32())])
HISTORY_SCHEMA = pa.schema([
    ("user_id", pa.uint32()), ("impression_time_fixed", pa.list_(pa.timestamp("us"))),
    ("scroll_percentage_fixed", pa.list_(pa.float32())), ("article_id_fixed", pa.list_(pa.int32())),
    ("read_time_fixed", pa.list_(pa.float32()))])
ARTICLE_SCHEMA = pa.schema([
    ("article_id", pa.int32()), ("title", pa.string()), ("subtitle", pa.string()),
    ("last_modified_time", pa.timestamp("us")), ("premium", pa.bool_()), ("body", pa.string()),
    ("published_time", pa.timestamp("us")), ("image_ids", pa.list_(pa.int64())), ("article_type", pa.string()),
    ("url", pa.string()), ("ner_clusters", pa.list_(pa.string())), ("entity_groups", pa.list_(pa.string())),
    ("topics", pa.list_(pa.string())), ("category", pa.int16()), ("subcategory", pa.list_(pa.int16())),
    ("category_str", pa.string()), ("total_inviews", pa.int32()), ("total_pageviews", pa.int32()),
    ("total_read_time", pa.float32()), ("sentiment_score", pa.float32()), ("sentiment_label", pa.string())])

ARTICLE_TYPES = ["article_default", "article_webtv", "article_timeline"]
SENTIMENTS = ["Negative", "Neutral", "Positive"]
TOPICS = ["Kendt", "Sport", "Kriminalitet", "Politik", "Underholdning", "Livsstil", "Økonomi"]


def article_rows(article_ids: Iterable[int], published: Optional[Dict[int, str]] = None) -> pa.Table:
    """articles.parquet rows for the given ids, attributes derived from the id (k = id mod 7).

    category = 100 + k % 3; subcategory = [200 + k, 201 + k], plus 202 + k when k is odd;
    article_type = ARTICLE_TYPES[k % 3]; premium = k % 2 == 1; sentiment_label = SENTIMENTS[k % 3];
    topics = TOPICS[k], TOPICS[(k + 1) % 7]; ner_clusters = ['N<k>']; published_time from ``published``
    (default 2023-05-01 06:00).
    """
    ids = sorted(set(int(a) for a in article_ids))
    ks = [a % 7 for a in ids]
    when = [_ts((published or {}).get(a, "2023-05-01 06:00:00")) for a in ids]
    columns = {
        "article_id": ids, "title": [f"title {a}" for a in ids], "subtitle": [f"subtitle {a}" for a in ids],
        "last_modified_time": when, "premium": [k % 2 == 1 for k in ks], "body": [f"body {a}" for a in ids],
        "published_time": when, "image_ids": [[a * 10] for a in ids],
        "article_type": [ARTICLE_TYPES[k % 3] for k in ks], "url": [f"https://ekstrabladet.dk/{a}" for a in ids],
        "ner_clusters": [[f"N{k}"] for k in ks], "entity_groups": [["PER"] for _ in ids],
        "topics": [[TOPICS[k], TOPICS[(k + 1) % 7]] for k in ks], "category": [100 + k % 3 for k in ks],
        "subcategory": [[200 + k, 201 + k] + ([202 + k] if k % 2 else []) for k in ks],
        "category_str": [f"cat{100 + k % 3}" for k in ks], "total_inviews": [None] * len(ids),
        "total_pageviews": [None] * len(ids), "total_read_time": [None] * len(ids),
        "sentiment_score": [0.5] * len(ids), "sentiment_label": [SENTIMENTS[k % 3] for k in ks]}
    return pa.table(columns, schema=ARTICLE_SCHEMA)


def _behaviors(rows: List[tuple]) -> pa.Table:
    """rows: (user, time, page article or None, inview, clicked, device, sso, gender, postcode, age, subscriber)."""
    columns = {name: [] for name in BEHAVIOR_SCHEMA.names}
    for n, (user, time, page, inview, clicked, device, sso, gender, postcode, age, sub) in enumerate(rows):
        values = dict(impression_id=1000 + n, article_id=page, impression_time=_ts(time), read_time=10.0,
                      scroll_percentage=None, device_type=device, article_ids_inview=inview,
                      article_ids_clicked=clicked, user_id=user, is_sso_user=sso, gender=gender,
                      postcode=postcode, age=age, is_subscriber=sub, session_id=7, next_read_time=3.0,
                      next_scroll_percentage=None)
        for name in BEHAVIOR_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, schema=BEHAVIOR_SCHEMA)


def _history(users: Dict[int, List[tuple]]) -> pa.Table:
    """users: {user: [(article, time), ...]}."""
    return pa.table({"user_id": list(users),
                     "impression_time_fixed": [[_ts(t) for _, t in clicks] for clicks in users.values()],
                     "scroll_percentage_fixed": [[None] * len(c) for c in users.values()],
                     "article_id_fixed": [[a for a, _ in clicks] for clicks in users.values()],
                     "read_time_fixed": [[5.0] * len(c) for c in users.values()]}, schema=HISTORY_SCHEMA)


# The hand-made EB-NeRD release: articles 100..106; users 7 and 9; train week 2023-05-18..24, validation
# week 2023-05-25..31. Expected conversion (article row = id - 99; user 7 -> 0, 9 -> 1):
#   sequences  user 0: [1, 2, 4, 7, 6]  (100, 101, 103, 106, 105; 103 in train clicks and validation history)
#              user 1: [3, 1, 5]        (102, 100, 104)
#   train  (5 samples) click [1, 0, 0, 1, 0], seq_len [2, 2, 2, 1, 1]
#   valid  (2 samples, 2023-05-24 = last train day) click [0, 1], seq_len [3, 3]
#   test   (5 samples, validation week) click [0, 0, 1, 0, 1], seq_len [2, 2, 2, 4, 4]
EBNERD_TRAIN = [
    (7, "2023-05-20 12:00:00", None, [103, 104, 105], [103], 1, False, None, 2, 30, False),
    (9, "2023-05-21 08:00:00", 100, [100, 103], [100], 2, True, 1, None, 50, True),
    (7, "2023-05-24 10:00:00", None, [104, 106], [106], 1, False, None, 2, 30, False),
]
EBNERD_VALIDATION = [
    (9, "2023-05-26 09:00:00", None, [105, 101, 104], [104], 3, True, 1, None, 50, True),
    (7, "2023-05-27 10:00:00", 104, [102, 105], [105], 1, False, None, 2, 30, False),
]
EBNERD_HISTORY = {
    "train": {7: [(100, "2023-05-10 08:00:00"), (101, "2023-05-11 09:00:00")], 9: [(102, "2023-05-12 10:00:00")]},
    "validation": {7: [(101, "2023-05-11 09:00:00"), (103, "2023-05-20 12:00:00")],
                   9: [(102, "2023-05-12 10:00:00"), (100, "2023-05-21 08:00:00")]},
}


def write_ebnerd_raw(folder: str, behaviors: Optional[Dict[str, List[tuple]]] = None,
                     history: Optional[Dict[str, Dict[int, List[tuple]]]] = None,
                     article_ids: Iterable[int] = range(100, 107)) -> str:
    """An EB-NeRD release folder: train/ and validation/ (behaviors, history) + articles.parquet."""
    behaviors = behaviors or {"train": EBNERD_TRAIN, "validation": EBNERD_VALIDATION}
    for split, rows in behaviors.items():
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        pq.write_table(_behaviors(rows), os.path.join(folder, split, "behaviors.parquet"))
        pq.write_table(_history((history or EBNERD_HISTORY)[split]), os.path.join(folder, split, "history.parquet"))
    pq.write_table(article_rows(article_ids), os.path.join(folder, "articles.parquet"))
    return folder


def referenced_articles(behaviors: pa.Table, history: pa.Table) -> np.ndarray:
    """Every article id a behaviors/history pair mentions (pages, in-view, clicked, history)."""
    parts = [behaviors["article_id"].drop_null().to_numpy(),
             pc.list_flatten(behaviors["article_ids_inview"]).to_numpy(),
             pc.list_flatten(behaviors["article_ids_clicked"]).to_numpy(),
             pc.list_flatten(history["article_id_fixed"]).to_numpy()]
    return np.unique(np.concatenate(parts))


# ---------------------------------------------------------------------------------------- BARS x1 CSV
# KuaiVideo_x1 rows (timestamp, user_id, item_id, is_click); train rows first, test rows after.
# Expected (users 50 -> 0, 60 -> 1; items 1000..1004 -> rows 1..5):
#   sequences user 0: [1, 3, 2, 1, 5], user 1: [1, 3]
#   seq_len by row: train [0, 0, 1, 0, 2, 2, 1, 3], test [4, 2, 5]
#   --valid_fraction 0.25: valid = the train rows with timestamp >= 7 (rows 6, 7)
KUAI_TRAIN = [(1, 50, 1000, 1), (2, 60, 1001, 0), (3, 50, 1002, 1), (4, 60, 1000, 1), (5, 50, 1003, 0),
              (6, 50, 1001, 1), (7, 60, 1002, 1), (8, 50, 1000, 1)]
KUAI_TEST = [(9, 50, 1004, 1), (10, 60, 1003, 0), (11, 50, 1002, 0)]
# MicroVideo1.7M_x1 rows (timestamp, user_id, item_id, cate_id, is_click); test histories are frozen at train end.
# Expected (users 1 -> 0, 2 -> 1; items 5, 6, 7, 100, 101 -> rows 1..5; cate 2, 3 -> 1, 2):
#   sequences user 0: [1, 2], user 1: [1]; seq_len train [0, 0, 1, 1, 0], test [2, 2, 1]
MICRO_TRAIN = [(10, 1, 5, 2, 1), (11, 2, 6, 3, 0), (12, 1, 7, 3, 0), (13, 1, 6, 3, 1), (14, 2, 5, 2, 1)]
MICRO_TEST = [(20, 1, 100, 2, 1), (21, 1, 101, 3, 0), (22, 2, 100, 2, 0)]


def _window(values: list, cap: int, keeps: str) -> str:
    kept = values[:cap] if keeps == "oldest" else values[max(0, len(values) - cap):]
    return "^".join(str(v) for v in kept)


def _write_h5_vectors(path: str, num_keys: int) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("key", data=np.arange(num_keys, dtype=np.int64))
        h5.create_dataset("value", data=np.array([item_vector(k) for k in range(num_keys)], dtype=np.float32))


def write_bars_kuaivideo(folder: str, train: Optional[list] = None, test: Optional[list] = None) -> str:
    """KuaiVideo_x1: ``timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items``.

    ``pos_items`` / ``neg_items`` hold the OLDEST up-to-100 clicked / not-clicked items of the user's rows
    before this one (train then test continue one history), as the ALPINE converter wrote them.
    """
    os.makedirs(folder, exist_ok=True)
    clicked: Dict[int, list] = {}
    skipped: Dict[int, list] = {}
    rows = {"train.csv": train or KUAI_TRAIN, "test.csv": test or KUAI_TEST}
    for name, file_rows in rows.items():
        with open(os.path.join(folder, name), "w") as fd:
            fd.write("timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items\n")
            for ts, user, item, click in file_rows:
                fd.write(f"{ts},{user},{item},{click},0,0,{_window(clicked.get(user, []), 100, 'oldest')},"
                         f"{_window(skipped.get(user, []), 100, 'oldest')}\n")
                (clicked if click else skipped).setdefault(user, []).append(item)
    all_items = [r[2] for r in rows["train.csv"] + rows["test.csv"]]
    _write_h5_vectors(os.path.join(folder, "item_visual_emb_dim64.h5"), max(all_items) + 3)
    _write_h5_vectors(os.path.join(folder, "user_visual_emb_dim64.h5"), 2)
    return folder


def write_bars_microvideo(folder: str, train: Optional[list] = None, test: Optional[list] = None) -> str:
    """MicroVideo1.7M_x1: ``user_id,item_id,cate_id,is_click,timestamp,clicked_items,clicked_categories``.

    History = the newest up-to-128 earlier clicks of the user; test rows get the train-time history.
    """
    os.makedirs(folder, exist_ok=True)
    history: Dict[int, list] = {}
    rows = {"train.csv": train or MICRO_TRAIN, "test.csv": test or MICRO_TEST}
    for name, file_rows in rows.items():
        frozen = {u: list(h) for u, h in history.items()}
        with open(os.path.join(folder, name), "w") as fd:
            fd.write("user_id,item_id,cate_id,is_click,timestamp,clicked_items,clicked_categories\n")
            for ts, user, item, cate, click in file_rows:
                seen = (frozen if name == "test.csv" else history).get(user, [])
                fd.write(f"{user},{item},{cate},{click},{ts},{_window([i for i, _ in seen], 128, 'newest')},"
                         f"{_window([c for _, c in seen], 128, 'newest')}\n")
                if click and name == "train.csv":
                    history.setdefault(user, []).append((item, cate))
    all_items = [r[2] for r in rows["train.csv"] + rows["test.csv"]]
    _write_h5_vectors(os.path.join(folder, "item_image_emb_dim64.h5"), max(all_items) + 1)
    return folder
