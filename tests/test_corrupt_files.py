"""Corrupt input files: every error names the path; the converter commands print one line and exit 2."""
import os
import shutil
import struct
import subprocess
import sys

import fixtures_formats as ff
import pytest

from data_preprocess import bars_x1_csv, longctr_parquet
from lainctr.data.dataset import load_dataset
from lainctr.errors import InputFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def empty(data: bytes) -> bytes:
    return b""


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupted(data: bytes) -> bytes:
    """Page headers and data zeroed; magic bytes and footer intact, so the file opens and fails on reading."""
    footer = struct.unpack("<I", data[-8:-4])[0]
    return data[:4] + bytes(len(data) - 12 - footer) + data[-8 - footer:]


def damage(path: str, how) -> None:
    with open(path, "rb") as fd:
        data = fd.read()
    with open(path, "wb") as fd:
        fd.write(how(data))


@pytest.mark.parametrize("how,problem", [(empty, "size is 0 bytes"), (truncated, "magic bytes"), (corrupted, "")])
def test_corrupt_parquet_names_the_file(tmp_path, how, problem):
    source = ff.write_longctr(str(tmp_path / "in"))
    path = os.path.join(source, "train.parquet")
    damage(path, how)
    with pytest.raises(InputFileError, match=f"^{path}: not a readable parquet file \\(.*{problem}"):
        longctr_parquet.main(["--input", source, "--output", str(tmp_path / "out"), "--dataset_id", "kuaivideo",
                              "--no_progress"])
    assert not (tmp_path / "out").exists()


def test_converter_command_prints_one_line_and_exits_2(tmp_path):
    source = ff.write_longctr(str(tmp_path / "in"))
    path = os.path.join(source, "item_info.parquet")
    damage(path, truncated)
    done = subprocess.run([sys.executable, "-m", "data_preprocess.longctr_parquet", "--input", source, "--output",
                           str(tmp_path / "out"), "--dataset_id", "kuaivideo", "--no_progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}: not a readable parquet file") and done.stderr.count("\n") == 1


def test_malformed_csv_line_names_the_file(tmp_path):
    source = ff.write_bars_kuaivideo(str(tmp_path / "in"))
    path = os.path.join(source, "train.csv")
    with open(path, "a") as fd:
        fd.write("1,2\n")                                            # too few fields
    with pytest.raises(InputFileError, match=f"^{path}: not a readable CSV file \\(CSV parse error"):
        bars_x1_csv.main(["--layout", "kuaivideo", "--input", source, "--output", str(tmp_path / "out"),
                          "--no_progress"])


def test_corrupt_hdf5_input_of_a_converter_names_the_file(tmp_path):
    source = ff.write_bars_kuaivideo(str(tmp_path / "in"))
    path = os.path.join(source, "item_visual_emb_dim64.h5")
    damage(path, truncated)
    with pytest.raises(InputFileError, match=f"^{path}: not a readable HDF5 file"):
        bars_x1_csv.main(["--layout", "kuaivideo", "--input", source, "--output", str(tmp_path / "out"),
                          "--no_progress"])


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    target = tmp_path / "ds"
    shutil.copytree(tiny_dir, target)
    return str(target)


@pytest.mark.parametrize("file", ["train.h5", "sequences.h5", "items.h5"])
@pytest.mark.parametrize("how", [empty, truncated])
def test_corrupt_hdf5_names_the_file(copy_dir, file, how):
    path = os.path.join(copy_dir, file)
    damage(path, how)
    with pytest.raises(InputFileError, match=f"^{path}: not a readable HDF5 file"):
        load_dataset(copy_dir)


@pytest.mark.parametrize("file", ["feature_map.json", "dataset_info.json"])
def test_corrupt_json_names_the_file(copy_dir, file):
    path = os.path.join(copy_dir, file)
    damage(path, truncated)
    with pytest.raises(InputFileError, match=f"^{path}: not valid JSON \\(.* line \\d+ column \\d+"):
        load_dataset(copy_dir)


def test_feature_map_without_labels_names_the_file(copy_dir):
    path = os.path.join(copy_dir, "feature_map.json")
    with open(path, "w") as fd:
        fd.write('{"features": []}')
    with pytest.raises(InputFileError, match=f"^{path}: not a feature map: needs a non-empty 'labels' list"):
        load_dataset(copy_dir)
