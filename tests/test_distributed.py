"""Data parallelism on torch.distributed (gloo on the CPU): sharded batches, gathered evaluation, one writer."""
import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lainctr.analysis.predictions import read_predictions
from lainctr.data.loader import SequenceBatchLoader
from lainctr.distributed import ProcessGroup

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [64, 100, 7])
def test_ranks_cover_every_sample_once_per_epoch(world_size, batch_size, tiny_dataset):
    """Every global batch is cut from the seeded permutation every rank draws alike; the ranks' shards are
    disjoint, each holds at least 2 rows, and together they read every sample of the split exactly once per
    epoch, also when neither the split nor the batch divides by the number of ranks (the remainder goes to the
    first shards, a row each; a trailing batch under 2 rows per rank joins the one before: nothing is dropped)."""
    loaders = [SequenceBatchLoader(tiny_dataset, "valid", batch_size, 20, shuffle=True, seed=3,
                                   group=ProcessGroup(rank, world_size)) for rank in range(world_size)]
    order = np.random.default_rng(3).permutation(loaders[0].num_samples)
    seq_len = tiny_dataset.splits["valid"]["seq_len"]
    starts = loaders[0].batch_starts()
    ends = np.append(starts[1:], loaders[0].num_samples)
    seen = []
    for rank, loader in enumerate(loaders):
        batches = list(loader)
        assert len(batches) == len(starts)
        for batch, start, end in zip(batches, starts, ends):
            part = ProcessGroup(rank, world_size).shard(order[start:end])
            assert np.array_equal(batch.history_length.numpy(), seq_len[part]) and len(part) >= 2
            assert batch.global_rows == (end - start if world_size > 1 else 0)
            seen.append(part)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(loaders[0].num_samples))


EXPID = """
DIN_ddp_tiny:
  model: DIN
  dataset_id: synthetic_tiny
  max_len: 30
  epochs: 2
  batch_size: 128
  embedding_dim: 8
  dnn_hidden_units: [32]
  net_dropout: 0
  attention_dropout: 0
  verbose: 1
"""


def run(command, results, data_root, config_dir, extra_env=None):
    env = dict(os.environ, PYTHONPATH=ZOO, OMP_NUM_THREADS="1", **(extra_env or {}))
    done = subprocess.run(command + [os.path.join(ZOO, "run_expid.py"), "--expid", "DIN_ddp_tiny", "--config",
                                     config_dir, "--data_root", str(data_root), "--results", str(results)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(csv.DictReader(open(results)))


def test_two_gloo_processes_give_the_single_process_metrics(data_root, tmp_path):
    """torchrun --nproc_per_node 2: the same test metrics as one process (dropout off: the ranks draw their own
    masks; reduction order differs, hence the tolerance), one results row, one run directory written, and the kept
    test predictions in the single process's sample order (so that paired bootstraps can pair them)."""
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "model_config.yaml").write_text(textwrap.dedent(EXPID) + f"  model_root: {tmp_path / 'ckpt'}\n")
    single = run([sys.executable], tmp_path / "single.csv", data_root, str(config_dir))
    ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
              tmp_path / "ddp.csv", data_root, str(config_dir))
    assert len(single) == len(ddp) == 1
    for metric in ("test_AUC", "test_gAUC", "test_logloss", "valid_AUC", "test_AUC@0-100"):
        assert float(ddp[0][metric]) == pytest.approx(float(single[0][metric]), abs=2e-4), metric
    assert ddp[0]["test_samples@0-100"] == single[0]["test_samples@0-100"]      # the whole split evaluated
    assert os.path.exists(ddp[0]["checkpoint"]) and sorted(os.listdir(ddp[0]["run_dir"])) == [
        "best.model", "history.json", "params.json", "test_predictions.npz", "train.log"]
    kept = [read_predictions(row[0]["predictions_file"]) for row in (single, ddp)]
    for column in ("label", "user_index", "history_length"):
        assert np.array_equal(kept[0][column], kept[1][column]), column
    assert np.allclose(kept[0]["score"], kept[1]["score"], atol=1e-3)


def test_gathered_shards_come_back_in_the_loader_order():
    """Rank r read shard r of every batch; gathering puts batch 0's shards first, in rank order, then batch 1's."""
    order = np.arange(23)
    batches = [order[0:10], order[10:20], order[20:23]]
    groups = [ProcessGroup(rank, 3) for rank in range(3)]
    parts = [[group.shard(batch) for batch in batches] for group in groups]
    gathered = [({"x": np.concatenate(p)}, [len(b) for b in p]) for p in parts]

    class Local(ProcessGroup):
        def gather_objects(self, value):
            return gathered

    assert np.array_equal(Local(0, 3).gather_in_batch_order(*gathered[0])["x"], order)


@pytest.mark.parametrize("expid", ["DIN_LAIN_synthetic_tiny", "SIM_synthetic_tiny"])
def test_bf16_autocast_trains_close_to_fp32(expid, data_root, tmp_path):
    """precision: bf16 (autocast; here on the CPU, where torch supports it too) trains with fp32 weights and loss
    (SIM's auxiliary BCE runs outside autocast) and lands near the fp32 metrics."""
    from lainctr.experiment import run_experiment
    rows = {precision: run_experiment(expid, data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                                      overrides={"epochs": 1, "max_len": 30, "model_root": str(tmp_path), "verbose": 0,
                                                 "precision": precision})
            for precision in ("fp32", "bf16")}
    assert rows["bf16"]["test_AUC"] != rows["fp32"]["test_AUC"]                 # autocast did act
    assert rows["bf16"]["test_AUC"] == pytest.approx(rows["fp32"]["test_AUC"], abs=0.02)
    assert rows["bf16"]["test_logloss"] == pytest.approx(rows["fp32"]["test_logloss"], abs=0.02)
