"""Planned runs made one after the other and by worker processes (``execute(..., workers=N)``), with a fake
run_experiment that records which process made each run and with how many torch threads."""
import os
import sys
import time

import pytest

from lainctr.results import append_result, read_results
from lainctr.run_plan import PlannedRun, execute, pending_runs, threads_per_worker

EXPID = "DIN_synthetic_tiny"
FAILING_SEED = 13


def recording_runner(expid, tag=None, config_dir=None, gpu=-1, data_root=None, overrides=None, results_file=None):
    """Module level, so that worker processes can unpickle it: appends and returns a row naming its process."""
    import torch
    seed = int(overrides["seed"])
    if seed == FAILING_SEED:
        raise ValueError(f"seed {seed} does not train")
    time.sleep(0.3)   # long enough that both workers take runs
    row = {"run_id": f"{expid}-{seed}", "expid": expid, "model": "DIN", "seed": seed, "max_len": 100, "tag": tag or "",
           "params": "{}", "pid": os.getpid(), "torch_threads": torch.get_num_threads()}
    append_result(results_file, row)
    return row


def plan(results_file, seeds):
    return [PlannedRun(EXPID, {"seed": seed}, results_file) for seed in seeds]


def test_one_after_the_other_in_this_process_and_what_is_there_is_skipped(tmp_path):
    results = str(tmp_path / "results.csv")
    made = execute(plan(results, [1, 2]), recording_runner)
    assert [run.overrides["seed"] for run, _ in made] == [1, 2]
    assert {row["pid"] for _, row in made} == {os.getpid()}
    assert [run.overrides["seed"] for run in pending_runs(plan(results, [1, 2, 3, 3]))] == [3]
    assert [run.overrides["seed"] for run, _ in execute(plan(results, [2, 3]), recording_runner)] == [3]
    assert len(execute(plan(results, [1]), recording_runner, skip_done=False)) == 1
    assert len(read_results(results)) == 4


def test_workers_make_every_run_once_in_processes_of_their_own(tmp_path, capsys):
    results = str(tmp_path / "results.csv")
    made = execute(plan(results, [1, 2, 3, 4]), recording_runner, workers=2)
    assert [run.overrides["seed"] for run, _ in made] == [1, 2, 3, 4]          # plan order, not finishing order
    assert [row["seed"] for _, row in made] == [1, 2, 3, 4]
    pids = {row["pid"] for _, row in made}
    assert os.getpid() not in pids and len(pids) == (4 if sys.version_info >= (3, 11) else 2)   # a process per run
    done = [line.split(":")[0].strip() for line in capsys.readouterr().out.splitlines() if "done " in line]
    assert done == ["done 1/4", "done 2/4", "done 3/4", "done 4/4"]            # as each finishes
    assert {row["torch_threads"] for _, row in made} == {threads_per_worker(2)}
    rows = read_results(results)                                               # concurrent appends, none lost
    assert sorted(int(row["seed"]) for row in rows) == [1, 2, 3, 4]
    assert execute(plan(results, [1, 2, 3, 4]), recording_runner, workers=2) == []


def test_a_failed_run_stops_the_workers_with_its_own_error_and_keeps_the_others_rows(tmp_path, capsys):
    results = str(tmp_path / "results.csv")
    with pytest.raises(ValueError, match=f"seed {FAILING_SEED} does not train"):
        execute(plan(results, [1, FAILING_SEED, *range(2, 12)]), recording_runner, workers=2)
    assert f"FAILED {EXPID} seed={FAILING_SEED}" in capsys.readouterr().err
    seeds = sorted(int(row["seed"]) for row in read_results(results))
    assert 1 in seeds and len(seeds) < 11                                      # runs not started were cancelled


def test_threads_are_the_cores_shared_out():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores and threads_per_worker(cores) == 1 and threads_per_worker(4 * cores) == 1
