"""H5 round trip and the loader contract: prefix, truncation, padding side, mask, target, shuffling."""
import numpy as np
import pytest
import torch

from lainctr.data import store
from lainctr.data.dataset import load_dataset
from lainctr.data.loader import SequenceBatchLoader, gather_histories


def reference_histories(offsets, items, users, seq_len, max_len):
    """Per-sample Python reference of the vectorised gather."""
    width = max(1, min(int(max(seq_len)), max_len))
    out = np.zeros((len(users), width), dtype=np.int64)
    for row, (u, s) in enumerate(zip(users, seq_len)):
        history = items[offsets[u]:offsets[u] + s][-max_len:]
        if len(history):
            out[row, width - len(history):] = history
    return out


@pytest.mark.parametrize("max_len", [1, 5, 60, 1000])
def test_gather_matches_reference(tiny_dataset, max_len):
    columns = tiny_dataset.splits["train"]
    rows = np.random.default_rng(0).choice(len(columns["user_index"]), 300, replace=False)
    users, seq_len = columns["user_index"][rows], columns["seq_len"][rows]
    got = gather_histories(tiny_dataset.offsets, tiny_dataset.behaviours, users, seq_len, max_len).numpy()
    want = reference_histories(tiny_dataset.offsets, tiny_dataset.behaviours.numpy(), users, seq_len, max_len)
    np.testing.assert_array_equal(got, want)


def test_batch_contract(tiny_dataset):
    loader = SequenceBatchLoader(tiny_dataset, "test", batch_size=50, max_len=20)
    batch = next(iter(loader))
    b, t = batch.mask.shape
    assert b == 50 and t == min(20, int(batch.history_length.max()))
    assert batch.item_index.shape == (b, t + 1)
    # mask marks real behaviours; pre-padding: once real, stays real to the right
    real = batch.item_index[:, :-1] > 0
    assert torch.equal(batch.mask.bool(), real)
    assert torch.all(real.int().diff(dim=1) >= 0)
    assert torch.equal(real.sum(1), torch.clamp(batch.history_length, max=t))
    # last column is the target, item features follow the LongCTR row layout
    torch.testing.assert_close(batch.item_index[:, -1], batch.batch_dict["item_index"])
    table = tiny_dataset.item_table["cate_id"]
    torch.testing.assert_close(batch.item_dict["cate_id"].view(b, t + 1), table[batch.item_index])
    # the most recent behaviour is rightmost: it is the one just before the sample
    rows = batch.history_length > 0
    u, s = batch.batch_dict["user_index"][rows].numpy(), batch.history_length[rows].numpy()
    last = tiny_dataset.behaviours.numpy()[tiny_dataset.offsets[u] + s - 1]
    np.testing.assert_array_equal(batch.item_index[rows, -2].numpy(), last)


def test_all_rows_covered_once_and_shuffle_reproducible(tiny_dataset):
    def order(seed):
        loader = SequenceBatchLoader(tiny_dataset, "valid", batch_size=100, max_len=10, shuffle=True, seed=seed)
        epoch1 = torch.cat([b.batch_dict["user_index"] * 10_000 + b.history_length for b in loader])
        epoch2 = torch.cat([b.batch_dict["user_index"] * 10_000 + b.history_length for b in loader])
        return epoch1, epoch2
    a1, a2 = order(3)
    b1, _ = order(3)
    assert torch.equal(a1, b1)
    assert not torch.equal(a1, a2)                       # a new permutation each epoch
    assert torch.equal(torch.sort(a1).values, torch.sort(a2).values)
    assert len(a1) == len(tiny_dataset.splits["valid"]["user_index"])


def test_h5_round_trip(tmp_path, tiny_dataset):
    splits = {s: dict(c) for s, c in tiny_dataset.splits.items()}
    sequences = store.UserSequences(tiny_dataset.offsets, tiny_dataset.behaviours.numpy(),
                                    {"t": np.arange(len(tiny_dataset.behaviours))})
    table = {k: v.numpy() for k, v in tiny_dataset.item_table.items()}
    out = store.write_dataset(str(tmp_path / "copy"), splits, sequences, table, tiny_dataset.feature_map_json,
                              {"target_is_next_behaviour": True})
    again = load_dataset(out)
    for split in splits:
        for col, values in splits[split].items():
            np.testing.assert_array_equal(again.splits[split][col], values)
            assert again.splits[split][col].dtype == values.dtype
    np.testing.assert_array_equal(again.offsets, tiny_dataset.offsets)
    assert torch.equal(again.behaviours, tiny_dataset.behaviours)
    np.testing.assert_array_equal(store.read_sequences(out).side["t"], np.arange(len(tiny_dataset.behaviours)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary leftovers


def test_rewrite_replaces_atomically_and_failure_leaves_old_copy(tmp_path, tiny_dataset, monkeypatch):
    splits = {s: dict(c) for s, c in tiny_dataset.splits.items()}
    sequences = store.UserSequences(tiny_dataset.offsets, tiny_dataset.behaviours.numpy())
    table = {k: v.numpy() for k, v in tiny_dataset.item_table.items()}
    target = str(tmp_path / "ds")
    store.write_dataset(target, splits, sequences, table, tiny_dataset.feature_map_json, {"marker": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(store, "_replace_dir", boom)
    with pytest.raises(OSError):
        store.write_dataset(target, splits, sequences, table, tiny_dataset.feature_map_json, {"marker": 2})
    assert store.read_info(target)["marker"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("batch_size", [4, 7])
def test_no_single_sample_batch(tiny_dataset, batch_size):
    loader = SequenceBatchLoader(tiny_dataset, "valid", batch_size=batch_size, max_len=5)
    loader.num_samples = 4 * batch_size + 1            # a split whose last batch would hold one sample
    got = [len(b.history_length) for b in loader]
    assert got == [batch_size] * 3 + [batch_size + 1] and len(loader) == 4


@pytest.mark.parametrize("max_len", [1, 60, 1000])
def test_times_are_gathered_and_padded_like_the_items(tiny_dataset, max_len):
    loader = SequenceBatchLoader(tiny_dataset, "train", batch_size=300, max_len=max_len, shuffle=True)
    batch = next(iter(loader))
    users, seq_len = batch.batch_dict["user_index"].numpy(), batch.history_length.numpy()
    times = tiny_dataset.behaviour_time.numpy()
    want = reference_histories(tiny_dataset.offsets, times, users, seq_len, max_len)
    np.testing.assert_array_equal(batch.history_time.numpy(), np.where(batch.mask.numpy() > 0, want, 0))
    assert batch.history_time.dtype == torch.int64
    # the sample's own time: the split's column; the behaviour at its position (synthetic), after its history
    assert "timestamp" not in batch.batch_dict                                # batch_dict: feature-map columns
    np.testing.assert_array_equal(batch.target_time.numpy(), times[tiny_dataset.offsets[users] + seq_len])
    assert torch.all(batch.target_time >= batch.history_time[:, -1])
    assert tiny_dataset.info["time_source"] == "timestamp" and tiny_dataset.info["time_unit"] == "s"
    untimed = next(iter(SequenceBatchLoader(tiny_dataset, "train", batch_size=30, max_len=max_len, times=False)))
    assert untimed.history_time is None and untimed.target_time is None       # for models that read no time


def test_dataset_without_times_falls_back_to_positions(tmp_path, tiny_dataset):
    splits = {s: {k: v for k, v in c.items() if k != "timestamp"} for s, c in tiny_dataset.splits.items()}
    sequences = store.UserSequences(tiny_dataset.offsets, tiny_dataset.behaviours.numpy())
    table = {k: v.numpy() for k, v in tiny_dataset.item_table.items()}
    out = store.write_dataset(str(tmp_path / "untimed"), splits, sequences, table, tiny_dataset.feature_map_json, {})
    untimed = load_dataset(out)
    assert untimed.info["time_source"] == "position" and untimed.behaviour_time is None
    batch = next(iter(SequenceBatchLoader(untimed, "valid", batch_size=20, max_len=30)))
    assert batch.history_time is None and batch.target_time is None


def test_decreasing_timestamps_are_a_data_error(tmp_path, tiny_dataset):
    from lainctr.data.validation import DataValidationError
    times = tiny_dataset.behaviour_time.numpy().copy()
    user = int(np.argmax(np.diff(tiny_dataset.offsets) > 3))
    times[tiny_dataset.offsets[user] + 2] = times[tiny_dataset.offsets[user] + 1] - 1
    sequences = store.UserSequences(tiny_dataset.offsets, tiny_dataset.behaviours.numpy(), {"timestamp": times})
    splits = {s: dict(c) for s, c in tiny_dataset.splits.items()}
    table = {k: v.numpy() for k, v in tiny_dataset.item_table.items()}
    out = store.write_dataset(str(tmp_path / "bad"), splits, sequences, table, tiny_dataset.feature_map_json, {})
    with pytest.raises(DataValidationError, match="timestamps decrease"):
        load_dataset(out)
