"""Import a reczoo LongCTR parquet release (``KuaiVideo_x2``, ``MicroVideo1.7M_x2``, ``Ebnerd_small_x1``).

Input folder: ``train.parquet``, ``valid.parquet``, ``test.parquet`` (one row per sample: ``user_index``,
``item_index``, ``seq_len``, the label ``is_click``/``click``, integer context features, fixed-length
``list<int>`` sequence features), ``user_info.parquet`` (``full_item_seq: list<int>``, row i = user_index i)
and ``item_info.parquet`` (row i = item_index i, row 0 = padding; integer ids, fixed-length ``list<float>``
vectors, fixed-length ``list<int>`` id lists).

Nothing is re-encoded: samples keep their order, users and items their rows, features their ids, so the
histories the models see are exactly LongCTR's ``full_item_seq[:seq_len]`` and results stay comparable with
the LongCTR leaderboard. For the dataset ids ``kuaivideo``, ``microvideo`` and ``ebnerd`` the label, the
features and their vocabulary sizes are those of the published 2024 configs (REFERENCE_RESULTS 6.1): other
columns are ignored and an id at or beyond a published vocab_size is an error. ``--schema data`` imports
every column instead, with vocab = largest id + 1 (e.g. the Feb-2025 releases, whose features differ).

    python -m data_preprocess.longctr_parquet --input KuaiVideo_x2 --output data/KuaiVideo_x2 --dataset_id kuaivideo
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from lainctr.errors import exit_code

from . import common
from .common import DataValidationError, FeatureSpec, UserSequences

SPLIT_FILES = {"train": "train.parquet", "valid": "valid.parquet", "test": "test.parquet"}
USER_FILE, ITEM_FILE = "user_info.parquet", "item_info.parquet"
META = ("user_index", "item_index", "seq_len")
LABEL_CANDIDATES = ("is_click", "click", "label")


@dataclass(frozen=True)
class PublishedConfig:
    """Label and features of a 2024 LongCTR benchmark dataset config: ``{feature: vocab_size}``, None for a
    pretrained vector. vocab_size counts the padding id 0 and the OOV id, so every id must be below it."""
    label: str
    item: Dict[str, Optional[int]]
    sample: Dict[str, Optional[int]]


PUBLISHED: Dict[str, PublishedConfig] = {  # REFERENCE_RESULTS 6.1, reczoo/LongCTR benchmark/*.yaml
    "kuaivideo": PublishedConfig("is_click", {"item_id": 101_790, "image_emb_dim64": None}, {}),
    "microvideo": PublishedConfig("is_click", {"item_id": 24_323, "cate_id": 514, "image_emb_dim64": None}, {}),
    "ebnerd": PublishedConfig(
        "click", {"article_id": 2_218, "category": 16, "subcategory": 91},
        {"user_id": 14_209, "trigger_id": 1_471, "device_type": 5, "is_sso_user": 4, "gender": 4, "postcode": 7,
         "age": 11, "is_subscriber": 4, "premium": 4, "article_type": 12, "ner_clusters": 10_618, "topics": 80,
         "sentiment_label": 5, "publish_days": 33, "publish_hours": 27, "impression_hour": 26,
         "impression_weekday": 9}),
}


def read_user_info(root: str, args: argparse.Namespace) -> UserSequences:
    """``full_item_seq`` of every user, row i = user_index i, as CSR."""
    offsets, values = [np.zeros(1, dtype=np.int64)], []
    end = 0
    for start, batch in common.parquet_batches(root, USER_FILE, ["full_item_seq"], args.batch_rows,
                                               not args.no_progress):
        part_offsets, part_values = common.list_values(USER_FILE, "full_item_seq", batch.column(0),
                                                       common.rows_from(start))
        offsets.append(part_offsets[1:] + end)
        values.append(part_values)
        end += len(part_values)
    sequences = UserSequences(offsets=np.concatenate(offsets),
                              items=np.concatenate(values) if values else np.zeros(0, np.int64))
    common.raise_at(USER_FILE, "full_item_seq", sequences.items < 1,
                    lambda i: f"item index {sequences.items[i]} < 1 (0 is padding)",
                    common.list_rows(sequences.offsets, lambda u: u))
    return sequences


def _feature_columns(file: str, batch_columns: Dict[str, List[pa.Array]], starts: List[int]
                     ) -> Dict[str, Tuple[str, np.ndarray]]:
    """Convert the non-meta columns of one file: ``{name: (kind, (n,) or (n, w) array)}``.

    Integer scalars are categorical ids, lists of floats pretrained vectors, lists of integers id lists;
    ``starts`` holds the first file row of each batch.
    """
    out = {}
    for name, chunks in batch_columns.items():
        dtype = chunks[0].type
        is_list = pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
        vector = is_list and pa.types.is_floating(dtype.value_type)
        if is_list and not vector and not pa.types.is_integer(dtype.value_type):
            raise DataValidationError(file, name, None, f"expected integer ids or float vectors, got {dtype}")
        parts = []
        for start, chunk in zip(starts, chunks):
            row_of = common.rows_from(start)
            if not is_list:
                parts.append(common.int_values(file, name, chunk, row_of))
                continue
            convert = common.float_values if vector else common.int_values
            offsets, values = common.list_values(file, name, chunk, row_of, convert)
            width = parts[0].shape[1] if parts else None
            parts.append(common.fixed_width(file, name, offsets, values, row_of, width))
        values = np.concatenate(parts)
        out[name] = ("embedding" if vector else "sequence" if is_list else "categorical",
                     values.astype(np.float32) if vector else values)
    return out


def _read_columns(root: str, name: str, columns: List[str], args: argparse.Namespace
                  ) -> Tuple[Dict[str, List[pa.Array]], List[int]]:
    """The named columns as Arrow batches, and the first file row of each batch."""
    chunks: Dict[str, List[pa.Array]] = {c: [] for c in columns}
    starts = []
    for start, batch in common.parquet_batches(root, name, columns, args.batch_rows, not args.no_progress):
        for column in columns:
            chunks[column].append(batch.column(column))
        starts.append(start)
    if not starts:
        raise DataValidationError(name, columns[0], None, "the file has no rows")
    return chunks, starts


def read_item_info(root: str, names: List[str], args: argparse.Namespace) -> Dict[str, Tuple[str, np.ndarray]]:
    """Item features by position (row i = item_index i); the ``item_index`` column itself is not used."""
    if not names:
        raise DataValidationError(ITEM_FILE, "*", None, "no item feature columns besides item_index")
    features = _feature_columns(ITEM_FILE, *_read_columns(root, ITEM_FILE, names, args))
    for name, (_, values) in features.items():
        common.raise_at(ITEM_FILE, name, np.any(values[:1].reshape(1, -1) != 0, axis=1),
                        lambda i: "row 0 is the padding item and must be all zeros", lambda i: 0)
    return features


def read_split(root: str, file: str, label: str, context: List[str], sequences: UserSequences, num_items: int,
               args: argparse.Namespace) -> Tuple[Dict[str, np.ndarray], Dict[str, Tuple[str, np.ndarray]]]:
    """Meta columns + label (checked against the sequences) and the converted context features."""
    chunks, starts = _read_columns(root, file, list(META) + [label] + context, args)
    columns = {c: np.concatenate([common.int_values(file, c, chunk, common.rows_from(s))
                                  for s, chunk in zip(starts, chunks[c])]) for c in META}
    columns[label] = np.concatenate([common.label_values(file, label, chunk, common.rows_from(s))
                                     for s, chunk in zip(starts, chunks[label])])
    row = common.rows_from(0)
    user, seq_len = columns["user_index"], columns["seq_len"]
    common.check_range(file, "user_index", user, 0, sequences.num_users, row, "user_index")
    common.check_range(file, "item_index", columns["item_index"], 1, num_items, row, "item_index")
    lengths = sequences.lengths()[user]
    common.raise_at(file, "seq_len", seq_len < 0, lambda i: f"seq_len {seq_len[i]} is negative", row)
    common.raise_at(file, "seq_len", seq_len > lengths,
                    lambda i: f"seq_len {seq_len[i]} exceeds len(full_item_seq)={lengths[i]} "
                              f"of user_index {user[i]}", row)
    return columns, _feature_columns(file, {c: chunks[c] for c in context}, starts)


def feature_spec(name: str, kind: str, per_file: List[Tuple[str, np.ndarray]], source: str,
                 published: Optional[Dict[str, Optional[int]]]) -> FeatureSpec:
    """The feature's spec; ids are checked against the published vocab_size, else it is largest id + 1."""
    first_file, first_values = per_file[0]
    if kind == "embedding":
        if published is not None and published[name] is not None:
            raise DataValidationError(first_file, name, None, "holds vectors; the published config has integer ids")
        return common.feature(name, "embedding", source, width=first_values.shape[1])
    if published is not None and published[name] is None:
        raise DataValidationError(first_file, name, None, "holds integer ids; the published config has a vector")
    for file, values in per_file:
        if values.shape[1:] != first_values.shape[1:]:
            raise DataValidationError(file, name, None, f"rows of shape {values.shape[1:]}, but "
                                                        f"{first_values.shape[1:]} in {first_file}")
        common.raise_at(file, name, np.any(values.reshape(len(values), -1) < 0, axis=1),
                        lambda i: f"id {values[i].tolist()} is negative", common.rows_from(0))
        if published is not None:
            common.check_range(file, name, values, 0, published[name], common.rows_from(0),
                               hint=" (published vocab_size; use --schema data for other releases)")
    vocab = published[name] if published is not None else 1 + max((int(v.max()) for _, v in per_file if v.size),
                                                                  default=0)
    width = first_values.shape[1] if kind == "sequence" else None
    return common.feature(name, kind, source, vocab_size=vocab, width=width)


def convert(args: argparse.Namespace) -> str:
    root = args.input
    schema = args.schema or ("published" if args.dataset_id in PUBLISHED else "data")
    if schema == "published" and args.dataset_id not in PUBLISHED:
        raise ValueError(f"no published LongCTR config for dataset_id '{args.dataset_id}' (known: "
                         f"{sorted(PUBLISHED)}); use --schema data")
    published = PUBLISHED.get(args.dataset_id) if schema == "published" else None
    train_columns = common.parquet_schema(root, SPLIT_FILES["train"]).names
    label = args.label or (published.label if published else
                           next((c for c in LABEL_CANDIDATES if c in train_columns), None))
    if label is None:
        raise DataValidationError(SPLIT_FILES["train"], "|".join(LABEL_CANDIDATES), None,
                                  "no label column found; name it with --label")
    context = list(published.sample) if published else [c for c in train_columns if c not in META and c != label]
    item_names = list(published.item) if published else [c for c in common.parquet_schema(root, ITEM_FILE).names
                                                          if c != "item_index"]
    sequences = read_user_info(root, args)
    items = read_item_info(root, item_names, args)
    num_items = len(next(iter(items.values()))[1])
    common.check_range(USER_FILE, "full_item_seq", sequences.items, 1, num_items,
                       common.list_rows(sequences.offsets, lambda u: u), "item index")
    splits, sample_values = {}, {}
    for split, file in SPLIT_FILES.items():
        splits[split], sample_values[split] = read_split(root, file, label, context, sequences, num_items, args)

    item_features = [feature_spec(name, kind, [(ITEM_FILE, values)], "item", published and published.item)
                     for name, (kind, values) in items.items()]
    sample_features = []
    for name in context:
        kinds = {sample_values[split][name][0] for split in SPLIT_FILES}
        if len(kinds) > 1:
            raise DataValidationError(SPLIT_FILES["valid"], name, None, f"column types differ between the sample "
                                                                         f"files: {sorted(kinds)}")
        per_file = [(file, sample_values[split][name][1]) for split, file in SPLIT_FILES.items()]
        source = "user" if name in common.USER_FEATURES else "context"
        sample_features.append(feature_spec(name, kinds.pop(), per_file, source, published and published.sample))
        for split in splits:
            splits[split][name] = sample_values[split][name][1]
    ignored = {SPLIT_FILES["train"]: sorted(set(train_columns) - set(META) - {label} - set(context)),
               ITEM_FILE: sorted(set(common.parquet_schema(root, ITEM_FILE).names) - {"item_index"} - set(items))}
    info = {"source_format": "longctr_parquet", "target_is_next_behaviour": False, "schema": schema,
            "ignored_columns": ignored,
            "note": "LongCTR parquet imported without re-encoding: same samples, histories "
                    "(full_item_seq[:seq_len]) and feature ids; the format does not promise that a positive "
                    "target is the next behaviour (see positive_target_is_next_share)."}
    return common.finish(args, label, splits, sequences, {n: v for n, (_, v) in items.items()},
                         sample_features, item_features, info)


def main(argv: Optional[List[str]] = None) -> str:
    parser = common.command_line("longctr_parquet", __doc__)
    parser.add_argument("--label", default=None, help=f"label column (default: first of {LABEL_CANDIDATES})")
    parser.add_argument("--schema", choices=("published", "data"), default=None,
                        help="features and vocab sizes of the published 2024 LongCTR config of --dataset_id "
                             f"(default for {sorted(PUBLISHED)}) or every column with vocab from the data")
    return common.run(argv, parser, convert)


if __name__ == "__main__":
    sys.exit(exit_code(main))
