"""Convert the raw EB-NeRD release (``ebnerd_demo`` / ``ebnerd_small`` / ``ebnerd_large``).

Input folder: ``train/behaviors.parquet``, ``train/history.parquet``, ``validation/behaviors.parquet``,
``validation/history.parquet`` and ``articles.parquet`` (schemas in REFERENCE_RESULTS 6.2).

* Samples: every impression expanded over ``article_ids_inview``; ``click`` = the article is in
  ``article_ids_clicked``. Columns follow LongCTR's ``Ebnerd_small_x1``: user features (``user_id``,
  ``is_sso_user``, ``gender``, ``postcode``, ``age``, ``is_subscriber``), context (``trigger_id`` = the page
  the impression was on, 0 = front page; ``device_type``, ``impression_hour``, ``impression_weekday``) and
  target-article features (``premium``, ``article_type``, ``sentiment_label``, the first 5 ``ner_clusters``
  and ``topics``, ``publish_days`` / ``publish_hours`` = article age at the impression, clipped to 30 / 24).
* Items: one row per article of ``articles.parquet`` (sorted by ``article_id``) with item features
  ``article_id``, ``category`` and the first 5 ``subcategory`` ids.
* Sequences: per user, the clicks of both ``history.parquet`` files merged with the clicks in both
  ``behaviors.parquet`` files (at the impression time), in time order, de-duplicated on (article, time);
  ``seq_len`` = the user's clicks strictly before the impression time, so no sample sees its own click.
* Splits: ``test`` = the official validation week; ``valid`` = the impressions of the last ``--valid_days``
  calendar day(s) of the train week; ``train`` = the rest of the train week. The official test set has no
  labels in the original release and is not read.

Every categorical value is encoded to 1..K by sorted raw value (0 = missing / padding); vocab = K + 1.

    python -m data_preprocess.ebnerd_raw --input ebnerd_small --output data/ebnerd_small_raw --dataset_id ebnerd_raw
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa

from lainctr.errors import exit_code

from . import common
from .common import DataValidationError, FeatureSpec, Vocabulary

LABEL = "click"
LIST_WIDTH = 5
MISSING = -1
SPLIT_DIRS = ("train", "validation")  # the official validation week becomes the test split
ARTICLES_FILE = "articles.parquet"
ARTICLE_COLUMNS = ["article_id", "published_time", "premium", "article_type", "ner_clusters", "topics",
                   "category", "subcategory", "sentiment_label"]
HISTORY_COLUMNS = ["user_id", "impression_time_fixed", "article_id_fixed"]
IMPRESSION_FEATURES = ["device_type", "is_sso_user", "gender", "postcode", "age", "is_subscriber"]
BEHAVIOR_COLUMNS = ["user_id", "impression_time", "article_id", "article_ids_inview",
                    "article_ids_clicked"] + IMPRESSION_FEATURES
TARGET_SCALARS = ["premium", "article_type", "sentiment_label"]
TARGET_LISTS = ["ner_clusters", "topics"]
MAX_PUBLISH_DAYS, MAX_PUBLISH_HOURS = 30, 24
US_PER_HOUR = 3_600_000_000


def _missing_for(dtype: pa.DataType):
    return "" if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) else MISSING


def _missing_in(values: np.ndarray):
    """The sentinel :func:`_raw` used for these converted values."""
    return "" if values.dtype.kind in "OUS" else MISSING


def _raw(file: str, column: str, column_data) -> np.ndarray:
    """Scalar categorical values with nulls as the missing sentinel ('' for text, -1 otherwise)."""
    return common.nullable_values(file, column, column_data, _missing_for(column_data.type))


def _raw_lists(file: str, column: str, column_data, row_of):
    missing = _missing_for(column_data.type.value_type) if pa.types.is_nested(column_data.type) else MISSING
    return common.list_values(file, column, column_data, row_of,
                              lambda f, c, a, r: common.nullable_values(f, c, a, missing)), missing


@dataclass
class Articles:
    """The article table; article row r (1..N) = ``vocab.keys[r - 1]``, row 0 = padding.

    Attributes:
        vocab: raw ``article_id`` -> article row.
        item_table / item_features: ``article_id`` (N+1,), ``category`` (N+1,), ``subcategory`` (N+1, 5).
        target: per-article sample features (N+1,) or (N+1, 5), gathered by each sample's target row.
        target_vocab: vocab size of each ``target`` feature.
        published_us: (N+1,) publication time in microseconds, ``MISSING`` when unknown.
    """
    vocab: Vocabulary
    item_table: Dict[str, np.ndarray]
    item_features: List[FeatureSpec]
    target: Dict[str, np.ndarray]
    target_vocab: Dict[str, int]
    published_us: np.ndarray

    def rows(self, raw: np.ndarray, file: str, column: str, row_of) -> np.ndarray:
        return self.vocab.encode(raw, file, column, row_of, unknown=f"is not in {ARTICLES_FILE}")


def read_articles(root: str, args: argparse.Namespace) -> Articles:
    """The article table (a few MB even for ebnerd_large: the text columns are not read)."""
    batches = [b for _, b in common.parquet_batches(root, ARTICLES_FILE, ARTICLE_COLUMNS, args.batch_rows,
                                                    not args.no_progress)]
    table = pa.Table.from_batches(batches).combine_chunks()
    row_of = common.rows_from(0)
    raw_ids = common.int_values(ARTICLES_FILE, "article_id", table["article_id"], row_of)
    common.raise_at(ARTICLES_FILE, "article_id", raw_ids < 0, lambda i: f"article id {raw_ids[i]} is negative", row_of)
    order = np.argsort(raw_ids, kind="stable")
    repeated = np.zeros(len(raw_ids), dtype=bool)
    repeated[order[1:][raw_ids[order][1:] == raw_ids[order][:-1]]] = True
    common.raise_at(ARTICLES_FILE, "article_id", repeated, lambda i: f"article {raw_ids[i]} appears twice", row_of)
    vocab = Vocabulary(raw_ids, missing=MISSING)  # MISSING = no article (front page) -> row 0

    def by_row(values: np.ndarray) -> np.ndarray:
        """Reorder file rows to article rows and add the all-zero padding row 0."""
        return np.concatenate([np.zeros((1,) + values.shape[1:], values.dtype), values[order]])

    def scalar(column: str):
        raw = _raw(ARTICLES_FILE, column, table[column])
        codes = Vocabulary(raw, missing=_missing_in(raw))
        return by_row(codes.encode(raw)), codes.size

    def first_ids(column: str):
        (offsets, values), missing = _raw_lists(ARTICLES_FILE, column, table[column], row_of)
        codes = Vocabulary(values, missing=missing)
        return by_row(common.pad_lists(offsets, codes.encode(values), LIST_WIDTH)), codes.size

    category, category_size = scalar("category")
    subcategory, subcategory_size = first_ids("subcategory")
    item_table = {"article_id": np.arange(vocab.size, dtype=np.int64), "category": category,
                  "subcategory": subcategory}
    item_features = [common.feature("article_id", "categorical", "item", vocab_size=vocab.size),
                     common.feature("category", "categorical", "item", vocab_size=category_size),
                     common.feature("subcategory", "sequence", "item", vocab_size=subcategory_size, width=LIST_WIDTH)]
    target, target_vocab = {}, {}
    for column in TARGET_SCALARS:
        target[column], target_vocab[column] = scalar(column)
    for column in TARGET_LISTS:
        target[column], target_vocab[column] = first_ids(column)
    published = table["published_time"]
    if not pa.types.is_timestamp(published.type):
        raise DataValidationError(ARTICLES_FILE, "published_time", None, f"expected a timestamp, got {published.type}")
    published_us = common.nullable_values(ARTICLES_FILE, "published_time",
                                          published.cast(pa.timestamp("us")).cast(pa.int64()), MISSING)
    published_us = by_row(published_us.astype(np.int64))
    published_us[0] = MISSING
    return Articles(vocab, item_table, item_features, target, target_vocab, published_us)


@dataclass
class Behaviours:
    """Impressions and their in-view expansion, all splits concatenated.

    Impression-level arrays are (I,); sample-level arrays (S,) point to their impression with ``impression``.
    """
    split: np.ndarray            # (I,) index into SPLIT_DIRS
    user: np.ndarray             # (I,) raw user_id
    time: np.ndarray             # (I,) impression time, microseconds
    trigger: np.ndarray          # (I,) article row of the page, 0 = front page
    features: Dict[str, np.ndarray]  # (I,) raw impression features (MISSING / '' for null)
    impression: np.ndarray       # (S,) impression of each sample
    target: np.ndarray           # (S,) article row
    label: np.ndarray            # (S,) int8
    click_impression: np.ndarray  # (C,) impression of each click
    click_target: np.ndarray     # (C,) article row clicked


def read_behaviours(root: str, articles: Articles, args: argparse.Namespace) -> Behaviours:
    """Both behaviors.parquet files, batch by batch; the in-view expansion and the click test are vectorised."""
    parts: Dict[str, list] = {k: [] for k in Behaviours.__dataclass_fields__ if k != "features"}
    features: Dict[str, list] = {k: [] for k in IMPRESSION_FEATURES}
    seen = 0
    for split_id, folder in enumerate(SPLIT_DIRS):
        file = f"{folder}/behaviors.parquet"
        for start, batch in common.parquet_batches(root, file, BEHAVIOR_COLUMNS, args.batch_rows,
                                                   not args.no_progress):
            row_of = common.rows_from(start)
            n = batch.num_rows
            parts["split"].append(np.full(n, split_id, dtype=np.int8))
            parts["user"].append(common.int_values(file, "user_id", batch["user_id"], row_of))
            parts["time"].append(common.timestamps_us(file, "impression_time", batch["impression_time"], row_of))
            page = common.nullable_values(file, "article_id", batch["article_id"], MISSING)
            parts["trigger"].append(articles.rows(page, file, "article_id", row_of))  # null (front page) -> 0
            inview_offsets, inview = common.list_values(file, "article_ids_inview", batch["article_ids_inview"], row_of)
            click_offsets, clicked = common.list_values(file, "article_ids_clicked", batch["article_ids_clicked"],
                                                        row_of)
            inview_rows = articles.rows(inview, file, "article_ids_inview", common.list_rows(inview_offsets, row_of))
            click_rows = articles.rows(clicked, file, "article_ids_clicked", common.list_rows(click_offsets, row_of))
            inview_imp = np.repeat(np.arange(n), np.diff(inview_offsets))
            click_imp = np.repeat(np.arange(n), np.diff(click_offsets))
            # (impression, article) keys: one vectorised membership test per batch instead of a row loop
            inview_key = inview_imp * articles.vocab.size + inview_rows
            click_key = click_imp * articles.vocab.size + click_rows
            common.raise_at(file, "article_ids_clicked", ~np.isin(click_key, inview_key),
                            lambda i: f"clicked article {clicked[i]} is not in article_ids_inview",
                            common.list_rows(click_offsets, row_of))
            parts["impression"].append(inview_imp + seen)
            parts["target"].append(inview_rows)
            parts["label"].append(np.isin(inview_key, click_key).astype(np.int8))
            parts["click_impression"].append(click_imp + seen)
            parts["click_target"].append(click_rows)
            for column in IMPRESSION_FEATURES:
                features[column].append(_raw(file, column, batch[column]))
            seen += n
    if not seen:
        raise DataValidationError("train/behaviors.parquet", "impression_time", None, "no impressions")
    return Behaviours(features={k: np.concatenate(v) for k, v in features.items()},
                      **{k: np.concatenate(v) for k, v in parts.items()})


def read_history(root: str, folder: str, articles: Articles, args: argparse.Namespace):
    """Clicks of ``<folder>/history.parquet`` as flat (user raw id, time us, article row) arrays."""
    file = f"{folder}/history.parquet"
    users, times, targets = [], [], []
    for start, batch in common.parquet_batches(root, file, HISTORY_COLUMNS, args.batch_rows, not args.no_progress):
        row_of = common.rows_from(start)
        user = common.int_values(file, "user_id", batch["user_id"], row_of)
        time_offsets, time = common.list_values(file, "impression_time_fixed", batch["impression_time_fixed"],
                                                row_of, common.timestamps_us)
        article_offsets, article = common.list_values(file, "article_id_fixed", batch["article_id_fixed"], row_of)
        time_len, article_len = np.diff(time_offsets), np.diff(article_offsets)
        common.raise_at(file, "article_id_fixed", time_len != article_len,
                        lambda i: f"{article_len[i]} articles but {time_len[i]} impression_time_fixed values", row_of)
        users.append(np.repeat(user, article_len))
        times.append(time)
        targets.append(articles.rows(article, file, "article_id_fixed", common.list_rows(article_offsets, row_of)))
    if not users:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))
    return np.concatenate(users), np.concatenate(times), np.concatenate(targets)


def _publish_age(published_us: np.ndarray, time_us: np.ndarray, unit_us: int, cap: int) -> np.ndarray:
    """Article age at the impression in whole units, clipped to [0, cap], + 1; 0 = unknown publish time."""
    age = np.clip((time_us - published_us) // unit_us, 0, cap) + 1
    return np.where(published_us == MISSING, 0, age)


def convert(args: argparse.Namespace) -> str:
    root = args.input
    articles = read_articles(root, args)
    behaviours = read_behaviours(root, articles, args)
    history = [read_history(root, folder, articles, args) for folder in SPLIT_DIRS]
    users = Vocabulary(np.concatenate([behaviours.user] + [h[0] for h in history]))
    impression_user = users.encode(behaviours.user) - 1
    event_user = np.concatenate([users.encode(h[0]) - 1 for h in history]
                                + [impression_user[behaviours.click_impression]])
    event_time = np.concatenate([h[1] for h in history] + [behaviours.time[behaviours.click_impression]])
    event_item = np.concatenate([h[2] for h in history] + [behaviours.click_target])
    sequences = common.build_sequences(event_user, event_time, event_item, len(users.keys), dedupe=True)

    imp = behaviours.impression
    sample_time = behaviours.time[imp]
    columns = {"user_index": impression_user[imp], "item_index": behaviours.target,
               "seq_len": common.count_before(sequences, impression_user[imp], sample_time),
               LABEL: behaviours.label, "user_id": impression_user[imp] + 1, "trigger_id": behaviours.trigger[imp]}
    vocab = {"user_id": users.size, "trigger_id": articles.vocab.size}
    for column, raw in behaviours.features.items():
        codes = Vocabulary(raw, missing=_missing_in(raw))
        columns[column], vocab[column] = codes.encode(raw)[imp], codes.size
    for column, values in articles.target.items():
        columns[column], vocab[column] = values[behaviours.target], articles.target_vocab[column]
    published = articles.published_us[behaviours.target]
    columns["publish_days"] = _publish_age(published, sample_time, 24 * US_PER_HOUR, MAX_PUBLISH_DAYS)
    columns["publish_hours"] = _publish_age(published, sample_time, US_PER_HOUR, MAX_PUBLISH_HOURS)
    columns["timestamp"] = sample_time                                   # the impression time (target_time), us
    columns["impression_hour"] = (sample_time // US_PER_HOUR) % 24 + 1
    columns["impression_weekday"] = (sample_time // (24 * US_PER_HOUR) + 3) % 7 + 1  # 1970-01-01 was a Thursday
    vocab.update(publish_days=MAX_PUBLISH_DAYS + 2, publish_hours=MAX_PUBLISH_HOURS + 2, impression_hour=25,
                 impression_weekday=8)

    sample_split = behaviours.split[imp]
    train_times = behaviours.time[behaviours.split == 0]
    cutoff = common.last_days_cutoff(train_times, args.valid_days)
    valid = (sample_split == 0) & (sample_time >= cutoff)
    splits = {"train": common.take(columns, (sample_split == 0) & ~valid), "valid": common.take(columns, valid),
              "test": common.take(columns, sample_split == 1)}
    sample_features = [common.feature(name, "sequence" if values.ndim == 2 else "categorical",
                                      "user" if name in common.USER_FEATURES else "context", vocab_size=vocab[name],
                                      width=values.shape[1] if values.ndim == 2 else None)
                       for name, values in columns.items() if name in vocab]
    info = {"source_format": "ebnerd_raw", "target_is_next_behaviour": False, "time_unit": "us",
            "time_is_wallclock": True,
            "split_protocol": f"test = validation/behaviors.parquet (official validation week); valid = "
                              f"train/behaviors.parquet impressions from {np.datetime64(cutoff, 'us')} "
                              f"(last {args.valid_days} day(s) of the train week); train = the earlier ones",
            "sequence_protocol": "history.parquet clicks of both splits + behaviors.parquet clicks at the "
                                 "impression time, de-duplicated on (user, article, time); seq_len counts clicks "
                                 "strictly before the impression time"}
    return common.finish(args, LABEL, splits, sequences, articles.item_table, sample_features,
                         articles.item_features, info)


def main(argv: Optional[List[str]] = None) -> str:
    parser = common.command_line("ebnerd_raw", __doc__, default_dataset_id="ebnerd_raw")
    parser.add_argument("--valid_days", type=int, default=1,
                        help="calendar days at the end of the train week that form the validation split")
    return common.run(argv, parser, convert)


if __name__ == "__main__":
    sys.exit(exit_code(main))
