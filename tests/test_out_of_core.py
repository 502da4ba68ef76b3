"""Out-of-core sample columns (``out_of_core``): the same batches, errors and metrics as in memory, bounded reads."""
import logging
import os
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from lainctr.data import columns as columns_lib
from lainctr.data import loader as loader_lib
from lainctr.data import store, synthetic_scale
from lainctr.data.dataset import load_dataset
from lainctr.data.loader import SequenceBatchLoader
from lainctr.data.synthetic import write_synthetic
from lainctr.data.validation import DataValidationError
from lainctr.distributed import ProcessGroup


@pytest.fixture(scope="module")
def on_disk(tiny_dir):
    return load_dataset(tiny_dir, in_memory=False)


def assert_same_batches(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.global_rows == b.global_rows
        for field in ("mask", "history_length", "item_index", "history_time", "target_time"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or (torch.equal(x, y) and x.dtype == y.dtype), field
        for part in ("batch_dict", "item_dict"):
            x, y = getattr(a, part), getattr(b, part)
            assert list(x) == list(y), part
            assert all(torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x), part


@pytest.mark.parametrize("rows_per_read", [250, loader_lib.ROWS_PER_READ])
@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("split,shuffle", [("train", True), ("valid", False), ("test", False)])
def test_out_of_core_reader_yields_the_in_memory_batches(tiny_dataset, on_disk, split, shuffle, world_size,
                                                         rows_per_read, monkeypatch):
    """Every rank's batches, two epochs of the seeded shuffle: equal tensors of equal dtypes, in the same order,
    whether a read covers 2 batches (250 rows) or the whole split."""
    monkeypatch.setattr(loader_lib, "ROWS_PER_READ", rows_per_read)
    assert on_disk.splits[split].on_disk and not tiny_dataset.splits[split].on_disk
    for rank in range(world_size):
        loaders = [SequenceBatchLoader(data, split, 100, 40, shuffle=shuffle, seed=7,
                                       group=ProcessGroup(rank, world_size)) for data in (tiny_dataset, on_disk)]
        for _ in range(2):
            assert_same_batches(*[list(loader) for loader in loaders])


def test_a_tiny_run_out_of_core_gives_the_in_memory_metrics(data_root, tmp_path):
    from lainctr.experiment import run_experiment
    rows = [run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                           overrides={"epochs": 1, "max_len": 30, "model_root": str(tmp_path), "verbose": 0,
                                      "out_of_core": flag}) for flag in (False, True)]
    metrics = [k for k in rows[0] if k.startswith(("valid_", "test_"))]
    assert len(metrics) > 20 and {k: rows[1][k] for k in metrics} == {k: rows[0][k] for k in metrics}


def test_out_of_core_must_be_a_bool_or_auto(data_root, tmp_path):
    from lainctr.config import ConfigError
    from lainctr.experiment import run_experiment
    with pytest.raises(ConfigError, match="out_of_core must be True, False or auto, got 'yes'"):
        run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                       overrides={"model_root": str(tmp_path), "out_of_core": "yes"})


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    target = tmp_path / "ds"
    shutil.copytree(tiny_dir, target)
    return str(target)


def rewrite(path, column, change, **layout):
    with h5py.File(path, "r+") as f:
        data = change(f[column][()])
        del f[column]
        f.create_dataset(column, data=data, **layout)


@pytest.mark.parametrize("file,column,value,message", [
    ("train.h5", "user_index", 10_000, "outside"),
    ("train.h5", "seq_len", 100_000, "seq_len"),
    ("valid.h5", "hour", 99, "outside"),
])
def test_validation_streams_in_chunks_with_the_whole_column_errors(copy_dir, monkeypatch, file, column, value, message):
    """A bad value far past the first chunk (chunks of 1,000 rows here): the same file, column and row, in memory
    and out of core."""
    row = 4321 if file == "train.h5" else 1234
    rewrite(os.path.join(copy_dir, file), column, lambda data: np.where(np.arange(len(data)) == row, value, data))
    monkeypatch.setattr(columns_lib, "CHUNK_BYTES", 8_000)
    errors = []
    for in_memory in (True, False):
        with pytest.raises(DataValidationError) as error:
            load_dataset(copy_dir, in_memory=in_memory)
        errors.append(str(error.value))
        assert (error.value.file, error.value.column, error.value.row) == (file, column, row)
    assert errors[0] == errors[1] and message in errors[0]


def test_checksums_stream_and_catch_an_in_range_change_out_of_core(copy_dir, monkeypatch, tiny_dir):
    """The CRC read 4 kB at a time is the whole column's; a positive label flipped to 0 (a valid value) is caught."""
    monkeypatch.setattr(columns_lib, "CHUNK_BYTES", 4_096)
    path = os.path.join(tiny_dir, "train.h5")
    assert store.open_columns(path, in_memory=False).checksum("label") == \
        store.column_checksum(store.read_h5(path)["label"]) == store.read_info(tiny_dir)["checksums"]["train.h5"]["label"]

    def flip_last_positive(label):
        label[np.flatnonzero(label == 1)[-1]] = 0
        return label
    rewrite(os.path.join(copy_dir, "train.h5"), "label", flip_last_positive)
    with pytest.raises(DataValidationError, match="train.h5: column 'label': content differs from the checksum"):
        load_dataset(copy_dir, in_memory=False)


def test_columns_the_store_did_not_write_fall_back_to_memory_with_a_warning(copy_dir, tiny_dataset, caplog):
    """A converter outside the store wrote train.h5 chunked and compressed: those columns are read into memory
    (one warning names file, columns and why), the rest stays on disk, and the batches do not change."""
    path = os.path.join(copy_dir, "train.h5")
    for column in ("hour", "label"):
        rewrite(path, column, lambda data: data, chunks=(1000,), compression="gzip")
    with caplog.at_level(logging.WARNING):
        mixed = load_dataset(copy_dir, in_memory=False)
    warning, = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{path}: column(s) ['hour', 'label'] held in memory") and "compressed" in warning
    assert set(mixed.splits["train"].on_disk) == {"item_index", "seq_len", "timestamp", "user_index"}
    assert_same_batches(*[list(SequenceBatchLoader(d, "train", 256, 40, shuffle=True, seed=1))
                          for d in (tiny_dataset, mixed)])


def test_a_file_cut_short_after_opening_is_an_error_naming_file_column_row(copy_dir):
    path = os.path.join(copy_dir, "test.h5")
    with h5py.File(path, "r") as f:
        last = max(f, key=lambda name: f[name].id.get_offset())      # the column stored last
        cut = f[last].id.get_offset() + f[last].nbytes // 2
    disk = store.open_columns(path, in_memory=False)
    os.truncate(path, cut)
    end = disk.num_rows - 1
    with pytest.raises(DataValidationError, match=f"{path}: column '{last}' row {end}: the file ends inside the column"):
        disk.take([last], np.array([end]))
    assert disk.take([last], np.array([0]))[last].shape == (1,)       # the rows still there are read


@pytest.mark.parametrize("chunk_bytes", [4_096, columns_lib.CHUNK_BYTES])
def test_take_reads_exactly_the_rows_asked_for(tiny_dir, monkeypatch, chunk_bytes):
    """Sparse rows (a read each), dense ones (a piece read through its gaps), runs, repeats, any order; pieces
    cut at CHUNK_BYTES."""
    monkeypatch.setattr(columns_lib, "CHUNK_BYTES", chunk_bytes)
    path = os.path.join(tiny_dir, "train.h5")
    disk, whole = store.open_columns(path, in_memory=False), store.read_h5(path)
    n = len(whole["label"])
    dense = np.random.default_rng(0).permutation(n)[: n // 3]
    rows = np.concatenate([[5, 3, 4, 4, 9000, 0, n - 1, 6], dense, dense[:50]])
    got = disk.take(disk.names, rows)
    assert all(np.array_equal(got[name], whole[name][rows]) and got[name].dtype == whole[name].dtype for name in whole)
    with pytest.raises(IndexError, match="rows outside column"):
        disk.take(["label"], np.array([len(whole["label"])]))


def test_scale_presets_share_their_sequences_and_pass_validation(tmp_path):
    """1m and 10m (here with 600 users): byte-identical per-user sequences, ~10x the samples, a valid folder."""
    small, large = (replace(synthetic_scale.PRESETS[p], num_users=600) for p in ("1m", "10m"))
    a, b = synthetic_scale.generate(small), synthetic_scale.generate(large)
    assert np.array_equal(a[1].offsets, b[1].offsets) and np.array_equal(a[1].items, b[1].items)
    assert np.array_equal(a[1].side["timestamp"], b[1].side["timestamp"])
    samples = [sum(len(c["user_index"]) for c in g[0].values()) for g in (a, b)]
    assert 7 < samples[1] / samples[0] < 12
    folder = write_synthetic(str(tmp_path / "s"), large, "10m", "synthetic_10m", b)
    dataset = load_dataset(folder, in_memory=False)       # validation: ids, seq_len, target = next behaviour
    assert dataset.sizes()["train_in_memory"] == 0
    assert store.read_info(folder)["ctr"] == pytest.approx(0.25, abs=0.01)


# ----------------------------------------------------------------------------- out_of_core: auto
def split_files(directory):
    return [os.path.join(directory, f"{split}.h5") for split in ("train", "valid", "test")]


def test_auto_keeps_the_columns_in_memory_while_they_fit_in_half_the_available_memory(tiny_dir, monkeypatch):
    from lainctr.data import placement
    needed = placement.sample_column_bytes(split_files(tiny_dir))
    assert needed == sum(a.nbytes for s in ("train", "valid", "test")
                         for a in store.read_h5(os.path.join(tiny_dir, f"{s}.h5")).values())
    assert not placement.choose("auto", split_files(tiny_dir), available=2 * needed, processes=1).out_of_core
    assert placement.choose("auto", split_files(tiny_dir), available=2 * needed - 1, processes=1).out_of_core
    on_disk = placement.choose("auto", split_files(tiny_dir), available=3 * needed, processes=2)   # 2 ranks, 2 copies
    assert on_disk.out_of_core and "2 process(es)" in on_disk.reason
    monkeypatch.setattr(placement, "available_memory", lambda: None)
    unknown = placement.choose("auto", split_files(tiny_dir), processes=1)
    assert not unknown.out_of_core and "could not be read" in unknown.reason
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert "4 process(es)" in placement.choose("auto", split_files(tiny_dir), available=10 ** 12).reason
    for setting in (True, False):
        assert placement.choose(setting, split_files(tiny_dir), available=0).out_of_core is setting


def test_auto_names_a_missing_or_unreadable_split_file(tiny_dir, tmp_path):
    from lainctr.data import placement
    from lainctr.errors import InputFileError
    broken = tmp_path / "train.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(InputFileError, match="train.h5: not a readable HDF5 file"):
        placement.sample_column_bytes([str(broken)])
    with pytest.raises(FileNotFoundError, match="absent.h5: file not found"):
        placement.sample_column_bytes([str(tmp_path / "absent.h5")])


def test_available_memory_reads_meminfo_and_the_cgroup_limit(tmp_path):
    from lainctr.data import placement
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2048 kB\n")
    assert placement.meminfo_available(str(meminfo)) == 2048 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")
    assert placement.meminfo_available(str(meminfo)) is None
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("max\n")
    usage.write_text("100\n")
    assert placement.cgroup_headroom([(str(limit), str(usage))]) is None                    # no limit
    limit.write_text("1000\n")
    assert placement.cgroup_headroom([(str(tmp_path / "absent"), str(usage)), (str(limit), str(usage))]) == 900


def test_a_run_logs_where_auto_put_the_columns(data_root, tmp_path):
    from lainctr.experiment import run_experiment
    row = run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                         overrides={"epochs": 1, "max_len": 30, "model_root": str(tmp_path), "verbose": 1})
    log = open(os.path.join(row["run_dir"], "train.log")).read()
    assert "Sample columns: out_of_core: auto -> in memory" in log
