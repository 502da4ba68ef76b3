"""Convert a BARS x1 CSV release (``KuaiVideo_x1``, ``MicroVideo1.7M_x1``) with full-length histories.

Input folder: ``train.csv``, ``test.csv`` and the item vectors ``item_visual_emb_dim64.h5`` (KuaiVideo) or
``item_image_emb_dim64.h5`` (MicroVideo), h5 datasets ``key`` (raw item id) and ``value`` (n, 64).

The CSVs cap each row's history (KuaiVideo: the OLDEST up-to-100 clicked items in ``pos_items``; MicroVideo:
the newest up-to-128 in ``clicked_items``), so the history is rebuilt from the rows instead: a user's
sequence is their clicked rows (``is_click == 1``) in time order (``timestamp``, then file order, train
before test) and ``seq_len`` counts the user's clicks before the row. Every row's history column is checked
against that rebuild (same length, same items) and a mismatch stops with the file, column and row
(``--history_check count`` counts mismatches into ``dataset_info.json`` instead: the reczoo converter
sorted the rows with pandas' unstable sort, so rows of one user with equal timestamps may be out of order).

* KuaiVideo_x1: test rows continue the sequence, so a clicked row's target is its next behaviour.
* MicroVideo1.7M_x1: test histories are frozen at the end of train (REFERENCE_RESULTS 6.3); test clicks
  are not behaviours and every test row sees all of the user's train clicks.

x1 has train/test only: ``valid`` = the train rows from the ``--valid_fraction`` time quantile on (ties at
the cutoff included), ``train`` = the earlier train rows, ``test`` = ``test.csv``. Items are encoded to
1..N by sorted raw id (``item_id`` feature = the row), users to 0..U-1; ``neg_items``, ``is_like``,
``is_follow`` and ``clicked_categories`` are not used (``cate_id`` comes from each item's own rows).

    python -m data_preprocess.bars_x1_csv --layout kuaivideo --input KuaiVideo_x1 --output data/KuaiVideo_x1_full
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np

from lainctr.errors import exit_code

from . import common
from .common import DataValidationError, Vocabulary

LABEL = "is_click"
FILES = ("train.csv", "test.csv")
BASE_COLUMNS = ["timestamp", "user_id", "item_id", LABEL]
H5_BLOCK_ROWS = 1 << 18


@dataclass(frozen=True)
class Layout:
    """What one BARS x1 release keeps in its history column."""
    history_column: str
    keeps: str                       # "oldest" or "newest" items of the history
    cap: int                         # at most this many items per row
    item_columns: Tuple[str, ...]    # item attributes repeated on every row
    embedding_file: str
    frozen_test_history: bool        # test rows see the train-time history only


LAYOUTS: Dict[str, Layout] = {
    "kuaivideo": Layout("pos_items", "oldest", 100, (), "item_visual_emb_dim64.h5", False),
    "microvideo": Layout("clicked_items", "newest", 128, ("cate_id",), "item_image_emb_dim64.h5", True),
}


@dataclass
class Rows:
    """The scalar columns of train.csv then test.csv, (R,) each."""
    is_test: np.ndarray
    timestamp: np.ndarray
    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    attributes: Dict[str, np.ndarray]
    num_train: int


def read_rows(root: str, layout: Layout, args: argparse.Namespace) -> Rows:
    parts: Dict[str, List[np.ndarray]] = {c: [] for c in BASE_COLUMNS + list(layout.item_columns) + ["is_test"]}
    for file_index, file in enumerate(FILES):
        for start, batch in common.csv_batches(root, file, BASE_COLUMNS + list(layout.item_columns),
                                               args.block_bytes, not args.no_progress):
            row_of = common.rows_from(start)
            parts["timestamp"].append(common.float_values(file, "timestamp", batch["timestamp"], row_of))
            parts[LABEL].append(common.label_values(file, LABEL, batch[LABEL], row_of))
            for column in ["user_id", "item_id"] + list(layout.item_columns):
                parts[column].append(common.int_values(file, column, batch[column], row_of))
            parts["is_test"].append(np.full(batch.num_rows, file_index, dtype=bool))
    columns = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return Rows(is_test=columns["is_test"], timestamp=columns["timestamp"], user=columns["user_id"],
                item=columns["item_id"], label=columns[LABEL],
                attributes={c: columns[c] for c in layout.item_columns},
                num_train=int(np.sum(~columns["is_test"])))


def _head(values: list, size: int = 8) -> str:
    return str(values[:size])[:-1] + (", ...]" if len(values) > size else "]")


def _history_problem(layout: Layout, raw_user: int, seq_len: int, got: list, expected: list) -> str:
    kept = min(seq_len, layout.cap)
    if len(got) != kept:
        return (f"history of {len(got)} items, but user_id {raw_user} has {seq_len} earlier clicked rows "
                f"(expected the {layout.keeps} {kept})")
    return (f"history does not match the user's earlier clicked rows: expected item ids {_head(expected)}, "
            f"got {_head(got)}")


def check_histories(root: str, layout: Layout, rows: Rows, sequences, user: np.ndarray, seq_len: np.ndarray,
                    items: Vocabulary, args: argparse.Namespace) -> dict:
    """Each row's CSV history must be the oldest/newest ``cap`` items of the rebuilt ``items[:seq_len]``.

    With ``--history_check error`` the first mismatch stops the conversion; with ``count`` mismatching rows
    are counted (returned for ``dataset_info.json``) and the rebuilt histories are kept.
    """
    column = layout.history_column
    checked, mismatched, first_problem = 0, 0, None
    for file_index, file in enumerate(FILES):
        first_row = rows.num_train if file_index else 0
        for start, batch in common.csv_batches(root, file, [column], args.block_bytes, not args.no_progress):
            row_of = common.rows_from(start)
            here = slice(first_row + start, first_row + start + batch.num_rows)
            offsets, tokens = common.text_list_values(file, column, batch[column], row_of)
            history = items.encode(common.int_values(file, column, tokens, common.list_rows(offsets, row_of)))
            s, u = seq_len[here], user[here]
            kept, length = np.minimum(s, layout.cap), np.diff(offsets)
            sample_of = np.repeat(np.arange(batch.num_rows), length)
            first = sequences.offsets[u] + (0 if layout.keeps == "oldest" else s - kept)
            position = np.repeat(first, length) + np.arange(len(history)) - np.repeat(offsets[:-1], length)
            expected = sequences.items[np.minimum(position, max(len(sequences.items) - 1, 0))] \
                if len(history) else history
            wrong = (length != kept) | (np.bincount(sample_of[expected != history], minlength=batch.num_rows) > 0)
            i = common.first_bad_row(wrong)
            if i is None:
                checked += batch.num_rows
                continue
            begin = sequences.offsets[u[i]] + (0 if layout.keeps == "oldest" else s[i] - kept[i])
            problem = _history_problem(layout, int(rows.user[here][i]), int(s[i]),
                                       tokens[int(offsets[i]):int(offsets[i + 1])].to_pylist(),
                                       [str(k) for k in items.keys[sequences.items[begin:begin + kept[i]] - 1]])
            if args.history_check == "error":
                raise DataValidationError(file, column, row_of(i), problem)
            checked, mismatched = checked + batch.num_rows, mismatched + int(wrong.sum())
            first_problem = first_problem or f"{file}: column '{column}' row {row_of(i)}: {problem}"
    return {"rows_checked": checked, "rows_mismatched": mismatched, "first_mismatch": first_problem}


def read_item_vectors(root: str, file: str, raw_ids: np.ndarray) -> np.ndarray:
    """(N, d) float32 rows of the h5 ``value`` matrix for ``raw_ids`` (N,), read in blocks of rows."""
    path = common.input_path(root, file)
    with common.readable(path, "HDF5"), h5py.File(path, "r") as h5:
        for name in ("key", "value"):
            if name not in h5:
                raise DataValidationError(file, name, None, f"missing dataset; the file has {sorted(h5.keys())}")
        keys, value = h5["key"][()], h5["value"]
        if keys.dtype.kind in "SUO":  # FuxiCTR writes string keys for some releases
            keys = keys.astype(str).astype(np.int64)
        if value.ndim != 2 or value.shape[0] != len(keys):
            raise DataValidationError(file, "value", None, f"shape {value.shape}, expected ({len(keys)}, dim)")
        order = np.argsort(keys, kind="stable")
        pos = np.minimum(np.searchsorted(keys[order], raw_ids), len(keys) - 1)
        common.raise_at(file, "key", keys[order][pos] != raw_ids,
                        lambda i: f"no vector for item_id {raw_ids[i]}", lambda i: None)
        wanted = order[pos]
        out = np.zeros((len(raw_ids), value.shape[1]), dtype=np.float32)
        for begin in range(0, value.shape[0], H5_BLOCK_ROWS):
            hit = (wanted >= begin) & (wanted < begin + H5_BLOCK_ROWS)
            if hit.any():
                out[hit] = value[begin:begin + H5_BLOCK_ROWS][wanted[hit] - begin]
        return out


def item_attribute(rows: Rows, name: str, item_row: np.ndarray, num_items: int) -> Tuple[np.ndarray, int]:
    """(N+1,) code of an attribute every row of an item repeats; rows that disagree are an error."""
    codes = Vocabulary(rows.attributes[name])
    per_row = codes.encode(rows.attributes[name])
    table = np.zeros(num_items, dtype=np.int64)
    table[item_row] = per_row
    for file_index, file in enumerate(FILES):
        part = rows.is_test == bool(file_index)
        common.raise_at(file, name, table[item_row[part]] != per_row[part],
                        lambda i: f"item_id {rows.item[part][i]} has {name} {rows.attributes[name][part][i]} here "
                                  f"but {codes.keys[table[item_row[part][i]] - 1]} on another row",
                        common.rows_from(0))  # ``part`` holds the file's rows in file order
    return table, codes.size


def convert(args: argparse.Namespace) -> str:
    layout = LAYOUTS[args.layout]
    args = argparse.Namespace(**{**vars(args), "dataset_id": args.dataset_id or f"{args.layout}_x1"})
    rows = read_rows(args.input, layout, args)
    if rows.num_train == 0:
        raise DataValidationError(FILES[0], "user_id", None, "the file has no rows")
    position = np.empty(len(rows.user), dtype=np.int64)
    position[np.lexsort((np.arange(len(rows.user)), rows.timestamp))] = np.arange(len(rows.user))
    users, items = Vocabulary(rows.user), Vocabulary(rows.item)
    user, item_row = users.encode(rows.user) - 1, items.encode(rows.item)
    is_behaviour = (rows.label == 1) & ~(rows.is_test & layout.frozen_test_history)
    sequences = common.build_sequences(user[is_behaviour], position[is_behaviour], item_row[is_behaviour],
                                       len(users.keys), tiebreak=position[is_behaviour])
    seq_len = common.count_before(sequences, user, position)
    if layout.frozen_test_history:
        seq_len[rows.is_test] = sequences.lengths()[user[rows.is_test]]
    history_check = check_histories(args.input, layout, rows, sequences, user, seq_len, items, args)

    vectors = read_item_vectors(args.input, layout.embedding_file, items.keys)
    width = vectors.shape[1]
    emb_name = f"image_emb_dim{width}"
    item_table = {"item_id": np.arange(items.size, dtype=np.int64),
                  emb_name: np.concatenate([np.zeros((1, width), np.float32), vectors])}
    item_features = [common.feature("item_id", "categorical", "item", vocab_size=items.size)]
    for name in layout.item_columns:
        item_table[name], size = item_attribute(rows, name, item_row, items.size)
        item_features.append(common.feature(name, "categorical", "item", vocab_size=size))
    item_features.append(common.feature(emb_name, "embedding", "item", width=width))

    columns = {"user_index": user, "item_index": item_row, "seq_len": seq_len, LABEL: rows.label}
    train = ~rows.is_test
    cutoff = common.fraction_cutoff(rows.timestamp[train], args.valid_fraction)
    valid = train & (rows.timestamp >= cutoff)
    splits = {"train": common.take(columns, train & ~valid), "valid": common.take(columns, valid),
              "test": common.take(columns, rows.is_test)}
    info = {"source_format": "bars_x1_csv", "layout": args.layout,
            "time_unit": "rank", "time_is_wallclock": False,   # side/timestamp = the row's rank by (timestamp, file order)
            "target_is_next_behaviour": not layout.frozen_test_history,
            "split_protocol": f"x1 has train/test only: valid = train.csv rows with timestamp >= {cutoff} "
                              f"(last {args.valid_fraction:.0%} by time), train = earlier train.csv rows, "
                              f"test = test.csv",
            "sequence_protocol": f"clicked rows per user in (timestamp, file) order"
                                 f"{', train only (test histories frozen)' if layout.frozen_test_history else ''}; "
                                 f"checked against every row's '{layout.history_column}' "
                                 f"({layout.keeps} {layout.cap} items)",
            "history_check": history_check}
    return common.finish(args, LABEL, splits, sequences, item_table, [], item_features, info)


def main(argv: Optional[List[str]] = None) -> str:
    parser = common.command_line("bars_x1_csv", __doc__, default_dataset_id="", reads="csv")
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="which x1 release")
    parser.add_argument("--valid_fraction", type=float, default=0.1,
                        help="share of train rows, latest by time, carved off as the validation split")
    parser.add_argument("--history_check", choices=("error", "count"), default="error",
                        help="a CSV history that differs from the rebuilt one stops the conversion (error) or is "
                             "counted in dataset_info.json (count)")
    return common.run(argv, parser, convert)


if __name__ == "__main__":
    sys.exit(exit_code(main))
