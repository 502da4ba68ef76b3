"""Shared fixtures: the tiny synthetic dataset (built once per session), its feature map, batches."""
import os

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads (see lainctr/runtime.py)

import pytest
import torch
from fuxictr.features import FeatureMap

from lainctr.data import synthetic
from lainctr.data.dataset import load_dataset
from lainctr.data.loader import SequenceBatchLoader

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding ``synthetic_tiny`` (the dataset id of the tiny expids)."""
    root = tmp_path_factory.mktemp("data")
    synthetic.build(str(root / "synthetic_tiny"), "tiny", dataset_id="synthetic_tiny", show_progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_dir(data_root):
    return str(data_root / "synthetic_tiny")


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dir):
    return load_dataset(tiny_dir)


def make_feature_map(data_dir: str, embedding_dim: int = 8) -> FeatureMap:
    feature_map = FeatureMap("synthetic_tiny", data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), {"embedding_dim": embedding_dim, "group_id": "user_index"})
    return feature_map


@pytest.fixture(scope="session")
def feature_map(tiny_dir):
    return make_feature_map(tiny_dir)


@pytest.fixture
def model_kwargs(tmp_path):
    """Constructor kwargs every model needs in tests (CPU, silent, checkpoints in tmp)."""
    return dict(optimizer="adam", loss="binary_crossentropy", model_root=str(tmp_path), verbose=0,
                embedding_dim=8, max_len=60, short_seq_len=10, dnn_hidden_units=[32])


@pytest.fixture
def tiny_batch(tiny_dataset):
    """A batch of 64 valid samples at max_len 60 (rows with long and short histories)."""
    loader = SequenceBatchLoader(tiny_dataset, "valid", batch_size=64, max_len=60)
    return next(iter(loader))


@pytest.fixture(scope="session")
def tiny_run(data_root, tmp_path_factory):
    """A finished run (1 epoch, max_len 30) of an expid of one's own, ``DIN_LAIN_tiny_run`` (base_expid
    DIN_LAIN_synthetic_tiny), with checkpoints in a temporary model_root: (results row, its --config folder)."""
    from lainctr.experiment import run_experiment
    root = tmp_path_factory.mktemp("tiny_run")
    (root / "expids").mkdir()
    (root / "expids" / "mine.yaml").write_text(
        f"DIN_LAIN_tiny_run: {{base_expid: DIN_LAIN_synthetic_tiny, epochs: 1, max_len: 30, verbose: 0, "
        f"model_root: '{root / 'checkpoints'}'}}\n")
    row = run_experiment("DIN_LAIN_tiny_run", config_dir=str(root / "expids"), data_root=str(data_root),
                         results_file=str(root / "results.csv"))
    return row, str(root / "expids")
