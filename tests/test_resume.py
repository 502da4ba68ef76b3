"""Exact resume: a fit stopped at any step (SIGTERM) and continued with --resume ends where the uninterrupted fit
ends; resume points and checkpoints are written atomically."""
import contextlib
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import lainctr.trainer
from lainctr.data.loader import SequenceBatchLoader
from lainctr.experiment import run_experiment
from lainctr.trainer import Preempted
from lainctr.training_state import RESUME_FILE, atomic_torch_save

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("valid_AUC", "test_AUC", "test_gAUC", "test_logloss", "test_AUC@0-100", "epochs_run")
# dropout on: the resumed run must draw the masks the uninterrupted one draws
OVERRIDES = {"epochs": 2, "max_len": 20, "batch_size": 1024, "net_dropout": 0.2, "verbose": 0}


def preempt_at_step(step: int):
    """A stand-in for the SIGTERM guard that reports a SIGTERM after the ``step``-th training step."""
    @contextlib.contextmanager
    def guard():
        calls = {"n": 0}

        def preempted() -> bool:
            calls["n"] += 1
            return calls["n"] == step
        yield preempted
    return guard


@pytest.mark.parametrize("where", ["mid epoch 1", "end of epoch 1", "mid epoch 2"])
def test_resumed_run_reaches_the_uninterrupted_metrics(where, data_root, tiny_dataset, tmp_path, monkeypatch):
    per_epoch = len(SequenceBatchLoader(tiny_dataset, "train", OVERRIDES["batch_size"], OVERRIDES["max_len"]))
    step = {"mid epoch 1": 3, "end of epoch 1": per_epoch, "mid epoch 2": per_epoch + 2}[where]

    def run(**kwargs):
        return run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(tmp_path / "r.csv"),
                              overrides=dict(OVERRIDES, model_root=str(tmp_path)), **kwargs)
    uninterrupted = run()
    monkeypatch.setattr(lainctr.trainer, "preemption_guard", preempt_at_step(step))
    with pytest.raises(Preempted, match=f"epoch {(step - 1) // per_epoch + 1} batch {(step - 1) % per_epoch + 1};"):
        run()
    monkeypatch.undo()
    run_dir = max((os.path.join(os.path.dirname(uninterrupted["run_dir"]), d)
                   for d in os.listdir(os.path.dirname(uninterrupted["run_dir"]))), key=os.path.getmtime)
    assert os.path.exists(os.path.join(run_dir, RESUME_FILE)) and run_dir != uninterrupted["run_dir"]
    resumed = run(resume=run_dir)
    assert {k: resumed[k] for k in METRICS} == {k: uninterrupted[k] for k in METRICS}
    assert resumed["run_dir"] == run_dir and not os.path.exists(os.path.join(run_dir, RESUME_FILE))
    with pytest.raises(Exception, match="no last.ckpt"):
        run(resume=run_dir)                                    # finished: nothing to resume


def test_sigterm_saves_a_resume_point_and_resume_continues(data_root, tmp_path):
    """A real SIGTERM after the first epoch: exit 143, a resume point; --resume gives the metrics of a run that
    was never interrupted (both in their own processes)."""
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "model_config.yaml").write_text(textwrap.dedent(f"""
        DIN_resume_tiny: {{model: DIN, dataset_id: synthetic_tiny, max_len: 20, epochs: 3, batch_size: 64,
                          embedding_dim: 8, dnn_hidden_units: [32], net_dropout: 0.2, verbose: 1,
                          model_root: {tmp_path / "ckpt"}}}
    """))
    command = [sys.executable, os.path.join(ZOO, "run_expid.py"), "--expid", "DIN_resume_tiny", "--config",
               str(config_dir), "--data_root", str(data_root)]
    env = dict(os.environ, PYTHONPATH=ZOO)

    def rows(results):
        return list(csv.DictReader(open(results)))

    def run(results, *extra):
        done = subprocess.run(command + ["--results", str(results), *extra], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return rows(results)[-1]

    reference = run(tmp_path / "reference.csv")
    process = subprocess.Popen(command + ["--results", str(tmp_path / "resumed.csv")], env=env, cwd=str(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_root = os.path.join(os.path.dirname(reference["run_dir"]))
    deadline = time.time() + 300
    while time.time() < deadline and not any(os.path.exists(os.path.join(run_root, d, RESUME_FILE))
                                             for d in os.listdir(run_root)):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    assert "continue with --resume" in stderr
    run_dir = stderr.strip().rsplit("--resume ", 1)[-1]
    resumed = run(tmp_path / "resumed.csv", "--resume", run_dir)
    assert len(rows(tmp_path / "resumed.csv")) == 1
    assert {k: resumed[k] for k in METRICS} == {k: reference[k] for k in METRICS}


def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / RESUME_FILE)
    atomic_torch_save({"step": 1}, path)

    def dies_half_way(content, target):
        open(target, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1} and os.listdir(tmp_path) == [RESUME_FILE]
