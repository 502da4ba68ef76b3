"""Helpers shared by every preprocessor.

* Errors: :class:`DataValidationError` (the library's) names the input file, the column and the row; rows are
  0-based data rows of the file (a CSV header is not counted). Converters take ``row_of(i) -> file row`` so
  a bad value found in a batch, or inside a flattened list column, is reported at its row in the file.
* Chunked readers over parquet and CSV files, with a tqdm bar, and converters from Arrow columns to numpy
  that check dtype, nulls and fixed list widths.
* :class:`Vocabulary`: raw ids to contiguous codes 1..K (0 = padding / missing), independent of read order.
* Per-user chronological sequences (CSR) and ``count_before``, which gives each sample's ``seq_len``.
* Time splits that carve a validation split from the end of train.
* The command line shared by all preprocessors and the final validated, atomic write.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from lainctr.data import store
from lainctr.data.columns import Columns
from lainctr.data.store import FeatureSpec, UserSequences, build_feature_map_json, write_dataset
from lainctr.data.synthetic import length_statistics
from lainctr.data.validation import (
    DataValidationError,
    first_bad_row,
    validate_item_table,
    validate_sequences,
    validate_split,
)
from lainctr.errors import CommandLineParser, InputFileError

__all__ = ["DataValidationError", "FeatureSpec", "UserSequences"]  # re-exported for the format modules

LENGTH_BUCKETS = (100, 200)  # LAIN's history-length buckets: < 100, 100-199, >= 200
DEFAULT_BATCH_ROWS = 1 << 18
CSV_BLOCK_BYTES = 64 << 20
USER_FEATURES = frozenset({"user_id", "is_sso_user", "gender", "postcode", "age", "is_subscriber"})

RowOf = Callable[[int], int]


# ----------------------------------------------------------------------------------------------- errors
def rows_from(offset: int) -> RowOf:
    """Row mapper of a batch that starts at file row ``offset``."""
    return lambda i: offset + int(i)


def list_rows(offsets: np.ndarray, row_of: RowOf) -> RowOf:
    """Row mapper for the flattened values of a list column with (n+1,) ``offsets``."""
    return lambda i: row_of(int(np.searchsorted(offsets, i, side="right")) - 1)


def raise_at(file: str, column: str, bad: np.ndarray, problem: Callable[[int], str], row_of: RowOf) -> None:
    """Raise :class:`DataValidationError` at the first True of ``bad`` (n,); ``problem(i)`` describes it."""
    i = first_bad_row(bad)
    if i is not None:
        raise DataValidationError(file, column, row_of(i), problem(i))


def check_range(file: str, column: str, values: np.ndarray, low: int, high: int, row_of: RowOf,
                what: str = "id", hint: str = "") -> None:
    """Every value of (n,) or (n, w) ``values`` lies in ``[low, high)``."""
    bad = (values < low) | (values >= high)
    raise_at(file, column, bad,
             lambda i: f"{what} {np.asarray(values[i]).tolist()} outside [{low}, {high}){hint}", row_of)


# ---------------------------------------------------------------------------------------------- readers
def input_path(root: str, name: str) -> str:
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: file not found in {os.path.abspath(root)}")
    return path


def require_columns(file: str, present: Sequence[str], required: Sequence[str]) -> None:
    for column in required:
        if column not in present:
            raise DataValidationError(file, column, None, f"missing column; the file has {list(present)}")


@contextlib.contextmanager
def readable(path: str, kind: str) -> Iterator[None]:
    """Turn a reader's error (a 0-byte, truncated or corrupted file) into :class:`InputFileError` naming ``path``."""
    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(f"{path}: not a readable {kind} file ({error})") from error


def parquet_schema(root: str, name: str) -> pa.Schema:
    path = input_path(root, name)
    with readable(path, "parquet"):
        return pq.ParquetFile(path).schema_arrow


def parquet_batches(root: str, name: str, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS,
                    progress: bool = True) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """Yield ``(first file row, batch)`` over the named columns of ``root/name``."""
    path = input_path(root, name)
    with readable(path, "parquet"):
        parquet = pq.ParquetFile(path)
    require_columns(name, parquet.schema_arrow.names, columns)
    with tqdm(total=parquet.metadata.num_rows, desc=name, unit="rows", disable=not progress) as bar:
        start = 0
        with readable(path, "parquet"):  # a consumer's error is not thrown in here; only the reader's
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(columns)):
                yield start, batch
                start += batch.num_rows
                bar.update(batch.num_rows)


def csv_batches(root: str, name: str, columns: Sequence[str], block_bytes: int = CSV_BLOCK_BYTES,
                progress: bool = True) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """Yield ``(first data row, batch)``; every column is read as text and converted by the caller, so a
    bad value is reported at its row instead of as an Arrow parse error."""
    path = input_path(root, name)
    with readable(path, "CSV"), open(path, newline="") as fd:
        header = next(csv.reader(fd), [])
    require_columns(name, header, columns)
    with readable(path, "CSV"):
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=block_bytes),
                                convert_options=pacsv.ConvertOptions(
                                    include_columns=list(columns), column_types={c: pa.string() for c in columns},
                                    strings_can_be_null=False))
    with tqdm(desc=name, unit="rows", disable=not progress) as bar:
        start = 0
        with readable(path, "CSV"):
            for batch in reader:
                yield start, batch
                start += batch.num_rows
                bar.update(batch.num_rows)


# ------------------------------------------------------------------------------------------- converters
def _array(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _check_no_nulls(file: str, column: str, arr: pa.Array, row_of: RowOf) -> None:
    if arr.null_count:
        raise_at(file, column, arr.is_null().to_numpy(zero_copy_only=False), lambda i: "missing value", row_of)


def _parse_text(file: str, column: str, arr: pa.Array, target: pa.DataType, pattern: str, what: str,
                row_of: RowOf) -> pa.Array:
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        ok = pc.match_substring_regex(arr, pattern).to_numpy(zero_copy_only=False)
        raise_at(file, column, ~ok, lambda i: f"value {arr[int(i)].as_py()!r} is not {what}", row_of)
        raise DataValidationError(file, column, None, str(error)) from error


def int_values(file: str, column: str, column_data, row_of: RowOf) -> np.ndarray:
    """(n,) int64 from an integer (or, for CSV, text) column without nulls."""
    arr = _array(column_data)
    _check_no_nulls(file, column, arr, row_of)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = _parse_text(file, column, arr, pa.int64(), r"^[-+]?[0-9]+$", "an integer", row_of)
    elif not pa.types.is_integer(arr.type):
        raise DataValidationError(file, column, None, f"expected integer ids, got dtype {arr.type}")
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def float_values(file: str, column: str, column_data, row_of: RowOf) -> np.ndarray:
    """(n,) float64 from a numeric (or text) column without nulls, e.g. timestamps."""
    arr = _array(column_data)
    _check_no_nulls(file, column, arr, row_of)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = _parse_text(file, column, arr, pa.float64(), r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$",
                          "a number", row_of)
    elif not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise DataValidationError(file, column, None, f"expected numbers, got dtype {arr.type}")
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def label_values(file: str, column: str, column_data, row_of: RowOf) -> np.ndarray:
    """(n,) int8 labels; integer, boolean, float or text input, every value exactly 0 or 1."""
    arr = _array(column_data)
    if pa.types.is_boolean(arr.type):
        _check_no_nulls(file, column, arr, row_of)
        return arr.to_numpy(zero_copy_only=False).astype(np.int8)
    values = (float_values if pa.types.is_floating(arr.type) else int_values)(file, column, arr, row_of)
    raise_at(file, column, (values != 0) & (values != 1), lambda i: f"label {values[i]} is not 0 or 1", row_of)
    return values.astype(np.int8)


def timestamps_us(file: str, column: str, column_data, row_of: RowOf) -> np.ndarray:
    """(n,) int64 microseconds since the epoch from a timestamp column without nulls."""
    arr = _array(column_data)
    if not pa.types.is_timestamp(arr.type):
        raise DataValidationError(file, column, None, f"expected a timestamp, got dtype {arr.type}")
    _check_no_nulls(file, column, arr, row_of)
    return pc.cast(arr, pa.timestamp("us", arr.type.tz)).cast(pa.int64()).to_numpy(zero_copy_only=False)


def nullable_values(file: str, column: str, column_data, missing) -> np.ndarray:
    """(n,) numpy values of a scalar column with nulls replaced by ``missing`` (booleans become 0/1)."""
    arr = _array(column_data)
    if pa.types.is_boolean(arr.type):
        arr = pc.cast(arr, pa.int8())
    if pa.types.is_nested(arr.type):
        raise DataValidationError(file, column, None, f"expected a scalar column, got dtype {arr.type}")
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(missing, arr.type))
    return arr.to_numpy(zero_copy_only=False)


def list_values(file: str, column: str, column_data, row_of: RowOf,
                convert: Callable[[str, str, pa.Array, RowOf], np.ndarray] = int_values
                ) -> Tuple[np.ndarray, np.ndarray]:
    """A list column as CSR: ``(offsets (n+1,) int64 from 0, values (L,))``, values converted by ``convert``."""
    arr = _array(column_data)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)):
        raise DataValidationError(file, column, None, f"expected a list column, got dtype {arr.type}")
    _check_no_nulls(file, column, arr, row_of)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = convert(file, column, arr.flatten(), list_rows(offsets, row_of))
    return offsets, values


def text_list_values(file: str, column: str, column_data, row_of: RowOf) -> Tuple[np.ndarray, pa.Array]:
    """A ``^``-joined text column (BARS CSV) as ``(offsets (n+1,), values)``; an empty text is an empty list."""
    arr = _array(column_data)
    empty = pc.equal(pc.utf8_length(arr), 0)
    parts = pc.split_pattern(pc.if_else(empty, pa.scalar(None, arr.type), arr), "^")
    lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, pc.list_flatten(parts)


def fixed_width(file: str, column: str, offsets: np.ndarray, values: np.ndarray, row_of: RowOf,
                width: Optional[int] = None) -> np.ndarray:
    """(n, w) array of a list column whose rows all have the same length (``width`` or that of row 0)."""
    lengths = np.diff(offsets)
    width = int(lengths[0]) if width is None and len(lengths) else int(width or 0)
    raise_at(file, column, lengths != width,
             lambda i: f"list of {lengths[i]} values; every row must hold {width}", row_of)
    return values.reshape(len(lengths), width)


def pad_lists(offsets: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) array with the first ``width`` values of each list, right-padded with 0."""
    lengths = np.minimum(np.diff(offsets), width)
    out = np.zeros((len(lengths), width), dtype=values.dtype)
    column = np.arange(width)[None, :]
    keep = column < lengths[:, None]
    out[keep] = values[(offsets[:-1, None] + column)[keep]]
    return out


# ------------------------------------------------------------------------------------------- features
def feature(name: str, kind: str, source: str, vocab_size: Optional[int] = None,
            width: Optional[int] = None) -> FeatureSpec:
    """A feature spec with the encoders FuxiCTR's FeatureProcessor would give it: a pretrained vector keeps
    its width (``nn.Identity()``, embedding_dim = width), an id list is mean-pooled (its default)."""
    extra: Dict[str, object] = {}
    if kind == "embedding":
        extra = {"embedding_dim": width, "feature_encoder": "nn.Identity()"}
    elif kind == "sequence":
        extra = {"feature_encoder": "layers.MaskedAveragePooling()"}
    return FeatureSpec(name, kind, source, vocab_size=vocab_size, width=width, extra=extra)


# ------------------------------------------------------------------------------------------- encoding
def python_scalar(value: object) -> object:
    """A NumPy scalar as the Python value it holds (NumPy 2's repr of ``np.int64(99)`` is ``np.int64(99)``, not
    ``99``), anything else unchanged: for error messages that quote a value."""
    return value.item() if isinstance(value, np.generic) else value


class Vocabulary:
    """Raw ids to codes 1..K, K = number of distinct ids (sorted, so codes do not depend on read order).

    Code 0 is padding; values equal to ``missing`` (e.g. a null sentinel) also map to 0. Non-negative
    integer ids of moderate range are looked up in a dense table (one gather instead of a binary search:
    ~10x faster on tens of millions of history ids).
    """

    def __init__(self, values: np.ndarray, missing=None):
        keys = np.unique(values)
        self.keys = keys[keys != missing] if missing is not None else keys
        self.missing = missing
        self._table = None
        if len(self.keys) and self.keys.dtype.kind in "iu" and self.keys[0] >= 0 \
                and self.keys[-1] < 8 * len(self.keys) + (1 << 22):
            self._table = np.zeros(int(self.keys[-1]) + 1, dtype=np.int64)
            self._table[self.keys] = np.arange(1, len(self.keys) + 1)

    @property
    def size(self) -> int:
        """Vocabulary size including the padding code 0."""
        return len(self.keys) + 1

    def _codes(self, values: np.ndarray) -> np.ndarray:
        if self._table is not None and values.dtype.kind in "iu":
            inside = (values >= 0) & (values < len(self._table))
            return np.where(inside, self._table[np.where(inside, values, 0)], 0)
        if not len(self.keys):
            return np.zeros(len(values), dtype=np.int64)
        pos = np.searchsorted(self.keys, values)
        found = self.keys[np.minimum(pos, len(self.keys) - 1)] == values
        return np.where(found, pos + 1, 0).astype(np.int64)

    def encode(self, values: np.ndarray, file: Optional[str] = None, column: Optional[str] = None,
               row_of: Optional[RowOf] = None, unknown: str = "is unknown") -> np.ndarray:
        """(n,) int64 codes; an id outside the vocabulary raises (when ``file`` is given) or maps to 0."""
        values = np.asarray(values)
        codes = self._codes(values)
        if file is not None:
            missing = values == self.missing if self.missing is not None else np.zeros(len(values), dtype=bool)
            raise_at(file, column, (codes == 0) & ~missing, lambda i: f"id {python_scalar(values[i])!r} {unknown}", row_of)
        return codes


# ------------------------------------------------------------------------------------------- sequences
def build_sequences(user: np.ndarray, time: np.ndarray, item: np.ndarray, num_users: int,
                    tiebreak: Optional[np.ndarray] = None, dedupe: bool = False) -> UserSequences:
    """Per-user chronological sequences from events.

    Args:
        user: (E,) user index in [0, num_users); time: (E,) event time; item: (E,) item index (>= 1).
        tiebreak: (E,) order among events of one user at the same time (default: the item).
        dedupe: keep one of each repeated (user, time, item); requires the default tiebreak.
    Returns:
        CSR sequences sorted by (user, time, tiebreak), with side column ``timestamp`` (E',).
    """
    if dedupe and tiebreak is not None:
        raise ValueError("dedupe needs events ordered by item within equal times (no tiebreak)")
    order = np.lexsort((item if tiebreak is None else tiebreak, time, user))
    user, time, item = user[order], time[order], item[order]
    if dedupe and len(user):
        keep = np.ones(len(user), dtype=bool)
        keep[1:] = (user[1:] != user[:-1]) | (time[1:] != time[:-1]) | (item[1:] != item[:-1])
        user, time, item = user[keep], time[keep], item[keep]
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=num_users), out=offsets[1:])
    return UserSequences(offsets=offsets, items=item.astype(np.int64), side={"timestamp": time})


def count_before(sequences: UserSequences, sample_user: np.ndarray, sample_time: np.ndarray) -> np.ndarray:
    """(n,) number of the user's events strictly before each sample time (the sample's ``seq_len``).

    Uses ``sequences.side["timestamp"]``; one vectorised search over (user, time-rank) keys.
    """
    event_time = sequences.side["timestamp"]
    distinct = np.unique(event_time)
    base = len(distinct) + 1
    event_user = np.repeat(np.arange(sequences.num_users, dtype=np.int64), sequences.lengths())
    event_key = event_user * base + np.searchsorted(distinct, event_time)
    sample_key = sample_user.astype(np.int64) * base + np.searchsorted(distinct, sample_time, side="left")
    return np.searchsorted(event_key, sample_key, side="left") - sequences.offsets[sample_user]


def next_behaviour_share(splits: Mapping[str, Mapping[str, np.ndarray]], sequences: UserSequences,
                         label: str) -> Optional[float]:
    """Share of positive samples whose target is the user's next behaviour ``items[offsets[u] + seq_len]``."""
    hits = total = 0
    for columns in splits.values():
        pos = columns[label] == 1
        user, seq_len, target = columns["user_index"][pos], columns["seq_len"][pos], columns["item_index"][pos]
        has_next = seq_len < sequences.lengths()[user]
        flat = np.minimum(sequences.offsets[user] + seq_len, max(len(sequences.items) - 1, 0))
        hits += int(np.sum(has_next & (sequences.items[flat] == target))) if len(sequences.items) else 0
        total += int(pos.sum())
    return round(hits / total, 6) if total else None


# ------------------------------------------------------------------------------------------- time split
def fraction_cutoff(times: np.ndarray, fraction: float) -> float:
    """Time from which about the last ``fraction`` of the rows lie (ties at the cutoff go after it)."""
    if not 0 < fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {fraction}")
    ordered = np.sort(times)
    return ordered[min(len(ordered) - 1, int(np.floor(len(ordered) * (1 - fraction))))]


def last_days_cutoff(times_us: np.ndarray, days: int) -> int:
    """Midnight (UTC-naive) starting the last ``days`` calendar days of ``times_us`` (microseconds)."""
    day = 86_400_000_000
    return int((times_us.max() // day - (days - 1)) * day)


def take(columns: Mapping[str, np.ndarray], mask: np.ndarray) -> Dict[str, np.ndarray]:
    return {name: values[mask] for name, values in columns.items()}


# --------------------------------------------------------------------------------------- command line
OUTPUT_FOLDER = ("Output: a dataset folder (train/valid/test.h5, sequences.h5, items.h5, feature_map.json, "
                 "dataset_info.json; data_preprocess/README.md), written under a temporary name and renamed.")


def command_line(module: str, description: str, default_dataset_id: Optional[str] = None,
                 reads: str = "parquet") -> argparse.ArgumentParser:
    """Options of every preprocessor (``python -m data_preprocess.<module>``; ``description``: its docstring);
    ``reads`` ("parquet" or "csv") picks the batch-size option."""
    parser = CommandLineParser(prog=f"python -m data_preprocess.{module}", description=description,
                               epilog=OUTPUT_FOLDER)
    parser.add_argument("--input", required=True, help="folder holding the downloaded files")
    parser.add_argument("--output", required=True, help="dataset folder to write (replaced atomically)")
    parser.add_argument("--dataset_id", default=default_dataset_id, required=default_dataset_id is None,
                        help="dataset_id written into feature_map.json" + (" (default: derived from the other options)"
                                                                          if default_dataset_id == "" else ""))
    parser.add_argument("--skip_existing", action="store_true", help="do nothing if --output is complete")
    if reads == "csv":
        parser.add_argument("--block_bytes", type=int, default=CSV_BLOCK_BYTES, help="CSV bytes per read batch")
    else:
        parser.add_argument("--batch_rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows per read batch")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser


def run(argv: Optional[List[str]], parser: argparse.ArgumentParser,
        convert: Callable[[argparse.Namespace], str]) -> str:
    """Parse ``argv``, honour ``--skip_existing``, refuse an ``--output`` that is not a dataset folder
    (:func:`lainctr.data.store.check_replaceable`), convert; returns the output folder."""
    args = parser.parse_args(argv)
    if args.skip_existing and store.is_complete(args.output):
        print(f"{args.output}: a complete dataset folder exists; skipped (--skip_existing)")
        return args.output
    store.check_replaceable(os.path.abspath(args.output))  # before hours of conversion, not only at the rename
    output = convert(args)
    print(output)
    return output


def finish(args: argparse.Namespace, label: str, splits: Dict[str, Dict[str, np.ndarray]],
           sequences: UserSequences, item_table: Dict[str, np.ndarray], sample_features: List[FeatureSpec],
           item_features: List[FeatureSpec], info: Dict[str, object]) -> str:
    """Validate the converted arrays with the library's checks and write the dataset folder atomically.

    Adds to ``info``: the length statistics (LAIN buckets), the label rate per split and the measured
    share of positives whose target is the next behaviour.
    """
    feature_map = build_feature_map_json(args.dataset_id, label, sample_features, item_features)
    item_vocab = {f.name: f.vocab_size for f in item_features if f.kind in ("categorical", "sequence")}
    sample_vocab = {f.name: f.vocab_size for f in sample_features if f.kind in ("categorical", "sequence")}
    num_items = validate_item_table(store.ITEMS_FILE, item_table, item_vocab)
    validate_sequences(store.SEQUENCES_FILE, sequences.offsets, sequences.items, num_items, sequences.side)
    promise = bool(info["target_is_next_behaviour"])
    for split, columns in splits.items():
        validate_split(f"{split}.h5", Columns.of(columns), label, sequences.lengths(), num_items, sample_vocab,
                       sequences.items if promise else None, sequences.offsets if promise else None)
    all_seq_len = np.concatenate([c["seq_len"] for c in splits.values()])
    info = dict(info, length_statistics=length_statistics(sequences.lengths(), all_seq_len, LENGTH_BUCKETS),
                positive_rate={s: round(float(c[label].mean()), 6) if len(c[label]) else None
                               for s, c in splits.items()},
                positive_target_is_next_share=next_behaviour_share(splits, sequences, label))
    return write_dataset(args.output, splits, sequences, item_table, feature_map, info)
