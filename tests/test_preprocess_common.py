"""Shared preprocessing helpers: converters, id encoding, sequences, seq_len counting, time splits."""
import numpy as np
import pyarrow as pa
import pytest

from data_preprocess import common
from data_preprocess.common import DataValidationError, Vocabulary


def test_int_values_reports_the_file_row_of_a_bad_text_value():
    with pytest.raises(DataValidationError,
                       match=r"^train\.csv: column 'user_id' row 12: value 'x7' is not an integer"):
        common.int_values("train.csv", "user_id", pa.array(["1", "2", "x7"]), common.rows_from(10))


def test_int_values_rejects_floats_and_nulls():
    with pytest.raises(DataValidationError, match="expected integer ids, got dtype double"):
        common.int_values("a.parquet", "seq_len", pa.array([1.0, 2.0]), common.rows_from(0))
    with pytest.raises(DataValidationError, match=r"column 'seq_len' row 1: missing value"):
        common.int_values("a.parquet", "seq_len", pa.array([1, None]), common.rows_from(0))


def test_list_values_maps_a_bad_element_to_its_row():
    data = pa.array([[1, 2], [], [3, None]], pa.list_(pa.int64()))
    with pytest.raises(DataValidationError, match=r"column 'seq' row 7: missing value"):
        common.list_values("f", "seq", data, common.rows_from(5))
    offsets, values = common.list_values("f", "seq", pa.array([[1, 2], [], [3]]), common.rows_from(0))
    assert offsets.tolist() == [0, 2, 2, 3] and values.tolist() == [1, 2, 3]


def test_text_lists_and_padding():
    offsets, tokens = common.text_list_values("f", "c", pa.array(["3^1^2", "", "7"]), common.rows_from(0))
    assert offsets.tolist() == [0, 3, 3, 4] and tokens.to_pylist() == ["3", "1", "2", "7"]
    padded = common.pad_lists(np.array([0, 3, 3, 4]), np.array([3, 1, 2, 7]), 2)
    assert padded.tolist() == [[3, 1], [0, 0], [7, 0]]


def test_fixed_width_names_the_first_ragged_row():
    with pytest.raises(DataValidationError, match=r"row 1: list of 1 values; every row must hold 2"):
        common.fixed_width("f", "v", np.array([0, 2, 3]), np.arange(3), common.rows_from(0))


def test_vocabulary_is_sorted_and_reports_unknown_ids():
    vocab = Vocabulary(np.array([30, 10, 20, 10, -1]), missing=-1)
    assert vocab.size == 4
    assert vocab.encode(np.array([20, -1, 10, 99])).tolist() == [2, 0, 1, 0]
    with pytest.raises(DataValidationError, match=r"^h\.parquet: column 'a' row 3: id 99 is not in articles"):
        vocab.encode(np.array([20, -1, 10, 99]), "h.parquet", "a", common.rows_from(0), "is not in articles")
    assert Vocabulary(np.array(["b", "", "a"], dtype=object), missing="").encode(
        np.array(["a", "b", ""], dtype=object)).tolist() == [1, 2, 0]


def test_sequences_dedupe_and_count_strictly_before():
    user = np.array([1, 0, 1, 1, 0, 1])
    time = np.array([5, 3, 1, 5, 9, 1])
    item = np.array([7, 2, 4, 7, 3, 4])     # (user 1, time 5, item 7) and (1, 1, 4) are repeated
    seqs = common.build_sequences(user, time, item, num_users=3, dedupe=True)
    assert seqs.offsets.tolist() == [0, 2, 4, 4]
    assert seqs.items.tolist() == [2, 3, 4, 7]
    seq_len = common.count_before(seqs, np.array([0, 0, 0, 1, 1, 2]), np.array([3, 4, 10, 1, 6, 5]))
    assert seq_len.tolist() == [0, 1, 2, 0, 2, 0]


def test_time_cutoffs():
    assert common.fraction_cutoff(np.array([5, 1, 3, 2, 4]), 0.4) == 4
    day = 86_400_000_000
    times = np.array([2 * day + 5, 3 * day + 7, 3 * day + 1])
    assert common.last_days_cutoff(times, 1) == 3 * day
    assert common.last_days_cutoff(times, 2) == 2 * day
